"""A stub resolver whose I/O never blocks the gevent hub.

dnspython builds and parses the messages; the sending and receiving is done
here, on `gevent.socket` sockets, so a lookup yields to other greenlets
whether or not the process was monkey-patched (dnspython's own query
functions wait with `selectors`, which would stop the hub in an unpatched
process). Every lookup is bounded by `timeout` in total, over all the
nameservers; answers, including "no such name" (RFC 2308), are cached for
their TTL, and a question that failed is not asked again for a few seconds.

A resolver that stopped answering costs one timeout per period, not one
per question: its circuit breaker (state/breaker.py, one per list of
nameservers) opens when a question timed out while the nameservers
answered nothing else either, and then every question fails at once
(DnsError) until a probe gets an answer. A question that timed out while
other questions were answered is one slow zone, not a dead resolver, and
opens nothing. A DnsError is made afresh for each caller (never one
object raised again, whose traceback would grow with every raise).
"""
from __future__ import annotations

import ipaddress
import itertools
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from gevent import socket as gsocket
from gevent import Timeout

from ..state.breaker import Breaker, breaker

NEGATIVE_TTL = 300          # when a negative answer carries no SOA
FAILURE_TTL = 5.0           # a failed question is not asked again for this long
MAX_TTL = 86400
_ids = itertools.count(1)


class DnsError(Exception):
    """A temporary failure (RFC 7208 temperror): timeout, SERVFAIL, no server."""


@dataclass(frozen=True)
class Answer:
    """What one question got: `records` are dnspython rdata objects (empty
    for NXDOMAIN and for no data); `nxdomain` tells the two apart."""
    name: str
    rdtype: str
    records: tuple[Any, ...]        # of dns.rdtypes' classes for rdtype: A, TXT, MX ...
    nxdomain: bool = False
    ttl: int = 0

    def __bool__(self) -> bool:
        return bool(self.records)


def read_resolv_conf(path: str = '/etc/resolv.conf') -> list[str]:
    servers = []
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == 'nameserver':
                    servers.append(words[1].split('%', 1)[0])
    except OSError:
        pass
    return servers or ['127.0.0.1']


class Resolver:
    """`Resolver(nameservers, port=53, timeout=2.0)`; None reads /etc/resolv.conf.

    `query(name, 'TXT')` returns an `Answer` or raises `DnsError`;
    `lookup` also says until when it is good. The helpers `txt`,
    `addresses`, `mx`, `ptr` return plain values.
    """

    def __init__(self, nameservers: str | Iterable[str] | None = None, port: int = 53,
                 timeout: float = 2.0, cache_size: int = 10_000):
        if isinstance(nameservers, str):
            nameservers = [nameservers]
        self.nameservers = list(nameservers) if nameservers else read_resolv_conf()
        for server in self.nameservers:
            ipaddress.ip_address(server)        # ValueError now, not on a live session
        if not 0 < port < 65536:
            raise ValueError('port must be from 1 to 65535')
        if not timeout > 0:
            raise ValueError('timeout must be a positive number of seconds')
        self.port = port
        self.timeout = float(timeout)
        self.cache_size = cache_size
        # (name, type) -> (expires, Answer, or the text of the DnsError to raise again)
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer | str]] = OrderedDict()
        self._answered_at = 0.0     # when a nameserver last answered anything
        where = ','.join(f'[{s}]' if ':' in s else s for s in self.nameservers)
        self.breaker: Breaker = breaker(f'dns {where}:{port}', slow=self.timeout / 2)

    def __repr__(self) -> str:
        return f'Resolver({self.nameservers!r}, port={self.port}, timeout={self.timeout})'

    # -- the query -----------------------------------------------------------
    def query(self, name: str, rdtype: str = 'A') -> Answer:
        return self.lookup(name, rdtype)[0]

    def lookup(self, name: str, rdtype: str = 'A') -> tuple[Answer, float]:
        """`query`, and until when (time.monotonic) the answer is good: what
        is derived from it may be kept as long (spf.SpfCache)."""
        name = name.rstrip('.').lower()
        key = (name, rdtype)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None:
            expires, cached = hit
            if expires > now:
                self._cache.move_to_end(key)
                if isinstance(cached, str):
                    raise DnsError(cached)
                return cached, expires
            del self._cache[key]
        ticket = self.breaker.admit()
        if ticket is None:
            raise DnsError(f'{name} {rdtype}: {self.breaker.refusal()}')
        try:
            answer = self._ask(name, rdtype)
        except DnsError as exc:
            # Slow only if no nameserver answered anything meanwhile.
            unanswered = self._answered_at < now
            self.breaker.failed(ticket, time.monotonic() - now if unanswered else 0.0, str(exc))
            # An unreachable server would otherwise cost every session the whole
            # timeout for the same name; RFC 2308 7.1 allows caching failures briefly.
            self._remember(key, now + FAILURE_TTL, str(exc))
            raise
        self.breaker.succeeded(ticket)
        self._remember(key, now + answer.ttl, answer)
        return answer, now + answer.ttl

    def _remember(self, key: tuple[str, str], expires: float, value: Answer | str) -> None:
        """Answers and failures alike, in a bounded cache (the oldest go
        first), so a DNS outage cannot grow it either."""
        self._cache[key] = (expires, value)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _ask(self, name: str, rdtype: str) -> Answer:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise DnsError(f'{name}: not a domain name ({exc})') from None
        request = dns.message.make_query(qname, rdtype)
        deadline = time.monotonic() + self.timeout
        problems = []
        for server in self.nameservers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                with Timeout(left, DnsError(f'timed out after {self.timeout:g} s')):
                    response = self._exchange(request, server)
            except (DnsError, OSError, dns.exception.DNSException) as exc:
                problems.append(f'{server}: {exc}')
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return Answer(name, rdtype, (), True, _negative_ttl(response))
            if rcode != dns.rcode.NOERROR:
                problems.append(f'{server}: {dns.rcode.to_text(rcode)}')
                continue
            return _answer(name, rdtype, response)
        raise DnsError(f'{name} {rdtype}: ' + ('; '.join(problems) or
                                              f'timed out after {self.timeout:g} s'))

    def _exchange(self, request: dns.message.Message, server: str) -> dns.message.Message:
        family = gsocket.AF_INET6 if ':' in server else gsocket.AF_INET
        sock = gsocket.socket(family, gsocket.SOCK_DGRAM)
        try:
            sock.connect((server, self.port))    # connected: ICMP errors come back as errors
            sock.send(request.to_wire())
            while True:
                wire = sock.recv(65535)
                try:
                    response = dns.message.from_wire(wire)
                except dns.exception.DNSException:
                    continue                     # garbage: keep waiting for the answer
                if request.is_response(response):
                    break
        finally:
            sock.close()
        self._answered_at = time.monotonic()
        if response.flags & dns.flags.TC:        # RFC 7766: retry over TCP
            response = self._exchange_tcp(request, server, family)
        return response

    def _exchange_tcp(self, request: dns.message.Message, server: str,
                      family: int) -> dns.message.Message:
        sock = gsocket.socket(family, gsocket.SOCK_STREAM)
        try:
            sock.connect((server, self.port))
            wire = request.to_wire()
            sock.sendall(struct.pack('!H', len(wire)) + wire)
            (length,) = struct.unpack('!H', _recv_exactly(sock, 2))
            return dns.message.from_wire(_recv_exactly(sock, length))
        finally:
            sock.close()

    # -- plain values ------------------------------------------------------------
    def txt(self, name: str) -> list[bytes]:
        """Each TXT record as one bytes value (its strings joined, RFC 7208 3.3)."""
        return [b''.join(r.strings) for r in self.query(name, 'TXT').records]

    def addresses(self, name: str, rdtype: str = 'A') -> list[str]:
        return [r.address for r in self.query(name, rdtype).records]

    def mx(self, name: str) -> list[tuple[int, str]]:
        records = self.query(name, 'MX').records
        return sorted((r.preference, r.exchange.to_text(True)) for r in records)

    def ptr(self, ip: str) -> list[str]:
        reverse = ipaddress.ip_address(ip).reverse_pointer
        return [r.target.to_text(True) for r in self.query(reverse, 'PTR').records]

    def dkim_txt(self, name: str | bytes, timeout: float | None = None) -> bytes | None:
        """The `dnsfunc` dkimpy asks for: the TXT record as bytes, or None."""
        if isinstance(name, bytes):
            name = name.decode('ascii', 'replace')
        records = self.txt(name)
        return records[0] if records else None


def _recv_exactly(sock: Any, n: int) -> bytes:
    data = b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise DnsError('the server closed the TCP connection')
        data += chunk
    return data


def _answer(name: str, rdtype: str, response: dns.message.Message) -> Answer:
    """The records of `rdtype` at the end of the CNAME chain from `name`."""
    want = dns.rdatatype.from_text(rdtype)
    target = dns.name.from_text(name)
    records: list[Any] = []
    ttls: list[int] = []
    for _ in range(16):         # a bound on CNAME chains inside one answer
        moved = False
        for rrset in response.answer:
            if rrset.name != target:
                continue
            if rrset.rdtype == want:
                records.extend(rrset)
                ttls.append(rrset.ttl)
            elif rrset.rdtype == dns.rdatatype.CNAME and want != dns.rdatatype.CNAME:
                target = rrset[0].target
                ttls.append(rrset.ttl)
                moved = True
        if records or not moved:
            break
    ttl = min(ttls) if records else _negative_ttl(response)
    return Answer(name, rdtype, tuple(records), False, min(ttl, MAX_TTL))


def _negative_ttl(response: dns.message.Message) -> int:
    """RFC 2308 5: the SOA's minimum, bounded by the SOA's own TTL."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            soa: Any = rrset[0]
            minimum: int = soa.minimum
            return min(rrset.ttl, minimum, MAX_TTL)
    return NEGATIVE_TTL
