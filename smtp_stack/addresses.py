"""MAIL FROM / RCPT TO arguments: RFC 5321 paths and ESMTP parameters.

Pure functions: a parse error raises `SmtpError` carrying the reply the
client deserves, so the session loop never decides a code by itself.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .errors import SmtpError
from .xtext import XtextError, decode_xtext

# An ESMTP parameter's value: its text, or True for a flag (`SMTPUTF8`).
ParamValue: TypeAlias = str | Literal[True]


@dataclass(slots=True)
class Address:
    """A parsed path: the address as sent (no angle brackets; '' for the null
    sender) and its ESMTP parameters, keys upper-cased, flag values True."""
    address: str
    args: dict[str, ParamValue] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.address

    @property
    def is_null(self) -> bool:
        return self.address == ''


# RFC 5321 section 4.5.3.1 size limits, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256 - 2     # 256 octets include the angle brackets

# Character classes: an ASCII character of a set of the grammar, or any
# non-ASCII character (RFC 6531 3.3, UTF8-non-ascii). Each is written as the
# ASCII characters it leaves out, `[^...]`: the same set as
# `[<the ASCII set>\u0080-\U0010ffff]`, which sre compiles one code point at
# a time (those ranges made importing the package 0.18 s slower).
# tests/test_addresses.py checks each against that definition.
ATEXT = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]'        # RFC 5322 3.2.3 atext
DOT_ATEXT = r'[^\x00-\x20"(),:;<>@\[\\\]\x7f]'      # atext and '.'
QTEXT = r'[^\x00-\x1f"\\\x7f]'                        # RFC 5321 4.1.2 qtextSMTP
LET_DIG = r'[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]'   # RFC 5321 4.1.2 Let-dig
LDH = r'[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]'   # Ldh-str: Let-dig and '-'
LENIENT_LET_DIG = r'[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]'  # and '_'
LENIENT_LDH = r'[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]'
VALUE_CHAR = r'[^\x00-\x20=\x7f]'                  # RFC 5321 4.1.2 esmtp-value
_DOT_STRING = re.compile(rf'{ATEXT}+(?:\.{ATEXT}+)*\Z')
_LENIENT_DOT_STRING = re.compile(rf'{DOT_ATEXT}+\Z')
_QUOTED = re.compile(rf'"(?:{QTEXT}|\\[\x20-\x7e])*"\Z')
_LABEL = rf'{LET_DIG}(?:{LDH}*{LET_DIG})?'
_DOMAIN = re.compile(rf'{_LABEL}(?:\.{_LABEL})*\Z')
_LENIENT_LABEL = rf'{LENIENT_LET_DIG}(?:{LENIENT_LDH}*{LENIENT_LET_DIG})?'
_LENIENT_DOMAIN = re.compile(rf'{_LENIENT_LABEL}(?:\.{_LENIENT_LABEL})*\.?\Z')
_GENERAL_LITERAL = re.compile(r'[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z')
_SOURCE_ROUTE = re.compile(rf'@{_LENIENT_LABEL}(?:\.{_LENIENT_LABEL})*'
                           rf'(?:,@{_LENIENT_LABEL}(?:\.{_LENIENT_LABEL})*)*:')
_KEYWORD = re.compile(r'[A-Za-z0-9][A-Za-z0-9-]*\Z')
_VALUE = re.compile(rf'{VALUE_CHAR}+\Z')


def _syntax(message: str, enhanced: str = '5.5.4') -> SmtpError:
    return SmtpError(501, message, enhanced)


def parse_path_argument(arg: str, keyword: str, lenient: bool = False
                        ) -> tuple[str, str]:
    """Split 'FROM:<path> params' into (path-content, params-text).

    The path content is what stood between the angle brackets, so '' is
    the null path. A space after the colon is tolerated (many clients send
    it and Postfix accepts it).
    """
    prefix = keyword + ':'
    if arg[:len(prefix)].upper() != prefix:
        raise _syntax(f'Syntax: {"MAIL FROM" if keyword == "FROM" else "RCPT TO"}:<address>')
    rest = arg[len(prefix):].lstrip(' ')
    if not rest.startswith('<'):
        if not lenient or not rest:
            raise _syntax('Error: address must be in angle brackets <>', '5.1.7'
                          if keyword == 'FROM' else '5.1.3')
        path, _, params = rest.partition(' ')
        return path, params
    end = _closing_bracket(rest)
    if end < 0:
        raise _syntax('Error: missing closing ">" in address',
                      '5.1.7' if keyword == 'FROM' else '5.1.3')
    path, params = rest[1:end], rest[end + 1:]
    if params and params[0] != ' ':
        raise _syntax('Error: unexpected text after the address')
    return path, params


def _closing_bracket(text: str) -> int:
    """Index of the '>' closing the path at text[0], skipping quoted parts."""
    quoted = False
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == '\\':
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == '>':
            return i
        elif ch == '<':
            return -1
        i += 1
    return -1


def parse_mailbox(path: str, lenient: bool = False, allow_null: bool = False,
                  allow_postmaster: bool = False, bad: str = '5.1.3') -> str:
    """Validate path content; return the address (source route removed).

    Raises SmtpError 501 (or 553 for lengths) with `bad` as enhanced code
    (5.1.7 for senders, 5.1.3 for recipients).
    """
    if path == '':
        if allow_null:
            return ''
        raise _syntax('Error: null address not allowed here', bad)
    if path[0] == '@':
        route = _SOURCE_ROUTE.match(path)
        if not route:
            raise _syntax('Error: bad source route', bad)
        path = path[route.end():]      # RFC 5321 4.1.1.3: ignore source routes
    if allow_postmaster and path.lower() == 'postmaster':
        return path
    # '@' may appear inside a general address literal: split before '[' then.
    at = path.rfind('@[') if path.endswith(']') else -1
    if at < 0:
        at = path.rfind('@')
    if at <= 0:
        raise _syntax('Error: address must be local-part@domain', bad)
    local, domain = path[:at], path[at + 1:]
    if local[0] == '"':
        if not _QUOTED.match(local):
            raise _syntax('Error: bad quoted local part', bad)
    elif not (_DOT_STRING.match(local) or lenient and _LENIENT_DOT_STRING.match(local)):
        raise _syntax('Error: bad local part', bad)
    if domain.startswith('['):
        if not domain.endswith(']') or not _valid_address_literal(domain[1:-1]):
            raise _syntax('Error: bad address literal', bad)
    elif not (_DOMAIN.match(domain) or lenient and _LENIENT_DOMAIN.match(domain)):
        raise _syntax('Error: bad domain', bad)
    if len(local.encode('utf-8', 'surrogatepass')) > MAX_LOCAL_PART:
        raise SmtpError(553, 'Error: local part too long', bad)
    if len(domain.encode('utf-8', 'surrogatepass')) > MAX_DOMAIN:
        raise SmtpError(553, 'Error: domain too long', bad)
    if len(path.encode('utf-8', 'surrogatepass')) > MAX_PATH:
        raise SmtpError(553, 'Error: address too long', bad)
    return path


def parse_path(arg: str, keyword: str, lenient: bool = False) -> Address:
    """MAIL's 'FROM:<path> params' or RCPT's 'TO:<path> params' as an Address.

    Raises SmtpError with the reply for a bad path or parameter list (see
    parse_path_argument, parse_mailbox and parse_params); a sender may be
    null, a recipient may be a bare 'postmaster'.
    """
    simple = (_SIMPLE_FROM if keyword == 'FROM' else _SIMPLE_TO).match(arg)
    if simple is not None:
        local, domain, params = simple.groups()
        if (len(local) <= MAX_LOCAL_PART and len(domain) <= MAX_DOMAIN
                and len(local) + 1 + len(domain) <= MAX_PATH):
            return Address(f'{local}@{domain}', parse_params(params) if params else {})
    return parse_path_general(arg, keyword, lenient)


def parse_path_general(arg: str, keyword: str, lenient: bool = False) -> Address:
    """parse_path without its one-match fast path: what every path goes
    through that the fast path does not recognise (and its tests' oracle)."""
    is_sender = keyword == 'FROM'
    path, params = parse_path_argument(arg, keyword, lenient)
    address = parse_mailbox(path, lenient, allow_null=is_sender,
                            allow_postmaster=not is_sender,
                            bad='5.1.7' if is_sender else '5.1.3')
    return Address(address, parse_params(params))


# What nearly every client sends, recognised by one match: an ASCII
# dot-atom, '@', a domain of plain labels, and optional parameters. Every
# such path is valid for parse_mailbox too (strict or lenient) and comes out
# unchanged; anything else (quotes, literals, UTF-8, source routes, spaces
# before '<', over-long parts) takes the general path above.
_ASCII_ATEXT = r"[\-A-Za-z0-9!#$%&'*+/=?^_`{|}~]+"
_ASCII_LABEL = r'[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?'
_SIMPLE = (rf'<({_ASCII_ATEXT}(?:\.{_ASCII_ATEXT})*)@({_ASCII_LABEL}(?:\.{_ASCII_LABEL})*)>'
           r'(?: (.*))?\Z')
_SIMPLE_FROM = re.compile(r'[Ff][Rr][Oo][Mm]:' + _SIMPLE, re.ASCII | re.DOTALL)
_SIMPLE_TO = re.compile(r'[Tt][Oo]:' + _SIMPLE, re.ASCII | re.DOTALL)


def _valid_address_literal(text: str) -> bool:
    if '%' in text and text[:5].upper() == 'IPV6:':
        return False        # zone ids are not part of RFC 5321's IPv6-addr
    if text[:5].upper() == 'IPV6:':
        try:
            ipaddress.IPv6Address(text[5:])
            return True
        except ValueError:
            return False
    if text and text[0].isdigit():
        try:
            ipaddress.IPv4Address(text)
            return True
        except ValueError:
            return False
    return bool(_GENERAL_LITERAL.match(text))


def parse_params(text: str) -> dict[str, ParamValue]:
    """'SIZE=100 BODY=8bitmime SMTPUTF8' ->
    {'SIZE': '100', 'BODY': '8bitmime', 'SMTPUTF8': True}."""
    params: dict[str, ParamValue] = {}
    for item in text.split():
        key, eq, value = item.partition('=')
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise _syntax(f'Error: bad parameter syntax: {item[:40]}')
        key = key.upper()
        if key in params:
            raise _syntax(f'Error: duplicate parameter {key}')
        params[key] = value if eq else True
    return params


# --- Semantics of the parameters we implement ------------------------------
def check_size(value: ParamValue) -> int:
    if value is True or not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise _syntax('Error: bad SIZE value')
    return int(value)


def check_body(value: ParamValue, allowed: frozenset[str]) -> str:
    if value is True or value.upper() not in allowed:
        raise _syntax('Error: unsupported BODY value', '5.5.4')
    return value.upper()


def check_flag(key: str, value: ParamValue) -> Literal[True]:
    if value is not True:
        raise _syntax(f'Error: {key} takes no value')
    return True


def check_ret(value: ParamValue) -> str:
    if value is True or value.upper() not in ('FULL', 'HDRS'):
        raise _syntax('Error: RET must be FULL or HDRS')
    return value.upper()


def check_envid(value: ParamValue) -> str:
    """RFC 3461 4.4: xtext, at most 100 characters."""
    if value is True or len(value) > 100:
        raise _syntax('Error: bad ENVID value')
    try:
        decoded = decode_xtext(value)
    except XtextError:
        raise _syntax('Error: ENVID is not valid xtext') from None
    # RFC 3461 4.4: the decoded value is printable US-ASCII; a decoded CR LF
    # would otherwise reach a DSN's Original-Envelope-Id header.
    if not _printable_ascii(decoded):
        raise _syntax('Error: ENVID must decode to printable US-ASCII')
    return value


_UNITEXT_ESCAPE = re.compile(r'\\x\{([0-9A-Fa-f]{1,6})\}')     # RFC 6533 utf-8-addr-unitext


def _unescape_unitext(match: re.Match[str]) -> str:
    point = int(match[1], 16)
    return chr(point) if point <= 0x10FFFF else '\0'     # out of range: never printable


def _printable_ascii(text: str) -> bool:
    return all(' ' <= ch <= '~' for ch in text)


def check_notify(value: ParamValue) -> str:
    """RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY."""
    if value is True:
        raise _syntax('Error: bad NOTIFY value')
    items = value.upper().split(',')
    if items == ['NEVER']:
        return 'NEVER'
    if (len(set(items)) != len(items)
            or not set(items) <= {'SUCCESS', 'FAILURE', 'DELAY'}):
        raise _syntax('Error: NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY')
    return value.upper()


def check_orcpt(value: ParamValue) -> str:
    """RFC 3461 4.2: addr-type ';' xtext."""
    if value is True:
        raise _syntax('Error: bad ORCPT value')
    addr_type, semi, addr = value.partition(';')
    if not semi or not _KEYWORD.match(addr_type) or not addr or len(value) > 500:
        raise _syntax('Error: ORCPT must be addr-type;xtext')
    utf8 = addr_type.upper() == 'UTF-8'     # RFC 6533: utf-8-addr-xtext or -unitext
    try:
        decoded = decode_xtext(addr)
    except XtextError:
        if not utf8:
            raise _syntax('Error: ORCPT is not valid xtext') from None
        decoded = addr
    if utf8:
        decoded = _UNITEXT_ESCAPE.sub(_unescape_unitext, decoded)
    # RFC 3461 4.2 (and RFC 6533 for UTF-8): the decoded address holds no
    # control characters; it is printable US-ASCII unless its type is UTF-8.
    if not (_printable_ascii(decoded) or utf8 and decoded.isprintable()):
        raise _syntax('Error: ORCPT must decode to printable characters')
    return value


def check_auth_param(value: ParamValue) -> str:
    """RFC 4954 5: AUTH=<> or AUTH=xtext mailbox."""
    if value is True:
        raise _syntax('Error: bad AUTH value')
    if value != '<>':
        try:
            decode_xtext(value)
        except XtextError:
            raise _syntax('Error: AUTH parameter is not valid xtext') from None
    return value
