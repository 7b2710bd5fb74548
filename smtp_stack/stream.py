"""`data_stream`: the message body as a file-like object while it arrives."""
from __future__ import annotations

import io


class DataStream(io.BufferedIOBase):
    """Binary reader over the DATA (or BDAT) body as it arrives.

    `pull()` returns the next decoded piece of the body (bytes, possibly
    empty) or None at the end; it is where the socket is read, so the body
    is never held in memory as a whole. Beyond `limit` bytes the reader sees
    end of file and `size_exceeded` becomes True; the server reads and
    discards the rest. `ClientDisconnected` propagates from `pull()` when the
    client goes away mid-message.
    """

    def __init__(self, pull, limit: int = 0, on_first_read=None, decoder=None, checks=None):
        super().__init__()
        self.decoder = decoder      # has bare_newline / normalize (DataDecoder, TextChecks)
        self.checks = checks        # TextChecks with line_too_long, when lines are measured
        self._pull = pull
        self._limit = limit
        self._on_first_read = on_first_read
        self._chunk = b''
        self._offset = 0
        self._finished = False
        self.bytes_read = 0
        self.size_exceeded = False
        self.aborted = False        # the client abandoned the message (BDAT then RSET)

    # -- the source side -------------------------------------------------
    def start(self) -> None:
        """Run the first-read action (the 354 reply) if it has not run yet."""
        if self._on_first_read is not None:
            begin, self._on_first_read = self._on_first_read, None
            begin()

    @property
    def started(self) -> bool:
        return self._on_first_read is None

    def _fill(self) -> bool:
        """Load the next non-empty piece for the reader; False at the end."""
        if self._on_first_read is not None:
            self.start()
        while not self._finished:
            piece = self._pull()
            if piece is None:
                self._finished = True
                break
            if not piece:
                continue
            before = self.bytes_read
            self.bytes_read += len(piece)
            if self.size_exceeded:
                continue
            if self._limit and self.bytes_read > self._limit:
                self.size_exceeded = True
                piece = piece[:self._limit - before]
                if not piece:
                    continue
            self._chunk, self._offset = piece, 0
            return True
        return False

    def drain(self) -> None:
        """Read and discard whatever nobody read, up to the end of the body."""
        self._chunk, self._offset = b'', 0
        while self._fill():
            self._chunk, self._offset = b'', 0

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def bare_newline(self) -> bool:
        """A bare CR or LF was seen (refused unless bare_newline='normalize')."""
        return bool(self.decoder is not None and self.decoder.bare_newline)

    @property
    def acceptable(self) -> bool:
        """The whole body arrived and the server will not refuse it for its
        framing or size: what a delivery handler checks before it commits."""
        if not self._finished or self.size_exceeded or self.aborted or self.line_too_long:
            return False
        return not (self.bare_newline and not self.decoder.normalize)

    @property
    def line_too_long(self) -> bool:
        """A line exceeded `max_line_length` (the message will be refused)."""
        return bool(self.checks is not None and self.checks.line_too_long)

    # -- the reader side ---------------------------------------------------
    def readable(self) -> bool:
        return True

    def _available(self) -> int:
        return len(self._chunk) - self._offset

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            if self._available():
                parts.append(self._chunk[self._offset:])
            self._chunk, self._offset = b'', 0
            while self._fill():
                parts.append(self._chunk)
            self._chunk, self._offset = b'', 0
            return b''.join(parts)
        if size == 0:
            return b''
        parts = []
        wanted = size
        while wanted > 0:
            if not self._available() and not self._fill():
                break
            piece = self._take(wanted)
            parts.append(piece)
            wanted -= len(piece)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def read1(self, size: int = -1) -> bytes:
        if not self._available() and not self._fill():
            return b''
        return self._take(self._available() if size is None or size < 0 else size)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast('B')
        done = 0
        while done < len(view):
            if not self._available() and not self._fill():
                break
            piece = self._take(len(view) - done)
            view[done:done + len(piece)] = piece
            done += len(piece)
        return done

    def readinto1(self, buffer) -> int:
        view = memoryview(buffer).cast('B')
        if not view or (not self._available() and not self._fill()):
            return 0
        piece = self._take(len(view))
        view[:len(piece)] = piece
        return len(piece)

    def readline(self, size: int | None = -1) -> bytes:
        parts = []
        wanted = -1 if size is None else size
        while wanted != 0:
            if not self._available() and not self._fill():
                break
            nl = self._chunk.find(b'\n', self._offset)
            take = self._available() if nl < 0 else nl + 1 - self._offset
            if wanted > 0:
                take = min(take, wanted)
                wanted -= take
            parts.append(self._take(take))
            if nl >= 0 and parts[-1].endswith(b'\n'):
                break
        return b''.join(parts)

    def _take(self, n: int) -> bytes:
        start = self._offset
        if start == 0 and n >= len(self._chunk):
            piece = self._chunk
            self._chunk = b''
            return piece
        piece = self._chunk[start:start + n]
        self._offset = start + len(piece)
        return piece

    def __repr__(self):
        return f'<DataStream bytes_read={self.bytes_read} finished={self._finished}>'
