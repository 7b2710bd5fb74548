"""envelope.spool(): one body, several readers; memory bounded; nothing left behind."""
from __future__ import annotations

import hashlib
import os
import smtplib
import socket
import tempfile
import threading
import tracemalloc

import gevent
import pytest

from smtp_stack import MessageRefused
from smtp_stack.delivery import MaildirDelivery
from smtp_stack.spool import MEMORY_LIMIT, Spool

from conftest import WAIT, RawClient, wait_until


# -- the Spool itself ------------------------------------------------------------

@pytest.mark.parametrize('size', [0, 1, MEMORY_LIMIT, MEMORY_LIMIT + 1, 3 * MEMORY_LIMIT + 7])
def test_spool_gives_every_reader_the_whole_body(size):
    data = os.urandom(size)
    spool = Spool()
    for start in range(0, size, 65536):
        spool.write(data[start:start + 65536])
    spool.finish()
    assert spool.size == size
    assert spool.in_memory == (size <= MEMORY_LIMIT)
    first, second = spool.open(), spool.open()
    assert first.read(10) == data[:10]
    assert second.read() == data        # readers do not move each other
    assert first.read() == data[10:]
    first.seek(0)
    assert first.readline() == (data[:data.find(b'\n') + 1] if b'\n' in data else data)
    first.close(), second.close()
    assert spool.read() == data
    spool.close()
    assert spool.closed
    with pytest.raises(ValueError):
        spool.open()


def temp_files() -> set:
    """The files in the temporary directory this process holds open
    (anonymous ones too: Linux shows them as '/tmp/#inode (deleted)')."""
    tmp = os.path.realpath(tempfile.gettempdir())
    found = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            continue
        if target.startswith(tmp + '/'):
            found.add(target)
    return found


def test_a_spool_beyond_memory_uses_one_temporary_file_that_close_removes():
    before = temp_files()
    spool = Spool()
    spool.write(b'a' * (MEMORY_LIMIT + 1))
    spool.finish()
    assert not spool.in_memory and len(temp_files() - before) == 1
    reader = spool.open()
    spool.close()
    assert reader.read(3) == b'aaa'     # a reader already open stays readable ...
    reader.close()
    assert temp_files() - before == set()   # ... and then nothing is left


def test_a_spool_cannot_be_written_once_complete():
    spool = Spool().finish()
    with pytest.raises(ValueError):
        spool.write(b'x')


# -- over real sockets -------------------------------------------------------------

class Spooler:
    """Middleware: spool the body, read it twice, note what it saw."""

    def __init__(self):
        self.digests = []
        self.sizes = []
        self.on_disk = []
        self.errors = []
        self.done = threading.Event()

    def __call__(self, ctx, next):
        next()
        if ctx.command_name not in ('DATA', 'BDAT') or ctx.data_stream is None:
            return
        try:
            spool = ctx.session.envelope.spool()
        except BaseException as exc:
            self.errors.append(exc)
            self.done.set()
            raise
        assert ctx.session.envelope.spool() is spool     # the same one later
        for _ in range(2):
            digest = hashlib.sha256()
            with spool.open() as f:
                for block in iter(lambda: f.read(65536), b''):
                    digest.update(block)
            self.digests.append(digest.hexdigest())
        self.sizes.append(spool.size)
        self.on_disk.append(not spool.in_memory)
        self.done.set()


def start(c, rcpt='c@d.example'):
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, f'RCPT TO:<{rcpt}>')


def test_spool_read_twice_equals_the_bytes_sent(serve):
    spooler = Spooler()
    server = serve(middleware=[spooler])
    body = b'Subject: twice\r\n\r\n' + b''.join(b'line %d\r\n' % i for i in range(5000))
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], body)
    want = hashlib.sha256(body).hexdigest()
    assert spooler.digests == [want, want] and spooler.sizes == [len(body)]


def test_a_spooled_body_still_reaches_a_delivery_and_a_later_reader(serve, tmp_path):
    """The delivery reads the spool; a README-style reader inside it still
    gets the whole body from data_stream (it reads from the spool too)."""
    late = []

    def late_reader(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            late.append(ctx.data_stream.read())

    spooler = Spooler()
    maildir = tmp_path / 'Maildir'
    server = serve(middleware=[MaildirDelivery(str(maildir)), late_reader, spooler])
    body = b'Subject: composed\r\n\r\n' + b'x' * (MEMORY_LIMIT + 100) + b'\r\n'
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], body)
    assert late == [body]
    [name] = os.listdir(maildir / 'new')
    stored = (maildir / 'new' / name).read_bytes()
    assert stored.endswith(body.replace(b'\r\n', b'\n'))
    assert spooler.on_disk == [True]


def test_spool_after_reading_the_stream_is_an_error_not_a_short_body(serve, client):
    errors = []

    def reads_then_spools(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read(3)
            try:
                ctx.session.envelope.spool()
            except RuntimeError as exc:
                errors.append(exc)
                raise

    c = client(serve(middleware=[reads_then_spools]))
    start(c)
    c.expect(354, 'DATA')
    c.send(b'Subject: x\r\n\r\nbody\r\n.\r\n')
    assert c.reply()[0] == 451
    assert len(errors) == 1


def test_spool_of_a_refused_body_raises_message_refused(serve, client):
    spooler = Spooler()
    c = client(serve(middleware=[spooler], size=10_000))
    start(c)
    before = temp_files()
    c.expect(354, 'DATA')
    c.send(b'x' * (MEMORY_LIMIT + 5) + b'\r\n.\r\n')
    assert c.reply()[0] == 552
    assert [type(e) for e in spooler.errors] == [MessageRefused]
    assert temp_files() - before == set()


def send_big(sock, total: int, block: bytes):
    sent = 0
    while sent < total:
        sock.sendall(block)
        sent += len(block)
    return sent


def test_a_50_mb_message_spools_to_disk_in_bounded_memory_and_leaves_no_file(serve):
    """tracemalloc peak growth under 32 MB for 50 MB; the temporary file is
    there while the middleware runs and gone after the reply."""
    spooler = Spooler()
    seen_files = []

    def watch(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            seen_files.append(len(temp_files() - baseline))

    server = serve(middleware=[watch, spooler])
    block = (b'y' * 1022 + b'\r\n') * 64        # 64 KiB of lines
    total = 50 * 1024 * 1024
    digest = hashlib.sha256()
    for _ in range(total // len(block)):
        digest.update(block)
    baseline = temp_files()
    c = RawClient(server.address, timeout=60)
    try:
        c.expect(220)
        start(c)
        c.expect(354, 'DATA')
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base_current, _ = tracemalloc.get_traced_memory()
            send_big(c.sock, total, block)
            c.send(b'.\r\n')
            assert c.reply()[0] == 250
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        c.close()
    assert peak - base_current < 32 * 1024 * 1024, f'peak grew {(peak - base_current) >> 20} MiB'
    assert spooler.sizes == [total] and spooler.on_disk == [True]
    assert spooler.digests == [digest.hexdigest()] * 2
    assert seen_files == [1]
    assert temp_files() - baseline == set()


def test_the_spool_is_removed_when_the_client_vanishes_mid_message(serve):
    started = threading.Event()

    def spools(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            started.set()
            ctx.session.envelope.spool()

    closed = threading.Event()
    server = serve(middleware=[spools], on_close=lambda session: closed.set())
    baseline = temp_files()
    c = RawClient(server.address)
    c.expect(220)
    start(c)
    c.expect(354, 'DATA')
    c.send(b'z' * (3 * MEMORY_LIMIT))       # on disk by now, and no end
    assert started.wait(WAIT)
    assert wait_until(lambda: len(temp_files() - baseline) == 1)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    assert closed.wait(WAIT)
    assert temp_files() - baseline == set()


def test_the_spool_is_removed_after_the_reply_while_the_session_goes_on(serve, client):
    kept = []

    def spools(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            kept.append(ctx.session.envelope.spool())

    c = client(serve(middleware=[spools]))
    baseline = temp_files()
    start(c)
    c.expect(354, 'DATA')
    c.send(b'w' * (2 * MEMORY_LIMIT) + b'\r\n.\r\n')
    c.expect(250)
    assert kept[0].closed and temp_files() - baseline == set()
    c.expect(250, 'RSET')


def test_bdat_then_rset_removes_the_spool(serve, client):
    errors = []

    def spools(ctx, next):
        next()
        if ctx.command_name == 'BDAT':
            try:
                ctx.session.envelope.spool()
            except MessageRefused as exc:
                errors.append(exc)
                raise

    c = client(serve(middleware=[spools]))
    baseline = temp_files()
    start(c)
    chunk = b'v' * (2 * MEMORY_LIMIT)
    c.send(b'BDAT %d\r\n' % len(chunk) + chunk)
    assert c.reply() == (250, f'2.0.0 {len(chunk)} octets received')
    assert c.cmd('RSET') == (250, '2.0.0 Flushed')
    assert [e.code for e in errors] == [554]
    assert temp_files() - baseline == set()


def test_server_stop_removes_an_open_spool(serve):
    spooled = threading.Event()

    def spools_and_waits(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.spool()
            spooled.set()
            gevent.sleep(WAIT)      # a slow check, still running when the server stops

    server = serve(middleware=[spools_and_waits], close_timeout=0.2)
    baseline = temp_files()
    c = RawClient(server.address)
    try:
        c.expect(220)
        start(c)
        c.expect(354, 'DATA')
        c.send(b'u' * (2 * MEMORY_LIMIT) + b'\r\n.\r\n')
        assert spooled.wait(WAIT)
        assert len(temp_files() - baseline) == 1
        server.stop(timeout=0.2)
        assert temp_files() - baseline == set()
    finally:
        c.close()
