"""`recipients(domains, addresses, lookup)`: which RCPT TO an MX accepts.

Refused at RCPT, never after DATA: a message accepted and then found
undeliverable makes a bounce to a sender that is usually forged
(backscatter). The rules are Postfix's:

- An authenticated client may send anywhere (submission; Postfix
  `permit_sasl_authenticated`).
- A domain that is not ours gets 554 5.7.1 (`reject_unauth_destination`).
  A domain written `.example.com` also matches its subdomains.
- In our domains, when addresses are listed for that domain or a `lookup`
  is given, an unknown user gets 550 5.1.1 (`reject_unlisted_recipient`);
  otherwise every user of the domain is accepted.
- `user+tag@domain` is looked up as itself, then as `user@domain`
  (Postfix's recipient_delimiter '+').
"""
from __future__ import annotations

import os
import threading

from ..errors import SmtpError
from .common import authenticated

RELAY_DENIED = (554, 'Relay access denied', '5.7.1')
UNKNOWN_USER = (550, 'No such user here', '5.1.1')


def _domain_of(address: str) -> str:
    return address.rpartition('@')[2].lower().rstrip('.')


def read_addresses(path: str) -> frozenset:
    """One address a line; blank lines and '#' comments ignored."""
    with open(path, encoding='utf-8') as f:
        return frozenset(line.split('#', 1)[0].strip().lower()
                         for line in f if line.split('#', 1)[0].strip())


class AddressFile:
    """A file of addresses, read again when it changed (checked at most once
    a second), so an edit — or the SIGHUP that follows one — takes effect
    without a restart. A file that vanished keeps the last good list."""

    def __init__(self, path: str):
        self.path = path
        self._stamp = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.addresses = read_addresses(path)   # errors now, at construction
        self._stamp = self._stat()

    def _stat(self):
        try:
            st = os.stat(self.path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def current(self, now: float) -> frozenset:
        if now - self._checked >= 1.0:
            with self._lock:
                self._checked = now
                stamp = self._stat()
                if stamp is not None and stamp != self._stamp:
                    try:
                        self.addresses = read_addresses(self.path)
                        self._stamp = stamp
                    except OSError:
                        pass
        return self.addresses

    def reload(self) -> None:
        self._checked = 0.0


class Recipients:

    def __init__(self, domains=(), addresses=(), lookup=None, addresses_file=None):
        if isinstance(domains, str):
            domains = [domains]
        if isinstance(addresses, str):
            addresses = [addresses]
        if lookup is not None and not callable(lookup):
            raise ValueError('recipients: lookup must be a callable lookup(address) -> bool')
        self.exact = {d.lower().rstrip('.') for d in domains if not d.startswith('.')}
        self.parents = tuple(d.lower().rstrip('.') for d in domains if d.startswith('.'))
        self.addresses = frozenset(a.lower() for a in addresses)
        self.file = AddressFile(addresses_file) if addresses_file else None
        self.lookup = lookup
        if not (self.exact or self.parents or self.addresses or self.file or lookup):
            raise ValueError('recipients: give domains, addresses, addresses_file or lookup')

    def listed(self, now: float = None) -> frozenset:
        if self.file is None:
            return self.addresses
        import time
        return self.addresses | self.file.current(time.monotonic() if now is None else now)

    def _local_domain(self, domain: str, listed) -> bool:
        if domain in self.exact or any(domain.endswith(p) for p in self.parents):
            return True
        return any(_domain_of(a) == domain for a in listed)

    def check(self, address: str):
        """None when accepted, else the refusal (code, message, enhanced)."""
        listed = self.listed()
        domain = _domain_of(address)
        if not self._local_domain(domain, listed):
            if self.lookup is not None and not (self.exact or self.parents or listed):
                return None if self._lookup(address) else UNKNOWN_USER
            return RELAY_DENIED
        candidates = [address.lower()]
        local, _, _ = address.rpartition('@')
        if '+' in local:
            candidates.append(local.split('+', 1)[0].lower() + '@' + domain)
        domain_listed = any(_domain_of(a) == domain for a in listed)
        if not domain_listed and self.lookup is None:
            return None             # a catch-all domain
        if any(c in listed for c in candidates):
            return None
        if self.lookup is not None and any(self._lookup(c) for c in candidates):
            return None
        return UNKNOWN_USER

    def _lookup(self, address: str) -> bool:
        return bool(self.lookup(address))

    def __call__(self, ctx, next):
        if ctx.command_name == 'RCPT' and ctx.address is not None \
                and not authenticated(ctx.session):
            refusal = self.check(ctx.address.address)
            if refusal is not None:
                raise SmtpError(*refusal)
        next()


def recipients(domains=(), addresses=(), lookup=None, addresses_file=None):
    """Accept RCPT only for these domains / addresses / lookup(address) -> bool."""
    return Recipients(domains, addresses, lookup, addresses_file)
