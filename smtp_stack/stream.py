"""`data_stream`: the message body as a file-like object while it arrives."""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from . import replies as R
from .errors import MessageRefused
from .spool import Spool

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from .framing import TextChecks

SPOOL_CHUNK = 65536

# The source of the body: the next decoded piece (bytes, possibly empty),
# or None at its end.
Pull = Callable[[], 'bytes | None']


class NewlineCheck(Protocol):
    """What the stream asks of its decoder (DataDecoder, TextChecks)."""

    @property
    def bare_newline(self) -> bool: ...

    @property
    def normalize(self) -> bool: ...


class DataStream(io.BufferedIOBase):
    """Binary reader over the DATA (or BDAT) body as it arrives.

    `pull()` returns the next decoded piece of the body (bytes, possibly
    empty) or None at the end; it is where the socket is read, so the body
    is never held in memory as a whole. `ClientDisconnected` propagates from
    `pull()` when the client goes away mid-message.

    A refused body is never readable as a good one: once the server knows
    it will refuse the message (over `limit`, a bare CR/LF the decoder
    flagged, a line the checks found too long, an abandoned BDAT transfer)
    every read raises `refused`, a MessageRefused, and goes on raising it.
    The end of the body is where the last of these is known, so a reader
    never sees a clean end of file for a refused message.
    """

    def __init__(self, pull: Pull, limit: int = 0,
                 on_first_read: Callable[[], None] | None = None,
                 decoder: NewlineCheck | None = None, checks: TextChecks | None = None) -> None:
        super().__init__()
        self.decoder = decoder      # has bare_newline / normalize (DataDecoder, TextChecks)
        self.checks = checks        # TextChecks with line_too_long, when lines are measured
        self._pull = pull
        self._limit = limit
        self._on_first_read = on_first_read
        self._chunk = b''
        self._offset = 0
        self._finished = False
        self._lost: ConnectionError | None = None   # the ClientDisconnected that ended the body
        self._spool: Spool | None = None
        # after spool(): the reader's bytes come from the spool
        self._source: io.BufferedIOBase | None = None
        self.bytes_read = 0
        self.size_exceeded = False
        self.aborted = False        # the client abandoned the message (BDAT then RSET)
        self.refused: MessageRefused | None = None  # what every read raises, once known

    # -- the source side -------------------------------------------------
    def start(self) -> None:
        """Run the first-read action (the 354 reply) if it has not run yet."""
        if self._on_first_read is not None:
            begin, self._on_first_read = self._on_first_read, None
            begin()

    @property
    def started(self) -> bool:
        return self._on_first_read is None

    def _next_piece(self) -> bytes | None:
        """The next non-empty piece of the body, or None at its end; judges
        the message after each piece (sets `refused`), never raises it."""
        if self._on_first_read is not None:
            self.start()
        if self._lost is not None:
            raise self._lost
        while not self._finished:
            try:
                piece = self._pull()
            except ConnectionError as exc:      # ClientDisconnected, and its timeout
                self._lost = exc
                raise
            if piece is None:
                self._finished = True
                self._judge()
                return None
            if not piece:
                continue
            self.bytes_read += len(piece)
            if self._limit and self.bytes_read > self._limit:
                self.size_exceeded = True
            self._judge()
            return piece
        return None

    def _judge(self) -> None:
        if self.refused is not None:
            return
        decoder = self.decoder
        if not (self.size_exceeded or self.aborted
                or (decoder is not None and decoder.bare_newline)
                or (self.checks is not None and self.checks.line_too_long)):
            return      # the usual case: nothing to refuse
        if self.size_exceeded:
            reply = R.MESSAGE_TOO_BIG
        elif self.aborted:
            reply = R.TRANSFER_ABANDONED
        elif (self.decoder is not None and self.decoder.bare_newline
              and not self.decoder.normalize):
            reply = R.BARE_NEWLINE_DATA
        elif self.checks is not None and self.checks.line_too_long:
            reply = R.LINE_TOO_LONG_DATA
        else:
            return
        self.refused = MessageRefused(reply)

    def _fill(self) -> bool:
        """Load the next piece for the reader; False at the end of a good
        body; MessageRefused instead of a piece of a refused one."""
        if self.refused is not None:
            raise self.refused
        if self._source is not None:
            data = self._source.read(SPOOL_CHUNK)
            self._chunk, self._offset = data, 0
            return bool(data)
        piece = self._next_piece()
        if self.refused is not None:
            raise self.refused
        if piece is None:
            return False
        self._chunk, self._offset = piece, 0
        return True

    def drain(self) -> None:
        """Read and discard whatever nobody read, up to the end of the body."""
        self._chunk, self._offset = b'', 0
        while self._next_piece() is not None:
            pass

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def bare_newline(self) -> bool:
        """A bare CR or LF was seen (refused unless bare_newline='normalize')."""
        return bool(self.decoder is not None and self.decoder.bare_newline)

    @property
    def line_too_long(self) -> bool:
        """A line exceeded `max_line_length` (the message will be refused)."""
        return bool(self.checks is not None and self.checks.line_too_long)

    @property
    def acceptable(self) -> bool:
        """The whole body arrived and the server will not refuse it."""
        return self._finished and self.refused is None

    # -- one body, several readers -------------------------------------------
    def spool(self) -> Spool:
        """Read the body to its end into a Spool (the same one on later
        calls). Afterwards this stream reads from the spool, so a reader
        that comes later still sees the whole body from its first byte."""
        if self._spool is not None:
            return self._spool
        if self.refused is not None:
            raise self.refused
        if self.bytes_read > self._available():      # a reader took some already
            raise RuntimeError('data_stream was read before spool(): call spool() '
                               'before reading the stream, or instead of it')
        spool = Spool()
        try:
            if self._chunk:
                spool.write(self._chunk)
            self._chunk, self._offset = b'', 0
            while True:
                piece = self._next_piece()
                if self.refused is not None:
                    raise self.refused
                if piece is None:
                    break
                spool.write(piece)
        except BaseException:
            spool.close()
            raise
        self._spool = spool.finish()
        self._source = spool.open()
        return spool

    @property
    def spooled(self) -> Spool | None:
        """The Spool once `spool()` made one, else None."""
        return self._spool

    def discard(self) -> None:
        """Remove the spool (the end of the transaction)."""
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._spool is not None:
            self._spool.close()

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
            if self._offset >= len(self._chunk) and not self._fill():
                break
            piece = self._take(wanted)
            parts.append(piece)
            wanted -= len(piece)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def read1(self, size: int = -1) -> bytes:
        if not self._available() and not self._fill():
            return b''
        return self._take(self._available() if size is None or size < 0 else size)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast('B')
        done = 0
        while done < len(view):
            if not self._available() and not self._fill():
                break
            piece = self._take(len(view) - done)
            view[done:done + len(piece)] = piece
            done += len(piece)
        return done

    def readinto1(self, buffer: WriteableBuffer) -> int:
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

    def __repr__(self) -> str:
        return f'<DataStream bytes_read={self.bytes_read} finished={self._finished}>'
