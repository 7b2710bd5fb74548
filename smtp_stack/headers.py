"""Header fields this server adds to a message (`envelope.add_header`).

Pure: names and values in, checked and folded header lines out. A value
from a policy may carry text a client chose (a HELO name, a DKIM selector),
so CR, LF and NUL are refused: one of them would let that text start a
header field of its own (header injection).
"""
from __future__ import annotations

import re

# RFC 5322 3.6.8: field-name = 1*ftext; ftext = %d33-57 / %d59-126.
_FIELD_NAME = re.compile(r'[\x21-\x39\x3b-\x7e]+\Z')
FOLD_AT = 78        # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
MAX_LINE = 998      # ... and MUST be at most 998


def check_field(name, value) -> tuple:
    """(name, value) when both may go into a header; ValueError otherwise."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise ValueError(f'not a header field name (RFC 5322 3.6.8): {name!r}')
    if not isinstance(value, str):
        raise ValueError(f'a header value must be a str, not {type(value).__name__}')
    for bad in ('\r', '\n', '\0'):
        if bad in value:
            raise ValueError(f'a header value may not contain {bad!r}: {value!r}')
    return name, value


def fold(name: str, value: str) -> str:
    """`Name: value` folded at white space (RFC 5322 2.2.3) into lines of at
    most 78 characters where the words allow, ending in CRLF. A word too
    long for any line stays whole up to 998 characters; longer: ValueError."""
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
            current = f'\t{word}'
        else:
            current = candidate
    lines.append(current)
    if any(len(line) > MAX_LINE for line in lines):
        raise ValueError(f'header {name} has a word over {MAX_LINE} characters')
    return '\r\n'.join(lines) + '\r\n'


def header_block(fields) -> bytes:
    """The added fields as they go on top of the message: the last added
    first, since each one is prepended (RFC 5322 3.6, as trace fields are)."""
    return ''.join(fold(name, value) for name, value in reversed(fields)).encode('utf-8')
