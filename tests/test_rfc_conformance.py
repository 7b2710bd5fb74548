"""RFC rules found broken once, each pinned by a test named after it."""
from __future__ import annotations

import pytest

from smtp_stack import SmtpError
from smtp_stack.addresses import check_envid, check_orcpt


def test_lmtp_data_without_accepted_recipients_is_503_rfc2033_4_2(serve, client):
    """RFC 2033 4.2: 'If there were no previously successful RCPT commands
    in the mail transaction, then the DATA command MUST fail with a 503
    reply code.' (SMTP keeps 554.)"""
    c = client(serve(lmtp=True))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('DATA') == (503, '5.5.1 Error: no valid recipients')
    assert c.cmd('BDAT 0 LAST') == (503, '5.5.1 Error: no valid recipients')


def test_smtp_data_without_recipients_stays_554(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('DATA') == (554, '5.5.1 Error: no valid recipients')


@pytest.mark.parametrize('envid', ['ab+0D+0Acd', 'a+00b', 'tab+09', 'del+7F', 'caf+C3+A9'])
def test_envid_must_decode_to_printable_us_ascii_rfc3461_4_4(serve, client, envid):
    """A decoded CR LF would reach a DSN's Original-Envelope-Id header."""
    c = client(serve())
    c.expect(250, 'EHLO x')
    assert c.cmd(f'MAIL FROM:<a@b.example> ENVID={envid}') == (
        501, '5.5.4 Error: ENVID must decode to printable US-ASCII')
    c.expect(250, 'MAIL FROM:<a@b.example> ENVID=QQ314159+20ok')


@pytest.mark.parametrize('orcpt', ['rfc822;a+0D+0A@b.example', 'rfc822;a+00@b.example',
                                   'rfc822;caf+C3+A9@b.example', 'utf-8;x\\x{0D}@b.example',
                                   'UTF-8;a+0A@b.example'])
def test_orcpt_must_decode_to_printable_text_rfc3461_4_2(serve, client, orcpt):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd(f'RCPT TO:<c@d.example> ORCPT={orcpt}') == (
        501, '5.5.4 Error: ORCPT must decode to printable characters')
    c.expect(250, 'RCPT TO:<c@d.example> ORCPT=rfc822;c+2Bx@d.example')


@pytest.mark.parametrize('value, ok', [
    ('abc', True), ('a+20b', True), ('~!', True), ('', True),
    ('a+0Db', False), ('a+0A', False), ('+00', False), ('+7F', False), ('+C3+A9', False),
])
def test_check_envid_table(value, ok):
    if ok:
        assert check_envid(value) == value
    else:
        with pytest.raises(SmtpError):
            check_envid(value)


@pytest.mark.parametrize('value, ok', [
    ('rfc822;a@b', True), ('rfc822;a+2Bb@c', True), ('utf-8;caf\\x{E9}@b', True),
    ('UTF-8;caf+C3+A9@b', True), ('rfc822;a+0D@b', False), ('utf-8;a\\x{7F}@b', False),
    ('utf-8;\\x{110000}', False), ('rfc822;+C3+A9@b', False),
])
def test_check_orcpt_table(value, ok):
    if ok:
        assert check_orcpt(value) == value
    else:
        with pytest.raises(SmtpError):
            check_orcpt(value)
