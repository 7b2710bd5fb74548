"""Hostile input over real sockets: SMTP smuggling, bare CR/LF, NUL and
encodings in commands, line-length limits. Each test is named after the
attack it pins."""
import base64
import smtplib

import pytest

from conftest import WAIT
from hardening_helpers import LONG_PASSWORD, Recorder, auth_server, start_transaction


# --- SMTP smuggling (CVE-2023-51764/51765/51766, aiosmtpd CVE-2024-27305) ----

SMUGGLED = b'MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@d.example>\r\nDATA\r\nspoofed\r\n'
FAKE_ENDS = [b'\n.\n', b'\r.\r', b'\n.\r\n', b'\r\n.\n', b'\r.\r\n', b'\r\n.\r', b'\n..\n', b'\r\n\x00.\r\n']


@pytest.mark.parametrize('fake_end', FAKE_ENDS, ids=repr)
def test_smuggling_fake_end_of_data_is_refused_and_starts_no_second_message(serve, client, fake_end):
    rec = Recorder()
    c = client(serve(middleware=[rec]))
    start_transaction(c)
    c.send(b'Subject: hi\r\n\r\nbody' + fake_end + SMUGGLED + b'.\r\n')
    code, text = c.reply()
    if b'\x00' in fake_end:         # no bare newline at all: one ordinary message
        assert code == 250
        assert rec.delivered == [b'Subject: hi\r\n\r\nbody' + fake_end + SMUGGLED]
    else:
        assert (code, text) == (554, '5.6.0 Error: bare <CR> or <LF> in message content')
        assert rec.delivered == []
    assert c.cmd('NOOP') == (250, '2.0.0 OK')      # exactly one reply: nothing smuggled
    assert rec.outcomes == ['ok' if code == 250 else 'refused']


@pytest.mark.parametrize('fake_end', FAKE_ENDS[:6], ids=repr)
def test_smuggling_with_normalize_still_needs_crlf_dot_crlf(serve, client, fake_end):
    """normalize rewrites bare CR/LF as CRLF inside the body, but only
    <CRLF>.<CRLF> as sent ends it: the smuggled text stays body text."""
    rec = Recorder()
    c = client(serve(bare_newline='normalize', middleware=[rec]))
    start_transaction(c)
    c.send(b'body' + fake_end + SMUGGLED + b'.\r\n')
    assert c.reply()[0] == 250
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
    [body] = rec.delivered
    assert b'evil@x.example' in body and b'spoofed' in body
    assert b'\r' not in body.replace(b'\r\n', b'') and b'\n' not in body.replace(b'\r\n', b'')


def test_pipelined_commands_after_a_real_end_of_data_are_commands(serve, client):
    rec = Recorder()
    c = client(serve(middleware=[rec]))
    start_transaction(c)
    c.send(b'one\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\ntwo\r\n.\r\n')
    assert [c.reply()[0] for _ in range(5)] == [250, 250, 250, 354, 250]
    assert rec.delivered == [b'one\r\n', b'two\r\n']


@pytest.mark.parametrize('body', [b'a\n.\nb\r\n', b'a\r.\r\nb\r\n', b'x\ry\r\n'], ids=repr)
def test_bdat_text_body_with_bare_newlines_is_refused(serve, client, body):
    rec = Recorder.for_bdat()
    c = client(serve(middleware=[rec]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> BODY=8BITMIME')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.send(b'BDAT %d LAST\r\n' % len(body) + body)
    assert c.reply() == (554, '5.6.0 Error: bare <CR> or <LF> in message content')
    assert rec.delivered == []
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_bdat_binarymime_body_keeps_bare_newlines(serve, client):
    rec = Recorder.for_bdat()
    c = client(serve(middleware=[rec]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> BODY=BINARYMIME')
    c.expect(250, 'RCPT TO:<c@d.example>')
    body = b'\x00\n.\n\r.\r\xff'
    c.send(b'BDAT %d LAST\r\n' % len(body) + body)
    assert c.reply()[0] == 250
    assert rec.delivered == [body]


def test_over_long_command_after_a_bdat_chunk_still_gets_its_reply(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.send(b'BDAT 5\r\nhello')
    assert c.reply() == (250, '2.0.0 5 octets received')
    c.sock.settimeout(2)
    assert c.cmd('NOOP ' + 'x' * 700) == (500, '5.5.6 Error: line too long')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


# --- bare CR / LF, NUL and encoding in commands ------------------------------------

@pytest.mark.parametrize('line', [b'NOOP\n', b'NOOP\r', b'NO\rOP\r\n', b'NOOP\r\r\n', b'\n'], ids=repr)
def test_bare_newline_in_a_command_is_refused(serve, client, line):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.send(line + b'NOOP\r\n')
    assert c.reply() == (500, '5.5.2 Error: bare <CR> or <LF> in command')
    if line == b'NOOP\r':    # the lone CR glued both into one line
        assert c.cmd('NOOP') == (250, '2.0.0 OK')
    else:
        assert c.reply() == (250, '2.0.0 OK')


def test_bare_lf_commands_are_normalized_when_asked(serve, client):
    c = client(serve(bare_newline='normalize'))
    c.send(b'EHLO x\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\nNOOP\n')
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 250, 250]


def test_nul_in_a_command_is_refused_and_nul_in_data_is_kept(serve, client):
    rec = Recorder()
    c = client(serve(middleware=[rec]))
    c.expect(250, 'EHLO x')
    c.send(b'MAIL FROM:<a\x00@b.example>\r\n')
    assert c.reply() == (500, '5.5.2 Error: NUL byte in command')
    start_transaction(c)
    c.send(b'a\x00b\r\n.\r\n')
    assert c.reply()[0] == 250
    assert rec.delivered == [b'a\x00b\r\n']


@pytest.mark.parametrize('line', [b'EHLO \xff', b'MAIL FROM:<\xc3(@b.example>', b'\xed\xa0\x80', b'NOOP \xc0\xaf'],
                         ids=repr)
def test_invalid_utf8_in_a_command_gets_500(serve, client, line):
    c = client(serve())
    c.send(line + b'\r\n')
    assert c.reply() == (500, '5.5.2 Error: command is not valid UTF-8')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_non_ascii_address_without_smtputf8_gets_553(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<j\u00f6rg@b.example>') == (553, '5.6.7 Error: non-ASCII address needs SMTPUTF8')
    c.expect(250, 'MAIL FROM:<j\u00f6rg@b.example> SMTPUTF8')


@pytest.mark.parametrize('line', ['QU\u0131T', '\ufb06ARTTLS', '\u017fTARTTLS', 'MA\u0131L FROM:<a@b.example>'])
def test_unicode_case_folding_never_makes_a_command(serve, client, line):
    """Verbs are matched as ASCII only: str.upper() would fold U+0131 (dotless
    i), U+FB06 and U+017F into QUIT, STARTTLS and MAIL."""
    c = client(serve())
    c.expect(250, 'EHLO x')
    assert c.cmd(line) == (500, '5.5.2 Error: command not recognized')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


# --- line length limits --------------------------------------------------------------

def test_command_line_of_512_octets_is_accepted_and_513_refused(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    assert c.cmd('NOOP ' + 'x' * (510 - 5)) == (250, '2.0.0 OK')          # 510 + CRLF = 512
    assert c.cmd('NOOP ' + 'x' * (511 - 5)) == (500, '5.5.6 Error: line too long')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_over_long_command_is_answered_early_and_never_buffered(serve, client):
    server = serve()
    c = client(server)
    c.expect(250, 'EHLO x')
    c.send(b'NOOP ' + b'x' * 300_000)                  # no line end yet
    assert c.reply() == (500, '5.5.6 Error: line too long')   # before the line ends
    for _ in range(10):
        c.send(b'y' * 100_000)
    c.send(b'\r\nNOOP\r\n')
    assert c.reply() == (250, '2.0.0 OK')                # the tail was skipped, once
    [engine] = server.engines
    assert engine.transport.pending < 70_000


def test_many_over_long_lines_count_as_errors(serve, client):
    c = client(serve(max_errors=3))
    for _ in range(3):
        c.send(b'X' * 2000 + b'\r\n')
        assert c.reply()[0] == 500
    assert c.reply() == (421, '4.7.0 Error: too many errors')
    assert c.closed()




def test_auth_response_line_of_12288_octets_is_accepted(serve, client):
    c = client(auth_server(serve, max_auth_failures=10))
    c.expect(250, 'EHLO x')
    c.expect(334, 'AUTH PLAIN')
    payload = base64.b64encode(b'\0user\0' + LONG_PASSWORD.encode())
    assert len(payload) == 12288
    assert c.cmd(payload.decode()) == (235, '2.7.0 Authentication successful')


def test_auth_response_line_over_12288_octets_gets_500_and_session_goes_on(serve, client):
    c = client(auth_server(serve))
    c.expect(250, 'EHLO x')
    c.expect(334, 'AUTH PLAIN')
    c.send(b'A' * 12292 + b'\r\n')
    assert c.reply() == (500, '5.5.6 Error: authentication response too long')
    c.expect(334, 'AUTH LOGIN')
    c.send(b'B' * 1_000_000 + b'\r\n')                 # a megabyte: refused, not buffered
    assert c.reply()[0] == 500
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_auth_initial_response_of_12288_octets_is_accepted_and_longer_refused(serve, client):
    c = client(auth_server(serve, max_auth_failures=10))
    c.expect(250, 'EHLO x')
    payload = base64.b64encode(b'\0user\0' + LONG_PASSWORD.encode()).decode()
    assert c.cmd('AUTH PLAIN ' + payload) == (235, '2.7.0 Authentication successful')
    c = client(auth_server(serve))
    c.expect(250, 'EHLO x')
    code, text = c.cmd('AUTH PLAIN ' + payload + 'AAAA')
    assert code == 500 and text.startswith('5.5.6 ')
    assert c.cmd('NOOP ' + 'x' * 600) == (500, '5.5.6 Error: line too long')   # only AUTH may be long
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_smtplib_xoauth2_with_a_long_token_authenticates(serve):
    """smtplib sends the initial response inline, and OAuth2 tokens are often
    over 1,500 bytes: the AUTH line may carry 12,288 octets (RFC 4954 4)."""
    token = 'ya29.' + 'T' * 2000

    def on_auth(session):
        return session.auth.username if session.auth.validate(token) else None
    server = serve(auth_methods=['XOAUTH2'], allow_insecure_auth=True, on_auth=on_auth)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo('x')
        code, _ = smtp.auth('XOAUTH2', lambda challenge=None: f'user=u\x01auth=Bearer {token}\x01\x01')
        assert code == 235


def test_data_line_longer_than_max_line_length_is_refused(serve, client):
    rec = Recorder()
    c = client(serve(max_line_length=100, middleware=[rec]))
    start_transaction(c)
    c.send(b'x' * 100 + b'\r\n.\r\n')
    assert c.reply()[0] == 250
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'ok\r\n' + b'y' * 101 + b'\r\nok\r\n.\r\n')
    assert c.reply() == (554, '5.6.0 Error: message line too long')
    assert rec.delivered == [b'x' * 100 + b'\r\n']
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
