"""`dnsbl(zones, allow=(), threshold=1)`: DNS blocklists of the client address.

RFC 5782 2.1 and 2.4: the client IPv4 address is queried with its octets
reversed (192.0.2.99 -> 99.2.0.192.zone), an IPv6 address as 32 reversed
nibbles; an A record in 127.0.0.0/8 means "listed", and the TXT record of
the same name, if any, says why. Answers outside 127/8, and Spamhaus's
127.255.255.0/24 ("your query was refused"), are not listings: a list that
answers junk must not block mail.

A zone is written as Postfix writes it for `reject_rbl_client` and
`postscreen_dnsbl_sites`: `zone[=codes][*weight]`. `codes` keeps only the
listings whose code matches (`zen.spamhaus.org=127.0.0.[2..11]`: per octet
a number, or `[...]` of numbers and ranges joined by `;`), and the client's
score is the sum of the weights of the entries that list it (default 1,
negative for an allow-list such as DNSWL); it is refused when the score
reaches `threshold` (postscreen_dnsbl_threshold). One zone may appear in
several entries, with other codes and weights; it is asked once.

The zones are asked at once (one greenlet each), each bounded by the
resolver's timeout; the outcome is kept on the session for its later RCPTs
and for other middleware (`session.dnsbl`). The refusal is at the first
RCPT, not at connect, so the log holds the sender and recipient too and
an allow-listed recipient (postmaster) can still be reached by a later rule.

A zone that cannot be asked (DNS down, a timeout) counts for nothing with
`on_store_error='accept'` (the default: as if it did not list the client).
With 'tempfail', a verdict that the unanswered zones could have changed —
their positive weights could reach `threshold`, or their negative ones
(an allow-list) could take a listed client below it — is `451 4.3.5`
instead: the client retries, and a DNS outage never lets through a client
the lists would refuse, nor refuses with a 5xx one they would let through.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import gevent

from ..errors import SmtpError
from ..params import INTEGER, STRINGS
from ..replies import Reply
from .common import (STORE_UNAVAILABLE, IPAddress, allowed, authenticated, check_mode, client_ip,
                     log, mode_of, networks, warnings)
from .config import ON_STORE_ERROR, ZONES
from .dns import DnsError, Resolver

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..options import OnStoreError

# A zone as written (`zone[=codes][*weight]`) or as a mapping {zone, codes, weight}.
ZoneSpec: TypeAlias = 'str | Mapping[str, Any]'

LISTED = ipaddress.ip_network('127.0.0.0/8')
# Spamhaus, "DNSBL return codes: technical update" (2019-09-30,
# https://www.spamhaus.org/news/article/788/): 127.255.255.0/24 holds errors
# about the query itself (127.255.255.254: asked through a public or open
# resolver; 127.255.255.255: too many queries), which are not "any sort of
# reputation"; https://www.spamhaus.org/returnc/vol/ adds that such a code
# "must not be used to reject email". No filter and no weight counts them.
REFUSED_QUERY = ipaddress.ip_network('127.255.255.0/24')

_OCTET = r'(\d{1,3}|\[[0-9.;]*\])'
_CODES = re.compile(r'\.'.join([_OCTET] * 4) + r'\Z')
_RANGE = re.compile(r'(\d{1,3})(?:\.\.(\d{1,3}))?\Z')
_ENTRY = re.compile(r'([^=*\s]+)(?:=([^*\s]+))?(?:\*([+-]?\d+))?\Z')


def query_name(ip: str | IPAddress, zone: str) -> str:
    """RFC 5782 2.1 (IPv4) and 2.4 (IPv6, nibbles) query name of `ip` in `zone`."""
    pointer = ipaddress.ip_address(ip).reverse_pointer
    return pointer.rsplit('.', 2)[0] + '.' + zone.strip('.')


def is_listing(code: str) -> bool:
    """Whether an A record of a DNSBL answer says "listed" at all."""
    address = ipaddress.ip_address(code)
    return address in LISTED and address not in REFUSED_QUERY


@dataclass(frozen=True)
class Codes:
    """A return-code pattern: for each octet, the (low, high) ranges it allows."""
    text: str
    octets: tuple[tuple[tuple[int, int], ...], ...]

    def __contains__(self, code: object) -> bool:
        packed = ipaddress.IPv4Address(code).packed
        return all(any(low <= value <= high for low, high in ranges)
                   for value, ranges in zip(packed, self.octets, strict=False))


def parse_codes(text: str) -> Codes:
    """`127.0.0.2`, `127.0.0.[2..11]`, `127.0.[0..255].[1;3;5..9]` (Postfix 2.8's syntax)."""
    match = _CODES.match(text.strip())
    if not match:
        raise ValueError(f'{text!r} is not a return code (d.d.d.d, each d a number '
                         'or [n;m..k])')
    octets: list[tuple[tuple[int, int], ...]] = []
    for octet in match.groups():
        ranges: list[tuple[int, int]] = []
        for item in octet.strip('[]').split(';'):
            bounds = _RANGE.match(item)
            if bounds:
                low, high = int(bounds[1]), int(bounds[2] or bounds[1])
            if not bounds or not low <= high <= 255:
                raise ValueError(f'{text!r}: {item!r} is not a number or range from 0 to 255')
            ranges.append((low, high))
        octets.append(tuple(ranges))
    if not any(low <= 127 <= high for low, high in octets[0]):
        raise ValueError(f'{text!r} can never match: listings are in 127.0.0.0/8')
    return Codes(text.strip(), tuple(octets))


@dataclass(frozen=True)
class ZoneEntry:
    """One entry of `zones`: the zone, the codes that count (none given: every
    listing) and the weight of a listing."""
    zone: str
    codes: tuple[Codes, ...] = ()
    weight: int = 1

    def counts(self, code: str) -> bool:
        return not self.codes or any(code in codes for codes in self.codes)


def zone_entry(item: ZoneSpec, where: str = 'zones') -> ZoneEntry:
    """`zone[=codes][*weight]`, or {zone, codes (one or a list), weight}."""
    try:
        if isinstance(item, str):
            match = _ENTRY.match(item.strip())
            if not match or not match[1].strip('.'):
                raise ValueError('write zone[=codes][*weight], '
                                 'e.g. zen.spamhaus.org=127.0.0.[2..11]*3')
            zone, codes, weight = match[1], [match[2]] if match[2] else [], int(match[3] or 1)
        elif isinstance(item, dict):
            unknown = set(item) - {'zone', 'codes', 'weight'}
            if unknown or not isinstance(item.get('zone'), str) or not item['zone'].strip('.'):
                raise ValueError('a mapping needs zone, and may have codes and weight')
            zone, codes, weight = item['zone'], item.get('codes') or [], item.get('weight', 1)
            codes = [codes] if isinstance(codes, str) else codes
            if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) for c in codes):
                raise ValueError('codes must be a return code or a list of them')
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise ValueError('weight must be an integer')
        else:
            raise ValueError('must be a string zone[=codes][*weight] '
                             'or a mapping {zone, codes, weight}')
        return ZoneEntry(zone.strip().strip('.'), tuple(parse_codes(c) for c in codes), weight)
    except ValueError as exc:
        raise ValueError(f'dnsbl: {where} {item!r}: {exc}') from None


# A zone's answer that counts: the listing codes, and the TXT reason if any.
Listing: TypeAlias = 'tuple[list[str], str | None]'


@dataclass
class DnsblResult:
    ip: str
    # [(zone, codes, reason or None)]
    listed: list[tuple[str, list[str], str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)     # zones that could not be asked
    score: int = 0                                      # the weights of the entries that list ip
    weights: dict[str, int] = field(default_factory=dict)   # zone -> its part of the score
    policy: object = field(default=None, repr=False, compare=False)
    # What the unanswered zones could have added: (their positive weights, their negative ones).
    unknown: tuple[int, int] = (0, 0)
    problems: dict[str, str] = field(default_factory=dict, repr=False)     # zone -> why

    def unsure(self, threshold: int) -> bool:
        """Whether the zones that could not be asked could have changed the verdict."""
        up, down = self.unknown
        if self.score >= threshold:
            return self.score + down < threshold
        return self.score + up >= threshold

    def reply(self) -> Reply:
        """554 naming the zone that weighed most (the first of them)."""
        zone, codes, reason = max(self.listed, key=lambda item: self.weights.get(item[0], 1))
        text = f'Service unavailable; client [{self.ip}] blocked using {zone}'
        if reason:
            text += f'; {reason}'
        return Reply(554, text, '5.7.1')


class Dnsbl:
    """Refuse clients whose entries in `zones` weigh at least `threshold`;
    the factory `policies.dnsbl`, and the YAML entry `dnsbl:`."""
    stages = frozenset({'RCPT'})       # the milter steps it needs (middleware.stages)

    def __init__(self, zones: Annotated[ZoneSpec | Iterable[ZoneSpec], ZONES],
                 allow: Annotated[str | Iterable[str], STRINGS] = (),
                 threshold: Annotated[int, INTEGER] = 1, resolver: Resolver | None = None,
                 on_store_error: Annotated[OnStoreError | None, ON_STORE_ERROR] = None):
        if isinstance(zones, (str, dict)):
            zones = [zones]
        self.entries = tuple(zone_entry(z, f'zones[{i}]') for i, z in enumerate(zones or ()))
        if not self.entries:
            raise ValueError('dnsbl: zones must name one or more DNS blocklists')
        self.by_zone: dict[str, list[ZoneEntry]] = {}   # each zone asked once, for all its entries
        for entry in self.entries:
            self.by_zone.setdefault(entry.zone, []).append(entry)
        self.zones = tuple(self.by_zone)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError('dnsbl: threshold must be an integer of 1 or more')
        reachable = sum(e.weight for e in self.entries if e.weight > 0)
        if reachable < threshold:   # a warning, not an error: such calls were accepted before
            log.warning('dnsbl: threshold %d cannot be reached (the positive weights of %s '
                        'add up to %d): no client is refused', threshold, ', '.join(self.zones),
                        reachable)
        self.threshold = threshold
        self.allow = networks(allow, 'dnsbl: allow')
        self.resolver = resolver or Resolver()
        self.on_store_error = check_mode(on_store_error, 'dnsbl')

    def lookup_zone(self, ip: str | IPAddress, zone: str) -> Listing | None:
        """(codes, reason) when an entry of `zone` counts its answer for `ip`,
        None when none does; DnsError if unsure."""
        name = query_name(ip, zone)
        entries = self.by_zone[zone]
        codes = [code for code in self.resolver.addresses(name, 'A')
                 if is_listing(code) and any(e.counts(code) for e in entries)]
        if not codes:
            return None
        try:
            reason = b' '.join(self.resolver.txt(name)).decode('utf-8', 'replace') or None
        except DnsError:
            reason = None
        return codes, reason

    def _asked(self, ip: str | IPAddress, zone: str) -> Listing | None | DnsError:
        """lookup_zone, run in a greenlet of its own: a failure is its value,
        never raised (the hub would print a greenlet's exception on stderr)."""
        try:
            return self.lookup_zone(ip, zone)
        except DnsError as exc:
            return exc
        except Exception as exc:        # a bug here must not print either: it is logged
            return DnsError(f'{type(exc).__name__}: {exc}')

    def check(self, ip: str | IPAddress) -> DnsblResult:
        """Every zone asked at once; the zones that could not be asked are
        `errors` (why: `problems`), and `unknown` what they could weigh."""
        result = DnsblResult(str(ip), policy=self)
        jobs = [(zone, gevent.spawn(self._asked, ip, zone)) for zone in self.zones]
        gevent.joinall([job for _, job in jobs], timeout=self.resolver.timeout * 2 + 1)
        up = down = 0
        for zone, job in jobs:
            value = job.value if job.ready() else DnsError('did not answer in time')
            if not job.ready():
                job.kill(block=False)
            if isinstance(value, DnsError):
                result.errors.append(zone)
                result.problems[zone] = str(value)
                up += sum(e.weight for e in self.by_zone[zone] if e.weight > 0)
                down += sum(e.weight for e in self.by_zone[zone] if e.weight < 0)
            elif value is not None:
                codes, reason = value
                weight = sum(e.weight for e in self.by_zone[zone]
                             if any(e.counts(code) for code in codes))
                result.listed.append((zone, codes, reason))
                result.weights[zone] = weight
                result.score += weight
        result.unknown = (up, down)
        return result

    def _said(self, result: DnsblResult, mode: OnStoreError) -> None:
        """One warning per zone that failed (and period); one when it is back."""
        consequence = 'tempfail: 451 4.3.5' if mode == 'tempfail' else 'failing open'
        for zone in self.zones:
            if zone in result.problems:
                warnings.failed(f'dnsbl {zone}', 'dnsbl: %s: %s', zone, result.problems[zone],
                                consequence=consequence)
            else:
                warnings.ok(f'dnsbl {zone}')

    def __call__(self, ctx: Context, next: Next) -> None:
        if ctx.command_name == 'RCPT':
            session = ctx.session
            ip = client_ip(session)
            if ip is not None and not authenticated(session) and not allowed(ip, self.allow):
                mode = mode_of(self.on_store_error, ctx)
                result = getattr(session, 'dnsbl', None)
                if result is None or result.ip != str(ip) or result.policy is not self:
                    result = session.dnsbl = self.check(ip)
                    self._said(result, mode)
                if mode == 'tempfail' and result.unsure(self.threshold):
                    raise SmtpError(STORE_UNAVAILABLE)
                if result.score >= self.threshold:
                    raise SmtpError(result.reply())
        next()

