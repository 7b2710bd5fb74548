"""The Python cost of smtp_stack's session loop, without sockets or waits.

An `Engine` (a session) of the benchmark sink's configuration (benchmarks/servers/
smtp_stack_sink.py: two middlewares, logging at INFO into a handler that
drops records) is run over a scripted socket that answers every read at
once, so nothing is measured but the session's own Python: parsing, the
middleware chain, replies, the DATA stream, logging. Two loads, as in
scenarios (a) and (b) of run.py: many 1 KB messages in one session, and one
message per connection (EHLO ... QUIT).

    python benchmarks/session_cpu.py                  # the work tree
    python benchmarks/session_cpu.py --tree /tmp/old  # another checkout, to compare
    python benchmarks/session_cpu.py --profile a      # cProfile of one load
    python benchmarks/session_cpu.py --breakdown      # what the log and the middleware cost
    python benchmarks/session_cpu.py --maildir DIR    # the durable path: user and system
                                                      # CPU per message into a Maildir

It uses the session's internal socket interface (`recv_within`, `sendall`),
not the public API: a tool for working on the hot path, where it answers in
seconds and to within a few percent, unlike a loopback run. Best of 5.
"""

import argparse
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = (b'x' * 78 + b'\r\n') * 12 + b'.\r\n'


class ScriptedSocket:
    """Hands out the client's lines one read at a time; takes any write."""

    def __init__(self, messages: int):
        chunks = [b'EHLO client.example\r\n']
        for _ in range(messages):
            chunks += [b'MAIL FROM:<s@bench.example>\r\n', b'RCPT TO:<r@bench.example>\r\n',
                       b'DATA\r\n', BODY]
        chunks.append(b'QUIT\r\n')
        chunks.reverse()
        self.chunks = chunks

    def getsockname(self):
        return ('127.0.0.1', 25)

    def recv_within(self, size, timeout, wait_first=False, sweeper=None):
        return self.chunks.pop()

    def recv(self, size):       # what older trees read through
        return self.chunks.pop()

    def settimeout(self, timeout):
        pass

    def sendall(self, data):
        pass

    def close(self):
        pass


def build_server(log: bool = True, middleware: bool = True, maildir: str | None = None):
    """The benchmark sink's configuration; without the INFO log or the two
    middlewares for --breakdown; storing into `maildir` as the durable
    scenarios do."""
    sys.path.insert(0, os.path.join(HERE, 'servers'))
    import smtp_stack_sink as sink
    from smtp_stack import LogLevels, SmtpServer

    logger = logging.getLogger('smtp_stack.session_cpu')
    logger.handlers[:] = [sink.DiscardHandler()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    server = SmtpServer(name='bench.example', disable_reverse_lookup=True,
                        log_level=LogLevels.INFO if log else LogLevels.SILENT,
                        log_backend=logger, max_messages=0,
                        disabled_commands=['STARTTLS', 'AUTH'])
    if maildir:
        from smtp_stack.delivery import MaildirDelivery
        server.use(sink.passthrough)
        server.use(MaildirDelivery(maildir, hostname='bench.example'))
    elif middleware:
        server.use(sink.passthrough)
        server.use(sink.read_body)
    return server


def durable(server, count: int) -> tuple:
    """(µs of user, µs of system CPU) per message of one long session that
    stores each message in a Maildir (every thread of the process, so the
    worker threads' share is in; the fsyncs' waits are not CPU)."""
    import gevent
    gevent.get_hub()        # offload() hands off only where a hub runs
    Session = session_class()
    conn = Session(server, ScriptedSocket(count), ('127.0.0.1', 40000))
    before = os.times()
    conn.run()
    after = os.times()
    return ((after.user - before.user) / count * 1e6,
            (after.system - before.system) / count * 1e6)


def session_class():
    """The class that runs one connection: the engine, or (to A/B against
    commits before it) the old Connection."""
    try:
        from smtp_stack.engine import Engine
        return Engine
    except ImportError:
        from smtp_stack.connection import Connection
        return Connection


def many_messages(server, count: int) -> float:
    """(a): µs per message in one long session."""
    Session = session_class()
    conn = Session(server, ScriptedSocket(count), ('127.0.0.1', 40000))
    started = time.perf_counter()
    conn.run()
    elapsed = time.perf_counter() - started
    accepted = conn.counters.messages if hasattr(conn, 'counters') else conn.messages
    if accepted != count:
        raise SystemExit(f'only {accepted} of {count} messages accepted')
    return elapsed / count * 1e6


def one_per_connection(server, count: int) -> float:
    """(b): µs per connection of EHLO, one message, QUIT."""
    Session = session_class()
    sockets = [ScriptedSocket(1) for _ in range(count)]
    started = time.perf_counter()
    for sock in sockets:
        Session(server, sock, ('127.0.0.1', 40000)).run()
    return (time.perf_counter() - started) / count * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tree',
                   help='a checkout of smtp_stack to measure instead of the installed one')
    p.add_argument('--messages', type=int, default=20000)
    p.add_argument('--profile', choices=['a', 'b'], help='print a cProfile of one load instead')
    p.add_argument('--breakdown', action='store_true',
                   help='(a) with and without the INFO log and the two middlewares')
    p.add_argument('--maildir', metavar='DIR',
                   help='store every message in a Maildir under DIR (made and removed '
                        'here); prints user and system CPU per message, best of 5')
    args = p.parse_args(argv)
    if args.tree:
        from benchlib.checkout import use_checkout
        use_checkout(args.tree)
    if args.maildir:
        import shutil
        import tempfile
        results = []
        for _ in range(5):
            box = tempfile.mkdtemp(dir=args.maildir)
            try:
                results.append(durable(build_server(maildir=box), args.messages // 10))
            finally:
                shutil.rmtree(box)
        user, system = min(results, key=sum)
        print(f'durable: {user:6.1f} µs user + {system:6.1f} µs system per message '
              f'({user + system:.1f} µs; best of 5 of {args.messages // 10})')
        return 0
    if args.breakdown:
        for label, log, middleware in [('as benchmarked', True, True),
                                       ('without the INFO log', False, True),
                                       ('without the two middlewares', True, False),
                                       ('without either', False, False)]:
            server = build_server(log, middleware)
            a = min(many_messages(server, args.messages) for _ in range(5))
            print(f'(a) {a:6.2f} µs per message {label}')
        return 0
    server = build_server()
    import smtp_stack
    if args.profile:
        import cProfile
        import pstats
        load = many_messages if args.profile == 'a' else one_per_connection
        count = args.messages if args.profile == 'a' else args.messages // 4
        profile = cProfile.Profile()
        profile.runcall(load, server, count)
        pstats.Stats(profile).sort_stats('tottime').print_stats(30)
        return 0
    a = min(many_messages(server, args.messages) for _ in range(5))
    b = min(one_per_connection(server, args.messages // 4) for _ in range(5))
    print(f'{os.path.dirname(smtp_stack.__file__)}')
    print(f'(a) {a:6.2f} µs of Python per message (1 KB, many per session)')
    print(f'(b) {b:6.2f} µs of Python per connection (EHLO, one message, QUIT)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
