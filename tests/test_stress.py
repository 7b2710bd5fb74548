"""Bounded stress: seconds, not minutes; every wait has a limit.

- 200 concurrent clients mixing good sessions, garbage, abrupt disconnects
  (mid-command, mid-DATA; FIN and RST) and slow clients: every good message
  is delivered exactly once, no cut one at all, and afterwards the server's
  connection count, greenlets, session objects and memory are back at their
  baseline.
- 5,000 idle connections: a fresh smtplib client still gets its 220 and its
  EHLO answer at once.

The server runs in its own thread and hub (`serve`); clients are plain
threads with blocking sockets. Slow clients pause between their pieces
(pacing), but no test waits on a sleep for anything to happen: it waits on
events and on conditions with deadlines.
"""
import gc
import random
import resource
import smtplib
import socket
import struct
import threading
import time
import tracemalloc
import uuid
from collections import Counter

import greenlet
import pytest

from smtp_stack.engine import Engine
from smtp_stack.session import Envelope, Session
from smtp_stack.stream import DataStream

from conftest import WAIT, wait_until

CLIENT_TIMEOUT = 15.0


class Client:
    """A minimal blocking SMTP client; any failure ends its thread quietly."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
        self.buf = b''

    def reply(self) -> int:
        while True:
            end = self.buf.find(b'\r\n')
            while end < 0:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError('closed')
                self.buf += data
                end = self.buf.find(b'\r\n')
            line, self.buf = self.buf[:end], self.buf[end + 2:]
            if line[3:4] != b'-':
                return int(line[:3])

    def cmd(self, line: bytes) -> int:
        self.sock.sendall(line + b'\r\n')
        return self.reply()

    def transaction(self, n_rcpt=1) -> None:
        assert self.cmd(b'MAIL FROM:<a@b.example>') == 250
        for i in range(n_rcpt):
            assert self.cmd(b'RCPT TO:<r%d@d.example>' % i) == 250
        assert self.cmd(b'DATA') == 354

    def drain_until_closed(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def close(self, reset=False) -> None:
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.sock.close()
        except OSError:
            pass


def message(msg_id: str, size: int) -> bytes:
    filler = b''.join(b'.line %d of filler text\r\n' % i for i in range(size // 25))
    return (b'Message-ID: <' + msg_id.encode() + b'>\r\nSubject: stress\r\n\r\n'
            + filler + b'..\r\n.\r\n')     # stuffed lines included


class Scenario:
    """The shared bookkeeping of one stress run."""

    def __init__(self, address, seed):
        self.address = address
        self.random = random.Random(seed)
        self.expected = []          # ids the clients saw accepted with 250
        self.cut = []               # ids of messages cut off mid-DATA
        self.failures = []          # unexpected client-side errors of good clients
        self.lock = threading.Lock()
        self.go = threading.Event()

    def note(self, kind, value):
        with self.lock:
            getattr(self, kind).append(value)

    # -- client behaviours --------------------------------------------------
    def good(self, n, pipelined, rcpts):
        c = Client(self.address)
        try:
            self.go.wait(WAIT)
            assert c.reply() == 220
            assert c.cmd(b'EHLO good%d' % n) == 250
            for k in range(2):
                msg_id = f'good-{n}-{k}-{uuid.uuid4().hex}'
                body = message(msg_id, 200 + 1000 * (n % 7))
                if pipelined:
                    c.sock.sendall(b'MAIL FROM:<a@b.example>\r\n'
                                   + b''.join(b'RCPT TO:<r%d@d.example>\r\n' % i for i in range(rcpts))
                                   + b'DATA\r\n')
                    codes = [c.reply() for _ in range(rcpts + 2)]
                    assert codes == [250] * (rcpts + 1) + [354], codes
                else:
                    c.transaction(rcpts)
                c.sock.sendall(body)
                assert c.reply() == 250
                self.note('expected', msg_id)
            assert c.cmd(b'QUIT') == 221
        except Exception as exc:        # noqa: BLE001 - reported by the test
            self.note('failures', f'good {n}: {exc!r}')
        finally:
            c.close()

    def slow(self, n):
        c = Client(self.address)
        try:
            self.go.wait(WAIT)
            assert c.reply() == 220
            assert c.cmd(b'EHLO slow%d' % n) == 250
            c.transaction()
            msg_id = f'slow-{n}-{uuid.uuid4().hex}'
            body = message(msg_id, 3000)
            step = len(body) // 8 + 1
            for i in range(0, len(body), step):
                c.sock.sendall(body[i:i + step])
                time.sleep(0.03)            # pacing of a slow sender
            assert c.reply() == 250
            self.note('expected', msg_id)
            assert c.cmd(b'QUIT') == 221
        except Exception as exc:        # noqa: BLE001
            self.note('failures', f'slow {n}: {exc!r}')
        finally:
            c.close()

    def garbage(self, n):
        rnd = random.Random(n)
        c = Client(self.address)
        try:
            self.go.wait(WAIT)
            for _ in range(rnd.randint(1, 5)):
                chunk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000)))
                c.sock.sendall(chunk + rnd.choice([b'\r\n', b'\n', b'', b'\r\n' * 30]))
            c.sock.shutdown(socket.SHUT_WR)
            c.drain_until_closed()
        except OSError:
            pass
        finally:
            c.close(reset=n % 2 == 0)

    def cut_command(self, n):
        c = Client(self.address)
        try:
            self.go.wait(WAIT)
            c.reply()
            c.sock.sendall(b'EHLO cut\r\nMAIL FROM:<a@b.exa')
        except OSError:
            pass
        finally:
            c.close(reset=n % 2 == 0)

    def cut_data(self, n):
        c = Client(self.address)
        msg_id = f'cut-{n}-{uuid.uuid4().hex}'
        self.note('cut', msg_id)
        try:
            self.go.wait(WAIT)
            c.reply()
            c.cmd(b'EHLO cut')
            c.transaction()
            body = message(msg_id, 2000)
            c.sock.sendall(body[:len(body) // 2 + n % 50])     # never the end-of-data line
        except (OSError, AssertionError):
            pass
        finally:
            c.close(reset=n % 2 == 0)

    def idle(self, n):
        c = Client(self.address)
        try:
            self.go.wait(WAIT)
            c.reply()
            time.sleep(0.1 + (n % 5) * 0.05)   # pacing: an idle client
            c.cmd(b'NOOP')
            c.cmd(b'QUIT')
        except OSError:
            pass
        finally:
            c.close()


def collector(delivered):
    """Keeps the Message-ID of each message the server accepts whole."""
    def collect(ctx, next):
        next()
        stream = ctx.data_stream
        if ctx.command_name != 'DATA' or stream is None or not stream.started:
            return
        head = stream.readline()
        stream.read()
        if stream.acceptable and ctx.reply is not None and ctx.reply.code == 250:
            delivered.append(head.split(b'<')[1].split(b'>')[0].decode())
    return collect


def live_server_objects(server):
    """Greenlets of the server's hub still alive (not counting the runners
    parked for the next connections, which are bounded), and session objects
    in memory."""
    gc.collect()
    hub = server.hub
    parked = server.runners.idle
    assert len(parked) <= server.runners.max_idle
    greenlets = sum(1 for o in gc.get_objects()
                    if isinstance(o, greenlet.greenlet) and not o.dead and o.parent is hub
                    and o not in parked)
    sessions = sum(1 for o in gc.get_objects()
                   if isinstance(o, (Engine, Session, Envelope, DataStream)))
    return greenlets, sessions


def run_clients(scenario, plan) -> float:
    threads = [threading.Thread(target=getattr(scenario, kind), args=args, daemon=True)
               for kind, args in plan]
    started = time.monotonic()
    for t in threads:
        t.start()
    scenario.go.set()
    for t in threads:
        t.join(max(0.0, started + 4 * WAIT - time.monotonic()))
    assert not any(t.is_alive() for t in threads), 'a client thread is stuck'
    return time.monotonic() - started


def mixed_plan():
    plan = []
    plan += [('good', (n, n % 2 == 0, 1 + n % 3)) for n in range(70)]
    plan += [('slow', (n,)) for n in range(20)]
    plan += [('garbage', (n,)) for n in range(40)]
    plan += [('cut_command', (n,)) for n in range(20)]
    plan += [('cut_data', (n,)) for n in range(30)]
    plan += [('idle', (n,)) for n in range(20)]
    assert len(plan) == 200
    random.Random(7).shuffle(plan)
    return plan


def test_200_mixed_clients_deliver_each_good_message_once_and_leave_nothing_behind(serve):
    delivered = []
    server = serve(middleware=[collector(delivered)], socket_timeout=5)
    # Warm up (imports, caches, the hub's pools) so the baseline is steady.
    warm = Scenario(server.address, 1)
    run_clients(warm, [('good', (1000 + n, True, 1)) for n in range(10)])
    assert not warm.failures and len(delivered) == 20
    assert wait_until(lambda: server.connections == 0 and len(server.runners) == 0)
    delivered.clear()
    tracemalloc.start()
    try:
        base_greenlets, base_objects = live_server_objects(server)
        base_memory = tracemalloc.get_traced_memory()[0]

        scenario = Scenario(server.address, 2)
        elapsed = run_clients(scenario, mixed_plan())
        assert not scenario.failures, scenario.failures[:5]
        assert len(scenario.expected) == 70 * 2 + 20
        # every good message exactly once, and none of the cut ones
        expected = len(scenario.expected)
        assert wait_until(lambda: len(delivered) >= expected)
        assert Counter(delivered) == Counter(scenario.expected)
        assert not set(delivered) & set(scenario.cut)

        # the server comes back to its baseline
        assert wait_until(lambda: server.connections == 0 and len(server.runners) == 0), \
            (server.connections, len(server.runners))
        assert not server.connections_per_ip
        del scenario, delivered[:]
        greenlets, objects = live_server_objects(server)
        assert greenlets <= base_greenlets and objects <= base_objects, (greenlets, objects)
        grown = tracemalloc.get_traced_memory()[0] - base_memory
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024, f'{grown} bytes still held after the clients left'
    assert elapsed < 4 * WAIT


IDLE = 5000


@pytest.mark.may_skip_in_ci('a hard limit on open files below what the test needs')
def test_5000_idle_connections_leave_the_server_answering_at_once(serve):
    needed = 2 * IDLE + 500           # both ends of each connection live in this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError):
            pass
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f'needs {needed} file descriptors')
    server = serve(socket_timeout=120)
    socks = []
    started = time.monotonic()
    try:
        for _ in range(IDLE // 250):
            batch = [socket.create_connection(server.address, timeout=WAIT) for _ in range(250)]
            socks += batch
            for s in batch:                 # every one is greeted: none is left in the backlog
                assert s.recv(256).startswith(b'220 ')
        assert server.connections == IDLE
        opened = time.monotonic() - started

        fresh_start = time.monotonic()
        with smtplib.SMTP(*server.address, timeout=5) as smtp:
            assert smtp.ehlo('fresh.example')[0] == 250
            assert smtp.noop()[0] == 250
        fresh = time.monotonic() - fresh_start
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert fresh < 2.0, f'a fresh client waited {fresh:.2f} s'
    assert wait_until(lambda: server.connections == 0, timeout=3 * WAIT), server.connections
    assert opened < 3 * WAIT
