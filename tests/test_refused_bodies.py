"""A body the server refuses is never kept, by any reader (the body contract).

Every refusal the server makes on its own after 354 (bare LF, bare CR, a
line over max_line_length, a body over `size` sent without SIZE=, a BDAT
transfer abandoned by RSET) against every reader: a middleware written like
the README's `store`, one that spools, each built-in delivery, MailSink, and
an LMTP server. For each: the reply the client gets, what the middleware
saw, and that nothing is stored anywhere.
"""
from __future__ import annotations

import os
import threading

import pytest

from smtp_stack import MessageRefused, SmtpError
from smtp_stack.delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from smtp_stack.testing import MailSink

from conftest import RawClient

MAX_LINE = 200
SIZE = 4000


# -- the refusals, as raw client transactions ---------------------------------

def _data(body: bytes):
    return [b'DATA\r\n', body + b'\r\n.\r\n']


REFUSALS = {
    # name: (what the client sends after RCPT, [(code, text) per recipient])
    'bare LF': (_data(b'Subject: x\r\n\r\none\nsmuggled\r\n'),
                (554, '5.6.0 Error: bare <CR> or <LF> in message content')),
    'bare CR': (_data(b'Subject: x\r\n\r\none\rtwo\r\n'),
                (554, '5.6.0 Error: bare <CR> or <LF> in message content')),
    'line too long': (_data(b'Subject: x\r\n\r\n' + b'x' * (MAX_LINE + 1) + b'\r\n'),
                      (554, '5.6.0 Error: message line too long')),
    'size without SIZE=': (_data(b'Subject: x\r\n\r\n' + (b'y' * 70 + b'\r\n') * 100),
                           (552, '5.3.4 Error: message exceeds fixed maximum message size')),
    'BDAT then RSET': ([b'BDAT 20\r\n', b'Subject: x\r\n\r\nhalf\r\n', b'RSET\r\n'], None),
}
ABANDONED = (554, '5.6.0 Error: message transfer abandoned by the client')


def run_refusal(address, kind: str, rcpts=('c@d.example',), lmtp=False):
    """Send one refused message; the client's replies after RCPT."""
    sends, expected = REFUSALS[kind]
    c = RawClient(address)
    try:
        c.expect(220)
        c.expect(250, ('LHLO' if lmtp else 'EHLO') + ' client.example')
        c.expect(250, 'MAIL FROM:<a@b.example>')
        for rcpt in rcpts:
            c.expect(250, f'RCPT TO:<{rcpt}>')
        if kind == 'BDAT then RSET':
            c.send(sends[0] + sends[1])
            assert c.reply() == (250, '2.0.0 20 octets received')
            assert c.cmd('RSET') == (250, '2.0.0 Flushed')
            got = []
        else:
            assert c.cmd('DATA')[0] == 354
            c.send(sends[1])
            got = [c.reply() for _ in (rcpts if lmtp else (1,))]
        assert c.cmd('NOOP') == (250, '2.0.0 OK')     # the session goes on
        assert c.cmd('QUIT')[0] == 221
        return got, expected
    finally:
        c.close()


def expected_reply(kind):
    return REFUSALS[kind][1] or ABANDONED


# -- the readers -------------------------------------------------------------

class ReadmeStore:
    """The README's `store`, recording what it saw. It reads and keeps the
    body; it catches nothing (the exception is only noted on its way out)."""

    def __init__(self, spool=False):
        self.stored = []
        self.seen = []
        self.spool = spool
        self.done = threading.Event()

    def __call__(self, ctx, next):
        next()
        if ctx.command_name in ('DATA', 'BDAT') and ctx.session.envelope.data_stream:
            try:
                if self.spool:
                    body = ctx.session.envelope.spool().read()
                else:
                    body = ctx.session.envelope.data_stream.read()   # file-like, bytes
            except BaseException as exc:
                self.seen.append(exc)
                self.done.set()
                raise
            self.stored.append(body)
            self.done.set()


def maildir_files(path) -> list:
    return [f for sub in ('new', 'tmp', 'cur') for f in os.listdir(os.path.join(path, sub))]


@pytest.fixture
def reader(serve, tmp_path):
    """reader(name, **server_options) -> (server address, stored(), store)."""
    sinks = []

    def make(name, **options):
        options.setdefault('size', SIZE)
        options.setdefault('max_line_length', MAX_LINE)
        store = ReadmeStore(spool=name == 'spooling middleware')
        if name in ('README store', 'spooling middleware', 'LMTP'):
            server = serve(middleware=[store], **options)
            return server.address, lambda: store.stored, store
        if name == 'maildir':
            path = str(tmp_path / 'Maildir')
            server = serve(middleware=[MaildirDelivery(path)], **options)
            return server.address, lambda: maildir_files(path), store
        if name == 'relay':
            upstream = MailSink().start()
            sinks.append(upstream)
            seen = []
            upstream.server.use(_watch_data(seen))
            relay = RelayDelivery('127.0.0.1', upstream.address[1])
            server = serve(middleware=[relay], on_close=relay.session_closed, **options)
            return server.address, lambda: upstream.messages + seen, store
        if name == 'callable':
            calls = []
            delivery = CallableDelivery(lambda session, envelope, body: calls.append(body.read()))
            server = serve(middleware=[delivery], **options)
            return server.address, lambda: calls, store
        if name == 'MailSink':
            options.setdefault('name', 'mx.test')
            sink = MailSink(**options).start()
            sinks.append(sink)
            return sink.address, lambda: sink.messages, store
        raise AssertionError(name)

    yield make
    for sink in sinks:
        sink.stop()


def _watch_data(seen):
    """Upstream middleware noting any message that got a final reply."""
    def watch(ctx, next):
        next()
        if ctx.command_name == 'DATA' and ctx.data_stream is not None and ctx.data_stream.acceptable:
            seen.append(ctx.reply)
    return watch


READERS = ['README store', 'spooling middleware', 'maildir', 'relay', 'callable', 'MailSink']


@pytest.mark.parametrize('kind', list(REFUSALS))
@pytest.mark.parametrize('name', READERS)
def test_refused_body_is_stored_by_no_reader(reader, name, kind):
    address, stored, store = reader(name)
    got, _ = run_refusal(address, kind)
    if kind != 'BDAT then RSET':
        assert got == [expected_reply(kind)]
    assert stored() == []
    if name in ('README store', 'spooling middleware'):
        assert store.done.wait(5)
        [exc] = store.seen
        assert isinstance(exc, MessageRefused) and isinstance(exc, SmtpError)
        assert (exc.code, f'{exc.enhanced} {exc.message}') == expected_reply(kind)


@pytest.mark.parametrize('kind', [k for k in REFUSALS if k != 'BDAT then RSET'])
def test_lmtp_each_recipient_gets_the_refusal(reader, kind):
    address, stored, store = reader('LMTP', lmtp=True)
    got, _ = run_refusal(address, kind, rcpts=('a@d.example', 'b@d.example', 'c@d.example'),
                         lmtp=True)
    assert got == [expected_reply(kind)] * 3
    assert stored() == []
    assert store.done.wait(5)
    assert [type(e) for e in store.seen] == [MessageRefused]


def test_lmtp_bdat_abandoned_by_rset_stores_nothing(reader):
    address, stored, store = reader('LMTP', lmtp=True)
    run_refusal(address, 'BDAT then RSET', rcpts=('a@d.example', 'b@d.example'), lmtp=True)
    assert stored() == []
    assert store.done.wait(5)
    assert [e.code for e in store.seen] == [ABANDONED[0]]


def test_refusal_raises_again_on_every_later_read_and_the_reply_is_sent_once(serve, client):
    """Raised as soon as the server knows, again on each read; not logged or
    counted as a middleware failure (max_errors counts it once)."""
    seen = []
    errors = []

    def reads_three_times(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            stream = ctx.data_stream
            for read in (lambda: stream.read(5), stream.read, stream.readline, stream.read1,
                         lambda: stream.readinto(bytearray(10)), lambda: next_line(stream)):
                try:
                    read()
                except MessageRefused as exc:
                    seen.append(exc)
            assert stream.refused is seen[0]
            raise seen[0]

    server = serve(middleware=[reads_three_times], max_errors=2)
    server.on('error', errors.append)
    c = client(server)
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'hello\nworld\r\n.\r\n')
    assert c.reply() == (554, '5.6.0 Error: bare <CR> or <LF> in message content')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')   # one error so far: max_errors=2 not reached
    assert len(seen) == 6 and all(exc is seen[0] for exc in seen)
    assert errors == []


def next_line(stream):
    return next(iter(stream))


def test_a_middleware_that_swallows_the_refusal_still_cannot_get_250(serve, client):
    def swallow(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                ctx.data_stream.read()
            except MessageRefused:
                ctx.send(250, 'I liked it anyway')

    c = client(serve(middleware=[swallow], size=100))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'x' * 300 + b'\r\n.\r\n')
    assert c.reply() == (552, '5.3.4 Error: message exceeds fixed maximum message size')


def test_size_is_refused_as_soon_as_it_is_crossed_not_at_the_end(serve, client):
    """The reader gets MessageRefused while the client is still sending."""
    crossed = threading.Event()
    release = threading.Event()

    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                while ctx.data_stream.read(100):
                    pass
            except MessageRefused:
                crossed.set()
                raise

    c = client(serve(middleware=[reader], size=1000))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'z' * 70 + b'\r\n')
    c.send(b'z' * 2000 + b'\r\n')       # the body is over size; its end not yet sent
    assert crossed.wait(5)
    release.set()
    c.send(b'.\r\n')
    assert c.reply()[0] == 552


# -- SMTP smuggling: end-of-data look-alikes ---------------------------------------

SMUGGLED = (b'MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@d.example>\r\nDATA\r\n'
            b'From: ceo@d.example\r\nSubject: spoofed\r\n\r\nsmuggled\r\n')
LOOK_ALIKES = [b'\n.\n', b'\n.\r\n', b'\r\n.\n', b'\r.\r', b'\r.\r\n', b'\r\n.\r', b'\n.\r',
               b'\r.\n', b'\r\n.\r\r\n', b'\r\n\x00.\r\n', b'\r\n.\x00\r\n']


@pytest.mark.parametrize('fake_end', LOOK_ALIKES, ids=repr)
@pytest.mark.parametrize('name', READERS + ['LMTP'])
def test_smuggled_second_message_is_never_kept_nor_answered(reader, name, fake_end):
    lmtp = name == 'LMTP'
    address, stored, store = reader(name, lmtp=lmtp) if lmtp else reader(name)
    c = RawClient(address)
    try:
        c.expect(220)
        c.expect(250, ('LHLO' if lmtp else 'EHLO') + ' client.example')
        c.expect(250, 'MAIL FROM:<a@b.example>')
        c.expect(250, 'RCPT TO:<c@d.example>')
        c.expect(354, 'DATA')
        # One write: the look-alike, the smuggled transaction and message, the real end.
        c.send(b'Subject: hi\r\n\r\nbody' + fake_end + SMUGGLED + b'\r\n.\r\n')
        code, text = c.reply()
        # Exactly one reply for all of it: the next one answers our NOOP.
        assert c.cmd('NOOP') == (250, '2.0.0 OK')
    finally:
        c.close()
    kept = stored()
    if b'\n' not in fake_end.replace(b'\r\n', b'') and b'\r' not in fake_end.replace(b'\r\n', b''):
        # NUL beside the dot: no bare line end, so one ordinary message whose
        # body holds the would-be commands as text; never a second message.
        assert code == 250
        assert len(kept) == 1
    else:
        assert (code, text) == (554, '5.6.0 Error: bare <CR> or <LF> in message content')
        assert kept == []
