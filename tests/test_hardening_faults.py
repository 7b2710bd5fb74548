"""Faults over real sockets: user code that raises, clients that vanish
mid-DATA, stop() under load. Each test is named after the fault it pins."""
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from smtp_stack import LogLevels, SmtpServer
from smtp_stack.testing import ServerThread

from conftest import WAIT, RawClient, wait_until
from hardening_helpers import Recorder, rst_close, start_transaction


# --- faults in user code ----------------------------------------------------------

def test_middleware_raising_on_every_command_never_kills_the_server(serve, client):
    def broken(ctx, next):
        if ctx.command_name != 'QUIT':
            raise RuntimeError('bug in user code')
        next()
    server = serve(middleware=[broken])
    for _ in range(3):
        c = client(server)
        for line in ('EHLO x', 'MAIL FROM:<a@b.example>', 'NOOP', 'BOGUS', 'DATA'):
            assert c.cmd(line) == (451, '4.3.0 Error: local error in processing')
        assert c.cmd('QUIT')[0] == 221


def test_middleware_raising_after_reading_part_of_the_body(serve, client):
    def broken(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read(3)
            raise ValueError('parser crashed')
    rec = Recorder()
    c = client(serve(middleware=[rec, broken]))
    start_transaction(c)
    c.send(b'line one\r\nline two\r\n.\r\n')
    assert c.reply() == (451, '4.3.0 Error: local error in processing')
    assert rec.delivered == []
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


@pytest.mark.parametrize('hook, line, expected', [
    ('on_connect', None, (421, '4.3.0 Error: internal server error, closing connection')),
    ('on_mail_from', 'MAIL FROM:<a@b.example>', (421, '4.3.0 Error: internal server error, closing connection')),
    ('on_rcpt_to', 'RCPT TO:<c@d.example>', (421, '4.3.0 Error: internal server error, closing connection')),
    ('on_data', 'DATA', (421, '4.3.0 Error: internal server error, closing connection')),
    ('on_auth', 'AUTH PLAIN AHVzZXIAcHc=', (421, '4.3.0 Error: internal server error, closing connection')),
])
def test_a_hook_that_raises_closes_only_its_session(serve, client, hook, line, expected):
    def boom(*args):
        raise RuntimeError('bug in a hook')
    server = serve(allow_insecure_auth=True, **{hook: boom})
    c = client(server, greeting=None)
    if line is None:
        assert c.reply() == expected
    else:
        c.expect(220)
        c.expect(250, 'EHLO x')
        if hook in ('on_rcpt_to', 'on_data'):
            c.expect(250, 'MAIL FROM:<a@b.example>')
        if hook == 'on_data':
            c.expect(250, 'RCPT TO:<c@d.example>')
        assert c.cmd(line) == expected
    assert c.closed()
    if hook != 'on_connect':
        other = client(server)
        assert other.cmd('NOOP') == (250, '2.0.0 OK')


def test_on_close_on_socket_and_error_listeners_that_raise_are_contained(serve, client):
    calls = []

    def bad_close(session):
        calls.append('close')
        raise RuntimeError('on_close bug')

    def bad_socket(sock, address):
        calls.append('socket')
        if len(calls) == 1:
            raise RuntimeError('on_socket bug')

    def broken(ctx, next):
        raise KeyError('x')
    server = serve(on_close=bad_close, on_socket=bad_socket, middleware=[broken])
    server.on('error', lambda exc: 1 / 0)
    first = RawClient(server.address)
    assert first.closed() and first.buf == b''       # on_socket raised: closed silently
    first.close()
    c = client(server)
    assert c.cmd('NOOP')[0] == 451                    # the error listener's bug is swallowed
    c.close()
    assert wait_until(lambda: 'close' in calls)
    assert client(server).cmd('NOOP')[0] == 451       # and the server still serves


def run_child(script: str) -> list:
    """Run `script` in a fresh interpreter (beside conftest.py); its words.

    Faults that could escape into the server's hub are tested in a child
    process: a traceback printed by a dying server thread races pytest's own
    reporting (CPython 3.11's traceback module calls ast.parse), and a dead
    hub would make stop() wait forever.
    """
    result = subprocess.run([sys.executable, '-c', CHILD_PRELUDE + script],
                            cwd=os.path.dirname(os.path.abspath(__file__)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


CHILD_PRELUDE = """
import threading
import gevent
from smtp_stack import LogLevels, SmtpServer
from smtp_stack.testing import ServerThread
from conftest import RawClient

def serve_with(middleware):
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_level=LogLevels.SILENT)
    server.use(middleware)
    return server, ServerThread(server).start()

def say(*words):
    print(*words, flush=True)

def talk(server, *lines):
    try:
        c = RawClient(server.address, timeout=1)
        say(c.reply()[0])
        for line in lines:
            say(c.cmd(line)[0])
        c.close()
    except Exception as exc:
        say(type(exc).__name__)

def stop(runner):
    stopper = threading.Thread(target=runner.stop, args=(1,), daemon=True)
    stopper.start()
    stopper.join(2)
    say('hangs' if stopper.is_alive() else 'stopped')
"""


def test_middleware_raising_gevent_timeout_gets_451():
    """gevent.Timeout is a BaseException: escaping a middleware it once
    dropped the connection without a reply."""
    assert run_child("""
def slow_backend(ctx, next):
    if ctx.command_name == 'NOOP':
        raise gevent.Timeout()
    next()
server, runner = serve_with(slow_backend)
talk(server, 'NOOP', 'RSET')
stop(runner)
""") == ['220', '451', '250', 'stopped']


def test_middleware_calling_sys_exit_never_kills_the_server():
    """A SystemExit from user code once killed the server thread, after which
    stop() from another thread waited forever."""
    assert run_child("""
def exits(ctx, next):
    if ctx.command_name == 'VRFY':
        raise SystemExit(1)
    next()
server, runner = serve_with(exits)
talk(server, 'VRFY x')
talk(server, 'NOOP')
stop(runner)
""") == ['220', '421', '220', '250', 'stopped']


# --- a client vanishing mid-DATA -----------------------------------------------------

@pytest.mark.parametrize('how', ['fin', 'rst'])
@pytest.mark.parametrize('reader', [True, False])
def test_client_vanishing_mid_data_delivers_nothing(serve, client, how, reader):
    rec = Recorder()
    finished = threading.Event()
    server = serve(middleware=[rec] if reader else [], on_close=lambda s: finished.set())
    c = client(server)
    start_transaction(c)
    c.send(b'Subject: cut\r\n\r\nhalf of the body\r\n.')   # even a dot is not the end
    if how == 'rst':
        rst_close(c.sock)
    else:
        c.close()
    assert finished.wait(WAIT)
    assert rec.delivered == []
    if reader and how == 'fin':
        assert rec.outcomes == ['ClientDisconnected']
    other = client(server)
    assert other.cmd('NOOP') == (250, '2.0.0 OK')


def test_client_reset_mid_data_raises_client_disconnected_in_the_reader(serve, client):
    """A TCP reset once reached the reader as a raw ConnectionResetError and
    was logged as a middleware failure (and by the deliveries as a disk error)."""
    rec = Recorder()
    errors = []
    server = serve(middleware=[rec])
    server.on('error', errors.append)
    c = client(server)
    start_transaction(c)
    c.send(b'Subject: cut\r\n\r\nhalf of the body\r\n')
    assert wait_until(lambda: server.engines and server.engines[0].transport.pending == 0)
    rst_close(c.sock)
    assert wait_until(lambda: server.connections == 0)
    assert rec.outcomes == ['ClientDisconnected']
    assert errors == []


def test_client_vanishing_mid_data_with_mailsink_delivers_nothing():
    from smtp_stack.testing import MailSink
    with MailSink() as sink:
        c = RawClient(sink.address)
        c.expect(220)
        start_transaction(c)
        c.send(b'Subject: cut\r\n\r\n' + b'x' * 100_000)
        c.close()
        with smtplib.SMTP(*sink.address, timeout=WAIT) as smtp:
            smtp.sendmail('a@b.example', ['c@d.example'], b'Subject: whole\r\n\r\nok\r\n')
        [message] = sink.wait_for(1)
        assert message['Subject'] == 'whole'
        assert wait_until(lambda: sink.server.connections == 0)
        assert len(sink.messages) == 1


# --- stop() under load -----------------------------------------------------------

def test_stop_during_load_finishes_within_close_timeout_and_loses_nothing():
    delivered = []

    def store(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            body = ctx.data_stream.read()
            if ctx.data_stream.acceptable and ctx.reply.code == 250:
                delivered.append(body)
    close_timeout = 1.0
    # max_junk_commands=0: the flooders must stay connected, blocked in sendall
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_level=LogLevels.SILENT,
                        close_timeout=close_timeout, max_junk_commands=0)
    server.use(store)
    runner = ServerThread(server).start()
    acknowledged = []
    stop_now = threading.Event()

    def sender(n):          # sends messages back to back until refused
        try:
            c = RawClient(server.address, timeout=WAIT)
            c.expect(220)
            c.expect(250, 'EHLO x')
            for i in range(10_000):
                if c.cmd('MAIL FROM:<a@b.example>')[0] != 250:
                    break
                if c.cmd('RCPT TO:<c@d.example>')[0] != 250 or c.cmd('DATA')[0] != 354:
                    break
                body = f'sender {n} message {i}\r\n'.encode()
                c.send(body + b'.\r\n')
                if c.reply()[0] == 250:
                    acknowledged.append(body)
        except Exception:       # 421, a reset, a closed socket: the stop reached us
            pass

    def slow_data(n):       # stuck in DATA, trickling
        try:
            c = RawClient(server.address, timeout=WAIT)
            c.expect(220)
            start_transaction(c)
            while not stop_now.is_set():
                c.send(b'slow line\r\n')
                stop_now.wait(0.05)
            c.reply()
        except Exception:
            pass

    def flooder():          # pipelines without reading: the server blocks in sendall
        c = RawClient(server.address, timeout=0.5)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            while not stop_now.is_set():
                c.sock.sendall(b'HELP\r\n' * 5000)
        except OSError:
            stop_now.wait(WAIT)     # stay connected, never reading
        finally:
            c.close()

    idle = [RawClient(server.address) for _ in range(10)]
    threads = ([threading.Thread(target=sender, args=(n,)) for n in range(8)]
               + [threading.Thread(target=slow_data, args=(n,)) for n in range(4)]
               + [threading.Thread(target=flooder) for _ in range(2)])
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(acknowledged) >= 20)
        assert wait_until(lambda: server.connections >= 24)
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
    finally:
        stop_now.set()
        for t in threads:
            t.join(WAIT)
        for c in idle:
            c.close()
        runner.stop()
    assert elapsed < close_timeout + 2.5, elapsed
    assert not any(t.is_alive() for t in threads)
    assert server.connections == 0 and len(server.runners) == 0
    assert set(acknowledged) <= set(delivered)        # a 250 always means delivered
    assert len(delivered) == len(set(delivered))


def test_stop_sends_421_to_a_session_stuck_reading_data():
    """The SessionShutdown thrown at close_timeout was once swallowed as a
    middleware failure; the socket was cut a second later without a reply."""
    delivered = []

    def store(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            body = ctx.data_stream.read()
            if ctx.data_stream.acceptable:
                delivered.append(body)
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_level=LogLevels.SILENT,
                        close_timeout=0.3)
    server.use(store)
    runner = ServerThread(server).start()
    c = RawClient(server.address)
    trickling = threading.Event()

    def trickle():
        while not trickling.is_set():
            try:
                c.send(b'still sending\r\n')
            except OSError:
                return
            trickling.wait(0.05)
    try:
        c.expect(220)
        start_transaction(c)
        sender = threading.Thread(target=trickle)
        sender.start()
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
        trickling.set()
        sender.join(WAIT)
        assert c.reply() == (421, '4.3.2 Error: server shutting down')
        assert elapsed < 0.3 + 0.5
        assert delivered == []
    finally:
        trickling.set()
        c.close()
        runner.stop()
