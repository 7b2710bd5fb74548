"""SPF (RFC 7208) of the MAIL FROM and HELO identities, by pyspf.

pyspf implements the whole of RFC 7208 — every mechanism and modifier,
macros (section 7), the limit of 10 DNS-querying terms and of 2 void
lookups (4.6.4), CNAME chains — and is checked against the RFC's test
suite; what it lacks is a resolver that suits gevent. It looks up DNS
through the module function `spf.DNSLookup(name, qtype, strict, timeout)`;
that function is replaced here, once, by one that asks the resolver of the
check in progress (a context variable: each greenlet has its own), so the
lookups run on gevent sockets with our timeouts and cache. Outside our
checks pyspf's own lookup is used, unchanged.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from ..extras import needs_extra
from .dns import DnsError, Resolver

with needs_extra('policies', 'policies.authenticate'):
    import spf as pyspf

_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    'smtp_stack_spf_resolver', default=None)
_original_lookup = pyspf.DNSLookup
RESULTS = ('pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror')


@dataclass(frozen=True)
class SpfResult:
    result: str             # one of RESULTS
    identity: str           # 'mailfrom' or 'helo'
    domain: str             # the domain checked
    explanation: str = ''


def _lookup(name: str, qtype: str, strict: bool = True,
            timeout: float | None = None) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]; TXT values
    are lists of byte strings, MX values (preference, exchange)."""
    resolver = _resolver.get()
    if resolver is None:
        found: list[tuple[tuple[str, str], Any]] = _original_lookup(name, qtype, strict, timeout)
        return found
    rdtype = 'TXT' if qtype == 'SPF' else qtype     # type 99 is obsolete (RFC 7208 3.1)
    try:
        answer = resolver.query(name, rdtype)
    except DnsError as exc:
        raise pyspf.TempError(f'DNS {exc}') from None
    out: list[tuple[tuple[str, str], Any]] = []
    for r in answer.records:
        if rdtype in ('A', 'AAAA'):
            out.append(((name, qtype), r.address))
        elif rdtype == 'MX':
            out.append(((name, qtype), (r.preference, r.exchange.to_text(True))))
        elif rdtype == 'PTR':
            out.append(((name, qtype), r.target.to_text(True)))
        elif rdtype == 'TXT':
            out.append(((name, qtype), list(r.strings)))
    return out


pyspf.DNSLookup = _lookup


def check_spf(resolver: Resolver, ip: str, sender: str, helo: str,
              querytime: float = 20.0) -> SpfResult:
    """The SPF result for MAIL FROM `sender` ('' for the null sender: the HELO
    identity is checked then, RFC 7208 2.4) from `ip`."""
    if sender:
        identity, domain = 'mailfrom', sender.rpartition('@')[2]
    else:
        identity, domain = 'helo', helo or ''
    if not domain or '.' not in domain or domain.startswith('['):
        return SpfResult('none', identity, domain, 'no domain to check')
    token = _resolver.set(resolver)
    try:
        query = pyspf.query(i=ip, s=sender, h=helo or domain, timeout=resolver.timeout,
                            querytime=querytime)
        result, _code, explanation = query.check()
    except Exception as exc:            # pyspf's own failures on odd input
        result, explanation = 'permerror', str(exc)
    finally:
        _resolver.reset(token)
    if result not in RESULTS:           # pyspf's older names, for safety
        result = {'error': 'temperror', 'unknown': 'permerror'}.get(result, 'permerror')
    return SpfResult(result, identity, domain.lower(), explanation)


def check_helo(resolver: Resolver, ip: str, helo: str) -> SpfResult:
    """RFC 7208 2.3: the HELO identity on its own (recorded, not enforced)."""
    return check_spf(resolver, ip, '', helo)
