"""PROXY version 1 (section 2.1 of HAProxy's proxy-protocol.txt): one line
of US-ASCII text, fields separated by single spaces, ended by CRLF.

Every prefix is checked as it grows (section 2.1: "abort the connection as
soon as possible"), so a byte that cannot belong to a valid line raises at
once rather than after a timeout; `parse_v1` returns None only while the
bytes so far can still become a valid line.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TypeAlias

from .header import V1_MAX_LENGTH, ProxyError, ProxyHeader

_NOT_PRINTABLE = re.compile(rb'[^\x20-\x7e]')
_DECIMAL = re.compile(r'0|[1-9][0-9]*')
_IPV6_CHARS = re.compile(r'[0-9A-Fa-f:.]*')


def parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    window = data[:V1_MAX_LENGTH]
    end = window.find(b'\r\n')
    if end >= 0:
        return _v1_header(_v1_fields(window[:end], complete=True)), end + 2
    if len(window) >= V1_MAX_LENGTH:
        raise ProxyError(f'PROXY v1: no CRLF within the first {V1_MAX_LENGTH} bytes')
    if window.endswith(b'\r'):
        _v1_fields(window[:-1], complete=True)      # only LF may follow now
    else:
        _v1_fields(window, complete=False)
    return None


def _v1_fields(line: bytes, complete: bool) -> list[str]:
    """Check a whole line (without CRLF) or the beginning of one.

    Fields are separated by exactly one space, so splitting on ' ' and
    finding an empty field is already an error. In an incomplete line the
    last field may still grow: it only has to be a prefix of a valid one.
    """
    bad = _NOT_PRINTABLE.search(line)
    if bad:
        byte = line[bad.start()]
        what = 'a bare CR or LF' if byte in b'\r\n' else f'byte {byte:#04x}'
        raise ProxyError(f'PROXY v1: {what} at offset {bad.start()} '
                         '(the line is US-ASCII text ended by CRLF)')
    fields = line.decode('ascii').split(' ')
    growing = '' if complete else fields.pop()
    grammar = list(_V1_HEAD)
    for index, value in enumerate(fields):
        if index >= len(grammar):
            raise ProxyError(f'PROXY v1: more than {len(grammar)} fields')
        what, check = grammar[index]
        check(value, True, what)
        if index == 1:
            rest = _V1_FAMILIES[value]
            if rest is None:        # UNKNOWN: the receiver ignores the rest of the line
                return fields
            grammar.extend(rest)
    if complete:
        if len(fields) < len(grammar):
            raise ProxyError(f'PROXY v1: {grammar[len(fields)][0]} missing')
    else:
        if len(fields) >= len(grammar):
            raise ProxyError(f'PROXY v1: more than {len(grammar)} fields')
        what, check = grammar[len(fields)]
        check(growing, False, what)
    return fields


def _v1_keyword(value: str, whole: bool, what: str) -> None:
    ok = value == 'PROXY' if whole else 'PROXY'.startswith(value)
    if not ok:
        raise ProxyError(f'PROXY v1: bad {what} {value!r}')


def _v1_family(value: str, whole: bool, what: str) -> None:
    ok = value in _V1_FAMILIES if whole else any(f.startswith(value) for f in _V1_FAMILIES)
    if not ok:
        raise ProxyError(f'PROXY v1: bad {what} {value!r} (TCP4, TCP6 or UNKNOWN)')


def _decimal_ok(text: str, maximum: int) -> bool:
    """Decimal without sign or heading zeroes (section 2.1 forbids them)."""
    return bool(_DECIMAL.fullmatch(text)) and int(text) <= maximum


def _v1_ipv4(value: str, whole: bool, what: str) -> None:
    """Exactly four decimal numbers 0..255 without heading zeroes. A prefix
    of such a number is itself such a number, which makes prefixes easy."""
    parts = value.split('.')
    ok = len(parts) == 4 if whole else len(parts) <= 4
    for i, part in enumerate(parts):
        growing = not whole and i == len(parts) - 1
        if not (growing and part == '') and not _decimal_ok(part, 255):
            ok = False
    if not ok:
        raise ProxyError(f'PROXY v1: {what} {value!r} is not a dotted-quad IPv4 address')


def _v1_ipv6(value: str, whole: bool, what: str) -> None:
    if whole:
        try:
            if '%' in value:        # a scope id is no part of the grammar
                raise ValueError
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ProxyError(f'PROXY v1: {what} {value!r} is not an IPv6 address') from None
        return
    # The prefix test is deliberately loose; the whole value is checked above.
    groups = value.split(':')
    ok = (_IPV6_CHARS.fullmatch(value) and ':::' not in value and value.count('::') <= 1
          and len(groups) <= 9 and all(len(g) <= 4 and '.' not in g for g in groups[:-1]))
    if ok and '.' in groups[-1]:
        _v1_ipv4(groups[-1], False, what)
    elif not ok or len(groups[-1]) > 4:
        raise ProxyError(f'PROXY v1: {what} {value!r} is not an IPv6 address')


def _v1_port(value: str, whole: bool, what: str) -> None:
    if not whole and value == '':
        return
    if not _decimal_ok(value, 65535):
        raise ProxyError(f'PROXY v1: {what} {value!r} is not a decimal 0..65535 '
                         'without heading zeroes')


# A field's check: (value, whole: not a prefix still growing, its name).
_V1Check: TypeAlias = Callable[[str, bool, str], None]
_V1_HEAD: tuple[tuple[str, _V1Check], ...] = (
    ('keyword', _v1_keyword), ('protocol family', _v1_family))
_V1_FAMILIES: dict[str, tuple[tuple[str, _V1Check], ...] | None] = {
    'TCP4': (('source address', _v1_ipv4), ('destination address', _v1_ipv4),
             ('source port', _v1_port), ('destination port', _v1_port)),
    'TCP6': (('source address', _v1_ipv6), ('destination address', _v1_ipv6),
             ('source port', _v1_port), ('destination port', _v1_port)),
    'UNKNOWN': None,
}


def _v1_header(fields: list[str]) -> ProxyHeader:
    family = fields[1]
    if family == 'UNKNOWN':
        return ProxyHeader(version=1, command='PROXY', family=family)
    src, dst, sport, dport = fields[2:]
    return ProxyHeader(
        version=1, command='PROXY', family=family,
        source_address=str(ipaddress.ip_address(src)), source_port=int(sport),
        dest_address=str(ipaddress.ip_address(dst)), dest_port=int(dport),
    )
