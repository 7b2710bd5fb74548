"""Ready-made middleware for what an inbound MX or a gateway checks.

    from smtp_stack import policies
    dns = policies.Resolver(['127.0.0.1'], timeout=2.0)
    state = policies.store('redis://127.0.0.1:6379/0')
    server.use(policies.dnsbl(['zen.spamhaus.org'], resolver=dns))
    server.use(policies.recipients(domains=['example.com']))
    server.use(policies.greylist(delay=300, store=state))
    server.use(policies.rate_limit(messages=100, per=3600, store=state))
    server.use(policies.authenticate(resolver=dns))

Each factory returns a middleware `fn(ctx, next)`; the same names and
parameters are the `policies:` entries of the YAML config. docs/policies.md
has every parameter and reply. The DNS and DKIM libraries are the optional
extra `pip install 'smtp_stack[policies]'`: without it, importing this
package raises MissingExtra (an ImportError) that says so in one sentence.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..extras import needs_extra

with needs_extra('policies', 'smtp_stack.policies'):
    from .dns import DnsError, Resolver
    from .dnsbl import dnsbl
    from .greylist import greylist
    from .ratelimit import rate_limit
    from .recipients import recipients
    from .stores import StoreError, store

if TYPE_CHECKING:
    from ..middleware import Middleware
    from .authentication import Authenticate
    from .dkimcheck import ArcSealer

__all__ = ['recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate', 'Resolver',
           'store', 'DnsError', 'StoreError']


def authenticate(spf: bool = True, dkim: bool = True, dmarc: bool = True, arc: bool = True,
                 enforce_dmarc: bool = False, resolver: Resolver | None = None,
                 authserv_id: str | None = None,
                 arc_seal: ArcSealer | Mapping[str, str | bytes] | None = None,
                 max_verify_bytes: int = 4 << 20, remove_forged: bool = True) -> Authenticate:
    """SPF, DKIM, DMARC and ARC results in an Authentication-Results header
    (authentication.py; imported on first use: dkimpy and pyspf load only
    then, and a missing one is MissingExtra naming the extra)."""
    with needs_extra('policies', 'policies.authenticate'):
        from .authentication import authenticate as factory
    return factory(spf, dkim, dmarc, arc, enforce_dmarc, resolver, authserv_id, arc_seal,
                   max_verify_bytes, remove_forged)


#: The `policies:` entries of the YAML config (policies/config.py), by name.
FACTORIES: Mapping[str, Callable[..., Middleware]] = {
    'recipients': recipients, 'dnsbl': dnsbl, 'greylist': greylist,
    'rate_limit': rate_limit, 'authenticate': authenticate}
