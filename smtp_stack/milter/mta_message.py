"""One message as the MTA side shows it to a milter, and what the milter's
modification requests do to the envelope.

`message_reader` gives the message as the deliveries will write it so far:
the fields recorded with `envelope.add_header` on top (a milter after
another sees the fields the first one added, as in Postfix), then the
client's message from the spool without the fields recorded with
`remove_header`; streamed, never whole. `HeaderSection` reads its header
section field by field (a line that is no field, or one too long, begins
the body, as Postfix's cleanup decides); what follows is the body.

`apply` turns the requests read at the end of the message into the
Envelope API that the deliveries honour: added and inserted fields go on
top with `add_header` (the envelope keeps no position among the client's
fields), a changed or deleted field of the client's message goes with
`remove_header` (the changed one added on top again), the envelope's
sender and recipients change in place, and `quarantine` records the
reason. Each request that cannot be honoured is said in `warn`.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..addresses import Address, parse_params
from ..headers import header_block, without_fields
from . import protocol as P

if TYPE_CHECKING:
    from ..session import Envelope

__all__ = ['message_reader', 'HeaderSection', 'SentFields', 'apply', 'unfold']

CHUNK = P.CHUNK_SIZE
MAX_FIELD = 256 << 10       # a longer field begins the body (Postfix: header_size_limit)
FIELDS_BUDGET = 1 << 20     # bytes of fields kept for CHGHEADER's indexes
_NAME = re.compile(rb'[!-9;-~]+[ \t]*:')
_FOLD = re.compile(r'\r?\n(?=[ \t])')


class _Pieces(io.RawIOBase):
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


def message_reader(envelope: Envelope) -> io.BufferedReader:
    """The message as the deliveries would write it now (less their own
    trace fields), from the spool; close it when done."""
    spool = envelope.spool()
    head = header_block(envelope.added_headers) if envelope.added_headers else b''
    removed = envelope.removed_headers

    def pieces() -> Iterator[bytes]:
        if head:
            yield head
        with spool.open() as body:
            yield from without_fields(iter(lambda: body.read(CHUNK), b''), removed)

    return io.BufferedReader(_Pieces(pieces()), CHUNK)


class HeaderSection:
    """The fields of a message's header section, read from `reader`:
    iterating gives (name, value), the value as after the colon with its
    line breaks as LF (how Postfix and Sendmail show a folded field).
    It stops after the empty line; a line that is no field (or longer
    than MAX_FIELD) ends it too and is kept in `leftover`: the first of
    the body."""

    def __init__(self, reader: io.BufferedReader) -> None:
        self.reader = reader
        self.leftover = b''

    def __iter__(self) -> Iterator[tuple[str, str]]:
        current: bytearray | None = None
        while True:
            line = self.reader.readline(MAX_FIELD + 1)
            if line[:1] in (b' ', b'\t') and current is not None \
                    and len(current) + len(line) <= MAX_FIELD:
                current += line
                continue
            if current is not None:
                yield _split(bytes(current))
                current = None
            if not line or line in (b'\r\n', b'\n'):
                return
            if len(line) > MAX_FIELD or not _NAME.match(line):
                self.leftover = line        # no field: the body begins here
                return
            current = bytearray(line)


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
class SentFields:
    """The fields a milter was shown, for the indexes of its CHGHEADER:
    (name lower-cased, unfolded value, whether this server added it)."""
    budget: int = FIELDS_BUDGET
    fields: list[tuple[str, str, bool]] = field(default_factory=list)
    overflow: bool = False

    def add(self, name: str, value: str, added: bool) -> None:
        self.budget -= len(name) + len(value)
        if self.budget < 0:
            self.overflow = True
            return
        self.fields.append((name.lower(), unfold(value), added))

    def nth(self, name: str, index: int) -> tuple[str, bool] | None:
        """(value, added) of the index'th field called `name` (1: the first)."""
        seen = 0
        for each, value, added in self.fields:
            if each == name.lower():
                seen += 1
                if seen == index:
                    return value, added
        return None


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
          who: str, warn: list[str]) -> None:
    """The modification requests of one milter, in their order, on `envelope`."""
    for letter, fields in changes:
        try:
            _apply_one(letter, fields, envelope, sent, who, warn)
        except (ValueError, TypeError) as exc:
            warn.append(f'{P.name_of(letter) if letter in P.NAMES else repr(letter)} '
                        f'not applied: {exc}')


def _apply_one(letter: str, fields: list[P.Field], envelope: Envelope, sent: SentFields,
               who: str, warn: list[str]) -> None:
    if letter in (P.ADDHEADER, P.INSHEADER):
        name, value = fields[-2], fields[-1]
        assert isinstance(name, str) and isinstance(value, str)
        envelope.add_header(name, unfold(value))
    elif letter == P.CHGHEADER:
        index, name, value = fields
        assert isinstance(index, int) and isinstance(name, str) and isinstance(value, str)
        found = sent.nth(name, max(index, 1))
        if found is None:
            if value:       # [milter8] cleanup_upd_header: no such field: it is added
                envelope.add_header(name, unfold(value))
            elif sent.overflow:
                warn.append(f'{name} #{index}: past the fields kept; not deleted')
            return
        old, added = found
        if added:
            warn.append(f'{name} #{index} was added by this server: not changed')
            return
        envelope.remove_header(name, old.__eq__)
        if value:
            envelope.add_header(name, unfold(value))
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
