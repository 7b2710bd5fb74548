"""Byte framing without sockets: command lines and the DATA body.

`LineBuffer` splits the input into command lines and never rescans bytes it
already searched. `DataDecoder` turns the raw DATA stream into the message:
it finds the `<CRLF>.<CRLF>` terminator, removes dot-stuffing and detects
bare CR / LF, using `bytes.find` over whole chunks rather than a Python loop
per line.
"""
from __future__ import annotations

import re

TOO_LONG = object()     # sentinel: the line exceeded the limit and was discarded


class LineBuffer:
    """Accumulates received bytes and yields complete lines.

    `next_line()` returns the line without its terminator (bytes), TOO_LONG
    once for a line over `max_length` (whose remainder is then skipped
    without being kept), or None when more bytes are needed. A line ended by
    a bare LF is returned too; `last_bare` tells so, so the caller can apply
    its bare-newline policy.
    """

    __slots__ = ('_buf', '_scanned', '_skipping', 'last_bare')

    def __init__(self):
        self._buf = b''
        self._scanned = 0       # bytes of _buf known to contain no LF
        self._skipping = False  # inside the discarded tail of an over-long line
        self.last_bare = False

    def feed(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front (those that followed the end of DATA)."""
        if data:
            self._buf = data + self._buf
            self._scanned = 0

    def take(self) -> bytes:
        """Hand over everything buffered (e.g. to the DATA decoder)."""
        data, self._buf, self._scanned = self._buf, b'', 0
        return data

    def discard(self) -> int:
        """Drop buffered bytes (RFC 3207: plaintext after STARTTLS)."""
        n = len(self._buf)
        self._buf, self._scanned = b'', 0
        return n

    @property
    def pending(self) -> int:
        return len(self._buf)

    def has_line(self) -> bool:
        return self._buf.find(b'\n', self._scanned) >= 0

    def next_line(self, max_length: int):
        buf = self._buf
        nl = buf.find(b'\n', self._scanned)
        if nl < 0:
            if len(buf) > max_length + 1:     # + 1: its CR may be here already
                # Keep nothing of an over-long line: report it once, then skip.
                self._buf = b''
                self._scanned = 0
                if not self._skipping:
                    self._skipping = True
                    return TOO_LONG
                return None
            self._scanned = len(buf)
            return None
        self._buf = buf[nl + 1:]
        self._scanned = 0
        if self._skipping:
            self._skipping = False
            return self.next_line(max_length)
        end = nl
        bare = nl == 0 or buf[nl - 1] != 13
        if not bare:
            end -= 1
        if end > max_length:
            return TOO_LONG
        self.last_bare = bare
        return buf[:end]


_BARE = re.compile(rb'\r\n|\r|\n')


class DataDecoder:
    """Incremental DATA body decoder (RFC 5321 4.5.2 transparency).

    `feed(chunk)` returns (body_bytes, rest): `rest` is None while the body
    goes on and the bytes after `<CRLF>.<CRLF>` once it has ended. The body
    keeps its CRLF line ends and omits the terminating dot line. Bare CR or
    LF never end the body (the SMTP smuggling class, CVE-2023-51764); they
    set `bare_newline`, and with `normalize=True` are rewritten as CRLF.
    """

    __slots__ = ('_tail', '_at_line_start', 'normalize', 'bare_newline', 'done')

    def __init__(self, normalize: bool = False):
        self._tail = b''
        self._at_line_start = True
        self.normalize = normalize
        self.bare_newline = False
        self.done = False

    def feed(self, chunk: bytes):
        if self.done:
            return b'', chunk
        if not chunk:
            return b'', None
        buf = self._tail + chunk if self._tail else chunk
        self._tail = b''
        out = []
        pos = 0
        if self._at_line_start:
            # Pretend the stream was preceded by CRLF so one search covers
            # the first line too.
            buf = b'\r\n' + buf
            pos = 2
        search = max(pos - 2, 0)
        while True:
            i = buf.find(b'\r\n.', search)
            if i < 0:
                break
            dot = i + 2
            if len(buf) < dot + 3:
                # '.', '.\r' or '.\r\n' is not complete yet: decide later.
                if buf[dot + 1:dot + 2] in (b'', b'\r'):
                    self._emit(out, buf, pos, dot)
                    self._tail = buf[dot:]
                    self._at_line_start = True
                    return self._finish(out), None
            if buf[dot + 1:dot + 3] == b'\r\n':
                self._emit(out, buf, pos, dot)
                self.done = True
                return self._finish(out), buf[dot + 3:]
            # A stuffed dot: drop it (the line continues after it).
            self._emit(out, buf, pos, dot)
            pos = search = dot + 1
        end = len(buf)
        if buf.endswith(b'\r\n'):
            # The line is complete and goes out now (a reader waiting for
            # it must not wait for the next packet); remember the line start.
            self._emit(out, buf, pos, end)
            self._at_line_start = True
        elif buf.endswith(b'\r'):
            # Keep a lone CR back: CRLF or a bare CR, decided by the next byte.
            self._emit(out, buf, pos, end - 1)
            self._tail = b'\r'
            self._at_line_start = False
        else:
            self._emit(out, buf, pos, end)
            self._at_line_start = False
        return self._finish(out), None

    def _emit(self, out: list, buf: bytes, start: int, end: int) -> None:
        if end > start:
            out.append(buf[start:end] if start or end != len(buf) else buf)

    def _finish(self, out: list) -> bytes:
        data = out[0] if len(out) == 1 else b''.join(out)
        if data:
            crlf = data.count(b'\r\n')
            if data.count(b'\n') != crlf or data.count(b'\r') != crlf:
                self.bare_newline = True
                if self.normalize:
                    data = _BARE.sub(b'\r\n', data)
        return data


def dot_stuff(body: bytes) -> bytes:
    """Encode a body for DATA (used by tests and by relay delivery)."""
    if body.startswith(b'.'):
        body = b'.' + body
    return body.replace(b'\r\n.', b'\r\n..')
