"""One message as the MTA side shows it to a milter, and what the milter's
modification requests do to the envelope.

`SentFields` shows the header section as the deliveries will write it
so far (less their own trace fields): the fields recorded with
`envelope.add_header` on top, with the fields earlier milters inserted
there; then the client's fields, without those recorded with
`remove_header`, with the fields earlier milters placed among them
(delivery/header_edits.py). It streams the client's fields from the
spool (a line that is no field, or one too long, begins the body, as
Postfix's cleanup decides) and holds none of them: a request finds its
field in an index kept from the first reading (the numbers of the fields
of each name, in arrays, up to NAMES_BUDGET), without a walk; past the
budget, by walking the section again from the spool, as Postfix's cleanup
reads its queue file again, with a turn of the hub every WALK_TURN bytes
and at most WALK_BUDGET bytes walked per milter and message (a request
past it is not applied, and `warn` says so). So every field can be
changed, however long the section, at a bounded cost.

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
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Protocol, TypeAlias

import gevent

from ..addresses import Address, parse_params
from ..delivery.header_edits import (FieldReader, HeaderEdits, edits_for, edits_of, field_line)
from ..delivery.header_edits import Pieces as _Pieces
from ..headers import check_name, fold, remove_fields, without_fields
from . import protocol as P

if TYPE_CHECKING:
    from ..session import Envelope

__all__ = ['HeaderSection', 'SentFields', 'apply', 'unfold']

CHUNK = P.CHUNK_SIZE
# The index of the client's fields (per name, the numbers of its fields)
# is kept while it costs no more than this: NUMBER_COST per field, and each
# name's length and NAME_COST for its objects. 260,000 fields of one name,
# or 6,000 names; a section past it is read again for each request.
NAMES_BUDGET = 1 << 20
NAME_COST = 160
NUMBER_COST = 4
# Past the index's budget: the bytes of header section a milter's requests
# may walk on one message (a 16 MB section: one request), and the bytes
# walked between two turns of the hub.
WALK_BUDGET = 16 << 20
WALK_TURN = 64 << 10
_FOLD = re.compile(r'\r?\n(?=[ \t])')
# Above this server's Received: a field recorded with add_header, a line a
# milter placed. Below it: a client's field, a line placed before one of
# them, a line placed after the last.
ADDED, PLACED = 'added', 'placed'
CLIENT, INSERTED, APPENDED = 'client', 'inserted', 'appended'


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
    """A field above this server's Received, as a milter sees it: one
    recorded with add_header (ADDED) or a line a milter placed (PLACED)."""
    kind: str
    name: str               # lower-cased
    line: bytes             # the header line, with its CRLFs
    number: int = 0         # ADDED: 1 is the oldest


class _Item(NamedTuple):
    """A field below this server's Received, and where its record is: the
    client's field `number` (CLIENT), the line `place` of the lines placed
    before it (INSERTED), or the line `place` after the last (APPENDED).
    `raw`: the header line (b'' for a client's field read from `names`)."""
    where: str
    number: int
    place: int
    name: str               # lower-cased
    raw: bytes


# One of the client's fields as a walk reads it: (its number, its name
# lower-cased, its header line or b'', whether remove_header hides it).
_Client: TypeAlias = 'tuple[int, str, bytes, bool]'


_REQUESTS = {P.ADDHEADER: 'SMFIR_ADDHEADER', P.INSHEADER: 'SMFIR_INSHEADER',
             P.CHGHEADER: 'SMFIR_CHGHEADER', P.CHGFROM: 'SMFIR_CHGFROM',
             P.ADDRCPT: 'SMFIR_ADDRCPT', P.ADDRCPT_PAR: 'SMFIR_ADDRCPT_PAR',
             P.DELRCPT: 'SMFIR_DELRCPT', P.QUARANTINE: 'SMFIR_QUARANTINE'}


class WalkTooLong(ValueError):
    """The requests of a milter would walk more than WALK_BUDGET bytes of
    header section: the request is not applied (apply's warning)."""


class _Clients(Protocol):
    """Some of the client's fields, as the index finds them."""

    def count(self, low: int, high: int) -> int:
        """How many have a number in [low, high)."""

    def select(self, low: int, rank: int) -> int:
        """The number of the rank'th (from 1) of those numbered low or more."""


class _Named:
    """The shown fields of one name: their numbers, ascending."""

    def __init__(self, numbers: array[int]) -> None:
        self.numbers = numbers

    def count(self, low: int, high: int) -> int:
        numbers = self.numbers
        return max(bisect_left(numbers, high) - bisect_left(numbers, low), 0)

    def select(self, low: int, rank: int) -> int:
        return self.numbers[bisect_left(self.numbers, low) + rank - 1]


class _AllShown:
    """Every shown field: 1 to `total`, less the `unshown` numbers (sorted)."""

    def __init__(self, total: int, unshown: array[int]) -> None:
        self.total = total
        self.unshown = unshown

    def _upto(self, number: int) -> int:
        """How many are numbered `number` or less."""
        number = min(number, self.total)
        return number - bisect_right(self.unshown, number) if number > 0 else 0

    def count(self, low: int, high: int) -> int:
        return max(self._upto(high - 1) - self._upto(low - 1), 0)

    def select(self, low: int, rank: int) -> int:
        wanted = self._upto(low - 1) + rank
        lowest, highest = low, self.total
        while lowest < highest:             # the first number with `wanted` up to it
            middle = (lowest + highest) // 2
            if self._upto(middle) >= wanted:
                highest = middle
            else:
                lowest = middle + 1
        return lowest


@dataclass
class SentFields:
    """The header section a milter is shown, for its requests: `fields()`
    gives (name, value) top first; `body()` the rest of the message;
    `edits()` what the requests made of it.

    The client's header section is not held: what the requests change is
    kept as the deliveries' record, by the client's field numbers
    (HeaderEdits). A request that looks for a field below this server's
    Received finds it in the index of the first reading (`fields()`):
    `names`, per name the numbers of the fields shown, and `unshown`, the
    numbers of those not shown; by bisection, without a walk. A section
    whose index would pass NAMES_BUDGET is walked again from the spool
    (`_items`), as Postfix's cleanup reads its queue file again for each
    request ([cleanup] cleanup_milter.c, cleanup_find_header_start), within
    WALK_BUDGET. So a change applies however long the section is, and
    memory and time are bounded by the budgets and the requests."""
    envelope: Envelope
    top: list[_Shown] = field(default_factory=list)
    inserted: dict[int, list[bytes]] = field(default_factory=dict)
    appended: list[bytes] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    changed: bool = False
    names_budget: int = NAMES_BUDGET
    names: dict[str, array[int]] | None = None      # the index, while within budget
    unshown: array[int] = field(default_factory=lambda: array('I'))
    total: int = 0                      # the client's fields, shown or not
    walked: int = 0                     # bytes walked again from the spool
    _reader: io.BufferedReader | None = None
    _fields: FieldReader | None = None

    def __post_init__(self) -> None:
        before = edits_of(self.envelope) or HeaderEdits()
        added = self.envelope.added_headers
        for below in range(len(added), -1, -1):
            for count, line in before.top:
                if min(count, len(added)) == below:
                    self.top.append(_Shown(PLACED, _name(line), line))
            if below and below not in before.dropped:
                name, value = added[below - 1]
                line = fold(name, value).encode('utf-8', 'surrogateescape')
                self.top.append(_Shown(ADDED, name.lower(), line, below))
        self.inserted = {number: list(lines) for number, lines in before.inserted.items()}
        self.appended = list(before.appended)
        self.deleted = set(before.deleted)
        self.dropped = set(before.dropped)

    def fields(self) -> Iterator[tuple[str, str]]:
        """(name, value) of each field, the value after the colon with its
        line breaks as LF; close() when done."""
        for entry in self.top:
            yield _split(entry.line)
        self._reader = io.BufferedReader(_Pieces(_opened(self.envelope.spool())), CHUNK)
        self._fields = FieldReader(self._reader)
        client = self._read(self._fields, keep=True)
        if self.inserted or self.appended or self.deleted:
            for item in self._walk(client):
                yield _split(item.raw)
            return
        for _, _, raw, hidden in client:     # no milter placed or deleted any yet
            if not hidden:
                yield _split(raw)

    def _read(self, fields: FieldReader, keep: bool = False) -> Iterator[_Client]:
        """The client's fields in `fields`. With `keep` (the first reading),
        the index is kept for the requests: `names` (set once read to the
        end within budget), `unshown`, `total`. Without (a walk again), the
        bytes count against WALK_BUDGET, with a turn of the hub every
        WALK_TURN."""
        removed = self.envelope.removed_headers
        deleted = self.deleted
        names: dict[str, array[int]] | None = {} if keep else None
        unshown = array('I')
        budget = self.names_budget
        count = turn = 0
        for count, raw in enumerate(fields, 1):
            name = _name(raw)
            hidden = bool(removed) and not remove_fields(raw, removed)
            if names is not None:
                budget -= NUMBER_COST
                if hidden or count in deleted:
                    unshown.append(count)
                else:
                    numbers = names.get(name)
                    if numbers is None:
                        numbers = names[name] = array('I')
                        budget -= len(name) + NAME_COST
                    numbers.append(count)
                if budget < 0:
                    names, unshown = None, array('I')
            elif not keep:
                self.walked += len(raw)
                turn += len(raw)
                if self.walked > WALK_BUDGET:
                    raise WalkTooLong(f'more than {WALK_BUDGET} bytes of header section '
                                      'walked for this milter')
                if turn >= WALK_TURN:
                    turn = 0
                    gevent.sleep(0)
            yield count, name, raw, hidden
        if keep:
            self.names, self.unshown, self.total = names, unshown, count

    def _walk(self, client: Iterable[_Client]) -> Generator[_Item, None, None]:
        """The fields below this server's Received, as the deliveries will
        write them so far: the client's, less the deleted ones and those
        remove_header hides, with the lines placed among them."""
        count = 0
        for count, name, raw, hidden in client:
            for place, line in enumerate(self.inserted.get(count, ())):
                yield _Item(INSERTED, count, place, _name(line), line)
            if hidden or count in self.deleted:
                continue
            yield _Item(CLIENT, count, 0, name, raw)
        for number in sorted(n for n in self.inserted if n > count):
            for place, line in enumerate(self.inserted[number]):
                yield _Item(INSERTED, number, place, _name(line), line)
        for place, line in enumerate(self.appended):
            yield _Item(APPENDED, 0, place, _name(line), line)

    @contextmanager
    def _items(self) -> Iterator[Iterator[_Item]]:
        """The fields below this server's Received, walked again from the
        spool (the index past its budget); left unread when the caller
        found what it looked for."""
        with io.BufferedReader(_Pieces(_opened(self.envelope.spool())), CHUNK) as reader:
            walk = self._walk(self._read(FieldReader(reader)))
            try:
                yield walk
            finally:
                walk.close()

    def _find(self, clients: _Clients, name: str | None, wanted: int) -> _Item | None:
        """The wanted'th (from 1) field below this server's Received (of
        `name`, or any), from the index: `clients` counts the client's
        fields between the lines placed among them, as a walk meets them."""
        seen, low = 0, 1
        for number in sorted(self.inserted):
            count = clients.count(low, number)      # before the lines placed at `number`
            if seen + count >= wanted:
                return _Item(CLIENT, clients.select(low, wanted - seen), 0, name or '', b'')
            seen, low = seen + count, max(low, number)
            for place, line in enumerate(self.inserted[number]):
                if name is None or _name(line) == name:
                    seen += 1
                    if seen == wanted:
                        return _Item(INSERTED, number, place, _name(line), line)
        count = clients.count(low, self.total + 1)
        if seen + count >= wanted:
            return _Item(CLIENT, clients.select(low, wanted - seen), 0, name or '', b'')
        seen += count
        for place, line in enumerate(self.appended):
            if name is None or _name(line) == name:
                seen += 1
                if seen == wanted:
                    return _Item(APPENDED, 0, place, _name(line), line)
        return None

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

    def nth(self, name: str, index: int) -> int | _Item | None:
        """The index'th field called `name` (1: the first): its position in
        `top`, or the item below this server's Received; None: no such field."""
        key = name.lower()
        seen = 0
        for position, entry in enumerate(self.top):
            if entry.name == key:
                seen += 1
                if seen == index:
                    return position
        if self.names is not None:      # an absent name costs no walk (rspamd deletes them)
            numbers = self.names.get(key)
            return self._find(_Named(array('I') if numbers is None else numbers), key,
                              index - seen)
        with self._items() as items:
            for item in items:
                if item.name == key:
                    seen += 1
                    if seen == index:
                        return item
        return None

    def insert(self, index: int, line: bytes) -> None:
        """At `index` of the message as delivered, this server's Received
        counted ([milter8] SMFIR_INSHEADER: Postfix's index + 1, its own
        Received first): 0 on top; past the last field: appended."""
        self.changed = True
        index = max(index, 0)
        if index <= len(self.top):
            self.top.insert(index, _Shown(PLACED, _name(line), line))
            return
        wanted = index - len(self.top) - 1      # this server's Received is at len(top)
        if self.names is not None:
            found = self._find(_AllShown(self.total, self.unshown), None, wanted + 1)
            if found is not None:
                self._place_before(found, line)
            else:
                self.appended.append(line)
            return
        with self._items() as items:
            for position, item in enumerate(items):
                if position == wanted:
                    self._place_before(item, line)
                    return
        self.appended.append(line)

    def _place_before(self, item: _Item, line: bytes) -> None:
        if item.where == CLIENT:
            self.inserted.setdefault(item.number, []).append(line)
        elif item.where == INSERTED:
            self.inserted[item.number].insert(item.place, line)
        else:
            self.appended.insert(item.place, line)

    def append(self, line: bytes) -> None:
        self.appended.append(line)
        self.changed = True

    def replace(self, position: int | _Item, line: bytes | None) -> None:
        """The field at `position` (from nth) changed to `line`, or deleted (None)."""
        self.changed = True
        if isinstance(position, int):
            entry = self.top[position]
            if entry.kind == ADDED:
                self.dropped.add(entry.number)
            if line is None:
                del self.top[position]
            else:
                self.top[position] = _Shown(PLACED, entry.name, line)
        elif position.where == CLIENT:
            self.deleted.add(position.number)
            if self.names is not None:          # no longer shown: out of the index
                numbers = self.names[position.name]
                del numbers[bisect_left(numbers, position.number)]
                insort(self.unshown, position.number)
            if line is not None:        # in its place: after the lines placed before it
                self.inserted.setdefault(position.number, []).append(line)
        else:
            lines = self.inserted[position.number] if position.where == INSERTED \
                else self.appended
            if line is None:
                del lines[position.place]
            else:
                lines[position.place] = line

    def edits(self) -> HeaderEdits:
        """The shown section, changed, as the deliveries' record."""
        edits = HeaderEdits(inserted={n: list(lines) for n, lines in self.inserted.items()
                                      if lines},
                            appended=list(self.appended), deleted=set(self.deleted),
                            dropped=set(self.dropped))
        below = 0           # the number of the nearest added field below
        for entry in reversed(self.top):
            if entry.kind == ADDED:
                below = entry.number
            else:
                edits.top.insert(0, (below, entry.line))
        return edits


def _name(raw: bytes) -> str:
    """A header line's field name, lower-cased."""
    return raw.partition(b':')[0].rstrip(b' \t').decode('utf-8', 'surrogateescape').lower()


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
            warn.append(f'{_REQUESTS.get(letter, repr(letter))} not applied: {exc}')
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
