"""Open N SMTP connections, say EHLO on each, and hold them open, idle.

Scenario (d) of benchmarks/run.py. One process, non-blocking sockets and a
selector; at most ``--in-flight`` handshakes at a time so no listen queue
overflows. When every connection has its EHLO reply (or failed), it prints
one JSON line ``{"ready": ok, "failed": n, "first_error": ...}`` and holds
the connections until its standard input closes (the harness measures the
server meanwhile) or ``--hold`` seconds pass; then it closes them all.
With ``--hold 0`` it closes them at once (used to warm a server up).
"""

import argparse
import json
import resource
import selectors
import socket
import sys
import time


class Conn:
    __slots__ = ('sock', 'state', 'buf')

    def __init__(self, sock):
        self.sock = sock
        self.state = 'connect'   # connect -> greeting -> ehlo -> idle
        self.buf = b''


def final_reply(buf):
    """The code of the complete reply in ``buf``, or None if incomplete.
    A reply ends with a line whose fourth character is a space."""
    start = 0
    while True:
        end = buf.find(b'\n', start)
        if end < 0:
            return None
        line = buf[start:end]
        if len(line) < 4 or line[3:4] != b'-':
            return line[:3]
        start = end + 1


def open_all(host, port, count, in_flight, deadline):
    sel = selectors.DefaultSelector()
    idle, failed, first_error = [], 0, None
    started = 0
    pending = 0

    def fail(conn, reason):
        nonlocal failed, pending, first_error
        failed += 1
        pending -= 1
        first_error = first_error or reason
        sel.unregister(conn.sock)
        conn.sock.close()

    while (started < count or pending) and time.monotonic() < deadline:
        while started < count and pending < in_flight:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((host, port))
            conn = Conn(sock)
            sel.register(sock, selectors.EVENT_WRITE, conn)
            started += 1
            pending += 1
        for key, _events in sel.select(timeout=0.5):
            conn = key.data
            if conn.state == 'connect':
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(conn, f'connect: errno {err}')
                    continue
                conn.state = 'greeting'
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                fail(conn, f'recv: {exc}')
                continue
            if not data:
                fail(conn, f'closed by server in state {conn.state}')
                continue
            conn.buf += data
            code = final_reply(conn.buf)
            if code is None:
                continue
            conn.buf = b''
            if conn.state == 'greeting':
                if code != b'220':
                    fail(conn, f'greeting {code!r}')
                    continue
                conn.state = 'ehlo'
                conn.sock.send(b'EHLO bench.example\r\n')
            elif conn.state == 'ehlo':
                if code != b'250':
                    fail(conn, f'EHLO reply {code!r}')
                    continue
                conn.state = 'idle'
                sel.unregister(conn.sock)
                idle.append(conn.sock)
                pending -= 1
    for key in list(sel.get_map().values()):
        fail(key.data, 'timed out')
    sel.close()
    return idle, failed, first_error


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--count', type=int, default=2000)
    p.add_argument('--in-flight', type=int, default=100)
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds allowed to open them all')
    p.add_argument('--hold', type=float, default=120.0,
                   help='longest time to hold them (0: close at once)')
    args = p.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    idle, failed, first_error = open_all(args.host, args.port, args.count,
                                         args.in_flight,
                                         time.monotonic() + args.timeout)
    print(json.dumps({'ready': len(idle), 'failed': failed,
                      'first_error': first_error}), flush=True)
    if args.hold > 0:
        sel = selectors.DefaultSelector()
        sel.register(sys.stdin, selectors.EVENT_READ)
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                if not sys.stdin.buffer.read1(4096):
                    break
    for sock in idle:
        sock.close()
    return 0 if idle else 1


if __name__ == '__main__':
    sys.exit(main())
