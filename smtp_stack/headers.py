"""Header fields this server adds to a message (`envelope.add_header`)
and takes out of it (`envelope.remove_header`).

Pure: names and values in, checked and folded header lines out; message
bytes in, the same bytes without the removed fields out. A value from a
policy may carry text a client chose (a HELO name, a DKIM selector), so CR,
LF and NUL are refused: one of them would let that text start a header
field of its own (header injection).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .session import HeaderPredicate

# What remove_header recorded: (field name, predicate or None for all).
Removal: TypeAlias = tuple[str, 'HeaderPredicate | None']

# RFC 5322 3.6.8: field-name = 1*ftext; ftext = %d33-57 / %d59-126.
_FIELD_NAME = re.compile(r'[\x21-\x39\x3b-\x7e]+\Z')
FOLD_AT = 78        # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
MAX_LINE = 998      # ... and MUST be at most 998


def check_name(name: object) -> str:
    """`name` when it is RFC 5322 field-name syntax; ValueError otherwise."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise ValueError(f'not a header field name (RFC 5322 3.6.8): {name!r}')
    return name


def check_field(name: object, value: object) -> tuple[str, str]:
    """(name, value) when both may go into a header; ValueError otherwise."""
    name = check_name(name)
    if not isinstance(value, str):
        raise ValueError(f'a header value must be a str, not {type(value).__name__}')
    for bad in ('\r', '\n', '\0'):
        if bad in value:
            raise ValueError(f'a header value may not contain {bad!r}: {value!r}')
    return name, value


def fold(name: str, value: str) -> str:
    """`Name: value` folded at white space (RFC 5322 2.2.3) into lines of at
    most 78 characters where the words allow, ending in CRLF. A word too
    long for any line stays whole up to 998 characters; longer: ValueError.

    Folding puts CRLF before the space that separated two words and keeps
    that space, so unfolding (taking the CRLFs out, RFC 5322 2.2.3) gives
    the value back byte for byte; a tab there would change it, and with
    it a signature that covers the field with simple canonicalization
    (RFC 6376 3.4.1)."""
    words = value.split(' ')
    lines = []
    current = f'{name}:'
    for index, word in enumerate(words):
        if not word and index:      # runs of spaces: keep them inside the line
            current += ' '
            continue
        candidate = f'{current} {word}'
        if len(candidate) > FOLD_AT and current.strip() and current != f'{name}:':
            lines.append(current)
            current = f' {word}'
        else:
            current = candidate
    lines.append(current)
    if any(len(line) > MAX_LINE for line in lines):
        raise ValueError(f'header {name} has a word over {MAX_LINE} characters')
    return '\r\n'.join(lines) + '\r\n'


def header_block(fields: Sequence[tuple[str, str]]) -> bytes:
    """The added fields as they go on top of the message: the last added
    first, since each one is prepended (RFC 5322 3.6, as trace fields are)."""
    return ''.join(fold(name, value) for name, value in reversed(fields)).encode('utf-8')


# -- removal: the message's own fields left out (envelope.remove_header) ----------

MAX_FIELD = 64 << 10    # bytes of one field held to judge it
_EOL = re.compile(rb'\r\n?|\n')
_FTEXT = re.compile(rb'[\x21-\x39\x3b-\x7e]+\Z')
_WSP = b' \t'
# What is decided about the field at hand: still collecting it, or its fate.
_COLLECT, _KEEP, _DROP = 'collect', 'keep', 'drop'


class HeaderFilter:
    """The message's header section without the fields `removals` names,
    as the message streams: `feed(data)` returns what may be written now,
    `end()` the rest.

    `removals` is a list of (name, predicate): a field whose name is `name`
    in any case goes when `predicate` is None or `predicate(value)` is
    true, `value` being its unfolded body (RFC 5322 2.2.3) as a str (UTF-8;
    other bytes as surrogate escapes) without the white space around it.
    The name may be followed by white space before the colon (the
    obsolete syntax of RFC 5322 4.5.8, which readers still accept).

    Only the header section is looked at: up to the first empty line (RFC
    5322 2.1); the body passes as it comes, not copied. A field is its first
    line and the lines after it that start with SP or HTAB, so a folded
    field goes whole. A line ends in CRLF, LF or a lone CR, as Python's
    email parser splits them: a reader must not find a field that this
    filter did not see. A line that is not a field (no colon) stays, and
    the fields after it are still judged, up to the empty line.

    One field of at most `limit` bytes is held at a time. A longer field
    of a listed name is removed unjudged: it cannot be judged whole, and
    letting it through would be the way around the removal. Longer fields
    of other names pass as they stream. The name is read in the first
    `limit` bytes of the field; the result never depends on how the
    message is cut into pieces.
    """

    def __init__(self, removals: Iterable[Removal], limit: int = MAX_FIELD) -> None:
        self._rules: dict[bytes, list[HeaderPredicate | None]] = {}
        for name, predicate in removals:
            self._rules.setdefault(name.lower().encode('ascii'), []).append(predicate)
        self._limit = limit
        self._body = False          # past the header section: everything passes
        self._cr = False            # the data so far ended in a CR: CRLF or a lone CR?
        self._line_start = True     # the next byte starts a line
        self._field = bytearray()   # the field being collected
        self._name: bytes | None = None     # its name, lower-cased, once known (b'': no field)
        self._colon = -1
        self._state = _KEEP         # no field yet: a leading continuation line passes

    def feed(self, data: bytes) -> bytes:
        if self._body:
            return data
        out: list[bytes] = []
        pos, size = 0, len(data)
        if self._cr and size:
            self._cr = False
            pos = 1 if data[:1] == b'\n' else 0
            self._line(b'\r\n' if pos else b'\r', True, out)
        while pos < size and not self._body:
            match = _EOL.search(data, pos)
            if match is None:
                self._line(data[pos:], False, out)
                pos = size
            elif match.end() == size and match.group() == b'\r':
                if match.start() > pos:         # a CR last: the next byte tells
                    self._line(data[pos:match.start()], False, out)
                self._cr = True
                pos = size
            else:
                self._line(data[pos:match.end()], True, out)
                pos = match.end()
        if pos < size:
            out.append(data[pos:])              # the start of the body
        return b''.join(out)

    def end(self) -> bytes:
        """The rest, at the end of the message (a header section without a
        body, or without its empty line, ends here)."""
        out: list[bytes] = []
        if not self._body:
            if self._cr:
                self._cr = False
                self._line(b'\r', True, out)
            if not self._body:
                self._close(out)
            self._body = True
        return b''.join(out)

    def _line(self, piece: bytes, complete: bool, out: list[bytes]) -> None:
        """A piece of a line; `complete` when it holds the line's end."""
        if self._line_start:
            first = piece[:1]
            if first in (b'\r', b'\n'):         # the empty line: the header section ends
                self._close(out)
                out.append(piece)
                self._body = True
                return
            if first not in (b' ', b'\t'):      # not a continuation: a new field
                self._close(out)
                self._state, self._name, self._colon = _COLLECT, None, -1
        self._line_start = complete
        state = self._state
        if state is _KEEP:
            out.append(piece)
        elif state is _COLLECT:
            self._collect(piece, complete, out)

    def _collect(self, piece: bytes, complete: bool, out: list[bytes]) -> None:
        field = self._field
        field += piece
        if self._name is None:              # still in the first line
            colon = field.find(b':', len(field) - len(piece), self._limit)
            if colon >= 0:
                self._colon = colon
                name = bytes(field[:colon]).rstrip(_WSP)
                self._name = name.lower() if _FTEXT.match(name) else b''
            elif len(field) > self._limit:
                # No colon in the first `limit` bytes: a field only when
                # they are a listed name and white space (dropped below).
                name = bytes(field[:self._limit]).rstrip(_WSP).lower()
                self._name = name if name in self._rules else b''
            elif complete:
                self._name = b''            # no colon: not a field
        if self._name is not None and self._name not in self._rules:
            self._state = _KEEP             # not ours to judge: it streams
            out.append(bytes(field))
        elif len(field) > self._limit:
            self._state = _DROP             # too long to judge whole
        else:
            return
        field.clear()

    def _close(self, out: list[bytes]) -> None:
        """The field at hand is complete: judge it if it is still held."""
        if self._state is not _COLLECT:
            return
        field = bytes(self._field)
        self._field.clear()
        self._state = _KEEP
        predicates = self._rules.get(self._name) if self._name else None
        if predicates is not None:
            unfolded = _EOL.sub(b'', field[self._colon + 1:])
            value = unfolded.decode('utf-8', 'surrogateescape').strip(' \t')
            if any(p is None or p(value) for p in predicates):
                return
        out.append(field)


def remove_fields(message: bytes, removals: Iterable[Removal]) -> bytes:
    """`message` (a whole one, or its start) without the fields `removals` names."""
    strip = HeaderFilter(removals)
    return strip.feed(message) + strip.end()


def without_fields(pieces: Iterable[bytes], removals: Sequence[Removal]) -> Iterator[bytes]:
    """The pieces of a message with the fields `removals` names taken out of
    its header section (HeaderFilter); the same pieces when there are none."""
    if not removals:
        yield from pieces
        return
    strip = HeaderFilter(removals)
    for piece in pieces:
        piece = strip.feed(piece)
        if piece:
            yield piece
    tail = strip.end()
    if tail:
        yield tail
