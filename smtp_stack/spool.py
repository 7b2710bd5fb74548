"""The whole message body, kept for several readers (`envelope.spool()`).

A check that needs the whole body (DKIM, a virus scan) and a delivery
cannot both read a single-reader stream: the spool holds the body once and
hands each reader its own file from the first byte. Up to `MEMORY_LIMIT`
bytes it stays in memory; beyond, it moves to an anonymous temporary file
(unlinked at once, so nothing is left on disk even if the process dies),
and each reader reads it with `pread` at its own offset.

Writes go to the page cache, as the Maildir delivery's do (no fsync: the
spool never outlives its message), so they do not stall the hub.
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MEMORY_LIMIT = 1 << 20


class Spool:
    """The body of one message. `open()` a reader; `size` bytes long."""

    def __init__(self, memory_limit: int = MEMORY_LIMIT, directory: str | None = None):
        self.size = 0
        self._memory_limit = memory_limit
        self._directory = directory
        self._parts: list[bytes] = []   # while in memory and still being written
        self._data: bytes | None = None  # in memory, once complete
        self._file: BinaryIO | None = None  # an anonymous temporary file beyond the limit
        self._complete = False
        self._closed = False

    # -- writing (the server's side) -----------------------------------------
    def write(self, data: bytes) -> None:
        if self._complete or self._closed:
            raise ValueError('the spool is complete')
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
        elif self.size > self._memory_limit:
            self._file = file = tempfile.TemporaryFile(dir=self._directory)
            for part in self._parts:
                file.write(part)
            self._parts = []
            file.write(data)
        else:
            self._parts.append(data)

    def finish(self) -> Spool:
        if self._file is not None:
            self._file.flush()
        else:
            self._data = b''.join(self._parts)
            self._parts = []
        self._complete = True
        return self

    # -- reading ----------------------------------------------------------
    @property
    def in_memory(self) -> bool:
        """True while the body is held in memory (no temporary file exists)."""
        return self._file is None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> io.BufferedIOBase:
        """A binary file of the body from its first byte, independent of any
        other reader; it stays readable until closed, even after the spool is."""
        if self._closed:
            raise ValueError('the spool was removed with its message')
        if not self._complete:
            raise ValueError('the spool is not complete yet')
        if self._file is None:
            return io.BytesIO(self._data or b'')     # shares the bytes, copies nothing
        return io.BufferedReader(_PositionalReader(os.dup(self._file.fileno()), self.size),
                                 buffer_size=65536)

    def read(self) -> bytes:
        """The whole body as bytes (for small messages and tests)."""
        with self.open() as f:
            return f.read()

    def close(self) -> None:
        """Remove the spool: the memory or the temporary file goes with it."""
        if self._closed:
            return
        self._closed = True
        self._parts = []
        self._data = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        where = 'closed' if self._closed else ('memory' if self._file is None else 'file')
        return f'<Spool {self.size} bytes in {where}>'


class _PositionalReader(io.RawIOBase):
    """A read-only view of a file descriptor with its own offset (pread), so
    several readers share one temporary file without moving each other."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._pos >= self._size:
            return 0
        view = memoryview(buffer).cast('B')
        count = min(len(view), self._size - self._pos)
        data = os.pread(self._fd, count, self._pos)
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError('negative seek position')
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
