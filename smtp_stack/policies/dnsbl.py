"""`dnsbl(zones, allow=(), threshold=1)`: DNS blocklists of the client address.

RFC 5782 2.1 and 2.4: the client IPv4 address is queried with its octets
reversed (192.0.2.99 -> 99.2.0.192.zone), an IPv6 address as 32 reversed
nibbles; an A record in 127.0.0.0/8 means "listed", and the TXT record of
the same name, if any, says why. Answers outside 127/8, and Spamhaus's
127.255.255.0/24 ("your query was refused"), are not listings: a list that
answers junk must not block mail.

The zones are asked at once (one greenlet each), each bounded by the
resolver's timeout; the outcome is kept on the session for its later RCPTs
and for other middleware (`session.dnsbl`). The refusal is at the first
RCPT, not at connect, so the log holds the sender and recipient too and
an allow-listed recipient (postmaster) can still be reached by a later rule.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import gevent

from ..errors import SmtpError
from .common import allowed, authenticated, client_ip, networks, warnings
from .dns import DnsError, Resolver

LISTED = ipaddress.ip_network('127.0.0.0/8')
REFUSED_QUERY = ipaddress.ip_network('127.255.255.0/24')


def query_name(ip, zone: str) -> str:
    """RFC 5782 2.1 (IPv4) and 2.4 (IPv6, nibbles) query name of `ip` in `zone`."""
    pointer = ipaddress.ip_address(ip).reverse_pointer
    return pointer.rsplit('.', 2)[0] + '.' + zone.strip('.')


@dataclass
class DnsblResult:
    ip: str
    listed: list = field(default_factory=list)     # [(zone, codes, reason or None)]
    errors: list = field(default_factory=list)     # zones that could not be asked

    def reply(self):
        zone, codes, reason = self.listed[0]
        text = f'Service unavailable; client [{self.ip}] blocked using {zone}'
        if reason:
            text += f'; {reason}'
        return 554, text, '5.7.1'


class Dnsbl:

    def __init__(self, zones, allow=(), threshold=1, resolver=None):
        if isinstance(zones, str):
            zones = [zones]
        self.zones = tuple(z.strip().strip('.') for z in zones or ())
        if not self.zones or not all(self.zones):
            raise ValueError('dnsbl: zones must name one or more DNS blocklists')
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError('dnsbl: threshold must be an integer of 1 or more')
        self.threshold = threshold
        self.allow = networks(allow, 'dnsbl: allow')
        self.resolver = resolver or Resolver()

    def lookup_zone(self, ip, zone: str):
        """(codes, reason) when `zone` lists `ip`, None when not; DnsError if unsure."""
        name = query_name(ip, zone)
        codes = []
        for address in self.resolver.addresses(name, 'A'):
            code = ipaddress.ip_address(address)
            if code in LISTED and code not in REFUSED_QUERY:
                codes.append(address)
        if not codes:
            return None
        try:
            reason = b' '.join(self.resolver.txt(name)).decode('utf-8', 'replace') or None
        except DnsError:
            reason = None
        return codes, reason

    def check(self, ip) -> DnsblResult:
        result = DnsblResult(str(ip))
        jobs = [(zone, gevent.spawn(self.lookup_zone, ip, zone)) for zone in self.zones]
        gevent.joinall([job for _, job in jobs], timeout=self.resolver.timeout * 2 + 1)
        for zone, job in jobs:
            if not job.ready():
                job.kill(block=False)
                result.errors.append(zone)
                warnings.failed(f'dnsbl {zone}', 'dnsbl: %s did not answer in time', zone)
            elif job.successful():
                warnings.ok(f'dnsbl {zone}')
                if job.value is not None:
                    result.listed.append((zone,) + job.value)
            else:
                result.errors.append(zone)
                warnings.failed(f'dnsbl {zone}', 'dnsbl: %s: %s', zone, job.exception)
        return result

    def __call__(self, ctx, next):
        if ctx.command_name == 'RCPT':
            session = ctx.session
            ip = client_ip(session)
            if ip is not None and not authenticated(session) and not allowed(ip, self.allow):
                result = getattr(session, 'dnsbl', None)
                if result is None or result.ip != str(ip):
                    result = session.dnsbl = self.check(ip)
                if len(result.listed) >= self.threshold:
                    raise SmtpError(*result.reply())
        next()


def dnsbl(zones, allow=(), threshold=1, resolver=None):
    """Refuse clients listed by at least `threshold` of `zones`."""
    return Dnsbl(zones, allow, threshold, resolver)
