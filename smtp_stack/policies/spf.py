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

pyspf parses the records as it evaluates them, with the macros of the
client and sender expanded into their terms (RFC 7208 7), so a parsed
record alone cannot be kept. What is kept instead (`SpfCache`) is the
result of an evaluation, for as long as every DNS answer it read is good
(their TTL, as the resolver's cache holds them), keyed by what it
depended on: the client address, the domain, the HELO name and the
identity, and the whole sender only when a record read used a macro of
the sender's local part (%{s}, %{l}); a record with %{t} (the time) is
not kept at all. A temperror is never kept. So a check repeated within
the TTL gives what evaluating again would give, at the cost of a dict
lookup (issue 25: two evaluations were 0.25 ms of a message's CPU).
"""
from __future__ import annotations

import contextvars
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..extras import needs_extra
from .dns import MAX_TTL, Answer, DnsError, Resolver

with needs_extra('policies', 'policies.authenticate'):
    import spf as pyspf

_original_lookup = pyspf.DNSLookup
RESULTS = ('pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror')
# A macro whose expansion is not in the cache's key (RFC 7208 7.2): the
# sender's local part (l) or whole address (s), the time (t).
_SENDER_MACRO = re.compile(rb'%\{[sSlL]')
_TIME_MACRO = re.compile(rb'%\{[tT]')


@dataclass(frozen=True)
class SpfResult:
    result: str             # one of RESULTS
    identity: str           # 'mailfrom' or 'helo'
    domain: str             # the domain checked
    explanation: str = ''


@dataclass
class _Evaluation:
    """One check in progress: its resolver, and what its lookups tell the cache."""
    resolver: Resolver
    good_until: float               # time.monotonic(): the first of its answers to expire
    per_sender: bool = False        # a record used %{s} or %{l}
    keep: bool = True               # False: a record used %{t}


_evaluation: contextvars.ContextVar[_Evaluation | None] = contextvars.ContextVar(
    'smtp_stack_spf_evaluation', default=None)


def _answer(evaluation: _Evaluation, name: str, rdtype: str) -> Answer:
    """The resolver's answer, noting until when it is good."""
    resolver = evaluation.resolver
    if hasattr(resolver, 'lookup'):
        answer, good_until = resolver.lookup(name, rdtype)
    else:       # a resolver of the caller's with query() only: its TTL from now
        answer = resolver.query(name, rdtype)
        good_until = time.monotonic() + answer.ttl
    evaluation.good_until = min(evaluation.good_until, good_until)
    if rdtype == 'TXT':
        for record in answer.records:
            for text in record.strings:
                if b'%' in text:
                    evaluation.per_sender |= bool(_SENDER_MACRO.search(text))
                    evaluation.keep &= not _TIME_MACRO.search(text)
    return answer


def _lookup(name: str, qtype: str, strict: bool = True,
            timeout: float | None = None) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]; TXT values
    are lists of byte strings, MX values (preference, exchange)."""
    evaluation = _evaluation.get()
    if evaluation is None:
        found: list[tuple[tuple[str, str], Any]] = _original_lookup(name, qtype, strict, timeout)
        return found
    rdtype = 'TXT' if qtype == 'SPF' else qtype     # type 99 is obsolete (RFC 7208 3.1)
    try:
        answer = _answer(evaluation, name, rdtype)
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


# What a kept result depends on besides the DNS: (identity, client
# address, domain as written, HELO name).
CacheKey = tuple[str, str, str, str]


class SpfCache:
    """SPF results kept while the DNS answers they were read from are good
    (the module's docstring says which); at most `size`, the least
    recently used going first. One per `authenticate` policy."""

    def __init__(self, size: int = 10_000):
        self.size = size
        # key -> (good until, the sender when it matters else None, result)
        self._kept: OrderedDict[CacheKey, tuple[float, str | None, SpfResult]] = OrderedDict()

    def get(self, key: CacheKey, sender: str) -> SpfResult | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        good_until, for_sender, result = kept
        if good_until <= time.monotonic() or (for_sender is not None and for_sender != sender):
            return None
        self._kept.move_to_end(key)
        return result

    def put(self, key: CacheKey, sender: str, result: SpfResult, evaluation: _Evaluation) -> None:
        if result.result == 'temperror' or not evaluation.keep:
            return
        self._kept[key] = (evaluation.good_until, sender if evaluation.per_sender else None, result)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)


def check_spf(resolver: Resolver, ip: str, sender: str, helo: str,
              querytime: float = 20.0, cache: SpfCache | None = None) -> SpfResult:
    """The SPF result for MAIL FROM `sender` ('' for the null sender: the HELO
    identity is checked then, RFC 7208 2.4) from `ip`; kept in `cache`
    while its DNS answers are good, and taken from there."""
    if sender:
        identity, domain = 'mailfrom', sender.rpartition('@')[2]
    else:
        identity, domain = 'helo', helo or ''
    if not domain or '.' not in domain or domain.startswith('['):
        return SpfResult('none', identity, domain, 'no domain to check')
    key = (identity, ip, domain, helo or '')
    kept = cache.get(key, sender) if cache is not None else None
    if kept is not None:
        return kept
    evaluation = _Evaluation(resolver, time.monotonic() + MAX_TTL)
    token = _evaluation.set(evaluation)
    try:
        query = pyspf.query(i=ip, s=sender, h=helo or domain, timeout=resolver.timeout,
                            querytime=querytime)
        result, _code, explanation = query.check()
    except Exception as exc:            # pyspf's own failures on odd input
        result, explanation = 'permerror', str(exc)
    finally:
        _evaluation.reset(token)
    if result not in RESULTS:           # pyspf's older names, for safety
        result = {'error': 'temperror', 'unknown': 'permerror'}.get(result, 'permerror')
    found = SpfResult(result, identity, domain.lower(), explanation)
    if cache is not None:
        cache.put(key, sender, found, evaluation)
    return found


def check_helo(resolver: Resolver, ip: str, helo: str, cache: SpfCache | None = None) -> SpfResult:
    """RFC 7208 2.3: the HELO identity on its own (recorded, not enforced)."""
    return check_spf(resolver, ip, '', helo, cache=cache)
