"""`smtp-stack serve` under a service manager: what it tells systemd through
$NOTIFY_SOCKET (READY, WATCHDOG, RELOADING and READY on SIGHUP, STOPPING on
SIGTERM, why it could not start), and the titles ps shows for the master and
its workers."""
import os
import signal
import socket
import textwrap

import pytest

import peers
from clirunner import Serve, smtp_stack
from conftest import WAIT, RawClient, wait_until
from test_systemd import NotifySocket


@pytest.fixture
def notify_socket(monkeypatch, tmp_path_factory):
    """systemd's socket, named in the environment every child inherits."""
    directory = tmp_path_factory.mktemp('sd', numbered=True)
    path = os.path.join(directory, 'n')
    if len(path) >= 100:        # sun_path is 108 bytes
        path = f'@smtp-stack-test/{os.getpid()}/{id(directory)}'
    listener = NotifySocket(path)
    monkeypatch.setenv('NOTIFY_SOCKET', listener.address)
    monkeypatch.setenv('WATCHDOG_USEC', '200000')
    monkeypatch.delenv('WATCHDOG_PID', raising=False)
    yield listener
    listener.close()


@pytest.fixture
def serving():
    procs = []

    def start(cwd, *args):
        proc = Serve(cwd, *args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


def config(tmp_path, workers=1):
    path = tmp_path / 'smtp.yaml'
    path.write_text(textwrap.dedent(f'''\
        listen: {{host: 127.0.0.1, port: 0}}
        workers: {workers}
        close_timeout: 2
        deliver: {{maildir: {tmp_path / "maildir"}}}
    '''))
    return str(path)


def greets(address) -> None:
    client = RawClient(address)
    assert client.reply()[0] == 220
    client.close()


def test_serve_tells_systemd_ready_alive_reloading_and_stopping(notify_socket, serving,
                                                                 tmp_path):
    proc = serving(tmp_path, '--config', config(tmp_path))
    ready = notify_socket.wait_for('READY')
    assert ready.pid == proc.pid
    assert proc.line.endswith(': ' + ready.fields['STATUS'])     # the start-up line's message
    greets(proc.address)
    notify_socket.wait_for('WATCHDOG')
    proc.signal(signal.SIGHUP)
    reloading = notify_socket.wait_for('RELOADING')
    assert int(reloading.fields['MONOTONIC_USEC']) > 0
    proc.wait_line('SIGHUP: configuration reloaded')
    assert notify_socket.wait_for('READY').fields['STATUS'] == ready.fields['STATUS']
    proc.signal(signal.SIGTERM)
    stopping = notify_socket.wait_for('STOPPING')
    assert stopping.fields['STATUS'] == 'SIGTERM: stopping'
    assert proc.wait() == 0
    assert {message.pid for message in notify_socket.seen} == {proc.pid}


def test_a_reload_that_fails_still_ends_with_ready(notify_socket, serving, tmp_path):
    """systemd keeps a unit 'reloading' until READY=1: a broken file must not leave it so."""
    path = config(tmp_path)
    proc = serving(tmp_path, '--config', path)
    notify_socket.wait_for('READY')
    with open(path, 'a') as f:
        f.write('size: lots\n')
    proc.signal(signal.SIGHUP)
    notify_socket.wait_for('RELOADING')
    proc.wait_line('configuration NOT reloaded')
    notify_socket.wait_for('READY')
    greets(proc.address)


def test_a_server_that_cannot_listen_says_why_in_its_status(notify_socket, tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = smtp_stack('serve', '--port', str(port), cwd=tmp_path)
    assert result.returncode == 1
    status = notify_socket.wait_for('STATUS')
    assert status.fields == {
        'STATUS': f'cannot listen on 127.0.0.1:{port}: Address already in use'}


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != 'Z':
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
        return f.read().rstrip(b'\0').decode()


def test_with_workers_ps_tells_master_and_workers_apart_and_the_master_notifies(
        notify_socket, serving, tmp_path):
    peers.python_module('setproctitle')
    proc = serving(tmp_path, '--config', config(tmp_path, workers=2))
    notify_socket.wait_for('READY')

    def titles():
        workers = sorted(cmdline(pid) for pid in children(proc.pid))
        return workers if len(workers) == 2 and workers[0].startswith('smtp-stack: worker') \
            else None

    workers = wait_until(titles)
    assert workers, f'no two titled workers under {proc.pid}: {children(proc.pid)}'
    assert cmdline(proc.pid) == 'smtp-stack: master'
    numbers = [title.removeprefix('smtp-stack: worker ') for title in workers]
    assert len(set(numbers)) == 2 and all(number.isdigit() for number in numbers)
    greets(proc.address)
    notify_socket.wait_for('WATCHDOG')
    proc.signal(signal.SIGTERM)
    notify_socket.wait_for('STOPPING')
    assert proc.wait(WAIT) == 0
    assert {message.pid for message in notify_socket.seen} == {proc.pid}
