"""Full STARTTLS sessions, as fast as the server takes them.

Scenario (e) of benchmarks/run.py (smtp-source cannot do TLS). Each session:
connect, EHLO, STARTTLS (new TLS handshake, no session reuse), EHLO, AUTH
PLAIN with an initial response, MAIL, RCPT, DATA with a 1 KB body, QUIT, one
command at a time (no pipelining).

``--procs`` processes each keep ``--concurrency`` sessions in flight with
non-blocking sockets on one epoll loop, and share the sessions out; the clock
starts when all of them are ready and stops when the last session is done.
An event loop rather than a thread per session: with threads the client's
own switching and GIL hand-offs cost more CPU per session than a fast server
does, and on a machine the client shares with the server the client, not the
server, set the pace. Prints one JSON line: sessions, errors, seconds,
first_error.
"""

import argparse
import base64
import errno
import json
import multiprocessing
import select
import socket
import ssl
import sys
import time

SENDER = 'sender@bench.example'
RECIPIENT = 'rcpt@bench.example'
AUTH_PLAIN = (b'AUTH PLAIN '
              + base64.b64encode(b'\0bench\0any password') + b'\r\n')
HANDSHAKE = object()        # the step of the script where TLS starts


def make_message(body_size=1024):
    """Headers plus ``body_size`` bytes of 80-byte lines, CRLF ended."""
    line = b'X' * 78 + b'\r\n'
    body = (line * (body_size // 80 + 1))[:body_size - 2] + b'\r\n'
    head = (f'From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n'
            'Subject: benchmark\r\nMessage-ID: <bench@bench.example>\r\n\r\n')
    return head.encode() + body


def make_script(message):
    """(what to send, the reply code expected, what for) per step; HANDSHAKE
    where the TLS handshake goes."""
    return [
        (b'', b'220', 'greeting'),
        (b'EHLO bench.example\r\n', b'250', 'EHLO'),
        (b'STARTTLS\r\n', b'220', 'STARTTLS'),
        HANDSHAKE,
        (b'EHLO bench.example\r\n', b'250', 'EHLO after TLS'),
        (AUTH_PLAIN, b'235', 'AUTH PLAIN'),
        (b'MAIL FROM:<' + SENDER.encode() + b'>\r\n', b'250', 'MAIL'),
        (b'RCPT TO:<' + RECIPIENT.encode() + b'>\r\n', b'250', 'RCPT'),
        (b'DATA\r\n', b'354', 'DATA'),
        (message + b'.\r\n', b'250', 'end of data'),
        (b'QUIT\r\n', b'221', 'QUIT'),
    ]


class SessionError(Exception):
    pass


def reply_complete(buf):
    """The last line of a whole reply when ``buf`` holds one, else None. A
    reply ends with a line whose fourth character is not '-'."""
    if not buf.endswith(b'\n'):
        return None
    start = buf.rfind(b'\n', 0, len(buf) - 1) + 1
    last = buf[start:]
    if len(last) > 3 and last[3] == 0x2d:   # '-': more lines to come
        return None
    return last


class Session:
    """One SMTP session as a state machine driven by readiness events."""

    __slots__ = ('sock', 'fd', 'step', 'buf', 'out', 'deadline', 'handshaking', 'mask')

    def __init__(self, sock, deadline):
        self.sock = sock
        self.fd = sock.fileno()
        self.step = 0
        self.buf = b''
        self.out = b''
        self.deadline = deadline
        self.handshaking = False
        self.mask = select.EPOLLIN


class Client:
    """Runs ``total`` sessions, ``concurrency`` at a time, in this process."""

    def __init__(self, args, total):
        self.args = args
        self.left = total
        self.ok = self.errors = 0
        self.first_error = None
        # No CA store: with CERT_NONE OpenSSL still builds a chain, and with
        # the system's CA directory loaded that meant directory reads and
        # lookups for every handshake, on the client's CPU.
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.script = make_script(make_message())
        self.epoll = select.epoll()
        self.sessions = {}
        self.stop_starting = None

    # -- lifecycle -------------------------------------------------------
    def run(self):
        self.stop_starting = time.monotonic() + self.args.timeout
        for _ in range(self.args.concurrency):
            self.start_one()
        next_sweep = time.monotonic() + 0.5
        epoll, sessions = self.epoll, self.sessions
        while sessions:
            for fd, events in epoll.poll(0.5):
                session = sessions.get(fd)
                if session is not None:
                    self.on_event(session, events)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for session in [s for s in sessions.values() if s.deadline < now]:
                    self.fail(session, 'session timed out')
        self.epoll.close()

    def start_one(self):
        now = time.monotonic()
        if self.left <= 0 or now > self.stop_starting:
            return
        self.left -= 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.record_error(f'connect: {errno.errorcode.get(err, err)}')
            return self.start_one()
        session = Session(sock, now + self.args.session_timeout)
        self.sessions[session.fd] = session
        # Readable means the greeting came (or the connection failed).
        self.epoll.register(session.fd, select.EPOLLIN)

    def finish(self, session):
        self.epoll.unregister(session.fd)
        del self.sessions[session.fd]
        session.sock.close()

    def fail(self, session, error):
        self.finish(session)
        self.record_error(error)
        self.start_one()

    def record_error(self, error):
        self.errors += 1
        self.first_error = self.first_error or error

    # -- events ------------------------------------------------------------
    def on_event(self, session, events):
        try:
            if session.out:
                self.send(session, session.out)
                if session.out:
                    return
            if session.handshaking:
                self.handshake(session)
                return
            self.read(session)
        except (OSError, SessionError) as exc:
            self.fail(session, f'{type(exc).__name__}: {exc}')

    def read(self, session):
        sock = session.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            if not data:
                raise SessionError(f'{self.script[session.step][2]}: connection closed')
            session.buf += data
            last = reply_complete(session.buf)
            if last is not None:
                self.on_reply(session, last)
                return
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def on_reply(self, session, last):
        _, code, what = self.script[session.step]
        if not last.startswith(code):
            raise SessionError(f'{what}: {last.decode(errors="replace").strip()}')
        session.buf = b''
        session.step += 1
        if session.step == len(self.script):
            self.finish(session)
            self.ok += 1
            self.start_one()
            return
        step = self.script[session.step]
        if step is HANDSHAKE:
            session.step += 1
            # RFC 3207: forget everything said before TLS.
            session.sock = self.context.wrap_socket(session.sock,
                                                    do_handshake_on_connect=False)
            session.handshaking = True
            self.handshake(session)
        else:
            self.send(session, step[0])

    def handshake(self, session):
        try:
            session.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.want(session, select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self.want(session, select.EPOLLIN | select.EPOLLOUT)
            return
        session.handshaking = False
        self.want(session, select.EPOLLIN)
        self.send(session, self.script[session.step][0])

    def send(self, session, data):
        try:
            sent = session.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0        # OpenSSL wants the same bytes again
        session.out = data[sent:]
        if session.out:
            self.want(session, select.EPOLLIN | select.EPOLLOUT)
        elif sent:
            self.want(session, select.EPOLLIN)

    def want(self, session, mask):
        if session.mask != mask:
            session.mask = mask
            self.epoll.modify(session.fd, mask)


def worker(args, sessions, barrier, results):
    client = Client(args, sessions)
    barrier.wait(timeout=60)
    client.run()
    results.put((client.ok, client.errors, client.first_error))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--sessions', type=int, default=1000)
    p.add_argument('--procs', type=int, default=2)
    p.add_argument('--concurrency', type=int, default=16,
                   help='sessions in flight per process')
    p.add_argument('--timeout', type=float, default=300.0,
                   help='no session is started after this many seconds')
    p.add_argument('--session-timeout', type=float, default=30.0)
    args = p.parse_args(argv)

    mp = multiprocessing.get_context('fork')
    barrier = mp.Barrier(args.procs + 1)
    results = mp.Queue()
    share, extra = divmod(args.sessions, args.procs)
    procs = [mp.Process(target=worker,
                        args=(args, share + (i < extra), barrier, results))
             for i in range(args.procs)]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=60)
    start = time.monotonic()
    ok = errors = 0
    first_error = None
    for _ in procs:
        n_ok, n_err, err = results.get(timeout=args.timeout + args.session_timeout + 30)
        ok, errors = ok + n_ok, errors + n_err
        first_error = first_error or err
    seconds = time.monotonic() - start
    for proc in procs:
        proc.join(timeout=10)
    print(json.dumps({'sessions': ok, 'errors': errors, 'seconds': seconds,
                      'first_error': first_error}))
    return 0 if ok and not errors else 1


if __name__ == '__main__':
    sys.exit(main())
