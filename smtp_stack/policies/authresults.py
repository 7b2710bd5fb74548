"""The Authentication-Results header field (RFC 8601), written from results.

One field for all methods (RFC 8601 2.2), in the order spf, dkim (one
resinfo per signature), dmarc, arc; property values that are not a plain
token are quoted (2.2, the `value` of RFC 2045), and comments lose the
characters that would end them.
"""
from __future__ import annotations

import re

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@]+\Z")


def pvalue(text: str) -> str:
    if _TOKEN.match(text):
        return text
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def comment(text: str) -> str:
    clean = re.sub(r'[()\\\r\n\0]', ' ', text).strip()
    clean = re.sub(r'\s+', ' ', clean)[:120]
    return f' ({clean})' if clean else ''


def header_value(authserv_id: str, results) -> str:
    """`results` is an AuthResults (authenticate.py)."""
    parts = [authserv_id]
    if results.spf is not None:
        spf = results.spf
        prop = 'smtp.mailfrom' if spf.identity == 'mailfrom' else 'smtp.helo'
        who = results.mail_from if spf.identity == 'mailfrom' else spf.domain
        parts.append(f'spf={spf.result}{comment(spf.explanation)} {prop}={pvalue(who or spf.domain)}')
    if getattr(results, 'helo', None) is not None and results.helo.domain:
        helo = results.helo
        parts.append(f'spf={helo.result}{comment(helo.explanation)} smtp.helo={pvalue(helo.domain)}')
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
