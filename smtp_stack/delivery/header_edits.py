"""Header fields a milter placed, kept where it placed them and as it wrote them.

`envelope.add_header` puts a field on top of the message, refolded; that
is right for this server's own fields (RFC 8601 5), but not for what a
milter asks (policies.milter): Postfix's cleanup appends an ADDHEADER
field after the last field of the header section, inserts an INSHEADER
field at its index, changes a field in place (CHGHEADER), and stores the
value as the milter wrote it, its folding included ([cleanup]
cleanup_add_header, cleanup_ins_header, cleanup_upd_header;
cleanup_out_header). A signer that covers its own field with simple
canonicalization (RFC 6376 3.4.1) needs that byte for byte.

`HeaderEdits` records those fields, as header lines ready to write, and
where they go, anchored to what does not move when other middleware
records more: the fields this server added (counted from the oldest), and
the client's own fields (counted from the first, as the client sent them,
before any `remove_header`). The deliveries write, top first:

    Return-Path, X-Quarantine-Reason      (delivery/base.message_head)
    the added fields, with the milters'  `top` fields among them
    this server's Received
    the client's header section           `inserted` before its fields,
                                          `deleted` ones left out,
                                          `appended` after the last one
    the body

Fields a milter placed are this server's: `remove_header` does not take
them out, as it does not take out `add_header`'s. A milter may change or
delete an `add_header` field it was shown (`dropped`), as Postfix's later
milters change the fields Postfix added before them. The envelope holds its
record as `envelope.header_edits` (absent: none).
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..headers import MAX_LINE, fold, header_block, remove_fields, without_fields

if TYPE_CHECKING:
    from ..session import Envelope

__all__ = ['HeaderEdits', 'FieldReader', 'Pieces', 'edits_of', 'edits_for', 'field_line',
           'top_block', 'client_message', 'MAX_FIELD']

ATTRIBUTE = 'header_edits'
MAX_FIELD = 256 << 10       # a longer field begins the body (Postfix: header_size_limit)
_NAME = re.compile(rb'[!-9;-~]+[ \t]*:')
_LINES = re.compile(r'\r?\n')


@dataclass
class HeaderEdits:
    """Where a milter's fields go (each a header line with its CRLFs).

    `top`: (how many added fields are below it, the line), top first.
    `inserted`: the client's field number (1: its first) -> the lines
    written before it. `appended`: after the client's last field.
    `deleted`: the numbers of the client's fields left out. `dropped`:
    the numbers of the fields recorded with add_header (1: the oldest)
    left out, because a milter changed (a `top` line stands in its
    place) or deleted them."""
    top: list[tuple[int, bytes]] = field(default_factory=list)
    inserted: dict[int, list[bytes]] = field(default_factory=dict)
    appended: list[bytes] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.top or self.inserted or self.appended or self.deleted
                    or self.dropped)


def edits_of(envelope: Envelope) -> HeaderEdits | None:
    """The envelope's record, or None when no milter placed a field."""
    edits = vars(envelope).get(ATTRIBUTE)
    return edits if isinstance(edits, HeaderEdits) and edits else None


def edits_for(envelope: Envelope, edits: HeaderEdits) -> None:
    """Record `edits` as the envelope's (they replace the ones before)."""
    vars(envelope)[ATTRIBUTE] = edits


def field_line(name: str, value: str, space: str = ' ') -> bytes:
    """A milter's field as Postfix's cleanup writes it: `name:`, `space`
    (' ' unless the milter keeps the leading space itself,
    SMFIP_HDR_LEADSPC), the value with its line breaks as CRLF; a line
    after a break that does not start with white space gets a tab, so it
    cannot begin a field of its own ([cleanup] cleanup_out_header). A
    line over 998 octets (RFC 5322 2.1.1) has the field folded by
    headers.fold instead. NUL becomes a space."""
    lines = _LINES.split(value.replace('\0', ' '))
    lines = [lines[0]] + [line if line[:1] in (' ', '\t') else '\t' + line
                          for line in lines[1:]]
    text = f'{name}:{space}' + '\r\n'.join(lines) + '\r\n'
    raw = text.encode('utf-8', 'surrogateescape')
    if any(len(line) > MAX_LINE for line in raw.split(b'\r\n')):
        unfolded = ' '.join(part.strip(' \t') for part in lines).strip()
        raw = fold(name, unfolded).encode('utf-8', 'surrogateescape')
    return raw


def top_block(envelope: Envelope) -> bytes:
    """The fields on top of the message (above this server's Received):
    those added with add_header, the last added first, less those a
    milter changed or deleted (`dropped`), and among them the milters'
    `top` fields."""
    added = envelope.added_headers
    edits = edits_of(envelope)
    if edits is None or not (edits.top or edits.dropped):
        return header_block(added) if added else b''
    parts: list[bytes] = []
    for below in range(len(added), -1, -1):
        parts.extend(line for count, line in edits.top if min(count, len(added)) == below)
        if below and below not in edits.dropped:
            parts.append(header_block([added[below - 1]]))
    return b''.join(parts)


class Pieces(io.RawIOBase):
    """A raw stream over an iterator of bytes (for io.BufferedReader)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._left = b''

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:     # type: ignore[override]
        while not self._left:
            try:
                self._left = next(self._pieces)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size

    def close(self) -> None:
        close = getattr(self._pieces, 'close', None)
        if close is not None:
            close()
        super().close()


class FieldReader:
    """The fields of a message's header section, read from `reader`, each
    as its raw bytes (its lines with their line ends), as Postfix's
    cleanup splits them. It stops after the empty line (kept in `end`);
    a line that is no field (or longer than MAX_FIELD) ends it too and is
    kept in `leftover`: the first of the body."""

    def __init__(self, reader: io.BufferedIOBase) -> None:
        self.reader = reader
        self.leftover = b''
        self.end = b''

    def __iter__(self) -> Iterator[bytes]:
        current: bytearray | None = None
        while True:
            line = self.reader.readline(MAX_FIELD + 1)
            if line[:1] in (b' ', b'\t') and current is not None \
                    and len(current) + len(line) <= MAX_FIELD:
                current += line
                continue
            if current is not None:
                yield bytes(current)
                current = None
            if not line:
                return
            if line in (b'\r\n', b'\n'):
                self.end = line
                return
            if len(line) > MAX_FIELD or not _NAME.match(line):
                self.leftover = line        # no field: the body begins here
                return
            current = bytearray(line)


def client_message(pieces: Iterable[bytes], envelope: Envelope) -> Iterator[bytes]:
    """The client's message in `pieces`, as the deliveries write it below
    their Received: without the fields remove_header names, and with the
    milters' fields where they placed them (HeaderEdits)."""
    removed = envelope.removed_headers
    edits = edits_of(envelope)
    if edits is None:
        yield from without_fields(pieces, removed)
        return
    with io.BufferedReader(Pieces(iter(pieces)), 65536) as reader:
        fields = FieldReader(reader)
        count = 0
        for count, raw in enumerate(fields, 1):
            yield from edits.inserted.get(count, ())
            if count in edits.deleted or (removed and not remove_fields(raw, removed)):
                continue
            yield raw
        for number in sorted(n for n in edits.inserted if n > count):
            yield from edits.inserted[number]       # anchored past the last field
        yield from edits.appended
        rest = iter(lambda: reader.read1(65536), b'')
        # After a line that is no field, the fields that follow are still
        # judged for removal, as without edits (headers.HeaderFilter).
        yield from without_fields(_chain(fields.end + fields.leftover, rest), removed)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
