"""Full STARTTLS sessions, as fast as the server takes them.

Scenario (e) of benchmarks/run.py (smtp-source cannot do TLS). Each session:
connect, EHLO, STARTTLS (new TLS handshake, no session reuse), EHLO, AUTH
PLAIN with an initial response, MAIL, RCPT, DATA with a 1 KB body, QUIT, one
command at a time (no pipelining), over plain sockets and ssl. ``--procs``
processes of ``--threads`` threads each share the
sessions; the clock starts when all of them are ready and stops when the
last session is done. Prints one JSON line: sessions, errors, seconds,
first_error.
"""

import argparse
import base64
import json
import multiprocessing
import socket
import ssl
import sys
import threading
import time

SENDER = 'sender@bench.example'
RECIPIENT = 'rcpt@bench.example'
AUTH_PLAIN = (b'AUTH PLAIN '
              + base64.b64encode(b'\0bench\0any password') + b'\r\n')


def make_message(body_size=1024):
    """Headers plus ``body_size`` bytes of 80-byte lines, CRLF ended."""
    line = b'X' * 78 + b'\r\n'
    body = (line * (body_size // 80 + 1))[:body_size - 2] + b'\r\n'
    head = (f'From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n'
            'Subject: benchmark\r\nMessage-ID: <bench@bench.example>\r\n\r\n')
    return head.encode() + body


class Replies:
    """Reads SMTP replies from a socket; a reply ends with a line whose
    fourth character is not '-'."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b''

    def expect(self, code, what):
        while True:
            start = 0
            while True:
                end = self.buf.find(b'\n', start)
                if end < 0:
                    break
                if end - start < 5 or self.buf[start + 3] != 0x2d:   # '-'
                    line = self.buf[start:end]
                    self.buf = self.buf[end + 1:]
                    if not line.startswith(code):
                        raise SessionError(f'{what}: {line.decode(errors="replace").strip()}')
                    return
                start = end + 1
            data = self.sock.recv(65536)
            if not data:
                raise SessionError(f'{what}: connection closed')
            self.buf += data


class SessionError(Exception):
    pass


def one_session(host, port, context, message, timeout):
    """One whole session over a raw socket (no smtplib: its Python overhead
    per line made the client, not the server, the limit)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        replies = Replies(sock)
        replies.expect(b'220', 'greeting')
        sock.sendall(b'EHLO bench.example\r\n')
        replies.expect(b'250', 'EHLO')
        sock.sendall(b'STARTTLS\r\n')
        replies.expect(b'220', 'STARTTLS')
        sock = context.wrap_socket(sock)
        replies = Replies(sock)   # RFC 3207: forget everything said before TLS
        sock.sendall(b'EHLO bench.example\r\n')
        replies.expect(b'250', 'EHLO after TLS')
        sock.sendall(AUTH_PLAIN)
        replies.expect(b'235', 'AUTH PLAIN')
        sock.sendall(b'MAIL FROM:<' + SENDER.encode() + b'>\r\n')
        replies.expect(b'250', 'MAIL')
        sock.sendall(b'RCPT TO:<' + RECIPIENT.encode() + b'>\r\n')
        replies.expect(b'250', 'RCPT')
        sock.sendall(b'DATA\r\n')
        replies.expect(b'354', 'DATA')
        sock.sendall(message + b'.\r\n')
        replies.expect(b'250', 'end of data')
        sock.sendall(b'QUIT\r\n')
        replies.expect(b'221', 'QUIT')
    finally:
        sock.close()


def worker(args, sessions, barrier, results):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    message = make_message()
    lock = threading.Lock()
    state = {'left': sessions, 'ok': 0, 'errors': 0, 'first_error': None}
    deadline = None

    def take():
        with lock:
            if state['left'] <= 0 or time.monotonic() > deadline:
                return False
            state['left'] -= 1
            return True

    def run():
        while take():
            try:
                one_session(args.host, args.port, context, message, args.session_timeout)
                ok = True
            except (OSError, SessionError) as exc:
                ok = False
                error = f'{type(exc).__name__}: {exc}'
            with lock:
                if ok:
                    state['ok'] += 1
                else:
                    state['errors'] += 1
                    state['first_error'] = state['first_error'] or error

    barrier.wait(timeout=60)
    deadline = time.monotonic() + args.timeout
    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((state['ok'], state['errors'], state['first_error']))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--sessions', type=int, default=1000)
    p.add_argument('--procs', type=int, default=2)
    p.add_argument('--threads', type=int, default=8)
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
