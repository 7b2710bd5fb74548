"""The only code of a session that touches its socket.

Reads have deadlines (a whole line, a whole body must arrive in time, so a
client dripping a byte at a time is cut); writes are queued and flushed
together (pipelining, RFC 2920), and before every read. The PROXY header
and the TLS handshake are read here too, as bytes, so the engine above sees
lines and never a socket.
"""
from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING, Protocol

import gevent

from ..errors import ClientDisconnected
from ..framing import Line, LineBuffer
from ..proxy import ProxyError, ProxyHeader, parse_proxy_header
from ..sockets import TlsSocket
from ..tls import tls_info

if TYPE_CHECKING:
    from ..session import TlsInfo
    from ..sockets import DeadlineSweeper, PlainSocket

RECV_SIZE = 65536       # reads of a message body
LINE_RECV_SIZE = 4096   # reads of command lines: a smaller buffer to allocate and shrink
MAX_PENDING_OUTPUT = 65536   # replies held before a flush, however much is pipelined
PROXY_PEEK = 4096


class ClientTimeout(ClientDisconnected):
    """The client sent nothing within `socket_timeout`."""


class SessionSocket(Protocol):
    """What a session reads and writes through: `sockets.PlainSocket`, or
    `sockets.TlsSocket` once TLS is on."""

    def recv_within(self, size: int, timeout: float, wait_first: bool = False,
                    sweeper: DeadlineSweeper | None = None) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Transport:
    """A connection's socket, its input buffer and its queued output."""

    __slots__ = ('sock', 'raw', 'lines', 'socket_timeout', '_sweeper', '_out', '_out_bytes',
                 '_recvs', '_client_turn')

    def __init__(self, sock: PlainSocket, socket_timeout: float,
                 sweeper: DeadlineSweeper | None = None) -> None:
        self.sock: SessionSocket = sock     # TLS replaces it (start_tls)
        self.raw = sock                     # the TCP connection, under TLS too
        self.lines = LineBuffer()
        self.socket_timeout = socket_timeout
        self._sweeper = sweeper         # the time limits of long waits
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._recvs = 0
        self._client_turn = False   # a reply just went out: the client speaks next
        # The socket's own timeout bounds a write that has to wait (a client
        # that stops reading); reads have their deadlines (recv_within).
        sock.settimeout(socket_timeout)

    # -- reading -------------------------------------------------------------
    def recv(self, deadline: float, size: int = RECV_SIZE) -> bytes:
        """Flush pending replies, then wait for bytes until `deadline`."""
        return self.recv_for(max(deadline - time.monotonic(), 0.001), size)

    def recv_for(self, timeout: float, size: int = RECV_SIZE) -> bytes:
        """recv() with the time limit in seconds from now."""
        if self._out:
            self.flush()
        # Right after a reply the client has not answered yet: wait for it
        # first (see sockets.py). Past the deadline, bytes already waiting
        # are still taken (the client may only have been held back by us);
        # nothing more is awaited.
        wait_first, self._client_turn = self._client_turn, False
        if not wait_first:
            self._recvs += 1
            if not self._recvs & 15:
                gevent.sleep(0)     # fairness: a recv that never blocks never yields
        try:
            data = self.sock.recv_within(size, timeout, wait_first, self._sweeper)
        except TimeoutError:
            raise ClientTimeout('timeout') from None
        except OSError as exc:      # reset, broken pipe...: the documented exception
            raise ClientDisconnected(f'connection lost: {exc}') from None
        if not data:
            raise ClientDisconnected('client closed the connection')
        return data

    def read_line(self, max_length: int, deadline: float | None = None) -> Line:
        """The next line (bytes, or TOO_LONG); the whole line must arrive
        within socket_timeout (a deadline, not an idle timer)."""
        line = self.lines.next_line(max_length)
        if line is not None:
            return line
        return self.receive_line(max_length, deadline)

    def receive_line(self, max_length: int, deadline: float | None = None) -> Line:
        """read_line once the buffer holds no complete line."""
        if deadline is None:
            timeout = self.socket_timeout
            deadline = time.monotonic() + timeout
        else:
            timeout = max(deadline - time.monotonic(), 0.001)
        lines = self.lines
        line = lines.next_line_after(self.recv_for(timeout, LINE_RECV_SIZE), max_length)
        while line is None:
            line = lines.next_line_after(self.recv(deadline, LINE_RECV_SIZE), max_length)
        return line

    def take_buffered(self) -> bytes:
        """Everything received and not yet read as lines (a body's start)."""
        return self.lines.take()

    def unread(self, data: bytes) -> None:
        """Put back bytes that followed the end of a body."""
        self.lines.unread(data)

    def skip(self, count: int) -> None:
        """Read and drop `count` bytes (a refused BDAT chunk, RFC 3030 2)."""
        deadline = time.monotonic() + self.socket_timeout
        while count > 0:
            data = self.lines.take() or self.recv(deadline)
            if len(data) > count:
                self.lines.unread(data[count:])
            count -= min(count, len(data))

    @property
    def pending(self) -> int:
        """Bytes received and not read yet (a pipelined command, the start of a body)."""
        return self.lines.pending

    def discard_buffered(self) -> int:
        """Drop what was received but not read (RFC 3207: after STARTTLS)."""
        return self.lines.discard()

    def client_talks_first(self, delay: float) -> bool:
        """Wait `delay` for bytes a well-behaved client never sends before
        the 220 (what it sent is kept and served normally)."""
        try:
            self.lines.feed(self.recv(time.monotonic() + delay))
        except ClientTimeout:
            return False
        return True

    # -- writing -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue bytes; they go out with the next flush."""
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > MAX_PENDING_OUTPUT:
            # A client pipelining without reading holds little; and a session
            # whose socket never blocks must still let the others run.
            self.flush()
            gevent.sleep(0)

    def flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b''.join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self.sock.sendall(data)
            self._client_turn = True

    def drop_output(self) -> None:
        """Forget queued replies (a shutdown answers with its own 421)."""
        self._out.clear()
        self._out_bytes = 0

    # -- before the session: PROXY and TLS ------------------------------------
    def read_proxy_header(self, timeout: float) -> ProxyHeader:
        """Exactly the PROXY header (v1 or v2) a trusted proxy must send.

        Bytes are peeked and only the header's own are consumed, so what
        follows (SMTP, or a TLS ClientHello for `secure`) stays in the
        socket. ProxyError when malformed or oversized, ClientTimeout when late.
        """
        sock = self.raw
        header_bytes = b''
        with gevent.Timeout(timeout, ClientTimeout('PROXY header timeout')):
            sock.settimeout(timeout)
            while True:
                peeked = sock.recv(PROXY_PEEK, socket.MSG_PEEK)
                if not peeked:
                    raise ClientDisconnected('closed before the PROXY header')
                parsed = parse_proxy_header(header_bytes + peeked)
                if parsed is None:      # all of it belongs to the header
                    header_bytes += _recv_exactly(sock, len(peeked))
                    continue
                header, used = parsed
                _recv_exactly(sock, used - len(header_bytes))
                break
        sock.settimeout(self.socket_timeout)
        return header

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> TlsInfo:
        """TLS server handshake within `timeout` (a deadline); the socket is
        TLS from then on. ClientDisconnected when it fails or is too slow."""
        raw = self.raw
        # Nagle would hold a reply back while earlier bytes wait for the
        # client's delayed ACK (40 ms); after a handshake that risk is real.
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        raw.settimeout(timeout)     # for writes that have to wait
        try:
            tls_sock = TlsSocket(raw, context)
            self.sock = tls_sock
            tls_sock.do_handshake(timeout, self._sweeper)
        except TimeoutError:
            raise ClientDisconnected('TLS handshake timed out') from None
        except (ssl.SSLError, ValueError) as exc:
            raise ClientDisconnected(f'TLS handshake failed: {exc}') from None
        raw.settimeout(self.socket_timeout)
        return tls_info(tls_sock.sslobj)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _recv_exactly(sock: PlainSocket, count: int) -> bytes:
    parts = []
    while count > 0:
        data = sock.recv(count)
        if not data:
            raise ClientDisconnected('closed inside the PROXY header')
        parts.append(data)
        count -= len(data)
    return b''.join(parts)


__all__ = ['Transport', 'ClientTimeout', 'ProxyError']
