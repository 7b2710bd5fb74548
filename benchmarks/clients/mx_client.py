"""The MX scenarios' client: XCLIENT, then DKIM-signed messages.

smtp-source cannot say XCLIENT. Each session: the greeting, EHLO, XCLIENT
ADDR=<a client address> NAME=[UNAVAILABLE] (what nginx's mail proxy sends
without a resolver; Postfix semantics: a new 220 greeting follows), EHLO
mail.sender.example, then per message MAIL FROM, RCPT TO (one recipient),
DATA and the message, and QUIT; one command at a time, as smtp-source.

The plan (`client_address`, `triplet`): client k speaks as 198.18.k.7, one
address per /24 (so one greylist network each, RFC 6647 4.1), and cycles
through TRIPLETS (sender, recipient) pairs of its own; so the greylist's
triplets and the rate limit's client keys vary as they would on an MX,
while every message is the same signed bytes (`--message`).

Modes:
  --per-session   --sessions sessions share --messages, many per session
                  (scenario mx: client k is session k);
  (default)       one message per connection, --sessions connections at a
                  time, connection n as client n % --clients (mx-conn);
  --prime         each client's triplets as MAIL, RCPT, RSET, in one
                  connection per client, twice, --delay seconds apart: the
                  first round may be greylisted (451), the second must be
                  accepted. Greylisting is a rule of time: this is the one
                  wait of the scenario, bounded by --delay. With --listed
                  ADDR, one more session as ADDR (listed in the run's DNSBL)
                  tries a message: its first refusal is reported ("listed"),
                  so the harness knows the server's DNSBL check is live.

One process, non-blocking sockets on one epoll loop (the reasons are
tls_client.py's). Prints one JSON line: messages, errors, seconds,
first_error, greylisted and listed (prime).
"""

import argparse
import errno
import ipaddress
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tls_client import SessionError, reply_complete  # noqa: E402

FIRST_CLIENT = ipaddress.IPv4Address('198.18.0.7')
MAX_CLIENTS = 512           # the /24s of 198.18.0.0/15
TRIPLETS = 5                # pairs per client: greylist's default auto_allow
SENDER_DOMAIN = 'sender.example'
LOCAL_DOMAIN = 'bench.example'
HELO = f'mail.{SENDER_DOMAIN}'
RECIPIENTS = 50             # mailboxes user0..user49@bench.example


def client_address(k: int) -> str:
    """Client k's address: 198.18.0.7, 198.18.1.7, ... (one /24 each)."""
    if not 0 <= k < MAX_CLIENTS:
        raise ValueError(f'client {k} outside 0..{MAX_CLIENTS - 1}')
    return str(FIRST_CLIENT + 256 * k)


def triplet(k: int, j: int) -> tuple:
    """(sender, recipient) of client k's j-th message (cycling)."""
    j %= TRIPLETS
    return (f'sender{j}@{SENDER_DOMAIN}',
            f'user{(k * TRIPLETS + j) % RECIPIENTS}@{LOCAL_DOMAIN}')


def dot_stuffed(message: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency, with the terminating line."""
    if not message.endswith(b'\r\n'):
        message += b'\r\n'
    if message.startswith(b'.'):
        message = b'.' + message
    return message.replace(b'\r\n.', b'\r\n..') + b'.\r\n'


def opening(address: str) -> list:
    """The steps before the first message: (line, expected code, what)."""
    return [(b'', b'220', 'greeting'),
            (b'EHLO bench-client.example\r\n', b'250', 'EHLO'),
            (f'XCLIENT ADDR={address} NAME=[UNAVAILABLE]\r\n'.encode(),
             b'220', 'XCLIENT'),
            (f'EHLO {HELO}\r\n'.encode(), b'250', 'EHLO after XCLIENT')]


def message_steps(k: int, j: int, body: bytes) -> list:
    sender, rcpt = triplet(k, j)
    return [(f'MAIL FROM:<{sender}>\r\n'.encode(), b'250', 'MAIL'),
            (f'RCPT TO:<{rcpt}>\r\n'.encode(), b'250', 'RCPT'),
            (b'DATA\r\n', b'354', 'DATA'),
            (body, b'250', 'end of data')]


def prime_steps(k: int) -> list:
    """Each of client k's triplets: MAIL, RCPT (250 or 451), RSET."""
    steps = []
    for j in range(TRIPLETS):
        sender, rcpt = triplet(k, j)
        steps += [(f'MAIL FROM:<{sender}>\r\n'.encode(), b'250', 'MAIL'),
                  (f'RCPT TO:<{rcpt}>\r\n'.encode(), (b'250', b'451'), 'RCPT'),
                  (b'RSET\r\n', b'250', 'RSET')]
    return steps


QUIT = (b'QUIT\r\n', b'221', 'QUIT')


class Session:
    __slots__ = ('sock', 'fd', 'k', 'steps', 'step', 'buf', 'out', 'deadline', 'sent',
                 'mask')

    def __init__(self, sock, k, steps, deadline):
        self.sock = sock
        self.fd = sock.fileno()
        self.k = k
        self.steps = steps
        self.step = 0
        self.buf = b''
        self.out = b''
        self.deadline = deadline
        self.sent = 0           # messages this session has sent (its next triplet)
        self.mask = select.EPOLLIN


class Client:
    """Runs the sessions of one mode on one epoll loop."""

    def __init__(self, args, body, mode):
        self.args = args
        self.body = body
        self.mode = mode            # 'session', 'conn' or 'prime'
        self.left = args.messages   # messages not yet started
        self.ok = self.errors = self.greylisted = 0
        self.first_error = None
        self.epoll = select.epoll()
        self.sessions = {}
        self.next_conn = 0          # connection counter (client of mx-conn, prime)
        self.stop_starting = None

    def run(self, connections):
        self.stop_starting = time.monotonic() + self.args.timeout
        for _ in range(min(self.args.sessions, connections)):
            self.start_one(connections)
        next_sweep = time.monotonic() + 0.5
        epoll, sessions = self.epoll, self.sessions
        while sessions:
            for fd, events in epoll.poll(0.5):
                session = sessions.get(fd)
                if session is not None:
                    self.on_event(session, events, connections)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for session in [s for s in sessions.values() if s.deadline < now]:
                    self.fail(session, 'session timed out', connections)
        self.epoll.close()

    def start_one(self, connections):
        now = time.monotonic()
        if self.next_conn >= connections or now > self.stop_starting:
            return
        n = self.next_conn
        self.next_conn += 1
        if self.mode == 'prime':
            k, steps = n, opening(client_address(n)) + prime_steps(n) + [QUIT]
        elif self.mode == 'conn':
            if self.left <= 0:
                return
            self.left -= 1
            k = n % self.args.clients
            steps = (opening(client_address(k))
                     + message_steps(k, n // self.args.clients, self.body) + [QUIT])
        else:
            k, steps = n, opening(client_address(n))    # messages appended as taken
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.record_error(f'connect: {errno.errorcode.get(err, err)}')
            return self.start_one(connections)
        session = Session(sock, k, steps, now + self.args.session_timeout)
        self.sessions[session.fd] = session
        self.epoll.register(session.fd, select.EPOLLIN)

    def finish(self, session):
        self.epoll.unregister(session.fd)
        del self.sessions[session.fd]
        session.sock.close()

    def fail(self, session, error, connections):
        self.finish(session)
        self.record_error(error)
        if self.mode != 'session':
            self.start_one(connections)

    def record_error(self, error):
        self.errors += 1
        self.first_error = self.first_error or error

    def on_event(self, session, events, connections):
        try:
            if session.out:
                self.send(session, session.out)
                if session.out:
                    return
            data = session.sock.recv(65536)
            if not data:
                raise SessionError(f'{session.steps[session.step][2]}: connection closed')
            session.buf += data
            last = reply_complete(session.buf)
            if last is not None:
                self.on_reply(session, last, connections)
        except BlockingIOError:
            return
        except (OSError, SessionError) as exc:
            self.fail(session, f'{type(exc).__name__}: {exc}', connections)

    def on_reply(self, session, last, connections):
        _, code, what = session.steps[session.step]
        if not last.startswith(code):
            raise SessionError(f'client {session.k} {what}: '
                               + last.decode(errors='replace').strip())
        if what == 'RCPT' and last.startswith(b'451'):
            self.greylisted += 1
        session.buf = b''
        session.step += 1
        if what == 'end of data':
            self.ok += 1
        if session.step == len(session.steps):
            if what != 'QUIT' and self.mode == 'session':
                if self.left > 0:       # take the next message of the shared count
                    self.left -= 1
                    session.steps += message_steps(session.k, session.sent, self.body)
                    session.sent += 1
                else:
                    session.steps.append(QUIT)
            else:
                self.finish(session)
                self.start_one(connections)
                return
        self.send(session, session.steps[session.step][0])

    def send(self, session, data):
        try:
            sent = session.sock.send(data)
        except BlockingIOError:
            sent = 0
        session.out = data[sent:]
        mask = select.EPOLLIN | select.EPOLLOUT if session.out else select.EPOLLIN
        if session.mask != mask:
            session.mask = mask
            self.epoll.modify(session.fd, mask)


def first_refusal(args, address):
    """One blocking session as `address`, up to RCPT: the first reply that
    is a refusal ('554 ...', '451 ...'), or None."""
    lines = [line for line, _, _ in opening(address)] + [
        f'MAIL FROM:<sender0@{SENDER_DOMAIN}>\r\n'.encode(),
        f'RCPT TO:<user0@{LOCAL_DOMAIN}>\r\n'.encode()]
    with socket.create_connection((args.host, args.port), timeout=args.session_timeout) as s:
        for line in lines:
            s.sendall(line)
            buf = b''
            while (last := reply_complete(buf)) is None:
                data = s.recv(65536)
                if not data:
                    return 'connection closed'
                buf += data
            if last[:1] in (b'4', b'5'):
                return last.decode(errors='replace').strip()
        s.sendall(QUIT[0])
    return None


def run_mode(args, body, mode, connections):
    client = Client(args, body, mode)
    client.run(connections)
    return client


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--message', required=True, help='the signed message, a file')
    p.add_argument('--messages', type=int, default=1000)
    p.add_argument('--sessions', type=int, default=20, help='sessions in flight')
    p.add_argument('--clients', type=int, default=20,
                   help='client addresses (per-session: one per session)')
    p.add_argument('--per-session', action='store_true', help='many messages per session')
    p.add_argument('--prime', action='store_true',
                   help="pass every client's triplets through the greylist")
    p.add_argument('--delay', type=float, default=2.5,
                   help='prime: seconds between the two rounds (> the greylist delay)')
    p.add_argument('--listed', metavar='ADDR',
                   help='prime: also try a message as ADDR and report its refusal')
    p.add_argument('--timeout', type=float, default=300.0,
                   help='no session is started after this many seconds')
    p.add_argument('--session-timeout', type=float, default=60.0)
    args = p.parse_args(argv)
    if args.per_session:
        args.clients = args.sessions
    if not 0 < args.clients <= MAX_CLIENTS:
        p.error(f'--clients must be 1..{MAX_CLIENTS}')
    with open(args.message, 'rb') as f:
        body = dot_stuffed(f.read())

    start = time.monotonic()
    if args.prime:
        first = run_mode(args, body, 'prime', args.clients)
        time.sleep(args.delay)
        second = run_mode(args, body, 'prime', args.clients)
        errors = first.errors + second.errors
        first_error = first.first_error or second.first_error
        if not errors and second.greylisted:
            errors, first_error = second.greylisted, 'RCPT greylisted again after the delay'
        report = {'messages': 0, 'errors': errors, 'first_error': first_error,
                  'greylisted': [first.greylisted, second.greylisted]}
        if args.listed:
            try:
                report['listed'] = first_refusal(args, args.listed)
            except OSError as exc:
                report.update(errors=errors + 1, first_error=f'listed client: {exc!r}')
    else:
        mode = 'session' if args.per_session else 'conn'
        client = run_mode(args, body, mode,
                          args.sessions if args.per_session else args.messages)
        report = {'messages': client.ok, 'errors': client.errors,
                  'first_error': client.first_error}
        if not client.errors and client.ok != args.messages:
            report.update(errors=1, first_error=f'{client.ok} of {args.messages} sent')
    report['seconds'] = time.monotonic() - start
    print(json.dumps(report))
    return 0 if not report['errors'] else 1


if __name__ == '__main__':
    sys.exit(main())
