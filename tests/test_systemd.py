"""smtp_stack.systemd: sd_notify over a unix datagram socket the test binds
as $NOTIFY_SOCKET, the way systemd does (the sender's pid read from
SCM_CREDENTIALS, as systemd checks NotifyAccess=), and the unit file
checked by the real `systemd-analyze verify`.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import gevent
import gevent.socket
import pytest

from smtp_stack.systemd import Notifier, notify, socket_address, watchdog_interval

import peers
from conftest import WAIT, RawClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, 'contrib', 'systemd', 'smtp-stack.service')
_UCRED = struct.Struct('iII')       # struct ucred: pid, uid, gid


class Message:
    """One datagram: its text, its assignments, and the pid that sent it."""

    def __init__(self, data: bytes, pid: int | None):
        self.text = data.decode('utf-8')
        self.fields = dict(line.partition('=')[::2] for line in self.text.split('\n') if line)
        self.pid = pid

    def __repr__(self) -> str:
        return f'<Message from {self.pid}: {self.text!r}>'


class NotifySocket:
    """systemd's side: a datagram socket bound at `address` ('/path' or '@name')."""

    def __init__(self, address: str, sock: socket.socket | None = None):
        self.address = address
        self.sock = sock or socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(socket_address(address))
        self.seen: list[Message] = []

    def receive(self, timeout: float = WAIT) -> Message:
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[:_UCRED.size])[0]
        message = Message(data, pid)
        self.seen.append(message)
        return message

    def wait_for(self, key: str, timeout: float = WAIT) -> Message:
        """The next message that assigns `key` (others are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f'no {key}= within {timeout} s; seen: {self.seen}')
            try:
                message = self.receive(remaining)
            except TimeoutError:
                continue
            if key in message.fields:
                return message

    def pending(self) -> list[str]:
        """What is queued now, read without waiting."""
        texts = []
        self.sock.setblocking(False)
        try:
            while True:
                texts.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return texts
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()
        if self.address.startswith('/'):
            os.unlink(self.address)


@pytest.fixture
def short_dir():
    """A directory whose socket paths fit sun_path (108 bytes)."""
    path = tempfile.mkdtemp(prefix='sd', dir='/tmp')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def listener(short_dir):
    sock = NotifySocket(os.path.join(short_dir, 'notify'))
    yield sock
    sock.close()


@pytest.fixture
def abstract_listener():
    sock = NotifySocket(f'@smtp-stack-test/{os.getpid()}/{time.monotonic_ns()}')
    yield sock
    sock.close()


# -- notify(): the one datagram -------------------------------------------------

def test_notify_sends_one_datagram_to_the_path_in_notify_socket(listener, monkeypatch):
    monkeypatch.setenv('NOTIFY_SOCKET', listener.address)
    assert notify('READY=1\nSTATUS=listening') is True
    message = listener.receive()
    assert message.text == 'READY=1\nSTATUS=listening'
    assert message.fields == {'READY': '1', 'STATUS': 'listening'}
    assert message.pid == os.getpid()


def test_notify_reaches_an_abstract_namespace_socket(abstract_listener):
    assert abstract_listener.address.startswith('@')
    assert notify('STOPPING=1', abstract_listener.address) is True
    assert abstract_listener.receive().text == 'STOPPING=1'


@pytest.mark.parametrize('value', [None, '', 'relative/notify', 'vsock:2:1234'])
def test_notify_without_a_usable_notify_socket_sends_nothing(value, monkeypatch):
    if value is None:
        monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    else:
        monkeypatch.setenv('NOTIFY_SOCKET', value)
    assert notify('READY=1') is False


def test_notify_to_a_socket_nobody_binds_is_false_not_an_exception(short_dir):
    assert notify('READY=1', os.path.join(short_dir, 'nobody')) is False
    assert notify('READY=1', '@smtp-stack-test/nobody/here') is False


def test_notify_never_waits_when_the_queue_is_full(listener):
    """Nobody reads: the queue fills, and then a send fails at once (EAGAIN)
    instead of holding the hub until systemd reads."""
    results: list[bool] = []

    def flood():
        for _ in range(100_000):
            results.append(notify('WATCHDOG=1', listener.address))
            if not results[-1]:
                return

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    flooding.join(WAIT)
    assert not flooding.is_alive(), 'notify() blocked on a full queue'
    assert results[0] is True and results[-1] is False


@pytest.mark.parametrize('address, expected', [
    ('/run/systemd/notify', b'/run/systemd/notify'),
    ('@/org/freedesktop/systemd1/notify', b'\0/org/freedesktop/systemd1/notify'),
    (None, None), ('', None), ('notify', None), ('vsock:2:1', None),
])
def test_socket_address(address, expected):
    assert socket_address(address) == expected


# -- Notifier: what the service says, and when -----------------------------------

def test_ready_reloading_stopping_and_status(listener):
    notifier = Notifier({'NOTIFY_SOCKET': listener.address})
    assert notifier.enabled
    assert notifier.ready('listening on 127.0.0.1:2525')
    assert listener.receive().fields == {'READY': '1', 'STATUS': 'listening on 127.0.0.1:2525'}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading('reloading the configuration')
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = listener.receive().fields
    assert reloading.keys() == {'RELOADING', 'MONOTONIC_USEC', 'STATUS'}
    assert reloading['RELOADING'] == '1'
    assert before <= int(reloading['MONOTONIC_USEC']) <= after
    assert notifier.ready()
    assert listener.receive().text == 'READY=1'
    assert notifier.stopping('SIGTERM: stopping\n3 open sessions')
    assert listener.receive().fields == {'STOPPING': '1',
                                         'STATUS': 'SIGTERM: stopping 3 open sessions'}
    assert notifier.status('cannot listen on 0.0.0.0:25: Permission denied')
    assert listener.receive().text == 'STATUS=cannot listen on 0.0.0.0:25: Permission denied'


def test_a_notifier_without_notify_socket_is_silent():
    notifier = Notifier({'WATCHDOG_USEC': '1000000'})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.stopping() is False
    assert notifier.start_watchdog() is False


def test_a_forked_copy_of_the_notifier_sends_nothing(listener):
    """A worker inherits the master's Notifier: only the master speaks
    (the unit's NotifyAccess=main)."""
    notifier = Notifier({'NOTIFY_SOCKET': listener.address})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: report what ready() returned, and leave
        try:
            os.write(write_end, b'1' if notifier.ready('from the child') else b'0')
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b'0'
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert notifier.ready('from the parent')
    message = listener.receive()        # the first in the queue: the child sent nothing
    assert message.fields['STATUS'] == 'from the parent' and message.pid == os.getpid()


@pytest.mark.parametrize('environ, interval', [
    ({}, None),
    ({'WATCHDOG_USEC': '2000000'}, 1.0),
    ({'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': '{pid}'}, 1.0),
    ({'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': '{other}'}, None),
    ({'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': 'x'}, None),
    ({'WATCHDOG_USEC': '0'}, None),
    ({'WATCHDOG_USEC': '-5'}, None),
    ({'WATCHDOG_USEC': 'soon'}, None),
    ({'WATCHDOG_USEC': '100000'}, 0.05),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_its_own_pid(environ, interval):
    pid = 4242
    environ = {key: value.format(pid=pid, other=pid + 1) for key, value in environ.items()}
    assert watchdog_interval(environ, pid) == interval


def test_watchdog_pings_from_the_hub_so_a_blocked_hub_stops_them(short_dir):
    """The pings are a greenlet of the hub, not a thread: while the hub is
    blocked none is sent (systemd then restarts the service), and they
    resume when it runs again."""
    address = os.path.join(short_dir, 'notify')
    receiver = NotifySocket(address, gevent.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    notifier = Notifier({'NOTIFY_SOCKET': address, 'WATCHDOG_USEC': '100000'})
    assert notifier.watchdog_interval == 0.05
    try:
        assert notifier.start_watchdog()
        assert notifier.start_watchdog() is False       # one pinger
        assert receiver.receive().text == 'WATCHDOG=1'  # waits in the hub: the pinger runs
        receiver.pending()
        time.sleep(0.5)     # the hub blocked for ten intervals (the thing under test)
        assert receiver.pending() == []
        assert receiver.receive().text == 'WATCHDOG=1'
        pinger = notifier._watchdog
        notifier.stop_watchdog()
        pinger.join(WAIT)
        assert pinger.dead
    finally:
        notifier.stop_watchdog()
        receiver.close()


def test_no_watchdog_when_it_expects_another_process(listener):
    notifier = Notifier({'NOTIFY_SOCKET': listener.address, 'WATCHDOG_USEC': '100000',
                         'WATCHDOG_PID': str(os.getpid() + 1)})
    assert notifier.watchdog_interval is None
    assert notifier.start_watchdog() is False


# -- a real server in a process of its own ------------------------------------------

# What runtime.serve_until_stopped does with the Notifier, around a real SmtpServer.
SERVICE = '''
import signal, sys
import gevent
from smtp_stack import SmtpServer
from smtp_stack.systemd import Notifier

server = SmtpServer(name='mx.test', disable_reverse_lookup=True, workers=int(sys.argv[1]),
                    close_timeout=2)
server.handle_signals = False
notifier = Notifier()

def stopping(signame):
    notifier.stopping(f'{signame}: stopping')
    server.stop()

def reloading():
    notifier.reloading('reloading the configuration')
    server.reload()
    notifier.ready(f'listening on port {server.address[1]}, reloaded')

handlers = [gevent.signal_handler(signal.SIGTERM, stopping, 'SIGTERM'),
            gevent.signal_handler(signal.SIGHUP, reloading)]
server.start(0, '127.0.0.1')
notifier.ready(f'listening on port {server.address[1]}')
notifier.start_watchdog()
server.serve_forever()
notifier.stop_watchdog()
'''


@pytest.fixture
def service(listener):
    """service(workers) -> the Popen of SERVICE with NOTIFY_SOCKET and a 0.1 s watchdog."""
    started = []

    def start(workers: int = 1) -> subprocess.Popen:
        env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC='100000',
                   PYTHONPATH=ROOT)
        env.pop('WATCHDOG_PID', None)
        proc = subprocess.Popen([sys.executable, '-c', SERVICE, str(workers)], env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


def port_of(message: Message) -> int:
    return int(re.search(r'port (\d+)', message.fields['STATUS'])[1])


def smtp_greets(port: int) -> None:
    client = RawClient(('127.0.0.1', port))
    assert client.reply()[0] == 220
    client.close()


def test_a_server_says_ready_once_listening_pings_and_says_stopping_on_sigterm(
        service, listener):
    proc = service(1)
    ready = listener.wait_for('READY')
    assert ready.pid == proc.pid
    smtp_greets(port_of(ready))     # READY=1 came once it listens
    for _ in range(2):
        assert listener.wait_for('WATCHDOG').pid == proc.pid
    proc.send_signal(signal.SIGTERM)
    stopping = listener.wait_for('STOPPING')
    assert stopping.fields == {'STOPPING': '1', 'STATUS': 'SIGTERM: stopping'}
    assert proc.wait(WAIT) == 0


def test_with_workers_the_master_alone_notifies_through_a_reload(service, listener):
    """NotifyAccess=main: READY, RELOADING, WATCHDOG and STOPPING all come
    from the master, the process systemd started, while workers serve."""
    proc = service(2)
    port = port_of(listener.wait_for('READY'))
    smtp_greets(port)       # served by a worker
    proc.send_signal(signal.SIGHUP)
    reloading = listener.wait_for('RELOADING')
    assert int(reloading.fields['MONOTONIC_USEC']) > 0
    reloaded = listener.wait_for('READY')
    assert reloaded.fields['STATUS'].endswith('reloaded')
    smtp_greets(port)
    listener.wait_for('WATCHDOG')
    proc.send_signal(signal.SIGTERM)
    listener.wait_for('STOPPING')
    assert proc.wait(WAIT) == 0
    assert {message.pid for message in listener.seen} == {proc.pid}


# -- the unit file ------------------------------------------------------------------

def test_the_unit_file_passes_systemd_analyze_verify(short_dir):
    """Every key known and well-formed (verify only warns about an unknown
    key, so its output must be empty too)."""
    analyze = peers.program('systemd-analyze', 'systemd')
    program = shutil.which('smtp-stack')
    assert program, 'the smtp-stack command is not installed (pip install -e .)'
    with open(UNIT, encoding='utf-8') as f:
        text = f.read()
    for key in ('Type=notify\n', 'NotifyAccess=main\n', 'WatchdogSec=', 'ExecReload=',
                'KillMode=mixed\n'):
        assert key in text
    # verify checks that the commands exist: point them at this installation.
    unit = os.path.join(short_dir, 'smtp-stack.service')
    with open(unit, 'w', encoding='utf-8') as f:
        f.write(text.replace('/usr/local/bin/smtp-stack', program))
    result = subprocess.run([analyze, 'verify', unit], capture_output=True, text=True,
                            timeout=60, cwd=short_dir)
    assert (result.returncode, result.stdout + result.stderr) == (0, '')

