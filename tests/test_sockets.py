"""smtp_stack.sockets: the session's socket layer over real socket pairs
(recv_within, its wait-first mode, the shared DeadlineSweeper), and the
sweeper's limits as an SMTP client sees them."""
from __future__ import annotations

import socket
import ssl
import time

import gevent
import pytest

from conftest import WAIT, RawClient, wait_until
from smtp_stack import sockets
from smtp_stack.sockets import DeadlineSweeper, PlainSocket


@pytest.fixture
def pair():
    """(server side as a PlainSocket, client side as a blocking stdlib socket)."""
    a, b = socket.socketpair()
    ours = PlainSocket(fileno=a.detach())
    b.settimeout(WAIT)
    yield ours, b
    ours.close()
    b.close()


@pytest.fixture
def sweeper():
    sweeper = DeadlineSweeper(gevent.get_hub(), period=0.05, least=0.1)
    yield sweeper
    sweeper.close()


def test_data_already_there_is_returned_with_or_without_waiting_first(pair):
    ours, theirs = pair
    theirs.sendall(b'EHLO a\r\n')
    assert ours.recv_within(4096, WAIT) == b'EHLO a\r\n'
    theirs.sendall(b'QUIT\r\n')
    assert ours.recv_within(4096, WAIT, wait_first=True) == b'QUIT\r\n'


def test_waiting_first_returns_what_arrives_later(pair, sweeper):
    ours, theirs = pair
    gevent.spawn_later(0.05, theirs.sendall, b'MAIL FROM:<a@b.example>\r\n')
    assert ours.recv_within(4096, WAIT, True, sweeper) == b'MAIL FROM:<a@b.example>\r\n'
    assert sweeper.waiting == {}


@pytest.mark.parametrize('use_sweeper', [False, True], ids=['own timer', 'sweeper'])
def test_silence_raises_socket_timeout_after_the_limit(pair, sweeper, use_sweeper):
    ours, _ = pair
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        ours.recv_within(4096, 0.3, True, sweeper if use_sweeper else None)
    waited = time.monotonic() - started
    assert 0.29 <= waited < WAIT
    assert sweeper.waiting == {}


def test_limits_shorter_than_least_keep_a_precise_timer(pair):
    ours, _ = pair
    slow = DeadlineSweeper(gevent.get_hub(), period=5.0, least=1.0)    # would be late
    try:
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            ours.recv_within(4096, 0.2, True, slow)
        assert time.monotonic() - started < 2.0
    finally:
        slow.close()


def test_sweeper_times_out_only_the_waits_past_their_deadline(sweeper):
    pairs = [socket.socketpair() for _ in range(3)]
    ours = [PlainSocket(fileno=a.detach()) for a, _ in pairs]
    outcome = {}

    def wait(index, limit):
        try:
            outcome[index] = ours[index].recv_within(100, limit, True, sweeper)
        except TimeoutError:
            outcome[index] = 'timeout'
    try:
        waiters = [gevent.spawn(wait, 0, 0.2), gevent.spawn(wait, 1, WAIT), gevent.spawn(wait, 2, 0.3)]
        gevent.joinall([waiters[0], waiters[2]], timeout=WAIT)
        assert outcome == {0: 'timeout', 2: 'timeout'}
        assert list(sweeper.waiting) == [waiters[1]]
        pairs[1][1].sendall(b'x')
        waiters[1].join(timeout=WAIT)
        assert outcome[1] == b'x' and sweeper.waiting == {}
    finally:
        for sock in ours:
            sock.close()
        for _, theirs in pairs:
            theirs.close()


@pytest.fixture(params=['plain', 'TLS'])
def connected(request):
    """The server side of a connected pair: a PlainSocket, or a TlsSocket
    after its handshake."""
    if request.param == 'plain':
        return request.getfixturevalue('pair')[0]
    ours, theirs = request.getfixturevalue('tls_pair')
    _handshake_both(ours, theirs)
    return ours


def test_closing_the_socket_wakes_a_swept_waiter(connected, sweeper):
    ours = connected
    waiter = gevent.spawn(ours.recv_within, 4096, WAIT, True, sweeper)
    gevent.sleep(0)     # the waiter runs until it parks
    assert waiter in sweeper.waiting
    ours.close()
    waiter.join(timeout=WAIT)
    assert isinstance(waiter.exception, OSError)
    assert sweeper.waiting == {}


def test_killing_a_swept_waiter_unregisters_it(pair, sweeper):
    ours, _ = pair
    waiter = gevent.spawn(ours.recv_within, 4096, WAIT, True, sweeper)
    gevent.sleep(0)     # the waiter runs until it parks
    assert waiter in sweeper.waiting
    waiter.kill(timeout=WAIT)
    assert waiter.dead and sweeper.waiting == {}


def test_idle_session_is_closed_by_the_shared_sweeper(serve, client, monkeypatch):
    """socket_timeout long enough for the sweeper (least lowered for speed):
    the client still gets 421 and the close, within the period's slack."""
    monkeypatch.setattr(sockets, 'SWEEP_LEAST', 0.2)
    monkeypatch.setattr(sockets, 'SWEEP_PERIOD', 0.05)
    server = serve(socket_timeout=0.4)
    assert server.sweeper.least == 0.2
    c = client(server)
    started = time.monotonic()
    c.expect(250, 'EHLO a.example')
    assert wait_until(lambda: server.sweeper.waiting)
    assert len(server.sweeper.waiting) == 1     # the session waits on the sweeper
    assert c.reply() == (421, '4.4.2 Error: timeout exceeded')
    assert 0.35 <= time.monotonic() - started < WAIT
    assert c.closed()


# --- the same waits over TLS (TlsSocket.recv_within) --------------------------------
def _start_tls(c) -> None:
    """Make RawClient `c` speak TLS from here on (no certificate check)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock, server_hostname='mx.test')


def _tls_client(server):
    """A RawClient whose socket is TLS (implicit TLS), greeting read."""
    c = RawClient(server.address)
    _start_tls(c)
    c.expect(220)
    return c


@pytest.mark.parametrize('use_sweeper', [False, True], ids=['own timer', 'sweeper'])
def test_idle_tls_session_gets_421_at_the_socket_timeout(serve, monkeypatch, use_sweeper):
    if use_sweeper:
        monkeypatch.setattr(sockets, 'SWEEP_LEAST', 0.2)
        monkeypatch.setattr(sockets, 'SWEEP_PERIOD', 0.05)
    server = serve(secure=True, socket_timeout=0.4)
    c = _tls_client(server)
    started = time.monotonic()
    c.expect(250, 'EHLO a.example')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.reply() == (421, '4.4.2 Error: timeout exceeded')
    assert 0.35 <= time.monotonic() - started < WAIT
    assert c.closed()


def test_tls_session_pipelined_and_split_records_are_read_whole(serve):
    """Commands pipelined in one TLS record, and one command split over
    records sent apart: the TLS read path returns what OpenSSL holds."""
    server = serve(secure=True)
    c = _tls_client(server)
    c.send(b'EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n')
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    c.send(b'DA')
    c.send(b'TA\r\n')
    c.expect(354)
    c.send(b'Subject: x\r\n\r\n' + b'y' * 40000 + b'\r\n.\r\n')
    c.expect(250)
    c.expect(221, 'QUIT')


def test_tls_bytes_held_in_the_tls_layer_are_read_without_waiting(serve):
    """One TLS record holds more pipelined commands than one read takes
    (4 KiB): the rest sits decrypted in OpenSSL, not in the kernel, so the
    read after the first replies must not wait for the socket (it would
    wait for a client that is waiting for us, until the idle limit)."""
    server = serve(secure=True, socket_timeout=1.5)
    c = _tls_client(server)
    c.expect(250, 'EHLO a.example')
    rcpts = b''.join(b'RCPT TO:<recipient-%03d@d.example>\r\n' % n for n in range(300))
    assert len(rcpts) > 2 * 4096
    started = time.monotonic()
    c.send(b'MAIL FROM:<a@b.example>\r\n' + rcpts)      # one record (< 16 KiB)
    assert [c.reply()[0] for _ in range(301)] == [250] * 301
    assert time.monotonic() - started < 1.0
    c.expect(221, 'QUIT')


@pytest.mark.parametrize('secure', [True, False], ids=['implicit TLS', 'STARTTLS'])
def test_tls_sessions_send_without_nagle_delays(serve, secure):
    """After a handshake OpenSSL writes its session tickets, and the first
    reply would wait behind them for the client's delayed ACK (40 ms on
    Linux) unless the socket has TCP_NODELAY."""
    seen = []

    def record_nodelay(ctx, next):
        if ctx.command_name == 'EHLO':
            sock = ctx._engine.transport.sock
            sock = getattr(sock, 'raw', sock)       # TlsSocket: the TCP socket under it
            seen.append((ctx.session.secure,
                         sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        next()

    server = serve(secure=secure, middleware=[record_nodelay])
    if secure:
        c = _tls_client(server)
    else:
        c = RawClient(server.address)
        c.expect(220)
        c.expect(250, 'EHLO a.example')
        c.expect(220, 'STARTTLS')
        _start_tls(c)
    c.expect(250, 'EHLO a.example')
    c.expect(221, 'QUIT')
    secure_seen = [nodelay for is_secure, nodelay in seen if is_secure]
    assert len(secure_seen) == 1 and secure_seen[0] != 0


# --- TlsSocket over a socket pair (memory BIOs) -----------------------------------
@pytest.fixture
def tls_pair():
    """(server side as a TlsSocket, its handshake greenlet, client side as a
    gevent TLS socket whose handshake runs in the caller)."""
    from gevent import socket as gsocket, ssl as gssl

    from smtp_stack.sockets import TlsSocket
    from smtp_stack.tls import create_context
    a, b = gsocket.socketpair()
    ours = TlsSocket(PlainSocket(fileno=a.detach()), create_context())
    client_ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = gssl.CERT_NONE
    theirs = client_ctx.wrap_socket(b, do_handshake_on_connect=False)
    theirs.settimeout(WAIT)
    yield ours, theirs
    ours.close()
    theirs.close()


def _handshake_both(ours, theirs):
    server = gevent.spawn(ours.do_handshake, WAIT)
    theirs.do_handshake()
    server.get(timeout=WAIT)


def test_tls_socket_reads_records_and_both_kinds_of_end(tls_pair):
    ours, theirs = tls_pair
    _handshake_both(ours, theirs)
    theirs.sendall(b'EHLO a.example\r\n')
    assert ours.recv_within(4096, WAIT, wait_first=True) == b'EHLO a.example\r\n'
    ours.sendall(b'250 ok\r\n')
    assert theirs.recv(100) == b'250 ok\r\n'
    big = b'x' * 40000      # three records, read in pieces no larger than asked
    theirs.sendall(big)
    got = b''
    while len(got) < len(big):
        piece = ours.recv_within(4096, WAIT)
        assert 0 < len(piece) <= 4096
        got += piece
    assert got == big
    closing = gevent.spawn(theirs.unwrap)   # close_notify: an orderly end
    try:
        assert ours.recv_within(4096, WAIT, wait_first=True) == b''
    finally:
        closing.kill(timeout=WAIT)      # unwrap() would wait for our close_notify


def test_tls_socket_reads_an_abrupt_close_as_the_end(tls_pair):
    ours, theirs = tls_pair
    _handshake_both(ours, theirs)
    ours.sendall(b'220 hi\r\n')
    assert theirs.recv(100) == b'220 hi\r\n'   # and the session tickets before it
    theirs.close()              # no close_notify
    assert ours.recv_within(4096, WAIT, wait_first=True) == b''


@pytest.mark.parametrize('use_sweeper', [False, True], ids=['own timer', 'sweeper'])
def test_tls_handshake_times_out(tls_pair, sweeper, use_sweeper):
    ours, theirs = tls_pair
    limiter = sweeper if use_sweeper else None
    started = time.monotonic()
    with pytest.raises(socket.timeout):         # the client never says hello
        ours.do_handshake(0.3, limiter)
    assert 0.29 <= time.monotonic() - started < WAIT

