"""smtp_stack.proctitle: `smtp-stack: master` / `smtp-stack: worker 2` as
/proc/PID/cmdline shows them (what ps prints), set in a forked child as
workers.py does; and nothing at all, without failing, when setproctitle is
not installed."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import peers
from conftest import WAIT, readable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The master forks a worker; each titles itself and says so; both wait for
# the end of stdin (the test closes it), so the test reads their titles alive.
# One write(2) a line: the two processes share the pipe.
FORKED = r'''
import os, sys
from smtp_stack.proctitle import master_title, worker_title
pid = os.fork()
if pid == 0:
    os.write(1, f'worker {os.getpid()} {worker_title(2)}\n'.encode())
    sys.stdin.read()
    os._exit(0)
os.write(1, f'master {os.getpid()} {master_title()}\n'.encode())
sys.stdin.read()
os.waitpid(pid, 0)
'''

WITHOUT = '''
import sys
sys.modules['setproctitle'] = None      # as if it were not installed
from smtp_stack.proctitle import master_title, worker_title
print('master', master_title(), 'worker', worker_title(1), flush=True)
'''


class Script:
    """`python -c script`, its stdout read a line at a time with a deadline
    (from the pipe itself: both processes of FORKED may write before we read)."""

    def __init__(self, script: str):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, '-c', script], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buffer = b''

    def line(self) -> str:
        deadline = time.monotonic() + WAIT
        while b'\n' not in self.buffer:
            assert readable(self.proc.stdout, deadline - time.monotonic()), \
                f'the script said nothing in time: {self.buffer!r}'
            data = os.read(self.proc.stdout.fileno(), 4096)
            assert data, f'the script ended: {self.buffer!r}'
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b'\n')
        return line.decode()

    def end(self) -> int:
        """Close its stdin (what it waits for) and its exit status."""
        self.proc.stdin.close()
        status = self.proc.wait(WAIT)
        self.proc.stdout.close()
        return status


def cmdline(pid: int) -> str:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
        return f.read().rstrip(b'\0').decode()


def test_master_and_forked_worker_show_their_titles():
    peers.python_module('setproctitle')
    script = Script(FORKED)
    try:
        said = dict.fromkeys(('master', 'worker'))
        for _ in range(2):
            role, pid, done = script.line().split()
            said[role] = int(pid)
            assert done == 'True'
        assert cmdline(said['master']) == 'smtp-stack: master'
        assert cmdline(said['worker']) == 'smtp-stack: worker 2'
        assert said['master'] == script.proc.pid
    finally:
        assert script.end() == 0


def test_without_setproctitle_nothing_changes_and_nothing_fails():
    script = Script(WITHOUT)
    try:
        assert script.line() == 'master False worker False'
    finally:
        assert script.end() == 0


def test_the_title_is_what_the_issue_names(monkeypatch):
    """set_process_title's text, with a stand-in that records it."""
    from smtp_stack import proctitle

    class StandIn:
        title = ''

        def setproctitle(self, title):
            self.title = title

        def getproctitle(self):
            return self.title

    stand_in = StandIn()
    monkeypatch.setitem(sys.modules, 'setproctitle', stand_in)
    assert proctitle.worker_title(3) and stand_in.title == 'smtp-stack: worker 3'
    assert proctitle.master_title() and stand_in.title == 'smtp-stack: master'


@pytest.mark.parametrize('broken', ['raises', 'sets nothing'])
def test_a_setproctitle_that_fails_is_false_not_an_exception(monkeypatch, broken):
    from smtp_stack import proctitle

    class Broken:
        def setproctitle(self, title):
            if broken == 'raises':
                raise OSError('no argv to write into')

        def getproctitle(self):
            return 'python'

    monkeypatch.setitem(sys.modules, 'setproctitle', Broken())
    assert proctitle.master_title() is False
