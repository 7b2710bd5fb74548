"""DMARC (RFC 7489) over our resolver and the Public Suffix List.

Written here rather than taken from a library: the logic is small and pure
once SPF and DKIM results are known (find the policy record, decide
alignment, pick p/sp, apply pct), and the packages that do it either do
their own blocking DNS or pull in a whole stack of their own.

- The author domain is that of the single From address (RFC 7489 6.6.1);
  a message with no From, or several addresses, has no DMARC result here.
- The record is at _dmarc.<author domain>, else at _dmarc.<organisational
  domain> (6.6.3); the organisational domain is the registrable domain by
  the Public Suffix List (3.2), shipped in the `publicsuffixlist` package,
  never fetched at run time.
- Identifier alignment (3.1): relaxed (the default) compares organisational
  domains, strict the domains themselves; DMARC passes when SPF or DKIM
  passes aligned.
- The policy of a subdomain is sp= when the record came from the
  organisational domain (6.3); pct= (6.6.4) samples: a message outside the
  sample is handled one step more gently (reject -> quarantine -> none).

Nothing is parsed twice (issue 25): a record's text is parsed once and its
tags kept by text (the resolver keeps the text for its TTL), organisational
domains are kept by domain (the Public Suffix List does not change while
the process runs), and the author domain by the From value.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..extras import needs_extra
from .dns import DnsError

with needs_extra('policies', 'policies.authenticate'):
    from publicsuffixlist import PublicSuffixList

if TYPE_CHECKING:
    from .dkimcheck import TxtResolver

_psl = PublicSuffixList()
POLICIES = ('none', 'quarantine', 'reject')
GENTLER = {'reject': 'quarantine', 'quarantine': 'none', 'none': 'none'}


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    domain = domain.lower().rstrip('.')
    return _psl.privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip('.'), b.lower().rstrip('.')
    if mode == 's':
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def parse_record(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record, or None when it is not one (6.4: v=DMARC1 first)."""
    tags: dict[str, str] = {}
    for part in text.split(';'):
        if '=' in part:
            key, _, value = part.partition('=')
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get('v') != 'DMARC1' or not text.lstrip().startswith('v'):
        return None
    return tags


@functools.lru_cache(maxsize=1024)
def _tags(text: str) -> Mapping[str, str] | None:
    tags = parse_record(text)
    return None if tags is None else MappingProxyType(tags)


def author_domain(header_values: Sequence[str]) -> str | None:
    """The domain of the one From address, or None (6.6.1)."""
    if len(header_values) != 1:
        return None
    return _author_domain(header_values[0])


@functools.lru_cache(maxsize=1024)
def _author_domain(value: str) -> str | None:
    addresses = [a for _, a in getaddresses([value]) if a]
    if len(addresses) != 1 or '@' not in addresses[0]:
        return None
    return addresses[0].rpartition('@')[2].strip().lower().rstrip('.') or None


@dataclass
class DmarcResult:
    result: str                 # pass, fail, none, temperror, permerror
    domain: str | None          # the author (From) domain
    policy: str = 'none'        # what the domain asks for this message (after pct)
    published: str = 'none'     # p= (or sp=) as published
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record_domain: str | None = None


def find_record(resolver: TxtResolver,
                domain: str) -> tuple[Mapping[str, str], str] | tuple[None, None]:
    """(tags, where) from _dmarc.domain or the organisational domain; (None, None)."""
    org = organizational_domain(domain)
    for where in dict.fromkeys([domain, org]):
        records = [t.decode('utf-8', 'replace') for t in resolver.txt(f'_dmarc.{where}')]
        parsed = [p for p in (_tags(r) for r in records) if p is not None]
        if len(parsed) == 1:
            return parsed[0], where
        if len(parsed) > 1:
            return None, None       # 6.6.3: several records: no policy
    return None, None


def check_dmarc(resolver: TxtResolver, from_headers: Sequence[str], spf_result: str,
                spf_domain: str, dkim_passes: Sequence[str],
                sample: Callable[[], float] = random.random) -> DmarcResult:
    """`dkim_passes`: the d= domains of the DKIM signatures that passed."""
    domain = author_domain(from_headers)
    if domain is None:
        return DmarcResult('none' if not from_headers else 'permerror', None)
    try:
        tags, where = find_record(resolver, domain)
    except DnsError:
        return DmarcResult('temperror', domain)
    if tags is None:
        return DmarcResult('none', domain)
    policy = tags.get('p', '').lower()
    if policy not in POLICIES:
        policy = 'none'         # 6.6.3: a record with rua and a bad p= is p=none
    if where != domain and tags.get('sp', '').lower() in POLICIES:
        policy = tags['sp'].lower()
    adkim = tags.get('adkim', 'r').lower()
    aspf = tags.get('aspf', 'r').lower()
    spf_ok = spf_result == 'pass' and bool(spf_domain) and aligned(spf_domain, domain, aspf)
    dkim_ok = any(aligned(d, domain, adkim) for d in dkim_passes)
    result = DmarcResult('pass' if spf_ok or dkim_ok else 'fail', domain, 'none', policy,
                         spf_ok, dkim_ok, where)
    if result.result == 'fail':
        try:
            pct = max(0, min(100, int(tags.get('pct', '100'))))
        except ValueError:
            pct = 100
        result.policy = policy if sample() * 100 < pct else GENTLER[policy]
    return result
