"""What middleware decided about a message, applied by every built-in
delivery: `envelope.drop()`, `envelope.replace_body()` and
`envelope.quarantine()`, over loopback with smtplib, for Maildir, relay
(to a MailSink upstream) and callable deliveries."""
from __future__ import annotations

import io
import smtplib
import tracemalloc

import pytest

from smtp_stack.delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from smtp_stack.delivery.base import QUARANTINE_FIELD

from conftest import WAIT
from test_events import logged  # noqa: F401 (a fixture: a server logging into Records)
from test_relay import upstream  # noqa: F401 (a fixture: a MailSink upstream)

MESSAGE = (b'From: a@b.example\r\nSubject: original\r\nX-Secret: drop me\r\n\r\n'
           b'the original body\r\n')
NEW_BODY = b'a new body\r\nof two lines\r\n'


def acting(action, *args, spool=False, remove=None, only=None):
    """A middleware (registered inside the delivery) that, once DATA was
    accepted, calls `envelope.<action>(*args)`; with `spool`, after
    reading the whole body first, as a content filter does; with `only`,
    for the messages to that recipient only."""
    def middleware(ctx, next):
        next()
        if ctx.command_name != 'DATA':
            return
        envelope = ctx.session.envelope
        if only is not None and envelope.rcpt_to[0].address != only:
            return
        if spool:
            envelope.spool()
        if remove:
            envelope.remove_header(remove)
        getattr(envelope, action)(*args)
    return middleware


def send(server, message=MESSAGE, rcpts=('bob@mx.test',)):
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        return smtp.sendmail('a@b.example', list(rcpts), message)


def files(box, sub='new'):
    folder = box / sub
    return sorted(folder.iterdir()) if folder.exists() else []


def stored_body(raw: bytes, newline: bytes) -> bytes:
    return raw[raw.index(newline * 2) + len(newline * 2):]


# -- Maildir ----------------------------------------------------------------------

@pytest.mark.parametrize('spool', [False, True])
def test_maildir_stores_the_header_section_then_the_new_body(serve, tmp_path, spool):
    box = tmp_path / 'box'
    server = serve([MaildirDelivery(str(box)),
                    acting('replace_body', NEW_BODY, spool=spool, remove='X-Secret')])
    assert send(server) == {}
    [stored] = files(box)
    raw = stored.read_bytes()
    assert b'\r' not in raw                         # Maildir stores LF
    assert b'Subject: original\n' in raw and b'X-Secret' not in raw
    assert stored_body(raw, b'\n') == b'a new body\nof two lines\n'


def test_maildir_replacement_from_a_file_is_read_from_where_it_stands(serve, tmp_path):
    box = tmp_path / 'box'
    replacement = io.BytesIO(b'SKIPPED' + NEW_BODY)
    replacement.seek(7)
    server = serve([MaildirDelivery(str(box)), acting('replace_body', replacement)])
    assert send(server) == {}
    [stored] = files(box)
    assert stored_body(stored.read_bytes(), b'\n') == b'a new body\nof two lines\n'
    assert replacement.tell() == 7                  # put back: the next reader gets the same


def test_a_message_without_an_empty_line_gets_one_before_the_new_body(serve, tmp_path):
    box = tmp_path / 'box'
    server = serve([MaildirDelivery(str(box)), acting('replace_body', NEW_BODY)])
    assert send(server, b'Subject: only a header\r\n') == {}
    [stored] = files(box)
    assert stored.read_bytes().endswith(b'Subject: only a header\n\na new body\nof two lines\n')


def test_a_large_replacement_file_streams_into_the_maildir(serve, tmp_path):
    box = tmp_path / 'box'
    big = tmp_path / 'big'
    line = b'x' * 98 + b'\r\n'
    with big.open('wb') as out:
        for _ in range(200):
            out.write(line * 1000)                  # 20 MB in all
    with big.open('rb') as replacement:
        server = serve([MaildirDelivery(str(box)), acting('replace_body', replacement)])
        tracemalloc.start()
        try:
            assert send(server) == {}
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    [stored] = files(box)
    assert stored.stat().st_size > 19_800_000
    assert stored_body(stored.read_bytes(), b'\n') == b'x' * 98 + b'\n' + \
        (b'x' * 98 + b'\n') * 199_999
    assert peak < 8 << 20, f'{peak} bytes at the peak: the body was held whole'


def test_maildir_drops_with_250_stores_nothing_and_says_why(logged, tmp_path):  # noqa: F811
    box = tmp_path / 'box'
    server, kept = logged([MaildirDelivery(str(box)), acting('drop', 'spam score 99')])
    assert send(server, rcpts=('bob@mx.test', 'eve@mx.test')) == {}
    lines = kept.wait('delivery', 2)
    assert files(box) == [] and files(box, 'tmp') == []
    assert [(r.rcpt, r.status, r.reason) for r in lines] == [
        (rcpt, 'discarded', 'discarded: spam score 99') for rcpt in ('bob@mx.test', 'eve@mx.test')]
    assert 'relay=maildir, status=discarded (discarded: spam score 99)' in lines[0].getMessage()


def test_a_dropped_message_over_the_size_limit_still_gets_552(serve, tmp_path):
    box = tmp_path / 'box'
    server = serve([MaildirDelivery(str(box)), acting('drop')], size=1000)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo()
        del smtp.esmtp_features['size']     # no SIZE=: the body itself is too big
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail('a@b.example', ['bob@mx.test'], MESSAGE + b'y' * 2000 + b'\r\n')
    assert refused.value.smtp_code == 552
    assert files(box) == []


def test_maildir_quarantines_into_the_quarantine_folder(logged, tmp_path):  # noqa: F811
    box = tmp_path / 'box'
    server, kept = logged([MaildirDelivery(str(box)), acting('quarantine', 'virus found')])
    assert send(server) == {}
    [line] = kept.wait('delivery')
    assert files(box) == []
    [held] = files(box / '.Quarantine')
    raw = held.read_bytes()
    assert raw.startswith(b'Return-Path: <a@b.example>\nX-Quarantine-Reason: virus found\n')
    assert raw.endswith(b'\n\nthe original body\n')
    assert (line.status, line.reason) == ('quarantined', f'{box}/.Quarantine/new/{held.name}')


def test_maildir_quarantines_into_the_maildir_given(serve, tmp_path):
    box, held = tmp_path / 'box', tmp_path / 'held'
    server = serve([MaildirDelivery(str(box), quarantine=str(held)),
                    acting('quarantine', 'look at it')])
    assert send(server, rcpts=('bob@mx.test', 'eve@mx.test')) == {}
    assert files(box) == [] and not (box / '.Quarantine').exists()
    [one] = files(held)                             # one copy for both recipients
    assert f'{QUARANTINE_FIELD}: look at it\n'.encode() in one.read_bytes()


def test_an_ordinary_message_still_goes_to_new(serve, tmp_path):
    box = tmp_path / 'box'
    server = serve([MaildirDelivery(str(box))])
    assert send(server) == {}
    [stored] = files(box)
    assert stored_body(stored.read_bytes(), b'\n') == b'the original body\n'
    assert not (box / '.Quarantine').exists()


# -- relay ------------------------------------------------------------------------

def relay_to(serve, sink, *middleware, **kwargs):
    relay = RelayDelivery('127.0.0.1', sink.address[1], **kwargs)
    return serve(middleware=[relay, *middleware], on_close=relay.session_closed)


@pytest.mark.parametrize('spool', [False, True])
def test_relay_passes_the_header_section_then_the_new_body(serve, upstream, spool):  # noqa: F811
    sink = upstream()
    server = relay_to(serve, sink, acting('replace_body', NEW_BODY, spool=spool,
                                          remove='X-Secret'))
    assert send(server) == {}
    [msg] = sink.messages
    assert b'Subject: original\r\n' in msg.raw and b'X-Secret' not in msg.raw
    assert stored_body(msg.raw, b'\r\n') == NEW_BODY


def test_relay_drops_with_250_and_relays_nothing(logged, upstream):  # noqa: F811
    sink = upstream()
    relay = RelayDelivery('127.0.0.1', sink.address[1])
    server, kept = logged([relay, acting('drop', 'by a filter', only='bob@mx.test')], on_close=relay.session_closed)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        assert smtp.sendmail('a@b.example', ['bob@mx.test'], MESSAGE) == {}
        assert smtp.sendmail('a@b.example', ['eve@mx.test'], b'Subject: next\r\n\r\nok\r\n') == {}
    [line] = [r for r in kept.wait('delivery', 2) if r.status == 'discarded']
    assert (line.rcpt, line.reason) == ('bob@mx.test', 'discarded: by a filter')
    # the upstream transaction was reset: the next message went through alone
    assert [m.envelope.rcpt_to[0].address for m in sink.messages] == ['eve@mx.test']


def test_relay_refuses_a_quarantined_message_without_a_quarantine(serve, upstream):  # noqa: F811
    sink = upstream()
    server = relay_to(serve, sink, acting('quarantine', 'suspicious'))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b'4.7.1')
    assert sink.messages == []


def test_relay_holds_a_quarantined_message_in_its_quarantine(serve, upstream, tmp_path):  # noqa: F811
    sink = upstream()
    held = tmp_path / 'held'
    server = relay_to(serve, sink, acting('quarantine', 'suspicious'), quarantine=str(held))
    assert send(server) == {}
    assert sink.messages == []
    [one] = files(held)
    assert b'X-Quarantine-Reason: suspicious\n' in one.read_bytes()


# -- callable ---------------------------------------------------------------------

class Kept:
    def __init__(self):
        self.calls = []

    def __call__(self, session, envelope, body):
        self.calls.append((envelope.quarantined, body.read()))


def test_callable_gets_the_header_section_then_the_new_body(serve):
    kept = Kept()
    server = serve([CallableDelivery(kept), acting('replace_body', NEW_BODY, remove='X-Secret')])
    assert send(server) == {}
    [(held, body)] = kept.calls
    assert held is None and b'X-Secret' not in body
    assert stored_body(body, b'\r\n') == NEW_BODY


def test_callable_is_not_called_for_a_dropped_message(serve):
    kept = Kept()
    server = serve([CallableDelivery(kept), acting('drop')])
    assert send(server) == {}
    assert kept.calls == []


def test_callable_gets_a_quarantined_message_marked(serve):
    kept = Kept()
    server = serve([CallableDelivery(kept), acting('quarantine', 'have a look')])
    assert send(server) == {}
    [(held, body)] = kept.calls
    assert held == 'have a look'
    assert body.startswith(b'X-Quarantine-Reason: have a look\r\nReceived: ')
