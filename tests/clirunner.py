"""Run `python -m smtp_stack ...` (or a script) as a subprocess, with bounded waits.

Both pipes are read by threads into queues, so a test waits for a given
line (the start-up line on stdout, a lifecycle note on stderr) with a
deadline instead of sleeping. The process is killed by its pid in `close()`.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 10.0
LISTENING = re.compile(r'listening on \[?([0-9a-f.:]+?)\]?:(\d+)\b')


def env_with_package() -> dict:
    """The environment for a child: smtp_stack importable from this checkout."""
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env['PYTHONUNBUFFERED'] = '1'
    return env


class Process:

    def __init__(self, args, cwd, stdin=None, env=None):
        """`env`: variables to set beside the ones this process has."""
        self.proc = subprocess.Popen(
            args, cwd=str(cwd), env={**env_with_package(), **(env or {})},
            stdin=stdin or subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout: queue.Queue = queue.Queue()
        self.stderr: queue.Queue = queue.Queue()
        self.seen = {'stdout': [], 'stderr': []}
        for pipe, q in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=_pump, args=(pipe, q), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, pattern: str, stream: str = 'stderr', timeout: float = WAIT):
        """The first line (from now on) matching `pattern`, or AssertionError."""
        q = self.stdout if stream == 'stdout' else self.stderr
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f'no {stream} line matching {pattern!r} within {timeout} s; '
                                     f'seen: {self.seen}')
            try:
                line = q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f'{stream} closed before {pattern!r}; seen: {self.seen}; '
                                     f'exit: {self.proc.poll()}')
            self.seen[stream].append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def signal(self, signum) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if pipe is not None:
                pipe.close()


def _pump(pipe, q) -> None:
    try:
        for line in pipe:
            q.put(line.rstrip('\n'))
    except ValueError:      # closed under us
        pass
    q.put(None)


class Serve(Process):
    """`python -m smtp_stack serve ARGS`, waited for until it listens."""

    def __init__(self, cwd, *args):
        super().__init__([sys.executable, '-m', 'smtp_stack', 'serve', *args], cwd)
        try:
            match = self.wait_line(LISTENING.pattern, 'stdout')
        except AssertionError:
            self.close()
            raise
        self.line = match.string
        self.address = (match[1], int(match[2]))


def run(args, cwd, input: str | None = None, timeout: float = WAIT):
    """Run a short command to its end: CompletedProcess (text)."""
    return subprocess.run(args, cwd=str(cwd), env=env_with_package(), input=input,
                          capture_output=True, text=True, timeout=timeout)


def smtp_stack(*args, cwd, input=None):
    return run([sys.executable, '-m', 'smtp_stack', *args], cwd, input=input)
