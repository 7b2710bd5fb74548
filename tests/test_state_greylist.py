"""Store.greylist: one greylist decision per store operation, the same in
the memory store, SQLite (one transaction) and Redis (one Lua script, one
round trip), and the same steps over a store object of the user's that
has only the basic operations."""
from __future__ import annotations

import ipaddress
import socket
import uuid

import pytest

from smtp_stack.policies.greylist import Greylist
from smtp_stack.state import MemoryStore, store

from policy_services import redis_server  # noqa: F401 (fixture)

TIMEOUT = 10.0


class BasicOnly:
    """A store of the user's: the operations of the contract, no greylist."""

    def __init__(self) -> None:
        self._inner = MemoryStore()
        self.url = 'test:basic-only'

    def __getattr__(self, name: str):
        if name == 'greylist':
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.fixture(params=['memory', 'sqlite', 'redis', 'basic-only'])
def shared(request, tmp_path):
    if request.param == 'memory':
        s = store('memory:')
    elif request.param == 'sqlite':
        s = store(f'sqlite:///{tmp_path}/state.db')
    elif request.param == 'redis':
        s = store(request.getfixturevalue('redis_server').url)
        s.prefix = f'test:{uuid.uuid4().hex}:'
    else:
        s = BasicOnly()
    yield s
    s.close()


A = ipaddress.ip_address('192.0.2.10')
NEIGHBOUR = ipaddress.ip_address('192.0.2.200')     # the same /24: the same triplet
ELSEWHERE = ipaddress.ip_address('198.51.100.7')

# (seconds since the start, client, sender, recipient, None or seconds left)
STEPS = [
    (0, A, 's@x.test', 'r@y.test', 300),                 # first sight
    (100, A, 's@x.test', 'r@y.test', 200),               # too early: the rest
    (100.5, A, 's@x.test', 'r@y.test', 199.5),
    (350, NEIGHBOUR, 's@x.test', 'r@y.test', None),      # retried after the delay: passes
    (351, A, 'S@X.test', 'R@y.test', None),              # passed triplets stay (any case)
    (352, A, 's@x.test', 'other@y.test', 300),           # a new triplet waits
    (352, ELSEWHERE, 's@x.test', 'r@y.test', 300),       # another network too
    (653, A, 's@x.test', 'other@y.test', None),          # the network's second pass
    (654, A, 'new@x.test', 'new@y.test', None),          # auto-allowed now (2 passes)
    (655, ELSEWHERE, 's@x.test', 'r@y.test', None),
    (656, ELSEWHERE, 'new@x.test', 'r@y.test', 300),     # one pass: not yet auto-allowed
]


def test_every_store_decides_alike(shared):
    start = 1_000_000.0
    now = [start]
    grey = Greylist(delay=300, expire=3600, store=shared, auto_allow=2, clock=lambda: now[0])
    seen = []
    for at, ip, sender, recipient, _ in STEPS:
        now[0] = start + at
        reply = grey.check(ip, sender, recipient)
        seen.append(None if reply is None else float(reply.message.split()[-2]))
    expected = [None if left is None else float(max(1, int(left + 0.999))) for *_, left in STEPS]
    assert seen == expected


def monitor_client_commands(url: str, action) -> list[str]:
    """The commands clients sent while action() ran (MONITOR; a script's own
    calls are marked `lua` and left out)."""
    host, _, rest = url.removeprefix('redis://').partition(':')
    port = int(rest.partition('/')[0])
    marker = uuid.uuid4().hex
    with socket.create_connection((host, port), timeout=TIMEOUT) as watch:
        watch.sendall(b'MONITOR\r\n')
        buffer = b''
        while b'+OK\r\n' not in buffer:
            buffer += watch.recv(4096)
        action()
        with socket.create_connection((host, port), timeout=TIMEOUT) as other:
            other.sendall(f'ECHO {marker}\r\n'.encode())
            other.recv(4096)
        buffer = buffer.partition(b'+OK\r\n')[2]
        while marker.encode() not in buffer:
            chunk = watch.recv(65536)
            assert chunk, 'the monitor connection closed'
            buffer += chunk
    lines = buffer.decode().split('\r\n')
    return [line.split('] ', 1)[1].split()[0].strip('"') for line in lines
            if line.startswith('+') and '] ' in line and ' lua]' not in line
            and marker not in line]


@pytest.mark.parametrize('passed', [False, True], ids=['first sight', 'passed before'])
def test_one_redis_round_trip_per_decision(redis_server, passed):  # noqa: F811
    shared = store(redis_server.url)
    shared.prefix = f'test:{uuid.uuid4().hex}:'
    now = [3_000_000.0]
    grey = Greylist(delay=300, store=shared, clock=lambda: now[0])
    try:
        shared.get('warm')                  # the connection is made (HELLO ...) before
        if passed:
            grey.check(A, 's@x.test', 'r@y.test')
            now[0] += 301
            assert grey.check(A, 's@x.test', 'r@y.test') is None
        sent = monitor_client_commands(redis_server.url,
                                       lambda: grey.check(A, 's@x.test', 'r@y.test'))
    finally:
        shared.close()
    assert [command.upper() for command in sent] == ['EVALSHA']
