"""The socket side of the milter: accepting MTA connections, and for each
one packets in, replies out, and SMFIR_PROGRESS while the chain works;
the only socket code of the milter.

An MTA opens one connection per SMTP session (Postfix's smtpd does) and
speaks a few small packets on it, so what a connection costs to open,
wait on and close is most of a milter's work. Hence plain non-blocking
sockets under the hub's own watchers rather than gevent's socket layer:
`Listener` accepts in the hub (a burst at once) and starts each
connection's greenlet; `Transport` waits on one io watcher and one timer
per connection (kept for the next one when it ends: WATCHERS_KEPT), reads
up to 64 KiB at a time (every packet in them is
parsed before the next read: Postfix writes a message's macros and its end
together), and tries a read first only when the last one may have left
bytes behind. The macros of the steps the chain skipped, most of the
packets, are held as they are read (protocol.PacketReader's `held`) and
taken in before the next packet is returned. Nothing here blocks the hub:
every wait is a watcher and a switch to the hub.

`Transport` is the base of MilterConnection (connection.py), which adds
the events; message.MessageReader reads the content packets through it
(its Channel).
"""
from __future__ import annotations

import errno
from _socket import socket as Socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent import get_hub
from gevent.lock import Semaphore
from greenlet import getcurrent

from ..errors import ClientDisconnected
from ..logs import emit
from . import protocol as P
from .protocol import Packet

if TYPE_CHECKING:
    from ..options import Options
    from ..session import Session
    from .server import MilterServer

RECV_SIZE = 65536 + 1024        # a body chunk and its header in one recv()
TRACE = 5                       # LogLevels.TRACE: every packet, both ways
PROGRESS_PACKET = P.reply(P.PROGRESS)
ACCEPT_BURST = 64               # connections accepted per wakeup before others run
# accept() failures that say the process or the system is out of something:
# accepting pauses instead of spinning on them (the pending connections wait).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 0.1              # s
# Read watchers and timers kept by a server for its next connections: a
# connection's pair costs as much to make as a quarter of its session's
# events, and Postfix opens one connection per SMTP session.
WATCHERS_KEPT = 64
# What the hub hands a waiting greenlet: its watcher fired, or its timer did.
READY, TIMED_OUT = object(), object()


def unanswered(flags: int) -> frozenset[str]:
    """The commands an MTA awaits no reply to, given the protocol flags agreed."""
    return P.UNANSWERED | {step.command for step in P.STEPS if flags & step.no_reply}


class Listener:
    """Accepts connections on a listening socket, in the hub's callback of
    an io watcher, and calls `handle(sock, address)` for each: `sock` the
    system's socket (_socket.socket: no Python layer of socket.py on top)
    in non-blocking mode. `close()` stops accepting and closes the
    listening socket."""

    def __init__(self, sock: Any, handle: Callable[[Socket, Any], None],
                 log: Callable[..., None]) -> None:
        self.socket = sock
        # gevent's socket wraps the system's; accept() is made on that one.
        self._raw: Socket = getattr(sock, '_sock', sock)
        self._raw.setblocking(False)
        self._family, self._type = self._raw.family, self._raw.type
        self._handle = handle
        self._log = log
        self._loop = get_hub().loop
        self._watcher = self._loop.io(self._raw.fileno(), 1)
        self._pause: Any = None
        self.closed = False

    def start(self) -> None:
        self._watcher.start(self._accept)

    def _accept(self) -> None:
        """Take up to ACCEPT_BURST connections; the hub calls again while
        more are pending."""
        accept = self._raw._accept      # type: ignore[attr-defined]
        family, kind, handle = self._family, self._type, self._handle
        for _ in range(ACCEPT_BURST):
            try:
                fd, address = accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._log('milter: accept failed, pausing %s s: %s', ACCEPT_PAUSE, exc)
                    self._watcher.stop()
                    self._pause = self._loop.timer(ACCEPT_PAUSE)
                    self._pause.start(self._resume)
                    return
                continue        # ECONNABORTED and the like: that one client's loss
            sock = Socket(family, kind, 0, fd)
            sock.setblocking(False)
            handle(sock, address)

    def _resume(self) -> None:
        self._pause = None
        if not self.closed:
            self._watcher.start(self._accept)

    def close(self) -> None:
        self.closed = True
        self._watcher.close()
        if self._pause is not None:
            self._pause.close()
        self.socket.close()


class Transport:
    """One MTA connection's socket: `read_packet`, `answer`, and the reply
    the MTA waits for (`owed`), from the protocol flags agreed."""

    # What a new connection starts with, as class defaults (a connection
    # lives for one short session: each attribute not set is time saved).
    owed: str | None = None             # the event the MTA waits for a reply to
    flags = 0                           # the protocol flags agreed (SMFIP_*)
    session: Session | None = None
    _silent: frozenset[str] = P.UNANSWERED  # commands the MTA awaits no reply to
    _pushback: Packet | None = None
    _writable: Any = None               # made when a send() does not take it all
    _write_timer: Any = None            # its own: PROGRESS may wait while a read does
    # Whether the last recv() may have left bytes in the socket: then the
    # next one is tried before waiting. The MTA writes first, so the first
    # one is tried at once.
    _more = True
    # The greenlet sending SMFIR_PROGRESS, and the lock that keeps its
    # packets and the reply from interleaving (made with the first ticker).
    _ticker: Any = None
    _write: Semaphore | None = None

    def __init__(self, server: MilterServer, sock: Socket, peer: str) -> None:
        self.server = server
        self.options: Options = server.options
        self.sock = sock
        self.peer = peer
        self._log_min = log_min = self.options.log_level
        # SMFIC_MACRO data (held_form) not taken in yet: the reader puts most
        # there, unless every packet is logged (TRACE).
        self._held: list[bytes] = []
        self.reader = P.PacketReader(server.max_packet,
                                     self._held if log_min > TRACE else None)
        self._hub = hub = get_hub()
        spare = server.spare_watchers
        if spare:       # a connection's that ended: stopped, its fd set anew
            self._readable, self._timer = spare.pop()
            self._readable.fd = sock.fileno()
        else:
            self._readable = hub.loop.io(sock.fileno(), 1)
            self._timer = self._new_timer()

    def log(self, level: int, message: str, *args: object) -> None:
        if level >= self._log_min:
            sid = self.session.id if self.session is not None else f'milter[{self.peer}]'
            emit(self.server.log_backend, level, '%s: ' + message, (sid, *args),
                 {'session': sid})

    def agree(self, flags: int, silent: frozenset[str] | None = None) -> None:
        """The protocol flags of the negotiation, and so the commands that
        go unanswered (`silent`, when worked out already: unanswered(flags))."""
        self.flags = flags
        self._silent = unanswered(flags) if silent is None else silent

    def expects(self, command: str) -> bool:
        return command not in self._silent

    # -- reading ---------------------------------------------------------------
    def read_packet(self) -> Packet:
        """The next packet; ClientDisconnected when the MTA is gone or
        silent past socket_timeout, ProtocolError for a malformed one."""
        pushed = self._pushback
        if pushed is not None:
            self._pushback = None
            return pushed
        ready = self.reader.ready
        while not ready:
            self.receive()
        packet = ready.popleft()
        if self._held:      # the macros that came before it
            self._take_held()
        if self._log_min <= TRACE:
            self.log(TRACE, 'MTA: %s %r', P.name_of(packet.command), packet.data[:100])
        return packet

    def _take_held(self) -> None:
        """Take in the macros held (the connection applies them)."""
        self._held.clear()

    def receive(self) -> None:
        """One recv() of up to RECV_SIZE bytes into the reader, after waiting
        for them when the last recv() emptied the socket; ProtocolError
        first if the bytes received already went bad. (The wait is _wait's,
        written out: it is the one most made.)"""
        if self.reader.error is not None:
            raise self.reader.error
        if not self._more:
            # The reading greenlet's: middleware may read data_stream in one of its own.
            switch, readable, timer = getcurrent().switch, self._readable, self._timer
            readable.start(switch, READY)
            if timer is not None:
                timer.start(switch, TIMED_OUT)
            try:
                woken = self._hub.switch()
            finally:
                readable.stop()
                if timer is not None:
                    timer.stop()
            if woken is not READY:
                self._woken_by(woken, 'sent nothing')
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            self._more = False
            return
        except OSError as exc:
            raise ClientDisconnected(str(exc) or type(exc).__name__) from None
        if not data:
            where = ' mid-packet' if self.reader.pending else ''
            raise ClientDisconnected(f'the MTA closed the connection{where}')
        self._more = len(data) == RECV_SIZE
        self.reader.feed(data)

    def push_back(self, packet: Packet) -> None:
        """`packet` is read again next (a command that ended a message)."""
        self._pushback = packet

    def _new_timer(self) -> Any:
        timeout = self.options.socket_timeout
        return self._hub.loop.timer(timeout) if timeout else None

    def _wait(self, watcher: Any, timer: Any, silence: str) -> None:
        """Until `watcher` fires: this greenlet waits in the hub, and
        `timer` (None: no limit) says when it has waited socket_timeout
        (then ClientDisconnected)."""
        switch = getcurrent().switch
        watcher.start(switch, READY)
        if timer is not None:
            timer.start(switch, TIMED_OUT)
        try:
            woken = self._hub.switch()
        finally:
            watcher.stop()
            if timer is not None:
                timer.stop()
        if woken is not READY:
            self._woken_by(woken, silence)

    def _woken_by(self, woken: object, silence: str) -> None:
        if woken is TIMED_OUT:
            raise ClientDisconnected(f'the MTA {silence} for {self.options.socket_timeout:g} s')
        raise RuntimeError(f'a milter connection woken by {woken!r}')

    # -- writing ---------------------------------------------------------------
    def answer(self, data: bytes) -> None:
        """Send a reply (with the modifications before it, in `data`)."""
        self.owed = None
        if self._log_min <= TRACE:
            self.log(TRACE, 'milter: %r', data[:200])
        if self._ticker is None or self._write is None:
            self._send(data)
        else:
            with self._write:
                self._send(data)

    def _send(self, data: bytes) -> None:
        """All of `data`: at once as a rule (a reply is small and the MTA
        reads it), else as the MTA takes it, waiting for room."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc) or type(exc).__name__) from None
        if sent < len(data):
            self._send_rest(memoryview(data)[sent:])

    def _send_rest(self, rest: memoryview) -> None:
        if self._writable is None:
            self._writable = self._hub.loop.io(self.sock.fileno(), 2)
            self._write_timer = self._new_timer()
        while rest:
            self._wait(self._writable, self._write_timer, 'read nothing')
            try:
                rest = rest[self.sock.send(rest):]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise ClientDisconnected(str(exc) or type(exc).__name__) from None

    def close_socket(self) -> None:
        """The watchers, then the socket (a watcher never watches a closed
        fd: the read watcher and its timer, stopped, are kept for the
        server's next connection, up to WATCHERS_KEPT)."""
        readable, timer = self._readable, self._timer
        readable.stop()
        if timer is not None:
            timer.stop()
        spare = self.server.spare_watchers
        if len(spare) < WATCHERS_KEPT and not self.server.stopping:
            spare.append((readable, timer))
        else:
            readable.close()
            if timer is not None:
                timer.close()
        if self._writable is not None:
            self._writable.close()
            if self._write_timer is not None:
                self._write_timer.close()
        try:
            self.sock.close()
        except OSError:
            pass

    # -- SMFIR_PROGRESS while the chain works after the end of the body ----------
    def start_progress(self) -> None:
        interval = self.server.progress_interval
        if interval and self._ticker is None:
            if self._write is None:
                self._write = Semaphore()
            self._ticker = gevent.spawn_later(interval, self._progress, interval)

    def _progress(self, interval: float) -> None:
        """SMFIR_PROGRESS every `interval` s: the MTA restarts its timeout
        (Postfix milter_content_timeout, Sendmail's T=E:) while the chain works."""
        lock = self._write
        assert lock is not None
        try:
            while True:
                with lock:
                    self._send(PROGRESS_PACKET)
                gevent.sleep(interval)
        except ClientDisconnected:
            pass        # the loop finds out the MTA is gone

    def stop_progress(self) -> None:
        """End the ticker before the verdict goes out. Killed while this
        side holds the write lock, it cannot be inside a write: no half
        packet, and no PROGRESS after the final reply."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None and self._write is not None:
            with self._write:
                ticker.kill(block=True, timeout=1.0)
