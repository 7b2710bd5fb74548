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
- A `lookup` that raises (its database is down) gets `451 4.3.5`, as
  Postfix answers a table it cannot read ("Temporary lookup failure"),
  with one warning per period. There is no `on_store_error` here: accepting
  a recipient nobody could check would bounce later (backscatter).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, TypeAlias

import gevent

from ..errors import SmtpError
from ..offload import offload
from ..params import CALLABLE, FILE, STRINGS
from ..replies import Reply
from .common import STORE_UNAVAILABLE, authenticated, log, warnings

if TYPE_CHECKING:
    from ..middleware import Context, Next

# What tells one version of a file from the next: (mtime_ns, size, inode).
Stamp: TypeAlias = 'tuple[int, int, int]'

RELAY_DENIED = Reply(554, 'Relay access denied', '5.7.1')
UNKNOWN_USER = Reply(550, 'No such user here', '5.1.1')


def _domain_of(address: str) -> str:
    return address.rpartition('@')[2].lower().rstrip('.')


def read_addresses(path: str) -> frozenset[str]:
    """One address a line; blank lines and '#' comments ignored."""
    with open(path, encoding='utf-8') as f:
        return frozenset(line.split('#', 1)[0].strip().lower()
                         for line in f if line.split('#', 1)[0].strip())


def _stamp(path: str) -> Stamp | None:
    """What tells one version of the file from the next, or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_if_changed(path: str,
                    known: Stamp | None) -> tuple[Stamp, frozenset[str] | Exception] | None:
    """(stamp, addresses) when the file is not the version `known`, else
    None (unchanged, or vanished: the last good list stays); (stamp, the
    exception) when it changed but cannot be read. Blocking file I/O: it
    runs in a worker thread."""
    stamp = _stamp(path)
    if stamp is None or stamp == known:
        return None
    try:
        return stamp, read_addresses(path)
    except (OSError, ValueError) as exc:     # ValueError: not UTF-8
        return stamp, exc


class AddressFile:
    """A file of addresses, read again when it changed (checked at most once
    a second), so an edit — or the SIGHUP that follows one — takes effect
    without a restart. A file that vanished, or that cannot be read, keeps
    the last good list.

    The stat and the read run in the hub's thread pool: a slow disk or a
    hung network mount must not stop every session of the process. One
    check runs at a time, flagged by `_checking` rather than guarded by a
    lock (a greenlet that held a thread lock across the wait would freeze
    the hub when a second one asked for it); while it runs, other sessions
    use the current list. The RCPT that started the check waits for it at
    most `wait` seconds, so a change is seen by that RCPT already.
    """

    every = 1.0         # seconds between two looks at the file
    wait = 1.0          # how long the RCPT that starts a look waits for it

    def __init__(self, path: str):
        self.path = path
        self.addresses = read_addresses(path)   # errors now, at construction
        self._stamp = _stamp(path)
        self._checked = 0.0
        self._checking = False
        self._unreadable: Stamp | None = None   # the version last found unreadable: logged once

    def current(self, now: float) -> frozenset[str]:
        if not self._checking and now - self._checked >= self.every:
            self._checking = True
            self._checked = now
            gevent.spawn(self._check).join(self.wait)
        return self.addresses

    def _check(self) -> None:
        """Run in a greenlet of its own: nothing may escape it (the hub
        would print it on stderr)."""
        try:
            try:
                found: tuple[Stamp, frozenset[str] | Exception] | None = offload(
                    read_if_changed, self.path, self._stamp)
            except Exception as exc:        # the pool itself failed: as if unreadable
                found = (self._stamp or (0, 0, 0), exc)
            if found is None:
                return
            stamp, addresses = found
            if isinstance(addresses, Exception):
                if stamp != self._unreadable:
                    self._unreadable = stamp
                    log.warning('recipients: %s cannot be read (%s); the last good list stays',
                                self.path, addresses)
                return
            self._stamp, self.addresses = stamp, addresses
        finally:
            self._checking = False

    def reload(self) -> None:
        """Look at the file at the next RCPT, however recent the last look."""
        self._checked = 0.0


class Recipients:
    """Accept RCPT only for these domains / addresses / lookup(address) ->
    bool; the factory `policies.recipients`, and the YAML entry `recipients:`."""
    stages = frozenset({'RCPT'})       # the milter steps it needs (middleware.stages)

    def __init__(self, domains: Annotated[str | Iterable[str], STRINGS] = (),
                 addresses: Annotated[str | Iterable[str], STRINGS] = (),
                 lookup: Annotated[Callable[[str], object] | None, CALLABLE] = None,
                 addresses_file: Annotated[str | None, FILE] = None):
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

    def reload(self) -> None:
        """SIGHUP (the component contract's reload): addresses_file is looked
        at again at the next RCPT, however recent the last look."""
        if self.file is not None:
            self.file.reload()

    def listed(self, now: float | None = None) -> frozenset[str]:
        if self.file is None:
            return self.addresses
        return self.addresses | self.file.current(time.monotonic() if now is None else now)

    def _local_domain(self, domain: str, listed: frozenset[str]) -> bool:
        if domain in self.exact or any(domain.endswith(p) for p in self.parents):
            return True
        return any(_domain_of(a) == domain for a in listed)

    def check(self, address: str) -> Reply | None:
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
        lookup = self.lookup
        if lookup is None:
            return False
        try:
            found = bool(lookup(address))
        except Exception as exc:
            warnings.failed('recipients lookup', 'recipients: lookup(%r) failed: %r', address, exc,
                            consequence='tempfail: 451 4.3.5')
            raise SmtpError(STORE_UNAVAILABLE) from None
        warnings.ok('recipients lookup')
        return found

    def __call__(self, ctx: Context, next: Next) -> None:
        if ctx.command_name == 'RCPT' and ctx.address is not None \
                and not authenticated(ctx.session):
            refusal = self.check(ctx.address.address)
            if refusal is not None:
                raise SmtpError(refusal)
        next()

