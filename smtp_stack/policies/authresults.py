"""The Authentication-Results header field (RFC 8601), written from results,
and the authserv-id read back from a field a message arrived with.

One field for all methods (RFC 8601 2.2), in the order spf, dkim (one
resinfo per signature), dmarc, arc; property values that are not a plain
token are quoted (2.2, the `value` of RFC 2045), and comments lose the
characters that would end them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .authentication import AuthResults

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@]+\Z")


def pvalue(text: str) -> str:
    if _TOKEN.match(text):
        return text
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


_UNSAFE = re.compile(r'[()\\\r\n\0]')     # what would end a comment, or the field
_SPACES = re.compile(r'\s+')


def comment(text: str) -> str:
    if not text:
        return ''
    clean = _SPACES.sub(' ', _UNSAFE.sub(' ', text).strip())[:120]
    return f' ({clean})' if clean else ''


def header_value(authserv_id: str, results: AuthResults) -> str:
    """The field's value for what `authenticate` found."""
    parts = [authserv_id]
    if results.spf is not None:
        spf = results.spf
        prop = 'smtp.mailfrom' if spf.identity == 'mailfrom' else 'smtp.helo'
        who = results.mail_from if spf.identity == 'mailfrom' else spf.domain
        parts.append(f'spf={spf.result}{comment(spf.explanation)} '
                     f'{prop}={pvalue(who or spf.domain)}')
    helo = getattr(results, 'helo', None)
    if helo is not None and helo.domain:
        parts.append(f'spf={helo.result}{comment(helo.explanation)} '
                     f'smtp.helo={pvalue(helo.domain)}')
    if results.dkim is not None:
        if not results.dkim:
            parts.append('dkim=none')
        for d in results.dkim:
            text = f'dkim={d.result}{comment(d.reason)}'
            if d.domain:
                text += f' header.d={pvalue(d.domain)}'
            if d.selector:
                text += f' header.s={pvalue(d.selector)}'
            if d.algorithm:
                text += f' header.a={pvalue(d.algorithm)}'
            if d.b:
                text += f' header.b={pvalue(d.b)}'
            parts.append(text)
    if results.dmarc is not None:
        m = results.dmarc
        text = f'dmarc={m.result}'
        if m.result in ('pass', 'fail'):
            text += f' (p={m.published} dis={m.policy if m.result == "fail" else "none"})'
        if m.domain:
            text += f' header.from={pvalue(m.domain)}'
        parts.append(text)
    if results.arc is not None:
        parts.append(f'arc={results.arc.result}{comment(results.arc.reason)}')
    if len(parts) == 1:
        parts.append('none')
    return '; '.join(parts)


# -- the authserv-id of a field already in the message (RFC 8601 5) -----------------

# RFC 2045 token: any CHAR but SPACE, CTLs and tspecials; bytes over 127 are
# let in, for the UTF-8 of an internationalised name (RFC 8601 2.5, RFC 6532).
_ID_TOKEN = re.compile(r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)


def _skip_cfws(text: str, pos: int) -> int | None:
    """The position after white space and comments (nested, with quoted
    pairs; RFC 5322 3.2.2) from `pos`; None inside an unclosed comment."""
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if depth and ch == '\\':
            pos += 2
            continue
        if ch == '(':
            depth += 1
        elif ch == ')' and depth:
            depth -= 1
        elif not depth and ch not in ' \t\r\n':
            return pos
        pos += 1
    return None if depth else pos


def authserv_id(value: str) -> str | None:
    """The authserv-id a field value starts with (RFC 8601 2.2:
    `[CFWS] authserv-id`, a token or quoted-string), or None when there is
    none to be read: a field that names no id cannot claim ours."""
    pos = _skip_cfws(value, 0)
    if pos is None:
        return None
    quoted = _QUOTED.match(value, pos)
    if quoted:
        found, end = re.sub(r'\\(.)', r'\1', quoted[1], flags=re.DOTALL), quoted.end()
    else:
        token = _ID_TOKEN.match(value, pos)
        if not token:
            return None
        found, end = token[0], token.end()
    if end < len(value) and value[end] not in ' \t\r\n(;':
        return None                     # `mx.test/x`, `mx.test@x`: not one value
    return found


def same_authserv(one: str, other: str) -> bool:
    """Two authserv-ids name the same service: without regard to case, as
    domain names are compared (RFC 4343), and to a root dot at the end."""
    return one.strip().rstrip('.').lower() == other.strip().rstrip('.').lower()


def claims(ours: str) -> Callable[[str], bool]:
    """A predicate for `envelope.remove_header('Authentication-Results', ...)`:
    true for a field value whose authserv-id is `ours`."""
    def claims_ours(value: str) -> bool:
        found = authserv_id(value)
        return found is not None and same_authserv(found, ours)
    return claims_ours
