"""Shared fixtures: a real server on 127.0.0.1 and a raw SMTP client."""
from __future__ import annotations

import contextlib
import select
import socket
import time

import pytest

from smtp_stack import LogLevels, SmtpServer
from smtp_stack.testing import ServerThread

from peers import IN_CI

WAIT = 10.0     # every blocking wait in the tests is bounded by this


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failed one: CI installs every peer and
    extra, so a skip there means something is missing and the test would
    prove nothing (peers.py names the package). A test whose skip depends
    on the machine's limits, not on what is installed, says so with
    `@pytest.mark.may_skip_in_ci(reason)`."""
    outcome = yield
    report = outcome.get_result()
    if (IN_CI and report.skipped and not hasattr(report, 'wasxfail')
            and item.get_closest_marker('may_skip_in_ci') is None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = 'failed'
        report.longrepr = f'skipped in CI, where nothing may be: {reason}'


def pytest_configure(config):
    config.addinivalue_line('markers', 'may_skip_in_ci(reason): the test may skip even in CI, '
                                       'for a reason of the machine (a limit), not a missing peer')


def readable(source, timeout: float) -> bool:
    """Whether `source` (a file, a socket or a descriptor) has something
    to read within `timeout` seconds. poll(), not select(): select()
    cannot take a descriptor past 1023, which a long test run reaches."""
    fd = source if isinstance(source, int) else source.fileno()
    watch = select.poll()
    watch.register(fd, select.POLLIN)
    return bool(watch.poll(max(0.0, timeout) * 1000))


def wait_until(predicate, timeout: float = WAIT, step: float = 0.01):
    """Poll `predicate` until it returns something true (returned), or
    False after `timeout`: for state another thread or process changes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


class RawClient:
    """A line-level SMTP client on a plain socket, for what smtplib can't do."""

    def __init__(self, address, timeout: float = WAIT):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b''

    def send(self, data) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self) -> bytes:
        while b'\r\n' not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f'closed; unparsed: {self.buf!r}')
            self.buf += data
        line, _, self.buf = self.buf.partition(b'\r\n')
        return line

    def reply(self) -> tuple[int, str]:
        """One reply, multi-line joined with '\\n'."""
        lines = []
        while True:
            line = self._line().decode('utf-8', 'replace')
            lines.append(line[4:])
            if line[3:4] != '-':
                return int(line[:3]), '\n'.join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line + '\r\n')
        return self.reply()

    def expect(self, code: int, line: str | None = None) -> str:
        got = self.cmd(line) if line is not None else self.reply()
        assert got[0] == code, f'{line!r}: expected {code}, got {got}'
        return got[1]

    def closed(self) -> bool:
        """True when the server has closed the connection (bounded wait)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def serve():
    """serve(**options) -> a started SmtpServer (stopped after the test)."""
    running = []

    def start(middleware=(), **options):
        options.setdefault('name', 'mx.test')
        options.setdefault('disable_reverse_lookup', True)
        options.setdefault('log_level', LogLevels.WARN)
        server = SmtpServer(**options)
        for fn in middleware:
            server.use(fn)
        runner = ServerThread(server).start()
        running.append(runner)
        return server

    yield start
    for runner in running:
        runner.stop(timeout=2)


@pytest.fixture
def client():
    """client(server) -> a RawClient that has read the greeting."""
    opened = []

    def connect(server, greeting: int | None = 220):
        c = RawClient(server.address)
        opened.append(c)
        if greeting is not None:
            c.expect(greeting)
        return c

    yield connect
    for c in opened:
        c.close()
