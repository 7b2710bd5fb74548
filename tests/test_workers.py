"""workers=N: a master that binds, forked workers that serve, over real sockets.

Each worker answers the custom command XPID with its pid (a middleware
registered before start(), so it runs in the workers). XBLOCK blocks the
whole worker process for a moment, so that the next connection can only be
accepted by another worker.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from smtp_stack import SmtpServer
from smtp_stack.testing import ServerThread

from conftest import WAIT, RawClient, readable, wait_until
from peers import running

PR_SET_CHILD_SUBREAPER = 36
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pid_commands(ctx, next):
    if ctx.command_name == 'XPID':
        ctx.send(250, str(os.getpid()))
    elif ctx.command_name == 'XCOUNT':          # this worker's open sessions
        ctx.send(250, str(ctx.server.connections))
    elif ctx.command_name == 'XBLOCK':
        time.sleep(float(ctx.command_args[0]))     # blocks the whole worker
        ctx.send(250, 'unblocked')
    else:
        next()


def alive(pid: int) -> bool:
    """True while the process exists (a zombie counts: it was not reaped)."""
    return os.path.exists(f'/proc/{pid}')


def pid_in(text: str) -> int:
    """The pid of an XPID reply: '2.0.0 <pid>' (RFC 2034 4: EHLO or not)."""
    enhanced, pid = text.split(' ')
    assert enhanced == '2.0.0'
    return int(pid)


def xpid(server) -> tuple:
    client = RawClient(server.address)
    client.expect(220)
    pid = pid_in(client.expect(250, 'XPID'))
    return client, pid


@pytest.fixture
def workers():
    """workers(n, **options) -> a started multi-worker SmtpServer."""
    running = []

    def start(count=2, **options):
        options.setdefault('name', 'mx.test')
        options.setdefault('disable_reverse_lookup', True)
        options.setdefault('close_timeout', 2)
        server = SmtpServer(workers=count, **options)
        server.use(pid_commands)
        running.append(ServerThread(server).start())
        assert wait_until(lambda: len(server.worker_pids) == count)
        return server

    yield start
    for runner in running:
        pids = runner.server.worker_pids
        runner.stop()
        for pid in pids:
            assert not alive(pid), f'worker {pid} left behind'


def test_workers_are_forked_processes_that_serve_with_the_middleware(workers):
    server = workers(2)
    pids = server.worker_pids
    assert len(set(pids)) == 2 and os.getpid() not in pids
    client, pid = xpid(server)
    assert pid in pids
    client.expect(250, 'EHLO client.example')
    client.expect(250, 'MAIL FROM:<a@example.com>')
    client.expect(250, 'RCPT TO:<b@example.com>')
    client.expect(354, 'DATA')
    client.send(b'Subject: hi\r\n\r\nbody\r\n.\r\n')
    assert client.reply()[0] == 250
    client.close()


def test_two_workers_both_accept_connections(workers):
    server = workers(2)
    first, pid1 = xpid(server)
    first.send('XBLOCK 1.0\r\n')        # worker pid1 cannot accept for 1 s
    time.sleep(0.2)
    started = time.monotonic()
    second, pid2 = xpid(server)
    assert time.monotonic() - started < 0.7, 'the other worker did not serve'
    assert pid2 != pid1 and {pid1, pid2} == set(server.worker_pids)
    assert first.reply() == (250, '2.0.0 unblocked')
    first.close()
    second.close()


def test_many_connections_are_spread_over_the_workers(workers):
    server = workers(2)
    seen = set()
    clients = []
    for _ in range(200):
        client, pid = xpid(server)
        clients.append(client)
        seen.add(pid)
        if len(seen) == 2:
            break
    for client in clients:
        client.close()
    assert seen == set(server.worker_pids)


def greeting_code(server) -> tuple:
    """(code of the first reply, the client): 220, or 421 when full."""
    client = RawClient(server.address)
    return client.reply()[0], client


def test_max_connections_counts_the_sessions_of_every_worker(workers):
    server = workers(2, max_connections=2)
    first, pid1 = xpid(server)
    second = None
    deadline = time.monotonic() + WAIT
    while second is None and time.monotonic() < deadline:    # a session on the other worker
        code, client = greeting_code(server)
        if code == 220 and pid_in(client.expect(250, 'XPID')) != pid1:
            second = client
        else:
            client.close()      # on pid1's worker (or refused while one of those ended)
    assert second is not None, 'no session reached the second worker'
    # Each worker has one session now: per worker there would be room for one more.
    assert wait_until(lambda: first.cmd('XCOUNT') == (250, '2.0.0 1'))
    assert second.cmd('XCOUNT') == (250, '2.0.0 1')
    for _ in range(6):
        code, client = greeting_code(server)
        assert code == 421
        client.close()
    # A worker killed with a session open: its count goes with it.
    pid2 = pid_in(second.expect(250, 'XPID'))
    os.kill(pid2, signal.SIGKILL)
    assert wait_until(lambda: len(server.worker_pids) == 2 and pid2 not in server.worker_pids)

    def room():
        code, client = greeting_code(server)
        client.close()
        return code == 220
    assert wait_until(room)
    first.close()
    second.close()


def test_a_killed_worker_is_restarted(workers):
    server = workers(2)
    victim, survivor = server.worker_pids
    os.kill(victim, signal.SIGKILL)
    new = wait_until(lambda: [p for p in server.worker_pids if p not in (victim, survivor)])
    assert new
    assert len(server.worker_pids) == 2 and survivor in server.worker_pids
    assert wait_until(lambda: not alive(victim))            # reaped, not a zombie
    seen = set()
    for _ in range(200):
        client, pid = xpid(server)
        client.close()
        seen.add(pid)
        if new[0] in seen:
            break
    assert new[0] in seen and victim not in seen


def test_a_worker_stopped_on_its_own_is_not_restarted(workers):
    server = workers(2)
    first, second = server.worker_pids
    os.kill(first, signal.SIGTERM)          # an operator takes one away
    assert wait_until(lambda: server.worker_pids == [second])
    assert wait_until(lambda: not alive(first))
    client, pid = xpid(server)
    assert pid == second
    client.close()


def test_stop_says_421_to_idle_sessions_and_leaves_no_process():
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True,
                        workers=2, close_timeout=2)
    server.use(pid_commands)
    closed = []
    server.on('close', lambda: closed.append(os.getpid()))
    runner = ServerThread(server).start()
    assert wait_until(lambda: len(server.worker_pids) == 2)
    pids = server.worker_pids
    client, pid = xpid(server)
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 2 + 1
    assert client.reply()[0] == 421
    assert client.closed()
    for pid in pids:
        assert not alive(pid)
    assert closed == [os.getpid()]      # 'close' once, in the master
    assert server.worker_pids == []


def test_stop_lets_a_transaction_finish_within_close_timeout(workers):
    server = workers(2, close_timeout=WAIT)
    client, _ = xpid(server)
    client.expect(250, 'EHLO client.example')
    client.expect(250, 'MAIL FROM:<a@example.com>')
    client.expect(250, 'RCPT TO:<b@example.com>')
    client.expect(354, 'DATA')
    import threading
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.3)
    client.send(b'body\r\n.\r\n')
    assert client.reply()[0] == 250
    assert client.reply()[0] == 421
    stopper.join(WAIT)
    assert not stopper.is_alive()


def test_middleware_added_after_the_fork_does_not_reach_workers(workers):
    server = workers(2)
    server.use(lambda ctx, next: ctx.send(250, 'late'))
    client, _ = xpid(server)
    assert client.cmd('NOOP') == (250, '2.0.0 OK')
    client.close()


def test_reload_replaces_every_worker(workers):
    server = workers(2)
    old = server.worker_pids
    server.hub.loop.run_callback_threadsafe(server.reload)
    assert wait_until(lambda: len(server.worker_pids) == 2 and not set(server.worker_pids) & set(old))
    for pid in old:
        assert wait_until(lambda pid=pid: not alive(pid))
    client, pid = xpid(server)
    assert pid in server.worker_pids
    client.close()


# -- the master as a process of its own: signals ----------------------------

MASTER = '''
import os, sys, gevent
from smtp_stack import SmtpServer
def pid_commands(ctx, next):
    if ctx.command_name == 'XPID':
        ctx.send(250, str(os.getpid()))
    else:
        next()
server = SmtpServer(name='mx.test', disable_reverse_lookup=True, workers=2,
                    close_timeout=2)
server.use(pid_commands)
server.start(0, '127.0.0.1')
def report():
    shown = None
    while True:
        pids = server.worker_pids
        if len(pids) == 2 and pids != shown:
            shown = pids
            print('PIDS', server.address[1], *pids, flush=True)
        gevent.sleep(0.02)
gevent.spawn(report)        # also in every worker's memory: must never run there
server.serve_forever()
print('STOPPED', flush=True)
'''


class Master:
    def __init__(self):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, '-c', MASTER], env=env,
                                     stdout=subprocess.PIPE, text=True)

    def line(self, timeout=WAIT) -> str:
        assert readable(self.proc.stdout, timeout), 'the master printed nothing in time'
        return self.proc.stdout.readline().strip()

    def pids(self) -> tuple:
        words = self.line().split()
        assert words[0] == 'PIDS', words
        return int(words[1]), [int(p) for p in words[2:]]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.proc.stdout.close()


@pytest.fixture
def master():
    m = Master()
    yield m
    m.kill()


def test_sigterm_to_the_master_stops_every_worker(master):
    port, pids = master.pids()
    client = RawClient(('127.0.0.1', port))
    client.expect(220)
    assert pid_in(client.expect(250, 'XPID')) in pids
    master.proc.send_signal(signal.SIGTERM)
    assert client.reply()[0] == 421         # graceful in the worker
    assert master.line() == 'STOPPED'
    assert master.proc.wait(WAIT) == 0
    for pid in pids:
        assert wait_until(lambda pid=pid: not alive(pid))
    client.close()


def test_sighup_to_the_master_reloads_the_workers(master):
    port, old = master.pids()
    master.proc.send_signal(signal.SIGHUP)
    _, new = master.pids()
    assert not set(new) & set(old)
    for pid in old:
        assert wait_until(lambda pid=pid: not alive(pid))
    client = RawClient(('127.0.0.1', port))
    client.expect(220)
    assert pid_in(client.expect(250, 'XPID')) in new
    client.close()
    assert master.proc.poll() is None


@pytest.mark.may_skip_in_ci('a kernel or sandbox that refuses PR_SET_CHILD_SUBREAPER')
def test_workers_stop_when_the_master_is_killed():
    # Adopt the orphans (Linux subreaper) so that they can be reaped here
    # rather than left as zombies of an init that may not reap.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip('cannot become a child subreaper here')
    master = Master()
    pids = []
    try:
        port, pids = master.pids()
        master.proc.send_signal(signal.SIGKILL)
        master.proc.wait(WAIT)
        for pid in pids:
            assert wait_until(lambda pid=pid: os.waitpid(pid, os.WNOHANG)[0] == pid)
    finally:
        master.kill()
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
