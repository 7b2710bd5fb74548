"""Tell systemd how the service is doing: the sd_notify(3) protocol, without libsystemd.

A `Type=notify` unit (contrib/systemd/smtp-stack.service) gets the address
of a unix datagram socket in `$NOTIFY_SOCKET` and waits for `READY=1` before
it calls the service started. Each message is one datagram of
`KEY=value` assignments, one a line:

    READY=1          listening; also the end of a reload
    RELOADING=1      a reload starts (SIGHUP), with MONOTONIC_USEC= (CLOCK_MONOTONIC
                     in microseconds), which systemd uses to tie the READY=1 that
                     follows to this reload (systemd.service(5), Type=notify-reload)
    STOPPING=1       a graceful stop starts (SIGTERM)
    STATUS=...       one line that `systemctl status` shows
    WATCHDOG=1       still alive: expected every $WATCHDOG_USEC microseconds when the
                     unit sets WatchdogSec=, by the process $WATCHDOG_PID names (any
                     process when it is unset; sd_watchdog_enabled(3))

The address is a file name, or, when it starts with `@`, a name in Linux's
abstract namespace (the `@` stands for the leading NUL byte). A send never
waits (a datagram on a non-blocking socket: when systemd's queue is full
the message is dropped) and never raises: the service runs the same with
or without systemd.

Only the process that made a Notifier speaks through it: a forked worker
inherits the object and the environment, and stays silent, so the unit's
`NotifyAccess=main` holds with `workers > 1` (the master notifies).
"""
from __future__ import annotations

import _socket
import os
import time
from collections.abc import Mapping
from typing import Any

import gevent

NOTIFY_SOCKET = 'NOTIFY_SOCKET'
WATCHDOG_USEC = 'WATCHDOG_USEC'
WATCHDOG_PID = 'WATCHDOG_PID'


def notify(state: str, address: str | None = None) -> bool:
    """Send `state` ('READY=1', or several assignments, one a line) to the
    socket `address` ($NOTIFY_SOCKET when None). True once sent; False when
    there is no socket to tell or the send failed. Never raises, never waits."""
    if address is None:
        address = os.environ.get(NOTIFY_SOCKET)
    target = socket_address(address)
    if target is None:
        return False
    try:
        # _socket: the C socket, which gevent's monkey-patching leaves alone.
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.setblocking(False)
        sock.sendto(state.encode('utf-8', 'replace'), target)
        return True
    except OSError:     # nobody listens, queue full (EAGAIN), a socket we may not use ...
        return False
    finally:
        sock.close()


def socket_address(text: str | None) -> bytes | None:
    """$NOTIFY_SOCKET as a unix socket address: '/run/systemd/notify' as
    is, '@name' as b'\\0name' (abstract namespace); None for anything else
    (unset, empty, relative, or a kind we do not speak, such as vsock:)."""
    if not text:
        return None
    if text.startswith('@'):
        return b'\0' + os.fsencode(text[1:])
    if text.startswith('/'):
        return os.fsencode(text)
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two WATCHDOG=1 for process `pid`: half of
    $WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends; None when the
    watchdog is off or expects another process ($WATCHDOG_PID)."""
    owner = environ.get(WATCHDOG_PID)
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get(WATCHDOG_USEC) or '0')
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock MONOTONIC_USEC= is read on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _status(text: str | None) -> tuple[str, ...]:
    """A STATUS= assignment: one line, so newlines become spaces."""
    if text is None:
        return ()
    return ('STATUS=' + ' '.join(text.splitlines()),)


class Notifier:
    """What one service process tells systemd: read the environment once
    (`environ`, os.environ by default), then ready(), reloading(), stopping(),
    status(), and the watchdog's pings from the hub.

    Every method returns whether a message was sent; none raises. Without
    $NOTIFY_SOCKET (not under systemd, or a unit that is not Type=notify)
    they send nothing.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get(NOTIFY_SOCKET) or None
        self.pid = os.getpid()
        self.watchdog_interval = watchdog_interval(env, self.pid)
        self._watchdog: Any = None      # the pinging greenlet, once started

    @property
    def enabled(self) -> bool:
        """Under systemd, in the process that made this Notifier (not a fork of it)."""
        return self.address is not None and os.getpid() == self.pid

    def send(self, *assignments: str) -> bool:
        """One datagram of `assignments` ('READY=1', 'STATUS=...')."""
        if not self.enabled:
            return False
        return notify('\n'.join(assignments), self.address)

    def ready(self, status: str | None = None) -> bool:
        """Listening (after start, and after each reload)."""
        return self.send('READY=1', *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; ready() must follow once it is done, or systemd
        keeps the unit 'reloading' until its timeout."""
        return self.send('RELOADING=1', f'MONOTONIC_USEC={monotonic_usec()}', *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """A graceful stop starts."""
        return self.send('STOPPING=1', *_status(status))

    def status(self, text: str) -> bool:
        """A line for `systemctl status` (why it could not start, for one)."""
        return self.send(*_status(text))

    # -- the watchdog ---------------------------------------------------------
    def start_watchdog(self) -> bool:
        """Ping WATCHDOG=1 every watchdog_interval seconds from a greenlet of
        the calling thread's hub (not a thread: a hub that blocks stops the
        pings, and systemd restarts the service). False when the unit has no
        watchdog for this process, or it already runs."""
        if self._watchdog is not None or self.watchdog_interval is None or not self.enabled:
            return False
        self._watchdog = gevent.spawn(self._ping, self.watchdog_interval)
        return True

    def _ping(self, interval: float) -> None:
        while True:
            self.send('WATCHDOG=1')
            gevent.sleep(interval)

    def stop_watchdog(self) -> None:
        """End the pings (from the thread that started them)."""
        pinging, self._watchdog = self._watchdog, None
        if pinging is not None:
            pinging.kill(block=False)
