"""DATA: streaming, transparency, limits, pipelining and LMTP replies."""
import smtplib
import threading
import time
import tracemalloc

import pytest

from smtp_stack import MessageRefused, SmtpError
from smtp_stack.testing import MailSink

from conftest import WAIT


def start_transaction(c, recipients=('c@d.example',)):
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    for rcpt in recipients:
        c.expect(250, f'RCPT TO:<{rcpt}>')
    c.expect(354, 'DATA')


def body_collector(bodies):
    """Appends each body read, or the MessageRefused reading it raised (re-raised)."""
    def collect(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                bodies.append(ctx.session.envelope.data_stream.read())
            except MessageRefused as exc:
                bodies.append(exc)
                raise
    return collect


@pytest.mark.parametrize('sent, body', [
    (b'.\r\n', b''),
    (b'..\r\n.\r\n', b'.\r\n'),
    (b'...\r\n.\r\n', b'..\r\n'),
    (b'..leading\r\nmid.dle\r\n..\r\n.\r\n', b'.leading\r\nmid.dle\r\n.\r\n'),
    (b'a\r\n\r\n.\r\n', b'a\r\n\r\n'),
    (b'no final newline\r\n.\r\n', b'no final newline\r\n'),
    (b'x\r\n. \r\n.\r\n', b'x\r\n \r\n'),
])
def test_dot_unstuffing(serve, client, sent, body):
    bodies = []
    c = client(serve(middleware=[body_collector(bodies)]))
    start_transaction(c)
    c.send(sent)
    assert c.reply()[0] == 250
    assert bodies == [body]


def test_body_split_into_single_bytes(serve, client):
    bodies = []
    c = client(serve(middleware=[body_collector(bodies)]))
    start_transaction(c)
    for byte in b'..a\r\n.b\r\n.\r\n':
        c.send(bytes([byte]))
    assert c.reply()[0] == 250
    assert bodies == [b'.a\r\nb\r\n']


@pytest.mark.parametrize('sent', [
    b'a\n.\nMAIL FROM:<x@y.example>\r\n.\r\n',
    b'a\r.\rRSET\r\n.\r\n',
    b'a\n.\r\nRSET\r\n.\r\n',
    b'a\r\n.\nRSET\r\n.\r\n',
])
def test_smuggling_forms_never_end_data_and_are_refused(serve, client, sent):
    bodies = []
    c = client(serve(middleware=[body_collector(bodies)]))
    start_transaction(c)
    c.send(sent)
    assert c.reply() == (554, '5.6.0 Error: bare <CR> or <LF> in message content')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')    # exactly one reply: no second message
    assert len(bodies) == 1 and isinstance(bodies[0], MessageRefused)
    assert bodies[0].reply == (554, 'Error: bare <CR> or <LF> in message content', '5.6.0')


def test_bare_newlines_normalized_when_asked(serve, client):
    bodies = []
    c = client(serve(bare_newline='normalize', middleware=[body_collector(bodies)]))
    start_transaction(c)
    c.send(b'one\ntwo\rthree\r\n.\r\n')
    assert c.reply()[0] == 250
    assert bodies == [b'one\r\ntwo\r\nthree\r\n']


def test_stream_is_readable_while_the_client_still_sends(serve, client):
    """The middleware gets the first chunk before the client sent the last."""
    first_chunk = threading.Event()
    got = []

    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            stream = ctx.data_stream
            got.append(stream.readline())
            first_chunk.set()
            got.append(stream.read())
    c = client(serve(middleware=[reader]))
    start_transaction(c)
    c.send(b'first line\r\n')
    assert first_chunk.wait(WAIT), 'middleware saw nothing before the end of data'
    c.send(b'last line\r\n.\r\n')
    assert c.reply()[0] == 250
    assert got == [b'first line\r\n', b'last line\r\n']


def test_stream_file_api(serve, client):
    results = {}

    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            stream = ctx.data_stream
            results['read4'] = stream.read(4)
            buf = bytearray(3)
            results['readinto'] = (stream.readinto(buf), bytes(buf))
            results['lines'] = list(stream)
            results['size'] = (stream.bytes_read, stream.size_exceeded)
    c = client(serve(middleware=[reader]))
    start_transaction(c)
    c.send(b'abcdefg\r\nline2\r\n.\r\n')
    assert c.reply()[0] == 250
    assert results == {'read4': b'abcd', 'readinto': (3, b'efg'),
                       'lines': [b'\r\n', b'line2\r\n'], 'size': (16, False)}


def test_unread_body_is_drained_and_the_session_goes_on(serve, client):
    c = client(serve())
    start_transaction(c)
    c.send(b'x' * 100000 + b'\r\n.\r\n')
    assert c.reply()[0] == 250
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_size_limit_gets_552_whatever_middleware_said(serve, client):
    seen = []

    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            with pytest.raises(MessageRefused) as refused:
                ctx.data_stream.read()
            ctx.send(250, 'stored, I promise')
            seen.append((refused.value.code, refused.value.enhanced,
                         ctx.data_stream.refused is refused.value, ctx.data_stream.size_exceeded,
                         ctx.data_stream.bytes_read > 1000))
    c = client(serve(size=1000, middleware=[reader]))
    start_transaction(c)
    c.send(b'y' * 5000 + b'\r\n.\r\n')
    assert c.reply() == (552, '5.3.4 Error: message exceeds fixed maximum message size')
    assert seen == [(552, '5.3.4', True, True, True)]
    c.expect(250, 'MAIL FROM:<a@b.example>')    # the envelope was reset


def test_message_exactly_at_the_limit_is_accepted(serve, client):
    c = client(serve(size=1002))
    start_transaction(c)
    c.send(b'z' * 1000 + b'\r\n.\r\n')
    assert c.reply()[0] == 250


def test_pipelining_in_a_single_write(serve, client):
    bodies = []
    c = client(serve(middleware=[body_collector(bodies)]))
    c.expect(250, 'EHLO x')
    c.send(b'MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\n'
           b'DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<g@h.example>\r\nRSET\r\nQUIT\r\n')
    codes = [c.reply()[0] for _ in range(8)]
    assert codes == [250, 250, 250, 354, 250, 250, 250, 221]
    assert bodies == [b'Subject: x\r\n\r\nbody\r\n']


def test_pipelined_replies_are_flushed_together(serve):
    """Replies to a pipelined group leave in one write, not one per reply."""
    server = serve()
    import socket
    sock = socket.create_connection(server.address, timeout=WAIT)
    try:
        sock.recv(1000)
        sock.sendall(b'NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n')
        data = b''
        deadline = time.monotonic() + WAIT
        while data.count(b'\r\n') < 5 and time.monotonic() < deadline:
            chunk = sock.recv(1000)
            data += chunk
            if data.count(b'\r\n') < 5:
                # a second segment is only legitimate if the first read
                # raced the server's single send
                assert data.count(b'\r\n') == 0
        assert data == b'250 2.0.0 OK\r\n' * 5
    finally:
        sock.close()


def test_lmtp_one_reply_per_recipient(serve, client):
    def per_recipient(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()
            ctx.send([(250 if not r.address.startswith('full') else 452,
                       f'{r.address} {"ok" if not r.address.startswith("full") else "mailbox full"}')
                      for r in ctx.session.envelope.rcpt_to])
    c = client(serve(lmtp=True, middleware=[per_recipient]))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    for rcpt in ('one@d.example', 'full@d.example', 'two@d.example'):
        c.expect(250, f'RCPT TO:<{rcpt}>')
    c.expect(354, 'DATA')
    c.send(b'hi\r\n.\r\n')
    assert [c.reply() for _ in range(3)] == [
        (250, '2.0.0 one@d.example ok'), (452, '4.3.1 full@d.example mailbox full'),
        (250, '2.0.0 two@d.example ok')]
    assert c.cmd('NOOP')[0] == 250


def test_lmtp_single_reply_is_repeated_per_recipient(serve, client):
    c = client(serve(lmtp=True))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<one@d.example>')
    c.expect(250, 'RCPT TO:<two@d.example>')
    c.expect(354, 'DATA')
    c.send(b'hi\r\n.\r\n')
    assert [c.reply()[0] for _ in range(2)] == [250, 250]


def test_client_vanishing_mid_data_raises_in_the_reader(serve, client):
    from smtp_stack import ClientDisconnected
    outcome = []
    done = threading.Event()

    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                ctx.data_stream.read()
                outcome.append('read')
            except ClientDisconnected as exc:
                outcome.append(type(exc).__name__)
            finally:
                done.set()
    c = client(serve(middleware=[reader]))
    start_transaction(c)
    c.send(b'partial body\r\n')
    c.close()
    assert done.wait(WAIT)
    assert outcome == ['ClientDisconnected']


def test_middleware_error_after_reading_part_of_the_body(serve, client):
    def picky(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            if b'reject-me' in ctx.data_stream.readline():
                raise SmtpError(550, 'Content refused', '5.7.1')
    c = client(serve(middleware=[picky]))
    start_transaction(c)
    c.send(b'reject-me\r\nmore\r\nand more\r\n.\r\n')
    assert c.reply() == (550, '5.7.1 Content refused')
    assert c.cmd('NOOP')[0] == 250


def test_200mb_message_keeps_memory_bounded(serve):
    """The body streams through: peak traced memory grows < 32 MB for 200 MB
    read by a middleware as it arrives."""
    received = {}

    def count(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            total = 0
            for chunk in iter(lambda: ctx.data_stream.read(65536), b''):
                total += len(chunk)
            received['bytes'] = total
    size = 200 * 1024 * 1024
    line = b'x' * 998 + b'\r\n'
    block = line * 1024                      # 1 MB of proper lines
    tracemalloc.start()
    try:
        server = serve(middleware=[count])
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        import socket
        sock = socket.create_connection(server.address, timeout=60)
        f = sock.makefile('rb')
        f.readline()
        sock.sendall(b'EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n')
        line = f.readline()
        while line[:4] != b'354 ':
            assert line[:1] == b'2', line
            line = f.readline()
        for _ in range(size // len(block)):
            sock.sendall(block)
        sock.sendall(b'.\r\n')
        final = f.readline()
        peak = tracemalloc.get_traced_memory()[1]
        sock.close()
    finally:
        tracemalloc.stop()
    assert final.startswith(b'250'), final
    assert received['bytes'] == (size // len(block)) * len(block)
    assert peak - baseline < 32 * 1024 * 1024, f'peak grew by {(peak - baseline) / 2**20:.1f} MB'


def test_mailsink_receives_smtplib_mail():
    with MailSink() as sink:
        with smtplib.SMTP(*sink.address, timeout=WAIT) as smtp:
            smtp.sendmail('a@b.example', ['c@d.example'],
                          b'Subject: hello\r\nFrom: a@b.example\r\n\r\nbody text\r\n')
        [message] = sink.wait_for(1)
    assert message['Subject'] == 'hello'
    assert message.get_content() == 'body text\n'
    assert message.envelope.mail_from.address == 'a@b.example'
    assert [r.address for r in message.envelope.rcpt_to] == ['c@d.example']
