"""A message's MIME tree as `email.feedparser` builds it, and what the inbox
reads of each part, for mail of the usual shape, fast.

Pure: bytes in, a tree of `Part`s out (or None, or `NotPlain`). The
stdlib parser reads a message a line at a time in Python and compiles a
regular expression for each multipart boundary (every message has its
own boundary, so it is never cached); then every question the inbox asks
a part (its type, file name, charset, transfer encoding) scans its
fields and splits their parameters again. Here the lines are found with
`str.find`, each part's MIME fields are read once, and the tree holds
what the feedparser's tree (policy compat32) holds, for the shape it
accepts:

- every line ends with CRLF (as SMTP delivers it): no bare CR or LF;
- each header section is `Name: value` lines (RFC 5322 2.2: a name of
  printable ASCII but ':'; no `From ` envelope line) and their folded
  continuations, and ends with an empty line;
- a multipart (RFC 2046 5.1.1) has a boundary, a first delimiter line
  before its close delimiter, which is present, and no two delimiter
  lines in a row; it is not a multipart/digest (whose parts default to
  message/rfc822);
- no part is a message/* type (the feedparser parses those as messages
  of their own).

Anything else is None, and the caller uses the stdlib parser: the
feedparser's answer to a broken message (its defect recovery) is never
guessed at. The rules taken over are the feedparser's (Python 3.11
email/feedparser.py): a delimiter line is `--boundary`, then `--` for
the close delimiter, then only spaces or tabs; the CRLF before a
delimiter belongs to it (RFC 2046 5.1.1), so it is cut from the part
before it (its payload, or a multipart's epilogue); the text before the
first delimiter is the preamble (None when there is none), after the
close delimiter the epilogue.

A part's MIME fields are read as compat32's `Message` methods read them
when they are plain (headerfields.py: then that reading is the default
policy's); a field that is not, a uuencoded body, or a base64 body of
an unusual shape raise `NotPlain`, and the caller parses the message
with the default policy. tests/test_inbox_parse_same.py holds the trees
to the feedparser's, and what is read of them to the default policy's
reading, on generated messages.
"""
from __future__ import annotations

import binascii
import functools
import quopri
import re
from collections.abc import Iterator

from . import headerfields as hf
from .headerfields import MimeFacts

# A field: a name of printable ASCII but ':' (RFC 5322 2.2), its value, and
# the lines folded into it (they start with a blank).
# A field: a name of printable ASCII but ':' (RFC 5322 2.2), and its value
# as compat32's header_source_parse keeps it: after the colon and its
# blanks, with the lines folded into it (they start with a blank), without
# the last line end.
_FIELD = re.compile(r'([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n')
_SECTION = re.compile(r'(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+')
_DELIMITER_END = re.compile(r'(--)?[ \t]*')
# base64 lines ending CRLF, padding only at the end (RFC 2045 6.8): decoded
# alike by email's decode_b and by one a2b_base64, when their length is whole
_BASE64_LINES = re.compile(r'(?:[A-Za-z0-9+/]*\r\n)*+[A-Za-z0-9+/]*={0,2}(?:\r\n)?')
_UUENCODE = frozenset({'x-uuencode', 'uuencode', 'uue', 'x-uue'})
CACHED_UP_TO = 512      # characters of a part's MIME fields whose reading is kept
CRLF = '\r\n'
_NO_FIELDS = MimeFacts('text/plain', None, None, '', 'ASCII')


class _Unusual(Exception):
    """Not of the shape this splits: the caller asks the feedparser."""


class NotPlain(Exception):
    """A part this does not read as the default policy would: the caller
    parses the message with the default policy."""


class Part:
    """A message or part as the feedparser's tree holds it: its fields as
    stored (`raw_items()`), then either a body (the payload, bytes decoded
    as ASCII with surrogate escapes, as the parser keeps them) or parts,
    a preamble and an epilogue; and `facts`, what its MIME fields say."""

    __slots__ = ('fields', 'facts', 'encoding', 'body', 'parts', 'preamble', 'epilogue')

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.facts = _NO_FIELDS
        self.encoding = ''          # the Content-Transfer-Encoding, lower case
        self.body: str | None = None
        self.parts: list[Part] = []
        self.preamble: str | None = None
        self.epilogue: str | None = None

    def raw_items(self) -> list[tuple[str, str]]:
        return self.fields

    def is_multipart(self) -> bool:
        return self.body is None

    def iter_parts(self) -> Iterator[Part]:
        return iter(self.parts)

    def decoded(self) -> bytes:
        """The body with its transfer encoding undone, as compat32's
        `get_payload(decode=True)` gives it."""
        data = (self.body or '').encode('ascii', 'surrogateescape')
        if self.encoding == 'quoted-printable':
            return quopri.decodestring(data)
        if self.encoding == 'base64':
            return binascii.a2b_base64(data)     # of the shape base64_shaped() allows
        return data


def base64_shaped(body: str) -> bool:
    """Whether one a2b_base64 decodes `body` as email's decode_b does (the
    stdlib splits the body into lines and joins them first, several times
    an attachment's size at once)."""
    return (body.isascii() and _BASE64_LINES.fullmatch(body) is not None
            and (len(body) - 2 * body.count(CRLF)) % 4 == 0)


def split(raw: bytes) -> Part | None:
    """The tree the feedparser (policy compat32) makes of `raw`, or None;
    raises NotPlain (above)."""
    text = raw.decode('ascii', 'surrogateescape')      # as BytesParser decodes
    lines = text.count(CRLF)
    if text.count('\r') != lines or text.count('\n') != lines:
        return None
    try:
        return _part(text, 0, len(text))
    except _Unusual:
        return None


def _part(text: str, start: int, end: int, inner: bool = False) -> Part:
    """The message or part in text[start:end]; `inner`: a part between
    delimiter lines, whose last CRLF belongs to the delimiter after it."""
    part = Part()
    body = _headers(part.fields, text, start, end)
    _read_mime(part)
    maintype = part.facts.content_type.partition('/')[0]
    if maintype == 'message':
        raise _Unusual
    if maintype == 'multipart':
        _multipart(part, text, body, end)
        if inner:
            epilogue = part.epilogue or ''
            part.epilogue = None if epilogue == '' else _without_eol(epilogue)
    else:           # sliced once: a large attachment is not copied twice
        cut = 2 if inner and text.endswith(CRLF, body, end) else 0
        part.body = text[body:end - cut]
        if part.encoding in _UUENCODE or (part.encoding == 'base64'
                                          and not base64_shaped(part.body)):
            raise NotPlain
    return part


def _read_mime(part: Part) -> None:
    """The part's facts and transfer encoding, from its MIME fields (RFC 2045)."""
    fields = tuple((lower, value) for lower, value in (
        (name.lower(), value) for name, value in part.fields) if lower in hf.MIME_FIELDS)
    # kept for the next part only when short: a key is held as long as the cache
    reading = (_mime_reading(fields) if sum(len(value) for _, value in fields) <= CACHED_UP_TO
               else _mime_reading.__wrapped__(fields))
    if reading is None:
        raise NotPlain
    part.facts, part.encoding = reading


@functools.lru_cache(maxsize=1024)
def _mime_reading(fields: tuple[tuple[str, str], ...]) -> tuple[MimeFacts, str] | None:
    """(facts, transfer encoding in lower case) of the MIME fields
    ((lower-case name, stored value), in order), each unfolded as the
    default policy reads it; None if one is not plain. Kept for the next
    part with the same fields: most parts' fields are the same as many
    others' (`text/plain; charset="utf-8"`, `quoted-printable`)."""
    first: dict[str, str] = {}
    for lower, value in fields:
        value = hf.unfold(value)
        if not hf.plain_mime(lower, value):
            return None
        first.setdefault(lower, value)
    facts = hf.facts_of_fields(first, 'text/plain')
    if facts is None:
        return None
    return facts, first.get('content-transfer-encoding', '').lower()


def _headers(fields: list[tuple[str, str]], text: str, start: int, end: int) -> int:
    """Read the fields of the header section at `start`; where its body starts."""
    if text.startswith(CRLF, start):
        return start + 2        # no fields at all
    close = text.find('\r\n\r\n', start, end)
    if close < 0:
        raise _Unusual          # no empty line before the end
    if _SECTION.fullmatch(text, start, close + 2) is None:
        raise _Unusual          # a line that is no field (or a `From ` line)
    fields += _FIELD.findall(text, start, close + 2)
    return close + 4


def _multipart(part: Part, text: str, start: int, end: int) -> None:
    """Preamble, parts and epilogue of the multipart body text[start:end]."""
    boundary = part.facts.boundary
    if boundary is None or part.facts.content_type == 'multipart/digest':
        raise _Unusual
    delimiters = _delimiters(text, start, end, '--' + boundary)
    if not delimiters or delimiters[0][2] or not delimiters[-1][2]:
        raise _Unusual      # no first delimiter, or no close delimiter
    first = delimiters[0][0]
    if first > start:
        part.preamble = _without_eol(text[start:first])
    for (_, after, _), (following, _, _) in zip(delimiters, delimiters[1:], strict=False):
        if following == after:
            raise _Unusual  # two delimiter lines in a row
        part.parts.append(_part(text, after, following, inner=True))
    part.epilogue = text[delimiters[-1][1]:end]


def _delimiters(text: str, start: int, end: int, delimiter: str) -> list[tuple[int, int, bool]]:
    """(line start, line end, close?) of the delimiter lines in text[start:end],
    up to the first close delimiter."""
    found: list[tuple[int, int, bool]] = []
    pos = start
    while True:
        at = text.find(delimiter, pos, end)
        if at < 0:
            return found
        pos = at + 1
        if at != start and text[at - 1] != '\n':
            continue        # not at the start of a line
        eol = text.find(CRLF, at, end)
        line_end = end if eol < 0 else eol + 2
        rest = text[at + len(delimiter):end if eol < 0 else eol]
        tail = _DELIMITER_END.fullmatch(rest)
        if tail is None:
            continue
        closing = tail.group(1) is not None
        found.append((at, line_end, closing))
        if closing:
            return found
        pos = line_end


def _without_eol(value: str) -> str:
    return value[:-2] if value.endswith(CRLF) else value
