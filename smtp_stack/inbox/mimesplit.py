"""A message's MIME tree as `email.feedparser` builds it, for mail of the usual shape, fast.

Pure: bytes in, an `EmailMessage` tree (policy compat32, header values as
stored) or None out. The stdlib parser reads a message a line at a time
in Python and compiles a regular expression for each multipart boundary
(every message has its own boundary, so it is never cached): most of the
cost of storing a message in the inbox. Here the lines are found with
`str.find`, and the tree is made of the same objects by the same calls
(`set_raw` with compat32's `header_source_parse`, `set_payload`,
`attach`), deciding types and boundaries through the same `Message`
methods, so it is the tree the feedparser makes, for the shape it accepts:

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
close delimiter the epilogue. tests/test_inbox_parse_same.py holds the
trees to the feedparser's on generated messages.
"""
from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage

_COMPAT32 = email.policy.compat32
# A field: a name of printable ASCII but ':' (RFC 5322 2.2), its value, and
# the lines folded into it (they start with a blank).
_FIELD = re.compile(r'([\x21-\x39\x3b-\x7e]+):([^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)')
_SECTION = re.compile(r'(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+')
_DELIMITER_END = re.compile(r'(--)?[ \t]*')
CRLF = '\r\n'


class _Unusual(Exception):
    """Not of the shape this splits: the caller asks the feedparser."""


def split(raw: bytes) -> EmailMessage | None:
    """The tree the feedparser (policy compat32) makes of `raw`, or None."""
    text = raw.decode('ascii', 'surrogateescape')      # as BytesParser decodes
    lines = text.count(CRLF)
    if text.count('\r') != lines or text.count('\n') != lines:
        return None
    try:
        return _part(text, 0, len(text))
    except _Unusual:
        return None


def _part(text: str, start: int, end: int, inner: bool = False) -> EmailMessage:
    """The message or part in text[start:end]; `inner`: a part between
    delimiter lines, whose last CRLF belongs to the delimiter after it."""
    message = EmailMessage(policy=_COMPAT32)
    body = _headers(message, text, start, end)
    maintype = message.get_content_maintype()
    if maintype == 'message':
        raise _Unusual
    if maintype == 'multipart':
        _multipart(message, text, body, end)
        if inner:
            epilogue = message.epilogue or ''
            message.epilogue = None if epilogue == '' else _without_eol(epilogue)
    else:           # sliced once: a large attachment is not copied twice
        cut = 2 if inner and text.endswith(CRLF, body, end) else 0
        message.set_payload(text[body:end - cut])
    return message


def _headers(message: EmailMessage, text: str, start: int, end: int) -> int:
    """Set the fields of the header section at `start`; where its body starts."""
    if text.startswith(CRLF, start):
        return start + 2        # no fields at all
    close = text.find('\r\n\r\n', start, end)
    if close < 0:
        raise _Unusual          # no empty line before the end
    section = _SECTION.match(text, start, close + 2)
    if section is None or section.end() != close + 2:
        raise _Unusual          # a line that is no field (or a `From ` line)
    fields = vars(message)['_headers']      # what set_raw appends to
    for found in _FIELD.finditer(text, start, close + 2):
        # compat32's header_source_parse: the value after the colon and its
        # blanks, the folded lines as they are, without the last line end
        fields.append((found[1], found[2].lstrip(' \t').rstrip('\r\n')))
    return close + 4


def _multipart(message: EmailMessage, text: str, start: int, end: int) -> None:
    """Preamble, parts and epilogue of the multipart body text[start:end]."""
    boundary = message.get_boundary()
    if boundary is None or message.get_content_type() == 'multipart/digest':
        raise _Unusual
    delimiters = _delimiters(text, start, end, '--' + boundary)
    if not delimiters or delimiters[0][2] or not delimiters[-1][2]:
        raise _Unusual      # no first delimiter, or no close delimiter
    first = delimiters[0][0]
    if first > start:
        message.preamble = _without_eol(text[start:first])
    for (_, after, _), (following, _, _) in zip(delimiters, delimiters[1:], strict=False):
        if following == after:
            raise _Unusual  # two delimiter lines in a row
        message.attach(_part(text, after, following, inner=True))
    message.epilogue = text[delimiters[-1][1]:end]


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
