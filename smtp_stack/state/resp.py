"""RESP, the Redis protocol (https://redis.io/docs/latest/develop/reference/protocol-spec/):
commands written and replies read, bytes in and values out, no sockets.

A command is an array of bulk strings; a reply is one RESP2 or RESP3
value. `reply(data, start)` answers None while the bytes hold only part
of one (read more and ask again). The store's connections speak RESP3
(redis-py's handshake says HELLO 3), and read with this the few kinds of
reply our commands and scripts get: simple strings, errors, integers,
bulk strings, null, and arrays, doubles and booleans for good measure.
redis-py's own reader is generic (push messages, maintenance
notifications, a buffer object): a third of a store call's CPU (issue 25).
"""
from __future__ import annotations

from typing import Any

from redis.exceptions import NoScriptError, ResponseError

_CRLF = b'\r\n'


class ProtocolError(Exception):
    """Bytes that are no RESP reply (or one we do not read): the
    connection is not to be used again."""


def command(args: tuple[Any, ...]) -> bytes:
    """A command: an array of bulk strings. Arguments are str (UTF-8; a
    key from a non-UTF-8 address keeps its bytes), bytes or int; floats
    are written by the caller (repr)."""
    return b'*%d\r\n%s' % (len(args), bulk_strings(args))


def bulk_strings(args: tuple[Any, ...]) -> bytes:
    """Each argument as a bulk string; written as one text when all are
    ASCII (most are: keys, numbers, SHA1s), which costs half as much."""
    texts = []
    for arg in args:
        if type(arg) is not str:
            if type(arg) is bytes:
                return _bulk_bytes(args)
            arg = str(arg)
        texts.append(f'${len(arg)}\r\n{arg}\r\n')
    text = ''.join(texts)
    return text.encode('ascii') if text.isascii() else _bulk_bytes(args)


def _bulk_bytes(args: tuple[Any, ...]) -> bytes:
    parts = []
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode('utf-8', 'surrogateescape')
        parts.append(b'$%d\r\n%s\r\n' % (len(data), data))
    return b''.join(parts)


def error(text: str) -> ResponseError:
    """The exception for an error reply, as redis-py names them: NOSCRIPT
    (a script the server does not have) is NoScriptError."""
    return NoScriptError(text) if text.startswith('NOSCRIPT') else ResponseError(text)


def reply(data: bytes, start: int = 0) -> tuple[Any, int] | None:
    """(value, index after it) of the reply at `start`, None if `data` ends
    first. Strings are decoded (UTF-8), an error reply is returned as its
    exception (the caller raises it), a null is None."""
    end = data.find(_CRLF, start)
    if end < 0:
        return None
    kind, line = data[start:start + 1], data[start + 1:end]
    after = end + 2
    if kind == b':':
        return int(line), after
    if kind in (b'$', b'='):        # bulk string; verbatim: 'txt:' before its text
        size = int(line)
        if size < 0:
            return None, after      # RESP2's null bulk string
        if len(data) < after + size + 2:
            return None
        text = data[after:after + size].decode('utf-8')
        return (text[4:] if kind == b'=' else text), after + size + 2
    if kind == b'+':
        return line.decode('utf-8'), after
    if kind == b'-':
        return error(line.decode('utf-8', 'replace')), after
    if kind == b'_':
        return None, after
    if kind == b'*':
        count = int(line)
        if count < 0:
            return None, after      # RESP2's null array
        items = []
        for _ in range(count):
            found = reply(data, after)
            if found is None:
                return None
            item, after = found
            items.append(item)
        return items, after
    if kind == b',':
        return float(line), after
    if kind == b'#':
        return line == b't', after
    raise ProtocolError(f'a reply of a kind not read here: {data[start:end][:40]!r}')
