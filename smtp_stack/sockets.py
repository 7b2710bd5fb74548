"""The socket classes sessions read and write through: gevent's, made
cheaper for the pattern of an SMTP session (a short reply, then a wait for
the client's next line).

- `sendall()` is one `send()` when that is enough, as it is for nearly
  every SMTP reply. gevent's own `sendall()` asks the kernel for SO_SNDBUF
  and reads the clock on every call to size the chunks of a large buffer;
  anything that one `send()` does not take still goes through it.
- `recv_within()` can wait for readability *before* reading: right after
  a reply the client has not answered yet, and a `recv()` tried first
  would only fail with EAGAIN (a system call and an exception, per
  command). Its time limit is a bare libev timer rather than a
  `gevent.Timeout` (an exception object and four calls per wait), or for
  long limits no timer at all: a `DeadlineSweeper` that the server shares
  among its sessions.
Both keep gevent's semantics: `socket.timeout` when the time is up, and a
socket closed by another greenlet wakes the reader.
"""
from __future__ import annotations

import socket

import time

from gevent import getcurrent
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.exceptions import ConcurrentObjectUseError


class PlainSocket(gsocket.socket):
    """An accepted TCP connection (the listener sets this class)."""

    __slots__ = ()

    def sendall(self, data, flags=0):
        if type(data) is bytes:
            try:
                sent = self._sock.send(data, flags)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        super().sendall(data, flags)

    def recv_within(self, size: int, timeout: float, wait_first: bool = False,
                    sweeper: DeadlineSweeper | None = None) -> bytes:
        """Up to `size` bytes, waiting at most `timeout` seconds for them
        (with a `sweeper`, limits of `sweeper.least` or more may be late by up
        to its period)."""
        if not wait_first:
            try:
                return self._sock.recv(size)
            except BlockingIOError:
                pass
        event = self._read_event
        if event.callback is not None:
            raise ConcurrentObjectUseError(
                f'This socket is already used by another greenlet: {event.callback!r}')
        hub = self.hub
        if sweeper is not None and timeout >= sweeper.least:
            waiting = sweeper.waiting
            current = getcurrent()
            waiting[current] = time.monotonic() + timeout
            try:
                while True:
                    hub.wait(event)
                    try:
                        return self._sock.recv(size)
                    except BlockingIOError:     # woken without data: wait again
                        pass
            finally:
                waiting.pop(current, None)
        timer = hub.loop.timer(timeout)
        timer.start(_time_out, getcurrent(), update=True)
        try:
            while True:
                hub.wait(event)
                try:
                    return self._sock.recv(size)
                except BlockingIOError:
                    pass
        finally:
            timer.close()

    def recv(self, bufsize, flags=0):
        """gevent's recv(), with the cheaper wait (settimeout() applies)."""
        timeout = self.timeout
        if timeout is None or flags:
            return super().recv(bufsize, flags)
        if timeout == 0.0:
            return self._sock.recv(bufsize)
        return self.recv_within(bufsize, timeout)


class TlsSocket(gssl.SSLSocket):
    """gevent's SSLSocket with the one-write sendall() of `PlainSocket`
    (set as the server's contexts' `sslsocket_class`)."""

    def sendall(self, data, flags=0):
        if type(data) is bytes and not flags and self._sslobj is not None and self.timeout != 0.0:
            sent = self.send(data)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        super().sendall(data, flags)

    def recv_within(self, size: int, timeout: float, wait_first: bool = False,
                    sweeper: DeadlineSweeper | None = None) -> bytes:
        """Decrypted bytes may already wait in the TLS layer: never wait first."""
        self.settimeout(timeout)
        return self.recv(size)


# Limits of SWEEP_LEAST seconds or more (socket_timeout is 60 by default)
# are enforced by a sweep every SWEEP_PERIOD seconds: at most that late.
SWEEP_PERIOD = 0.5
SWEEP_LEAST = 5.0


class DeadlineSweeper:
    """Time limits for many waits with one timer, for one hub.

    A session waits for its client before nearly every command, with a
    limit of a minute or more that almost never expires. A libev timer per
    wait costs an object and three calls; instead a waiting greenlet notes
    its deadline here, and a timer that repeats every `period` seconds
    throws socket.timeout into those past it. Limits shorter than `least`
    get a timer of their own (in `recv_within`), so they stay precise.
    """

    def __init__(self, hub, period: float | None = None, least: float | None = None):
        period = SWEEP_PERIOD if period is None else period
        self.least = SWEEP_LEAST if least is None else least
        self.waiting: dict = {}     # greenlet parked in recv_within -> deadline
        self._timer = hub.loop.timer(period, period)
        self._timer.start(self._sweep)
        self._timer.ref = False     # never what keeps a hub running

    def _sweep(self) -> None:
        waiting = self.waiting
        if not waiting:
            return
        now = time.monotonic()
        for greenlet in [g for g, deadline in waiting.items() if deadline <= now]:
            # Still parked? (An earlier throw in this loop may have run code
            # that woke it.) Registered greenlets are always parked in
            # recv_within's hub.wait, as the timer runs in the hub.
            if waiting.pop(greenlet, None) is not None:
                greenlet.throw(socket.timeout('timed out'))

    def close(self) -> None:
        self._timer.close()


def _time_out(greenlet) -> None:
    greenlet.throw(socket.timeout('timed out'))
