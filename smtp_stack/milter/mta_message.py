"""One message as the MTA side shows it to a milter, and what the milter's
modification requests do to the envelope.

`SentFields` shows the header section as the deliveries will write it
so far (less their own trace fields): the fields recorded with
`envelope.add_header` on top, with the fields earlier milters inserted
there; then the client's fields, without those recorded with
`remove_header`, with the fields earlier milters placed among them
(delivery/header_edits.py). It streams the client's fields from the
spool (a line that is no field, or one too long, begins the body, as
Postfix's cleanup decides), and keeps what the milter's requests need:
each field's name and where it came from, not its value, up to
FIELDS_BUDGET bytes of fields.

`apply` turns the requests read at the end of the message into changes
the deliveries honour, as Postfix's cleanup makes them ([cleanup]
cleanup_milter.c): ADDHEADER appends after the last field of the header
section, INSHEADER inserts at its index (0: on top, above this server's
Received: Postfix counts its own Received field, which it does not show
to milters, as the first), CHGHEADER changes or deletes a field in
place; each field as the milter wrote it, its folding kept
(header_edits.field_line). A field recorded with `add_header` (another
policy's) is changed or deleted like the client's, as Postfix's later
milters change the fields Postfix added before them (the field's
number goes to `HeaderEdits.dropped`, a changed one's line stands in
its place). The sender and recipients change in place,
and `quarantine` records the reason. Each request that cannot be
honoured is said in `warn`.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from ..addresses import Address, parse_params
from ..delivery.header_edits import (FieldReader, HeaderEdits, edits_for, edits_of, field_line)
from ..delivery.header_edits import Pieces as _Pieces
from ..headers import check_name, fold, remove_fields, without_fields
from . import protocol as P

if TYPE_CHECKING:
    from ..session import Envelope

__all__ = ['HeaderSection', 'SentFields', 'apply', 'unfold']

CHUNK = P.CHUNK_SIZE
FIELDS_BUDGET = 1 << 20     # bytes of fields kept for the requests' indexes
_FOLD = re.compile(r'\r?\n(?=[ \t])')
# What a shown field is: one added with add_header, a line a milter placed,
# one of the client's; and where this server's Received goes (not shown),
# and the client's fields past the budget (not kept).
ADDED, PLACED, CLIENT, RECEIVED, UNKEPT = 'added', 'placed', 'client', 'received', 'unkept'


class HeaderSection:
    """The fields of a message's header section, read from `reader`:
    iterating gives (name, value), the value as after the colon with its
    line breaks as LF (how Postfix and Sendmail show a folded field).
    It stops after the empty line; a line that is no field (or longer
    than MAX_FIELD) ends it too and is kept in `leftover`: the first of
    the body."""

    def __init__(self, reader: io.BufferedReader) -> None:
        self.reader = reader
        self._fields = FieldReader(reader)

    @property
    def leftover(self) -> bytes:
        return self._fields.leftover

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for raw in self._fields:
            yield _split(raw)


def _split(raw: bytes) -> tuple[str, str]:
    name, _, value = raw.partition(b':')
    text = value.decode('utf-8', 'surrogateescape')
    if text.endswith('\r\n'):
        text = text[:-2]
    elif text.endswith('\n'):
        text = text[:-1]
    return (name.rstrip(b' \t').decode('utf-8', 'surrogateescape'),
            text.replace('\r\n', '\n'))


def unfold(value: str) -> str:
    """A field's value on one line (RFC 5322 2.2.3), without the white
    space around it and any CR, LF or NUL left: what add_header takes."""
    text = _FOLD.sub('', value)
    return ' '.join(text.replace('\0', ' ').splitlines()).strip(' \t')


@dataclass
class _Shown:
    """One entry of the header section as a milter sees it."""
    kind: str
    name: str = ''          # lower-cased
    number: int = 0         # ADDED: 1 is the oldest; CLIENT, UNKEPT: 1 is the client's first
    line: bytes = b''       # PLACED: the header line


@dataclass
class SentFields:
    """The header section a milter is shown, for its requests: `fields()`
    gives (name, value) top first and keeps each one's origin; `body()`
    the rest of the message; `edits()` what the requests made of it."""
    envelope: Envelope
    budget: int = FIELDS_BUDGET
    shown: list[_Shown] = field(default_factory=list)
    before: HeaderEdits = field(default_factory=HeaderEdits)
    deleted: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    changed: bool = False
    overflow: bool = False
    _in_client: bool = False
    _reader: io.BufferedReader | None = None
    _fields: FieldReader | None = None

    def __post_init__(self) -> None:
        self.before = edits_of(self.envelope) or HeaderEdits()
        self.deleted = set(self.before.deleted)
        self.dropped = set(self.before.dropped)

    def fields(self) -> Iterator[tuple[str, str]]:
        """(name, value) of each field, the value after the colon with its
        line breaks as LF; close() when done."""
        added, before = self.envelope.added_headers, self.before
        for below in range(len(added), -1, -1):
            for count, line in before.top:
                if min(count, len(added)) == below:
                    yield self._keep(_Shown(PLACED, line=line), line)
            if below and below not in before.dropped:
                name, value = added[below - 1]
                yield self._keep(_Shown(ADDED, number=below),
                                 fold(name, value).encode('utf-8', 'surrogateescape'))
        self.shown.append(_Shown(RECEIVED))
        self._in_client = True
        removed = self.envelope.removed_headers
        spool = self.envelope.spool()
        self._reader = io.BufferedReader(_Pieces(_opened(spool)), CHUNK)
        fields = self._fields = FieldReader(self._reader)
        count = 0
        for count, raw in enumerate(fields, 1):
            for line in before.inserted.get(count, ()):
                yield self._keep(_Shown(PLACED, line=line), line)
            if count in before.deleted or (removed and not remove_fields(raw, removed)):
                continue
            yield self._keep(_Shown(CLIENT, number=count), raw)
        for number in sorted(n for n in before.inserted if n > count):
            for line in before.inserted[number]:
                yield self._keep(_Shown(PLACED, line=line), line)
        for line in before.appended:
            yield self._keep(_Shown(PLACED, line=line), line)

    def _keep(self, entry: _Shown, raw: bytes) -> tuple[str, str]:
        """(name, value) of a field shown; its entry kept while the budget
        lasts. Past it, from a client's field on, nothing more is kept:
        one UNKEPT entry stands for the rest, whose edits stay as they were."""
        name, value = _split(raw)
        entry.name = name.lower()
        if self.overflow:
            return name, value
        if self._in_client:
            self.budget -= len(raw)
            if self.budget < 0 and entry.kind == CLIENT:
                self.overflow = True
                self.shown.append(_Shown(UNKEPT, number=entry.number))
                return name, value
        self.shown.append(entry)
        return name, value

    def body(self) -> Iterator[bytes]:
        """The rest of the message after the header section and its empty
        line; the fields after a line that is no field still go when
        remove_header names them (as the deliveries write it). A body an
        earlier milter replaced is shown instead (Postfix's later milters
        read the queue file the earlier ones changed)."""
        assert self._reader is not None and self._fields is not None
        replaced = self.envelope.replaced_body
        if replaced is not None:
            return _replaced(replaced)
        rest = iter(lambda: self._reader.read1(CHUNK) if self._reader else b'', b'')
        first = self._fields.leftover
        pieces = _prefixed(first, rest)
        return without_fields(pieces, self.envelope.removed_headers) if first else pieces

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # -- the requests ---------------------------------------------------------------------

    def nth(self, name: str, index: int) -> int | None:
        """The position in `shown` of the index'th field called `name` (1: the first)."""
        seen = 0
        for position, entry in enumerate(self.shown):
            if entry.name == name.lower() and entry.kind in (ADDED, PLACED, CLIENT):
                seen += 1
                if seen == index:
                    return position
        return None

    def insert(self, index: int, line: bytes) -> None:
        """At `index` of the message as delivered, this server's Received
        counted ([milter8] SMFIR_INSHEADER: Postfix's index + 1, its own
        Received first); past the fields kept: before them."""
        limit = next((i for i, e in enumerate(self.shown) if e.kind == UNKEPT), len(self.shown))
        self.shown.insert(min(max(index, 0), limit), _Shown(PLACED, line=line))
        self.changed = True

    def append(self, line: bytes) -> None:
        self.shown.append(_Shown(PLACED, line=line))
        self.changed = True

    def replace(self, position: int, line: bytes | None) -> None:
        """The field at `position` changed to `line`, or deleted (None)."""
        entry = self.shown[position]
        if entry.kind == CLIENT:
            self.deleted.add(entry.number)
        elif entry.kind == ADDED:
            self.dropped.add(entry.number)
        if line is None:
            del self.shown[position]
        else:
            self.shown[position] = _Shown(PLACED, entry.name, line=line)
        self.changed = True

    def edits(self) -> HeaderEdits:
        """The shown section, changed, as the deliveries' record."""
        edits = HeaderEdits(deleted=set(self.deleted), dropped=set(self.dropped))
        split = next(i for i, e in enumerate(self.shown) if e.kind == RECEIVED)
        below = 0           # the number of the nearest added field below
        for entry in reversed(self.shown[:split]):
            if entry.kind == ADDED:
                below = entry.number
            else:
                edits.top.insert(0, (below, entry.line))
        pending: list[bytes] = []
        for entry in self.shown[split + 1:]:
            if entry.kind == CLIENT:
                if pending:
                    edits.inserted[entry.number] = pending
                    pending = []
            elif entry.kind == UNKEPT:
                edits.inserted[entry.number] = pending
                edits.inserted.update((n, list(lines)) for n, lines in
                                      self.before.inserted.items() if n > entry.number)
                pending = list(self.before.appended)
            else:
                pending.append(entry.line)
        edits.inserted = {n: lines for n, lines in edits.inserted.items() if lines}
        edits.appended = pending
        return edits


def _next_client(shown: list[_Shown]) -> int:
    return max((e.number for e in shown if e.kind == CLIENT), default=0) + 1


def _opened(spool: object) -> Iterator[bytes]:
    with spool.open() as body:      # type: ignore[attr-defined]
        yield from iter(lambda: body.read(CHUNK), b'')


def _replaced(body: bytes | BinaryIO) -> Iterator[bytes]:
    """A replaced body in chunks; a file is put back where it stood."""
    if isinstance(body, bytes):
        yield from (body[i:i + CHUNK] for i in range(0, len(body), CHUNK))
        return
    stood = body.tell() if body.seekable() else None
    try:
        yield from iter(lambda: body.read(CHUNK), b'')
    finally:
        if stood is not None:
            body.seek(stood)


def _prefixed(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _path(text: object) -> str:
    """An address as a milter gives it ('<a@b>', 'a@b'), without brackets."""
    value = str(text).strip()
    if value.startswith('<') and value.endswith('>'):
        value = value[1:-1]
    return value


def _address(path: object, args: object) -> Address:
    params = parse_params(str(args)) if isinstance(args, str) and args.strip() else {}
    return Address(_path(path), params)


def apply(changes: list[tuple[str, list[P.Field]]], envelope: Envelope, sent: SentFields,
          who: str, warn: list[str], space: str = ' ') -> None:
    """The modification requests of one milter, in their order, on
    `envelope`; `space` goes between a field's colon and its value (''
    when the milter writes it itself: SMFIP_HDR_LEADSPC)."""
    for letter, fields in changes:
        try:
            _apply_one(letter, fields, envelope, sent, who, warn, space)
        except (ValueError, TypeError) as exc:
            warn.append(f'{P.name_of(letter) if letter in P.NAMES else repr(letter)} '
                        f'not applied: {exc}')
    if sent.changed:
        edits_for(envelope, sent.edits())


def _apply_one(letter: str, fields: list[P.Field], envelope: Envelope, sent: SentFields,
               who: str, warn: list[str], space: str) -> None:
    if letter in (P.ADDHEADER, P.INSHEADER):
        name, value = fields[-2], fields[-1]
        assert isinstance(name, str) and isinstance(value, str)
        line = field_line(check_name(name), value, space)
        if letter == P.ADDHEADER:
            sent.append(line)
        else:
            index = fields[0]
            assert isinstance(index, int)
            sent.insert(index, line)
    elif letter == P.CHGHEADER:
        index, name, value = fields
        assert isinstance(index, int) and isinstance(name, str) and isinstance(value, str)
        position = sent.nth(name, max(index, 1))      # [milter8]: index 0 is 1
        if position is None:
            if value:       # [cleanup] cleanup_upd_header: no such field: it is appended
                sent.append(field_line(check_name(name), value, space))
            elif sent.overflow:
                warn.append(f'{name} #{index}: past the fields kept; not deleted')
            return
        sent.replace(position, field_line(check_name(name), value, space) if value else None)
    elif letter == P.CHGFROM:
        envelope.mail_from = _address(fields[0], fields[1])
    elif letter in (P.ADDRCPT, P.ADDRCPT_PAR):
        envelope.rcpt_to.append(_address(fields[0], fields[1] if len(fields) > 1 else None))
    elif letter == P.DELRCPT:
        gone = _path(fields[0]).lower()
        envelope.rcpt_to[:] = [r for r in envelope.rcpt_to if r.address.lower() != gone]
    elif letter == P.QUARANTINE:
        reason = fields[0]
        assert isinstance(reason, str)
        envelope.quarantine(unfold(reason) or f'quarantined by {who}')
