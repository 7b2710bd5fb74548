"""XCLIENT and XFORWARD attributes, as Postfix defines them; no sockets.

Both commands are `VERB 1*( SP name "=" xtext )` (Postfix XCLIENT_README and
XFORWARD_README), so one parser serves both: `parse_attributes` checks the
syntax, and a per-command table of value checks does the rest.

Rules where the READMEs leave room, chosen here:
- Names are case-insensitive and returned upper-case, in the order given.
- `[UNAVAILABLE]` and `[TEMPUNAVAIL]` (any case, after xtext decoding) become
  None: "the information is unavailable". The two are not told apart.
- A value is at most 255 characters as sent (xtext-encoded; XFORWARD_README
  note 1) and all the arguments of one command at most 2048 characters,
  separators included; an empty value is an error (send [UNAVAILABLE]).
- The decoded bytes must be UTF-8 (what `encode_xtext` produces) with no
  control characters: values end up in logs and Received headers.
- A name given twice in one command is an error rather than "last wins".
Every error is `SmtpError(501, ..., '5.5.4')`, Postfix's "bad command
parameter syntax".
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

from .errors import SmtpError
from .xtext import XtextError, decode_xtext

__all__ = [
    'XCLIENT_ATTRIBUTES', 'XFORWARD_ATTRIBUTES', 'parse_attributes',
    'parse_xclient', 'parse_xforward', 'xclient_capability', 'xforward_capability',
]

MAX_VALUE_LENGTH = 255
MAX_COMMAND_LENGTH = 2048
MAX_PROTO_LENGTH = 64           # XFORWARD_README: "up to 64 characters"
UNAVAILABLE = frozenset({'[UNAVAILABLE]', '[TEMPUNAVAIL]'})

# In the order of the EHLO keyword line.
XCLIENT_ORDER = ('NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN', 'DESTADDR', 'DESTPORT')
XFORWARD_ORDER = ('NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'IDENT', 'SOURCE')
XCLIENT_ATTRIBUTES = frozenset(XCLIENT_ORDER)
XFORWARD_ATTRIBUTES = frozenset(XFORWARD_ORDER)

_PORT = re.compile(r'[0-9]{1,5}')


def _error(message: str) -> SmtpError:
    return SmtpError(501, message, '5.5.4')


def _shown(text: str, limit: int = 32) -> str:
    """Client text safe to echo in a reply: printable ASCII, short."""
    text = ''.join(ch for ch in text if ' ' < ch <= '~')
    return text if len(text) <= limit else text[:limit] + '...'


def parse_attributes(args: list[str], allowed: frozenset[str], *,
                     command: str | None = None) -> dict[str, str | None]:
    """Parse `NAME=xtext` arguments into {NAME: decoded value or None}.

    `command` (e.g. 'XCLIENT') only makes the error messages more precise.
    """
    verb = command or 'command'
    if not args:
        raise _error(f'Syntax: {verb} attribute=value...')
    if sum(len(arg) + 1 for arg in args) - 1 > MAX_COMMAND_LENGTH:
        raise _error(f'Bad {verb} syntax: parameters longer than {MAX_COMMAND_LENGTH} characters')
    result: dict[str, str | None] = {}
    for arg in args:
        name, sep, encoded = arg.partition('=')
        if not sep or not name:
            raise _error(f'Bad command parameter syntax: {_shown(arg)}')
        name = name.upper()
        if name not in allowed:
            raise _error(f'Bad {verb} attribute name: {_shown(name)}')
        if name in result:
            raise _error(f'Bad {verb} syntax: attribute {name} given twice')
        result[name] = _decode_value(encoded, f'Bad {verb} {name} syntax')
    return result


def _decode_value(encoded: str, prefix: str) -> str | None:
    if not encoded:
        raise _error(f'{prefix}: empty value')
    if len(encoded) > MAX_VALUE_LENGTH:
        raise _error(f'{prefix}: longer than {MAX_VALUE_LENGTH} characters')
    try:
        value = decode_xtext(encoded)      # escaped bytes must form UTF-8
    except XtextError:
        raise _error(f'{prefix}: invalid xtext') from None
    if value.upper() in UNAVAILABLE:
        return None
    if not value.isprintable():
        raise _error(f'{prefix}: control character in value')
    return value


# -- value checks: each returns the value to keep or raises ValueError(reason)

def _any(value: str) -> str:
    return value


def _address(value: str) -> str:
    """IPv4 dotted quad or 'IPV6:' + IPv6 (any case), kept as the plain IP."""
    try:
        if value[:5].upper() == 'IPV6:':
            if '%' in value:
                raise ValueError
            return str(ipaddress.IPv6Address(value[5:]))
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError('not an IPv4 address or IPV6: and an IPv6 address') from None


def _port(value: str) -> str:
    if not _PORT.fullmatch(value) or int(value) > 65535:
        raise ValueError('not a port number 0..65535')
    return str(int(value))


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value.upper() not in choices:
            raise ValueError(f'not {" or ".join(choices)}')
        return value.upper()
    return check


def _protocol_name(value: str) -> str:
    """XFORWARD PROTO: "an SMTP or non-SMTP protocol name of up to 64
    characters" (e.g. ESMTPSA, LMTP, QMQP), so not only SMTP and ESMTP."""
    if len(value) > MAX_PROTO_LENGTH or any(ch.isspace() for ch in value):
        raise ValueError(f'not a protocol name of at most {MAX_PROTO_LENGTH} characters')
    return value


_XCLIENT_CHECKS = {
    'NAME': _any, 'ADDR': _address, 'PORT': _port, 'PROTO': _one_of('SMTP', 'ESMTP'),
    'HELO': _any, 'LOGIN': _any, 'DESTADDR': _address, 'DESTPORT': _port,
}
_XFORWARD_CHECKS = {
    'NAME': _any, 'ADDR': _address, 'PORT': _port, 'PROTO': _protocol_name,
    'HELO': _any, 'IDENT': _any, 'SOURCE': _one_of('LOCAL', 'REMOTE'),
}


def _parse(command: str, args: list[str],
           checks: dict[str, Callable[[str], str]]) -> dict[str, str | None]:
    attributes = parse_attributes(args, frozenset(checks), command=command)
    for name, value in attributes.items():
        if value is not None:
            try:
                attributes[name] = checks[name](value)
            except ValueError as exc:
                raise _error(f'Bad {command} {name} syntax: {exc}') from None
    return attributes


def parse_xclient(args: list[str]) -> dict[str, str | None]:
    """XCLIENT arguments: ADDR/DESTADDR as plain IP text, PORT/DESTPORT as
    decimal text, PROTO upper-cased SMTP or ESMTP."""
    return _parse('XCLIENT', args, _XCLIENT_CHECKS)


def parse_xforward(args: list[str]) -> dict[str, str | None]:
    """XFORWARD arguments: ADDR as plain IP text, PORT as decimal text,
    SOURCE upper-cased LOCAL or REMOTE, PROTO any protocol name."""
    return _parse('XFORWARD', args, _XFORWARD_CHECKS)


def xclient_capability(attributes: Iterable[str] = XCLIENT_ORDER) -> str:
    """The EHLO line, e.g. 'XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR
    DESTPORT'; pass a subset to advertise fewer (always in that order)."""
    return _capability('XCLIENT', XCLIENT_ORDER, attributes)


def xforward_capability(attributes: Iterable[str] = XFORWARD_ORDER) -> str:
    """The EHLO line 'XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE'."""
    return _capability('XFORWARD', XFORWARD_ORDER, attributes)


def _capability(verb: str, order: tuple[str, ...], attributes: Iterable[str]) -> str:
    wanted = {name.upper() for name in attributes}
    unknown = wanted.difference(order)
    if unknown or not wanted:
        raise ValueError(f'{verb} attributes must be a non-empty subset of {order}, '
                         f'not {sorted(wanted)}')
    return ' '.join([verb, *(name for name in order if name in wanted)])
