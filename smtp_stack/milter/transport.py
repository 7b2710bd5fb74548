"""The socket side of one MTA connection: packets in, replies out, and
SMFIR_PROGRESS while the chain works; the only socket code of the milter.

`Transport` is the base of MilterConnection (connection.py), which adds
the events; message.MessageReader reads the content packets through it
(its Channel).
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import gevent
from gevent.lock import Semaphore

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


class Transport:
    """One MTA connection's socket: `read_packet`, `answer`, and the reply
    the MTA waits for (`owed`), from the protocol flags agreed."""

    def __init__(self, server: MilterServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.options: Options = server.options
        self.sock = sock
        self.peer = peer
        self.reader = P.PacketReader(server.max_packet)
        self.owed: str | None = None        # the event the MTA waits for a reply to
        self.flags = 0                      # the protocol flags agreed (SMFIP_*)
        self.session: Session | None = None
        self._silent: frozenset[str] = P.UNANSWERED     # commands the MTA awaits no reply to
        self._pushback: Packet | None = None
        # The greenlet sending SMFIR_PROGRESS, and the lock that keeps its
        # packets and the reply from interleaving (made with the first ticker).
        self._ticker: Any = None
        self._write: Semaphore | None = None
        self._log_min = self.options.log_level

    def log(self, level: int, message: str, *args: object) -> None:
        if level >= self._log_min:
            sid = self.session.id if self.session is not None else f'milter[{self.peer}]'
            emit(self.server.log_backend, level, '%s: ' + message, (sid, *args),
                 {'session': sid})

    def agree(self, flags: int) -> None:
        """The protocol flags of the negotiation: which commands go unanswered."""
        self.flags = flags
        self._silent = P.UNANSWERED | {step.command for step in P.STEPS
                                       if flags & step.no_reply}

    def expects(self, command: str) -> bool:
        return command not in self._silent

    def read_packet(self) -> Packet:
        """The next packet; ClientDisconnected when the MTA is gone or
        silent past socket_timeout, ProtocolError for a malformed one."""
        pushed = self._pushback
        if pushed is not None:
            self._pushback = None
            return pushed
        reader = self.reader
        while True:
            packet = reader.next_packet()
            if packet is not None:
                if self._log_min <= TRACE:
                    self.log(TRACE, 'MTA: %s %r', P.name_of(packet.command), packet.data[:100])
                return packet
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                raise ClientDisconnected(
                    f'the MTA sent nothing for {self.options.socket_timeout:g} s') from None
            except OSError as exc:
                raise ClientDisconnected(str(exc) or type(exc).__name__) from None
            if not data:
                where = ' mid-packet' if reader.pending else ''
                raise ClientDisconnected(f'the MTA closed the connection{where}')
            reader.feed(data)

    def push_back(self, packet: Packet) -> None:
        """`packet` is read again next (a command that ended a message)."""
        self._pushback = packet

    def answer(self, data: bytes) -> None:
        """Send a reply (with the modifications before it, in `data`)."""
        self.owed = None
        if self._log_min <= TRACE:
            self.log(TRACE, 'milter: %r', data[:200])
        try:
            if self._ticker is None or self._write is None:
                self.sock.sendall(data)
            else:
                with self._write:
                    self.sock.sendall(data)
        except OSError as exc:
            raise ClientDisconnected(str(exc) or type(exc).__name__) from None

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
                    self.sock.sendall(PROGRESS_PACKET)
                gevent.sleep(interval)
        except OSError:
            pass        # the loop finds out the MTA is gone

    def stop_progress(self) -> None:
        """End the ticker before the verdict goes out. Killed while this
        side holds the write lock, it cannot be inside a write: no half
        packet, and no PROGRESS after the final reply."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None and self._write is not None:
            with self._write:
                ticker.kill(block=True, timeout=1.0)
