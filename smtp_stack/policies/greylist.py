"""`greylist(delay=300, expire=86400*36, store=None)`: RFC 6647 greylisting.

A message is first refused with 451 4.7.1 for the triplet (client network,
sender, recipient); the same triplet retried after `delay` seconds, and
before the pending entry is forgotten (`retry_window`), is accepted, and
from then on passes for `expire` seconds after its last use. RFC 6647 4.1
and 4.2 suggest the network rather than the address (a sender's outbound
pool retries from a neighbour): /24 for IPv4 and /64 for IPv6 here.

A client network that passed `auto_allow` times is no longer greylisted for
anything (RFC 6647 4.4: "the client has shown it retries"); authenticated
clients and `allow` networks never are. The refusal is at RCPT, before the
body is sent, as Postfix's policy servers (postgrey) do.

A store that fails lets the recipient through (`on_store_error='accept'`,
the default) or answers `451 4.3.5` ('tempfail'): a greylist that silently
stops working during an outage is what a spammer waits for.
"""
from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated

from ..errors import SmtpError
from ..params import DURATION, INTEGER, STRINGS
from ..replies import Reply
from ..state.greylisting import GreyKeys, GreyRule, decide
from .common import (IPAddress, allowed, authenticated, check_mode, client_ip, mode_of, networks,
                     positive, store_failed, warnings)
from .config import ON_STORE_ERROR, STORE
from .stores import Store, StoreError, as_store

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..options import OnStoreError


def client_network(ip: IPAddress) -> str:
    """'192.0.2.0/24' or '2001:db8::/64' (ip_network's text), by masking
    the address's integer: constructing the network cost more than the
    store's round trip."""
    if ip.version == 4:         # dotted quads written here: an IPv4Address costs 5 times as much
        n = int(ip)
        return f'{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.0/24'
    return f'{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64'


def triplet_key(network: str, sender: str, recipient: str) -> str:
    """Hashed, so that keys stay short and hold no addresses in clear."""
    raw = f'{network}\0{sender.lower()}\0{recipient.lower()}'.encode('utf-8', 'surrogateescape')
    return hashlib.sha256(raw).hexdigest()[:32]


class Greylist:
    """RFC 6647 greylisting on (client network, sender, recipient); the
    factory `policies.greylist`, and the YAML entry `greylist:`."""
    stages = frozenset({'MAIL', 'RCPT'})   # the milter steps it needs (middleware.stages)

    def __init__(self, delay: Annotated[float, DURATION] = 300,
                 expire: Annotated[float, DURATION] = 86400 * 36,
                 store: Annotated[str | Store | None, STORE] = None,
                 retry_window: Annotated[float, DURATION] = 86400 * 2,
                 auto_allow: Annotated[int, INTEGER] = 5,
                 allow: Annotated[str | Iterable[str], STRINGS] = (),
                 clock: Callable[[], float] = time.time,
                 on_store_error: Annotated[OnStoreError | None, ON_STORE_ERROR] = None):
        self.delay = delay if delay == 0 else positive(delay, 'greylist: delay')
        self.expire = positive(expire, 'greylist: expire')
        self.retry_window = positive(retry_window, 'greylist: retry_window')
        if isinstance(auto_allow, bool) or not isinstance(auto_allow, int) or auto_allow < 0:
            raise ValueError('greylist: auto_allow must be an integer, 0 to never auto-allow')
        self.auto_allow = auto_allow
        self.allow = networks(allow, 'greylist: allow')
        self.store = as_store(store)
        self.clock = clock
        self.on_store_error = check_mode(on_store_error, 'greylist')
        self._cause = f'greylist store {self.store.url}'       # of the store's warnings
        self._kept_rule = self._rule()

    def check(self, ip: IPAddress, sender: str, recipient: str) -> Reply | None:
        """None to accept, else the 451 refusal. Raises StoreError. One
        store operation (one Redis round trip: state/greylisting.py)."""
        network = client_network(ip)
        key = triplet_key(network, sender, recipient)
        keys = GreyKeys(f'grey:client:{network}', f'grey:pass:{key}', f'grey:wait:{key}')
        decide_in_store = getattr(self.store, 'greylist', None)
        if decide_in_store is None:         # a store object of the user's, without it
            left = decide(self.store, keys, self.clock(), self._rule())
        else:
            left = decide_in_store(keys, self.clock(), self._rule())
        return None if left is None else self._refusal(left)

    def _rule(self) -> GreyRule:
        """The parameters as a GreyRule: one object while they stay as they
        are (a frozen dataclass per recipient cost more than its use; a
        store may keep what it derives from the rule, redis_store.py)."""
        rule: GreyRule | None = getattr(self, '_kept_rule', None)
        if (rule is None or rule.delay != self.delay or rule.retry_window != self.retry_window
                or rule.expire != self.expire or rule.auto_allow != self.auto_allow):
            rule = self._kept_rule = GreyRule(self.delay, self.retry_window, self.expire,
                                              self.auto_allow)
        return rule

    @staticmethod
    def _refusal(left: float) -> Reply:
        return Reply(451, f'Greylisted, please try again in {max(1, int(left + 0.999))} seconds',
                     '4.7.1')

    def __call__(self, ctx: Context, next: Next) -> None:
        if ctx.command_name == 'RCPT' and ctx.address is not None:
            session = ctx.session
            ip = client_ip(session)
            if ip is not None and not authenticated(session) and not allowed(ip, self.allow):
                sender = session.envelope.mail_from.address if session.envelope.mail_from else ''
                try:
                    refusal = self.check(ip, sender, ctx.address.address)
                    warnings.ok(self._cause)
                except StoreError as exc:
                    store_failed(mode_of(self.on_store_error, ctx), self._cause, 'greylist: %s',
                                 exc)
                    refusal = None
                if refusal is not None:
                    raise SmtpError(refusal)
        next()

