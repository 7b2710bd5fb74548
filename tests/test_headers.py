"""envelope.add_header: checked fields, folded, on top of every stored or relayed message."""
from __future__ import annotations

import os
import smtplib

import pytest

from smtp_stack.delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from smtp_stack.headers import check_field, fold, header_block
from smtp_stack.session import Envelope
from smtp_stack.testing import MailSink

from conftest import WAIT

BODY = b'From: a@b.example\r\nSubject: headed\r\n\r\nbody\r\n'
AR = 'mx.test; spf=pass smtp.mailfrom=b.example'
SPAM = 'No, score=-0.1'


# -- pure: names, values, folding ---------------------------------------------------

@pytest.mark.parametrize('name', ['Authentication-Results', 'X-Spam-Status', 'a', '!#$%&*+-.^_`|~'])
def test_field_names_of_rfc5322_syntax_are_accepted(name):
    assert check_field(name, 'v') == (name, 'v')


@pytest.mark.parametrize('name', ['', 'With Space', 'Colon:', 'Tab\t', 'Ünicode', 'new\nline',
                                  None, 5, 'DEL\x7f'])
def test_bad_field_names_are_refused(name):
    with pytest.raises(ValueError):
        check_field(name, 'v')


@pytest.mark.parametrize('value', ['a\r\nX-Injected: 1', 'a\rb', 'a\nb', 'a\0b', b'bytes'])
def test_values_with_cr_lf_nul_or_not_text_are_refused(value):
    with pytest.raises(ValueError):
        check_field('X-Test', value)


def test_a_long_value_is_folded_at_white_space_into_short_lines():
    value = ' '.join(f'word{i}' for i in range(60))
    text = fold('X-Long', value)
    lines = text.split('\r\n')
    assert lines[-1] == '' and all(len(line) <= 78 for line in lines)
    assert all(line.startswith('\t') for line in lines[1:-1])
    # Unfolding (RFC 5322 2.2.3: remove CRLF before WSP) gives the value back.
    assert text[:-2].replace('\r\n\t', ' ') == f'X-Long: {value}'


def test_a_word_too_long_for_any_line_is_kept_whole_up_to_998():
    assert fold('X-Token', 'a' * 900) == f'X-Token: {"a" * 900}\r\n'
    with pytest.raises(ValueError):
        fold('X-Token', 'a' * 1000)


def test_the_last_added_field_goes_on_top():
    assert header_block([('A', '1'), ('B', '2')]) == b'B: 2\r\nA: 1\r\n'


def test_envelope_records_checked_fields_in_call_order():
    envelope = Envelope()
    envelope.add_header('X-One', '1')
    envelope.add_header('X-Two', '2')
    with pytest.raises(ValueError):
        envelope.add_header('X-Bad', 'evil\r\nBcc: victim@d.example')
    with pytest.raises(ValueError):
        envelope.add_header('X-Huge', 'x' * 2000)
    assert envelope.added_headers == [('X-One', '1'), ('X-Two', '2')]
    envelope.added_headers.append(('X-Sneaky', 'unchecked'))     # a copy: no way around the checks
    assert len(envelope.added_headers) == 2


# -- over sockets: every delivery puts them on top, in the documented order ---------------

def adds_headers(ctx, next):
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('Authentication-Results', AR)
        ctx.session.envelope.add_header('X-Spam-Status', SPAM)
    next()


def header_names(raw: bytes, count: int) -> list:
    """The names of the first `count` header fields, folded lines joined."""
    names = []
    for line in raw.split(b'\n'):
        if line[:1] in (b' ', b'\t'):
            continue
        names.append(line.split(b':', 1)[0].decode())
        if len(names) == count:
            return names
    return names


def test_maildir_order_is_return_path_added_fields_received_then_the_message(serve, tmp_path):
    maildir = tmp_path / 'Maildir'
    server = serve(middleware=[MaildirDelivery(str(maildir)), adds_headers])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [name] = os.listdir(maildir / 'new')
    raw = (maildir / 'new' / name).read_bytes()
    assert header_names(raw, 6) == ['Return-Path', 'X-Spam-Status', 'Authentication-Results',
                                    'Received', 'From', 'Subject']
    assert f'Authentication-Results: {AR}\n'.encode() in raw
    assert raw.endswith(BODY.replace(b'\r\n', b'\n'))


def test_relay_sends_added_fields_above_its_received_to_a_real_upstream(serve):
    with MailSink() as upstream:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        server = serve(middleware=[relay, adds_headers], on_close=relay.session_closed)
        with smtplib.SMTP(*server.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        [msg] = upstream.wait_for(1)
    assert header_names(msg.raw, 5) == ['X-Spam-Status', 'Authentication-Results', 'Received',
                                        'From', 'Subject']
    assert msg['Authentication-Results'] == AR
    assert msg.raw.endswith(BODY)


def test_callable_body_starts_with_added_fields_and_received(serve):
    bodies = []
    delivery = CallableDelivery(lambda session, envelope, body: bodies.append(body.read()))
    server = serve(middleware=[delivery, adds_headers])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [raw] = bodies
    assert header_names(raw, 5) == ['X-Spam-Status', 'Authentication-Results', 'Received',
                                    'From', 'Subject']
    assert raw.endswith(BODY)


def test_mailsink_messages_carry_the_added_fields_on_top():
    with MailSink() as sink:
        sink.server.use(adds_headers)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        [msg] = sink.wait_for(1)
    assert list(msg.keys())[:4] == ['X-Spam-Status', 'Authentication-Results', 'From', 'Subject']
    assert msg['X-Spam-Status'] == SPAM
    assert msg.raw == f'X-Spam-Status: {SPAM}\r\nAuthentication-Results: {AR}\r\n'.encode() + BODY


def test_a_bad_header_from_middleware_is_refused_where_it_is_added(serve, client):
    seen = []

    def injects(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                ctx.session.envelope.add_header('X-Filter', 'ok\r\nBcc: victim@d.example')
            except ValueError as exc:
                seen.append(exc)
                raise

    with MailSink() as sink:
        sink.server.use(injects)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert refused.value.smtp_code == 451
        assert sink.messages == [] and len(seen) == 1


def test_mailsink_refuses_a_body_a_middleware_took_without_spooling():
    """A middleware under test that reads data_stream itself leaves the sink
    nothing whole to keep: 451 (as the deliveries answer), never a cut message;
    one that spools composes."""
    def reads(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()

    def spools(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.spool()

    with MailSink() as sink:
        sink.server.use(reads)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert refused.value.smtp_code == 451 and sink.messages == []
    with MailSink() as sink:
        sink.server.use(spools)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert sink.wait_for(1)[0].raw == BODY
