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
extra `pip install 'smtp_stack[policies]'`.
"""
from .dns import DnsError, Resolver
from .dnsbl import dnsbl
from .greylist import greylist
from .ratelimit import rate_limit
from .recipients import recipients
from .stores import StoreError, store

__all__ = ['recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate', 'Resolver',
           'store', 'DnsError', 'StoreError']


def authenticate(spf=True, dkim=True, dmarc=True, arc=True, enforce_dmarc=False,
                 resolver=None, authserv_id=None, arc_seal=None, max_verify_bytes=4 << 20,
                 remove_forged=True):
    """SPF, DKIM, DMARC and ARC results in an Authentication-Results header
    (authentication.py; imported on first use: dkimpy and pyspf load only then)."""
    from .authentication import authenticate as factory
    return factory(spf, dkim, dmarc, arc, enforce_dmarc, resolver, authserv_id, arc_seal,
                   max_verify_bytes, remove_forged)


FACTORIES = {'recipients': recipients, 'dnsbl': dnsbl, 'greylist': greylist,
             'rate_limit': rate_limit, 'authenticate': authenticate}
