"""Byte framing without sockets: command lines and the DATA body.

`LineBuffer` splits the input into command lines and never rescans bytes it
already searched. `DataDecoder` turns the raw DATA stream into the message:
it finds the `<CRLF>.<CRLF>` terminator, removes dot-stuffing and detects
bare CR / LF with searches over whole chunks (C speed), never a Python loop
per line, and hands on a chunk without dots as it is, uncopied.
"""
from __future__ import annotations

import enum
import re
from typing import Final, Literal, TypeAlias


class TooLong(enum.Enum):
    """The type of the TOO_LONG sentinel (an enum, so `line is TOO_LONG`
    tells a type checker that the line is bytes otherwise)."""
    TOO_LONG = 'TOO_LONG'


TOO_LONG: Final = TooLong.TOO_LONG  # the line exceeded the limit and was discarded
# What LineBuffer gives for a line: its bytes, or TOO_LONG.
Line: TypeAlias = bytes | Literal[TooLong.TOO_LONG]


class LineBuffer:
    """Accumulates received bytes and yields complete lines.

    `next_line()` returns the line without its terminator (bytes), TOO_LONG
    once for a line over `max_length` (whose remainder is then skipped
    without being kept), or None when more bytes are needed. A line ended by
    a bare LF is returned too; `last_bare` tells so, so the caller can apply
    its bare-newline policy.

    Lines are cut from the buffer at a moving offset: a burst of pipelined
    commands is neither rescanned nor copied again for each line taken.
    """

    __slots__ = ('_buf', '_pos', '_scanned', '_skipping', 'last_bare')

    def __init__(self) -> None:
        self._buf = b''
        self._pos = 0           # start of the unread bytes in _buf
        self._scanned = 0       # _buf[_pos:_scanned] is known to hold no LF
        self._skipping = False  # inside the discarded tail of an over-long line
        self.last_bare = False

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos:] + data
            self._scanned -= self._pos
            self._pos = 0
        else:
            self._buf = self._buf + data if self._buf else data

    def next_line_after(self, data: bytes, max_length: int) -> Line | None:
        """feed(data), then next_line(): for the usual case, an empty buffer
        and exactly one whole line received (a client waiting for each
        reply), the line without a copy of the buffer or a second search."""
        if not self._buf and not self._skipping:
            nl = data.find(b'\n')
            if 0 < nl == len(data) - 1:
                end = nl - 1 if data[nl - 1] == 13 else nl
                if end <= max_length:
                    self.last_bare = end == nl
                    return data[:end]
        self.feed(data)
        return self.next_line(max_length)

    def unread(self, data: bytes) -> None:
        """Put bytes back in front (those that followed the end of DATA)."""
        if data:
            self._buf = data + self._buf[self._pos:]
            self._pos = self._scanned = 0

    def take(self) -> bytes:
        """Hand over everything buffered (e.g. to the DATA decoder)."""
        data = self._buf[self._pos:] if self._pos else self._buf
        self._buf = b''
        self._pos = self._scanned = 0
        return data

    def discard(self) -> int:
        """Drop buffered bytes (RFC 3207: plaintext after STARTTLS)."""
        n = len(self._buf) - self._pos
        self._buf = b''
        self._pos = self._scanned = 0
        return n

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    def next_line(self, max_length: int) -> Line | None:
        buf = self._buf
        if not buf:
            return None
        start = self._pos
        nl = buf.find(b'\n', self._scanned)
        if nl < 0:
            if len(buf) - start > max_length + 1:     # + 1: its CR may be here already
                # Keep nothing of an over-long line: report it once, then skip.
                self._buf = b''
                self._pos = self._scanned = 0
                if not self._skipping:
                    self._skipping = True
                    return TOO_LONG
                return None
            self._scanned = len(buf)
            return None
        if nl + 1 == len(buf):
            self._buf = b''
            self._pos = self._scanned = 0
        else:
            self._pos = self._scanned = nl + 1
        if self._skipping:
            self._skipping = False
            return self.next_line(max_length)
        end = nl
        bare = nl == start or buf[nl - 1] != 13
        if not bare:
            end -= 1
        if end - start > max_length:
            return TOO_LONG
        self.last_bare = bare
        return buf[start:end]


_BARE = re.compile(rb'\r\n|\r|\n')
# Searched with re rather than bytes.find/count: re skips to each CR with
# memchr and then compares, twice as fast over a body as the two- and
# three-byte searches of bytes (CPython 3.11).
_LINE_DOT = re.compile(rb'\r\n\.')
_BARE_CR = re.compile(rb'\r(?!\n)')


class DataDecoder:
    """Incremental DATA body decoder (RFC 5321 4.5.2 transparency).

    `feed(chunk)` returns (body_bytes, rest): `rest` is None while the body
    goes on and the bytes after `<CRLF>.<CRLF>` once it has ended. The body
    keeps its CRLF line ends and omits the terminating dot line. Bare CR or
    LF never end the body (the SMTP smuggling class, CVE-2023-51764); they
    set `bare_newline`, and with `normalize=True` are rewritten as CRLF.
    """

    __slots__ = ('_tail', '_at_line_start', 'normalize', 'bare_newline', 'done')

    def __init__(self, normalize: bool = False) -> None:
        self._tail = b''
        self._at_line_start = True
        self.normalize = normalize
        self.bare_newline = False
        self.done = False

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        if self.done:
            return b'', chunk
        if not chunk:
            return b'', None
        buf = self._tail + chunk if self._tail else chunk
        self._tail = b''
        out: list[bytes] = []
        pos = 0
        # `dot`: the next '.' that starts a line. A chunk that begins a line
        # is checked at 0, the rest by one search for CRLF '.', so a chunk
        # without dots is handed on as it is, uncopied.
        if self._at_line_start and buf[:1] == b'.':
            dot = 0
        else:
            found = _LINE_DOT.search(buf)
            dot = found.end() - 1 if found else -1
        while dot >= 0:
            after = buf[dot + 1:dot + 3]
            if after == b'\r\n':
                self._emit(out, buf, pos, dot)
                self.done = True
                return self._finish(out), buf[dot + 3:]
            if after in (b'', b'\r'):
                # '.' or '.\r' ends the chunk: end of data or not, the next
                # chunk tells.
                self._emit(out, buf, pos, dot)
                self._tail = buf[dot:]
                self._at_line_start = True
                return self._finish(out), None
            # A stuffed dot: drop it (the line continues after it).
            self._emit(out, buf, pos, dot)
            pos = dot + 1
            found = _LINE_DOT.search(buf, pos)
            dot = found.end() - 1 if found else -1
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

    def _emit(self, out: list[bytes], buf: bytes, start: int, end: int) -> None:
        if end > start:
            out.append(buf[start:end] if start or end != len(buf) else buf)

    def _finish(self, out: list[bytes]) -> bytes:
        data = out[0] if len(out) == 1 else b''.join(out)
        # No CR without its LF, and as many LFs as CRs: then every LF has
        # its CR too. (Chunks never end inside a CRLF: a last CR is held.)
        if data and (data.count(b'\r') != data.count(b'\n')
                     or _BARE_CR.search(data) is not None):
            self.bare_newline = True
            if self.normalize:
                data = _BARE.sub(b'\r\n', data)
        return data


class DotStuffer:
    """Encode a body for DATA in pieces (RFC 5321 4.5.2): a dot that starts
    a line (after CRLF, as the receiver reads it) is doubled, wherever the
    pieces are cut, between CR and LF included; `end()` completes the last
    line, so the final `.` line always follows a CRLF."""

    __slots__ = ('_at_line_start', '_cr')

    def __init__(self) -> None:
        self._at_line_start = True
        self._cr = False        # the last piece ended with a CR

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return b''
        if self._at_line_start and data[:1] == b'.':
            data = b'.' + data
        elif self._cr and data[:2] == b'\n.':
            data = b'\n.' + data[1:]
        ends_line = data.endswith(b'\r\n') or (data == b'\n' and self._cr)
        self._at_line_start = ends_line
        self._cr = data.endswith(b'\r')
        return data.replace(b'\r\n.', b'\r\n..')

    def end(self) -> bytes:
        return b'' if self._at_line_start else b'\r\n'


def dot_stuff(body: bytes) -> bytes:
    """A whole body encoded for DATA, without the final dot line."""
    stuffer = DotStuffer()
    return stuffer(body) + stuffer.end()


class TextChecks:
    """Checks on a body that arrives in chunks without dot-stuffing (BDAT)
    or after the DATA decoder: bare CR/LF (BDAT text bodies) and, when
    `max_line_length` is set, over-long lines. Chunk boundaries never
    matter: a trailing CR is held back until the next byte decides it.
    """

    __slots__ = ('normalize', 'bare_newline', 'check_bare', 'max_line_length',
                 'line_too_long', '_cr', '_current', '_current_cr')

    def __init__(self, check_bare: bool, normalize: bool = False,
                 max_line_length: int = 0) -> None:
        self.check_bare = check_bare
        self.normalize = normalize
        self.bare_newline = False
        self.max_line_length = max_line_length
        self.line_too_long = False
        self._cr = False
        self._current = 0       # length of the line in progress
        self._current_cr = False    # ... and whether it ends with a CR so far

    def feed(self, data: bytes) -> bytes:
        if self.check_bare:
            if self._cr:
                data = b'\r' + data
                self._cr = False
            if data.endswith(b'\r'):
                data = data[:-1]
                self._cr = True
            # As in DataDecoder._finish: data never ends with a CR here.
            if data and (data.count(b'\r') != data.count(b'\n')
                         or _BARE_CR.search(data) is not None):
                self.bare_newline = True
                if self.normalize:
                    data = _BARE.sub(b'\r\n', data)
        if self.max_line_length and data and not self.line_too_long:
            self._measure(data)
        return data

    def finish(self) -> bytes:
        """The held-back CR, if the body ended with one (a bare CR)."""
        if not self._cr:
            return b''
        self._cr = False
        self.bare_newline = True
        return b'\r\n' if self.normalize else b'\r'

    def _measure(self, data: bytes) -> None:
        limit = self.max_line_length
        parts = data.split(b'\n')
        if len(parts) > 1:
            # Complete lines, measured without the CR of their CRLF (the
            # first one's CR may have ended the previous chunk).
            first = parts[0]
            first_cr = first.endswith(b'\r') if first else self._current_cr
            longest = self._current + len(first) - first_cr
            for line in parts[1:-1]:
                if len(line) - line.endswith(b'\r') > longest:
                    longest = len(line) - line.endswith(b'\r')
            if longest > limit:
                self.line_too_long = True
            self._current = 0
        last = parts[-1]
        self._current += len(last)
        self._current_cr = last.endswith(b'\r')
        if self._current - self._current_cr > limit:     # a line still growing
            self.line_too_long = True
