"""Limits over real sockets: errors and failed AUTHs, connections,
slowloris and idle clients, pre-greeting traffic, messages and junk per
connection. Each test is named after the attack it pins."""
import base64
import socket
import ssl
import time
import tracemalloc

import pytest

from conftest import WAIT, RawClient, wait_until
from hardening_helpers import Recorder, auth_server, drip, start_transaction


# --- error and AUTH failure limits ----------------------------------------------------

def test_max_errors_default_is_20_and_every_error_counts(serve, client):
    c = client(auth_server(serve, max_auth_failures=100))
    c.expect(250, 'EHLO x')
    c.expect(503, 'RCPT TO:<c@d.example>')                       # 5xx
    c.expect(535, 'AUTH PLAIN ' + base64.b64encode(b'\0user\0bad').decode())   # failed AUTH
    c.send(b'NOOP\n')                                           # bare LF
    assert c.reply()[0] == 500
    for _ in range(16):
        c.expect(500, 'BOGUS')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')                   # 19 errors: still served
    assert c.cmd('BOGUS')[0] == 500                             # the 20th
    assert c.reply() == (421, '4.7.0 Error: too many errors')
    assert c.closed()


def test_max_errors_0_means_no_limit(serve, client):
    c = client(serve(max_errors=0))
    c.send(b'BOGUS\r\n' * 100)
    assert all(c.reply()[0] == 500 for _ in range(100))
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_max_auth_failures_default_3_then_421(serve, client):
    c = client(auth_server(serve))
    c.expect(250, 'EHLO x')
    bad = 'AUTH PLAIN ' + base64.b64encode(b'\0user\0wrong').decode()
    c.expect(535, bad)
    c.expect(501, 'AUTH PLAIN *')              # a cancel is an error, not a failed guess
    c.expect(535, bad)
    c.expect(535, bad)
    assert c.reply() == (421, '4.7.0 Error: too many failed authentication attempts')
    assert c.closed()


def test_max_auth_failures_is_configurable_and_per_connection(serve, client):
    server = auth_server(serve, max_auth_failures=1)
    bad = 'AUTH PLAIN ' + base64.b64encode(b'\0user\0wrong').decode()
    for _ in range(2):                         # a new connection starts from zero
        c = client(server)
        c.expect(250, 'EHLO x')
        c.expect(535, bad)
        assert c.reply()[0] == 421
        assert c.closed()


def _from(server, source_ip):
    """A RawClient connected from `source_ip` (a loopback address), greeting read."""
    c = RawClient.__new__(RawClient)
    c.sock = socket.create_connection(server.address, timeout=WAIT, source_address=(source_ip, 0))
    c.buf = b''
    c.expect(220)
    return c


def test_auth_failures_per_ip_block_a_client_that_reconnects_to_guess(serve):
    """max_auth_failures counts per connection; max_auth_failures_per_ip
    follows the client's address across its connections, for a window."""
    server = auth_server(serve, max_auth_failures=2, max_auth_failures_per_ip=3,
                         auth_failure_window=1.0)
    bad = 'AUTH PLAIN ' + base64.b64encode(b'\0user\0wrong').decode()
    good = 'AUTH PLAIN ' + base64.b64encode(b'\0user\0pw').decode()
    clients = []
    try:
        c = _from(server, '127.0.0.1')
        clients.append(c)
        c.expect(250, 'EHLO x')
        c.expect(535, bad)
        c.expect(535, bad)
        assert c.reply()[0] == 421                  # the per-connection limit
        c = _from(server, '127.0.0.1')              # reconnects: one more guess
        clients.append(c)
        c.expect(250, 'EHLO x')
        c.expect(535, bad)
        started = time.monotonic()
        assert c.cmd(good) == (450, '4.7.1 Error: too many failed authentications '
                                    'from this address, try again later')
        other = _from(server, '127.0.0.2')          # another address is not affected
        clients.append(other)
        other.expect(250, 'EHLO x')
        other.expect(235, good)
        assert wait_until(lambda: not server.auth_failures.blocked('127.0.0.1'))
        assert time.monotonic() - started >= 0.5    # the window passed
        c.expect(235, good)
    finally:
        for client in clients:
            client.close()


# --- connection limits ---------------------------------------------------------------

@pytest.mark.parametrize('option', ['max_connections', 'max_connections_per_ip'])
def test_connection_limit_421_and_the_slot_comes_back(serve, client, option):
    server = serve(**{option: 3})
    first = [client(server) for _ in range(3)]
    extra = client(server, greeting=None)
    assert extra.reply() == (421, '4.7.0 Error: too many connections')
    assert extra.closed()
    assert wait_until(lambda: server.connections == 3)
    first[0].cmd('QUIT')
    assert first[0].closed()
    assert wait_until(lambda: server.connections == 2)
    again = client(server)
    assert again.cmd('NOOP') == (250, '2.0.0 OK')


def test_refused_connections_do_not_accumulate(serve):
    server = serve(max_connections=1)
    keeper = RawClient(server.address)
    keeper.expect(220)
    for _ in range(50):
        c = RawClient(server.address)
        assert c.reply()[0] == 421
        c.close()
    assert wait_until(lambda: len(server.runners) == 1)
    assert server.connections == 1
    keeper.close()


# --- slowloris and idle clients ---------------------------------------------------------

def test_slowloris_command_drip_is_cut_at_the_socket_timeout_deadline(serve, client):
    c = client(serve(socket_timeout=0.5))
    got, elapsed = drip(c, b'EHLO ' + b'x' * 200, interval=0.05, limit=WAIT)
    assert got is not None and got.startswith(b'421 '), got
    assert elapsed < 0.5 + 1.0
    assert c.closed()


def test_slowloris_auth_response_drip_is_cut_at_the_deadline(serve, client):
    c = client(auth_server(serve, socket_timeout=0.5))
    c.expect(250, 'EHLO x')
    c.expect(334, 'AUTH LOGIN')
    got, elapsed = drip(c, b'dXNlcg' * 100, interval=0.05, limit=WAIT)
    assert got is not None and got.startswith(b'421 4.4.2'), got
    assert elapsed < 0.5 + 1.0


def test_slowloris_proxy_header_drip_is_cut_at_upgrade_timeout(serve):
    server = serve(use_proxy=True, upgrade_timeout=0.5)
    c = RawClient(server.address)
    try:
        got, elapsed = drip(c, b'PROXY TCP4 192.0.2.1 192.0.2.2 1000 25\r\n', interval=0.05, limit=WAIT)
        assert got == b''                      # closed, nothing said before the header
        assert elapsed < 0.5 + 1.0
    finally:
        c.close()


def test_idle_client_gets_421_before_the_close(serve, client):
    c = client(serve(socket_timeout=0.3))
    c.expect(250, 'EHLO x')
    started = time.monotonic()
    assert c.reply() == (421, '4.4.2 Error: timeout exceeded')
    assert c.closed()
    assert time.monotonic() - started < 0.3 + 1.0


def test_idle_client_in_data_gets_421_and_nothing_is_delivered(serve, client):
    rec = Recorder()
    c = client(serve(socket_timeout=0.3, middleware=[rec]))
    start_transaction(c)
    c.send(b'half a message\r\n')
    assert c.reply() == (421, '4.4.2 Error: timeout exceeded')
    assert c.closed()
    assert rec.done.wait(WAIT)
    assert rec.delivered == [] and rec.outcomes == ['ClientTimeout']


def test_slowloris_data_drip_is_cut_by_a_minimum_rate(serve, client):
    rec = Recorder()
    c = client(serve(socket_timeout=0.5, min_data_rate=500, middleware=[rec]))
    start_transaction(c)
    got, elapsed = drip(c, b'x' * 1000, interval=0.05, limit=4.0)
    assert got is not None and got.startswith(b'421 4.4.2'), got
    assert rec.delivered == []


# --- pre-greeting traffic, message and junk command limits (not built yet) -----------

def test_pre_greeting_traffic_is_remembered_in_the_session(serve):
    seen = []

    def spy(ctx, next):
        seen.append(ctx.session.pre_greeting_data)
        next()
    server = serve(greeting_delay=0.3, middleware=[spy])
    early = RawClient(server.address)
    early.send(b'EHLO early\r\n')                    # before the 220
    early.expect(220)
    early.expect(250)
    polite = RawClient(server.address)
    polite.expect(220)
    polite.expect(250, 'EHLO polite')
    early.close()
    polite.close()
    assert seen == [True, False]


def test_early_talker_is_refused_when_asked(serve):
    server = serve(greeting_delay=0.3, reject_early_talkers=True)
    early = RawClient(server.address)
    early.send(b'EHLO early\r\nMAIL FROM:<a@b.example>\r\n')
    try:
        assert early.reply() == (554, '5.5.0 Error: SMTP protocol synchronization')   # RFC 2034 4: EHLO or not
        assert early.closed()
    finally:
        early.close()
    polite = RawClient(server.address)
    try:
        polite.expect(220)
        polite.expect(250, 'EHLO polite')
    finally:
        polite.close()


def test_messages_per_connection_limit(serve, client):
    c = client(serve(max_messages=2))
    c.expect(250, 'EHLO x')
    for _ in range(2):
        c.expect(250, 'MAIL FROM:<a@b.example>')
        c.expect(250, 'RCPT TO:<c@d.example>')
        c.expect(354, 'DATA')
        c.send(b'hi\r\n.\r\n')
        assert c.reply()[0] == 250
    assert c.cmd('MAIL FROM:<a@b.example>') == (421, '4.7.0 Error: too many messages in this connection')
    assert c.closed()


def test_junk_commands_of_an_unauthenticated_client_are_limited(serve, client):
    c = client(serve(max_junk_commands=5, max_errors=3))
    c.expect(250, 'EHLO x')
    replies = []
    for _ in range(20):
        try:
            replies.append(c.cmd('NOOP')[0])
        except ConnectionError:
            break
        if replies[-1] == 421:
            break
    assert replies[-1] == 421 and len(replies) <= 5 + 3 + 1
    assert c.closed()


@pytest.mark.parametrize('secure', [False, True], ids=['plain', 'TLS'])
def test_client_that_stops_reading_is_cut_at_socket_timeout(serve, secure):
    """A write that cannot go out (the client pipelines and never reads)
    waits at most socket_timeout, as a silent client's read does; before,
    it held its session until the server stopped."""
    server = serve(socket_timeout=0.5, secure=secure, max_junk_commands=0)
    c = RawClient(server.address, timeout=0.2)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if secure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        c.sock = context.wrap_socket(c.sock, server_hostname='mx.test')
    c.expect(220)
    try:
        started = time.monotonic()
        try:
            while time.monotonic() - started < WAIT:
                c.sock.sendall(b'HELP\r\n' * 5000)
        except OSError:
            pass                # the server stopped reading: its replies are stuck
        assert wait_until(lambda: server.connections == 0)
        assert time.monotonic() - started >= 0.4
    finally:
        c.close()


def test_pipelining_without_reading_keeps_reply_memory_small(serve):
    """Replies are flushed once about 64 KB are pending: a client pipelining
    HELP without reading once made the server hold ~1.2 MB (17x its input)."""
    server = serve()
    clients = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            c = RawClient(server.address, timeout=0.3)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.expect(220)
            clients.append(c)
            try:
                for _ in range(100):
                    c.sock.sendall(b'HELP\r\n' * 10000)
            except OSError:
                pass                    # the server stopped reading: backpressure
        held = (tracemalloc.get_traced_memory()[0] - before) / len(clients)
    finally:
        tracemalloc.stop()
        for c in clients:
            c.close()
    assert held < 300_000, f'{held:.0f} bytes held per connection'


def test_slow_one_byte_bdat_chunks_are_cut_by_the_minimum_rate(serve, client):
    """Chunk lines count against min_data_rate's deadline like chunk bytes."""
    c = client(serve(socket_timeout=0.5, min_data_rate=500))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    replies = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        c.send(b'BDAT 1\r\nx')
        code = c.reply()[0]
        replies.append(code)
        if code != 250:
            break
        time.sleep(0.2)     # the client's own slowness, not synchronisation
    assert replies[-1] == 421 and len(replies) <= 6
    assert c.closed()
