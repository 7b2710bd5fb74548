"""Start, stop, timeouts and connection limits."""
import smtplib
import threading
import time

import gevent
import pytest

from smtp_stack import SmtpServer
from smtp_stack.testing import ServerThread

from conftest import WAIT, RawClient


def test_start_returns_at_once_with_port_0_and_context_manager():
    done = {}

    def run():
        with SmtpServer(name='mx.test', disable_reverse_lookup=True).start(0, '127.0.0.1') as s:
            done['address'] = s.address
            # a client greenlet in the same hub: start() did not block
            from gevent import socket
            sock = socket.create_connection(s.address, timeout=WAIT)
            done['greeting'] = sock.recv(100)
            sock.close()
        done['stopped'] = s.stopping
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert done['address'][0] == '127.0.0.1' and done['address'][1] > 0
    assert done['greeting'].startswith(b'220 mx.test ESMTP')
    assert done['stopped'] is True


def test_serve_forever_blocks_until_stop_from_another_thread():
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True)
    runner = ServerThread(server).start()
    assert runner._thread.is_alive()
    started = time.monotonic()
    server.stop()
    runner._thread.join(WAIT)
    assert not runner._thread.is_alive()
    assert time.monotonic() - started < 5


def test_serve_forever_needs_start():
    with pytest.raises(RuntimeError):
        SmtpServer(name='mx.test').serve_forever()


def test_stop_lets_a_session_in_data_finish_and_421s_idle_ones():
    delivered = []
    reading = threading.Event()

    def store(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            first = ctx.data_stream.readline()
            reading.set()
            delivered.append(first + ctx.data_stream.read())
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, close_timeout=WAIT)
    server.use(store)
    runner = ServerThread(server).start()
    idle = RawClient(server.address)
    idle.expect(220)
    busy = RawClient(server.address)
    busy.expect(220)
    busy.expect(250, 'EHLO x')
    busy.expect(250, 'MAIL FROM:<a@b.example>')
    busy.expect(250, 'RCPT TO:<c@d.example>')
    busy.expect(354, 'DATA')
    busy.send(b'first\r\n')
    assert reading.wait(WAIT)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert idle.reply()[0] == 421       # idle session: told at once
    assert idle.closed()
    busy.send(b'second\r\n.\r\n')       # the transaction in progress completes
    assert busy.reply() == (250, '2.0.0 OK: message queued')
    assert busy.reply()[0] == 421       # and then the session is closed
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert delivered == [b'first\r\nsecond\r\n']
    runner.stop()


def test_stop_after_close_timeout_421s_a_stuck_transaction():
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, close_timeout=0.2)
    runner = ServerThread(server).start()
    c = RawClient(server.address)
    c.expect(220)
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert c.reply()[0] == 421
    assert c.closed()
    runner.stop()


def test_idle_timeout_sends_421(serve, client):
    c = client(serve(socket_timeout=0.3))
    assert c.reply() == (421, '4.4.2 Error: timeout exceeded')
    assert c.closed()


def test_timeout_is_a_deadline_for_the_whole_line(serve, client):
    """A client dripping a command byte by byte cannot hold the session."""
    c = client(serve(socket_timeout=0.5))
    c.sock.settimeout(0.1)
    deadline = time.monotonic() + WAIT
    code = None
    while time.monotonic() < deadline:
        try:
            c.send(b'N')
        except OSError:
            break
        try:
            code = c.reply()[0]
            break
        except (TimeoutError, OSError):
            continue
    assert code == 421


def test_max_connections(serve, client):
    server = serve(max_connections=2)
    client(server)
    client(server)
    third = client(server, greeting=None)
    assert third.reply() == (421, '4.7.0 Error: too many connections')
    assert third.closed()


def test_max_connections_per_ip(serve, client):
    server = serve(max_connections_per_ip=1)
    first = client(server)
    second = client(server, greeting=None)
    assert second.reply()[0] == 421
    first.cmd('QUIT')
    assert first.closed()
    # the slot is free again once the first session ended
    deadline = time.monotonic() + WAIT
    while server.connections and time.monotonic() < deadline:
        gevent.sleep(0.01)
    client(server)


def test_max_errors_closes_the_session(serve, client):
    c = client(serve(max_errors=3))
    assert c.cmd('FOO')[0] == 500
    assert c.cmd('FOO')[0] == 500
    assert c.cmd('FOO')[0] == 500
    assert c.reply() == (421, '4.7.0 Error: too many errors')
    assert c.closed()


def test_logging_carries_the_session_id(serve, caplog):
    import logging
    from smtp_stack import LogLevels
    caplog.set_level(logging.DEBUG, logger='smtp_stack')
    server = serve(log_level=LogLevels.DEBUG)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.noop()
    records = [r for r in caplog.records if r.name == 'smtp_stack']
    lines = [r.getMessage() for r in records]
    assert any('connect from unknown[127.0.0.1]:' in line for line in lines)
    ids = {line.split(': ')[0] for line in lines}     # '<session id>: ...', as Postfix's queue ids
    assert len(ids) == 1 and {r.session for r in records} == ids


def test_log_level_silences(serve, caplog):
    import logging
    from smtp_stack import LogLevels
    caplog.set_level(logging.DEBUG, logger='smtp_stack')
    server = serve(log_level=LogLevels.ERROR)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.noop()
    assert not [r for r in caplog.records if r.name == 'smtp_stack']


def test_custom_log_backend_and_auth_secrets_masked(serve):
    import logging
    from smtp_stack import LogLevels
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    backend = logging.getLogger('custom-backend-test')
    backend.addHandler(Collect())
    backend.setLevel(logging.DEBUG)
    backend.propagate = False
    server = serve(log_level=LogLevels.DEBUG, log_backend=backend)
    c = RawClient(server.address)
    try:
        c.expect(220)
        c.cmd('AUTH PLAIN AHVzZXIAc2VjcmV0cGFzcw==')
        c.cmd('QUIT')
        c.closed()
    finally:
        c.close()
    assert any('C: AUTH PLAIN <hidden>' in r for r in records)
    assert not any('AHVzZXIAc2VjcmV0cGFzcw' in r for r in records)


def test_unknown_and_bad_options_fail_at_construction():
    with pytest.raises(TypeError):
        SmtpServer(colour='blue')
    with pytest.raises(ValueError):
        SmtpServer(socket_timeout=-1)
    with pytest.raises(ValueError):
        SmtpServer(use_proxy=['not-an-ip'])


# -- the listener's own address ----------------------------------------------------

@pytest.mark.parametrize('host, ask_the_socket', [('127.0.0.2', False), ('127.0.0.1', True)],
                         ids=['bound address', 'getsockname'])
def test_sessions_know_the_address_they_were_accepted_on(host, ask_the_socket):
    """A listener bound to one address gives it to every session; one that
    cannot (a wildcard) asks each socket."""
    seen = []
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True,
                        on_connect=lambda s: seen.append((s.local_address, s.local_port)))
    with ServerThread(server, host=host):
        listener = server.listeners[0]
        assert listener.local_address is not None
        if ask_the_socket:
            listener.local_address = None       # as for 0.0.0.0 or ::
        c = RawClient(server.address)
        c.expect(220)
        c.expect(221, 'QUIT')
        c.close()
    assert seen == [(host, server.address[1])]
