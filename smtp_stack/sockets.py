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
- `TlsSocket` runs TLS over a `PlainSocket` through memory BIOs, with the
  same waits, and the fewest system calls a TLS session can make.
All keep gevent's semantics: `TimeoutError` (`socket.timeout`) when the
time is up, and a socket closed by another greenlet wakes the reader.
"""
from __future__ import annotations

import ssl
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeAlias

from gevent import getcurrent
from gevent import socket as gsocket
from gevent.exceptions import ConcurrentObjectUseError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from gevent.hub import Hub

# gevent ships no type information: its hub, watchers and greenlets are Any
# to a type checker; these names say which one a parameter is.
Watcher: TypeAlias = Any   # a libev io watcher (`socket._read_event`)
Greenlet: TypeAlias = Any  # a greenlet parked in the hub


class PlainSocket(gsocket.socket):
    """An accepted TCP connection (the listener sets this class)."""

    __slots__ = ()

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
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
        hub = self.hub
        deadline = time.monotonic() + timeout
        remaining = timeout
        while True:
            _wait_for(hub, self._read_event, remaining, deadline, sweeper)
            try:
                return self._sock.recv(size)
            except BlockingIOError:     # woken without data: wait again
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('timed out')

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """gevent's recv(), with the cheaper wait (settimeout() applies)."""
        timeout = self.timeout
        if timeout is None or flags:
            return super().recv(bufsize, flags)
        if timeout == 0.0:
            return self._sock.recv(bufsize)
        return self.recv_within(bufsize, timeout)


class TlsSocket:
    """A TLS connection over a `PlainSocket`, through OpenSSL memory BIOs.

    The ssl module's own socket wrapper lets OpenSSL do the socket I/O:
    two `read()`s per record (header, then body: CPython never turns on
    read-ahead), one `write()` per session ticket, and in gevent's wrapper
    six more system calls to set up. Here each wait is followed by one
    `recv()` of all the kernel holds, and all OpenSSL has to say goes out in
    one `send()`.
    The waits and time limits are `PlainSocket.recv_within`'s.
    """

    __slots__ = ('raw', 'sslobj', '_incoming', '_outgoing')

    def __init__(self, raw: PlainSocket, context: ssl.SSLContext,
                 server_side: bool = True) -> None:
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = sslobj = context.wrap_bio(self._incoming, self._outgoing,
                                                server_side=server_side)
        # A gevent SSLContext hands SNI callbacks `conn._sslsock()`, the
        # socket it wrapped; here that is the SSLObject itself.
        sslobj._sslsock = weakref.ref(sslobj)  # type: ignore[attr-defined]

    def do_handshake(self, timeout: float, sweeper: DeadlineSweeper | None = None) -> None:
        """The whole handshake within `timeout` seconds (socket.timeout
        after that; ssl.SSLError when TLS fails, after the alert is sent)."""
        deadline = time.monotonic() + timeout
        sslobj = self.sslobj
        while True:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self._send_alert()
                raise
            self._pull(deadline, sweeper, True)
        # Before TLS 1.3 the client waits for our Finished, still buffered
        # here. A TLS 1.3 client does not, yet its session ticket goes now
        # too: it is the ACK of the client's Finished. Held back for the
        # first reply, the client's next command waited behind its Finished
        # (Nagle's algorithm) for our delayed ACK: 40 ms.
        if self._outgoing.pending:
            self.raw.sendall(self._outgoing.read())

    def recv_within(self, size: int, timeout: float, wait_first: bool = False,
                    sweeper: DeadlineSweeper | None = None) -> bytes:
        """Up to `size` decrypted bytes, as `PlainSocket.recv_within`; b''
        when the client closed, with or without a close_notify."""
        sslobj = self.sslobj
        deadline = None
        if wait_first and not self._incoming.pending and not sslobj.pending():
            # A read tried now could only raise SSLWantReadError.
            deadline = time.monotonic() + timeout
            self._pull(deadline, sweeper, True)
        while True:
            try:
                return sslobj.read(size)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b''
            if deadline is None:
                deadline = time.monotonic() + timeout
            self._pull(deadline, sweeper, False)

    def sendall(self, data: ReadableBuffer) -> None:
        self.sslobj.write(data)
        self.raw.sendall(self._outgoing.read())

    def close(self) -> None:
        self.raw.close()

    def _pull(self, deadline: float, sweeper: DeadlineSweeper | None,
              wait_first: bool) -> None:
        """What OpenSSL has to send goes first; then the bytes the kernel
        holds (waiting for some until `deadline`) go to OpenSSL."""
        raw = self.raw
        if self._outgoing.pending:
            raw.sendall(self._outgoing.read())
        sock = raw._sock
        while True:
            if not wait_first:
                try:
                    data = sock.recv(TLS_RECV_SIZE)
                except BlockingIOError:
                    pass
                else:
                    if data:
                        self._incoming.write(data)
                    else:
                        self._incoming.write_eof()
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('timed out')
            _wait_for(raw.hub, raw._read_event, remaining, deadline, sweeper)
            wait_first = False

    def _send_alert(self) -> None:
        """The alert of a failed handshake, if the socket takes it now."""
        if self._outgoing.pending:
            try:
                self.raw._sock.send(self._outgoing.read())
            except OSError:
                pass


# All a client may have sent: several full TLS records (16 KiB and a header).
TLS_RECV_SIZE = 65536


def _wait_for(hub: Hub, event: Watcher, timeout: float, deadline: float,
              sweeper: DeadlineSweeper | None) -> None:
    """Park in the hub until `event` fires, or raise socket.timeout when
    `timeout` seconds have passed (at `deadline`, on the monotonic clock)."""
    if event.callback is not None:
        raise ConcurrentObjectUseError(
            f'This socket is already used by another greenlet: {event.callback!r}')
    current = getcurrent()
    if sweeper is not None and timeout >= sweeper.least:
        waiting = sweeper.waiting
        waiting[current] = deadline
        try:
            event.start(current.switch)     # _park(), inline: every command waits here
            hub.switch()
        finally:
            event.stop()
            waiting.pop(current, None)
        return
    timer = hub.loop.timer(timeout)
    timer.start(_time_out, current, update=True)
    try:
        _park(hub, event, current)
    finally:
        timer.close()


def _park(hub: Hub, event: Watcher, current: Greenlet) -> None:
    """hub.wait(event) without its Waiter object: the watcher switches
    straight back to this greenlet. A close() of the socket elsewhere still
    wakes it (gevent throws into `event.callback.__self__`), as does any
    exception thrown into it (a time limit, a kill)."""
    event.start(current.switch)
    try:
        hub.switch()
    finally:
        event.stop()


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

    def __init__(self, hub: Hub, period: float | None = None,
                 least: float | None = None) -> None:
        period = SWEEP_PERIOD if period is None else period
        self.least = SWEEP_LEAST if least is None else least
        self.waiting: dict[Greenlet, float] = {}    # parked in recv_within -> deadline
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
                greenlet.throw(TimeoutError('timed out'))

    def close(self) -> None:
        self._timer.close()


def _time_out(greenlet: Greenlet) -> None:
    greenlet.throw(TimeoutError('timed out'))
