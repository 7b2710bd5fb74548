"""Ready-made middleware for what an inbound MX or a gateway checks.

    from smtp_stack import policies
    dns = policies.Resolver(['127.0.0.1'], timeout=2.0)
    state = policies.store('redis://127.0.0.1:6379/0')
    server.use(policies.dnsbl(['zen.spamhaus.org'], resolver=dns))
    server.use(policies.recipients(domains=['example.com']))
    server.use(policies.greylist(delay=300, store=state))
    server.use(policies.rate_limit(messages=100, per=3600, store=state))
    server.use(policies.authenticate(resolver=dns))
    server.use(policies.rspamd('http://127.0.0.1:11333'))
    server.use(policies.milter('inet:127.0.0.1:8891', name='opendkim'))

Each factory is the policy's class, so its signature is the one
declaration of its parameters: for Python callers, for the `policies:`
entries of the YAML config (`POLICIES`, checked by params.Declared) and
for the docs. docs/policies.md has every parameter and reply. The DNS and
DKIM libraries are the optional extra `pip install 'smtp_stack[policies]'`:
without it, importing this package raises MissingExtra (an ImportError)
that says so in one sentence.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..extras import needs_extra
from ..params import Declared
from .config import TRIAL

with needs_extra('policies', 'smtp_stack.policies'):
    from .dns import DnsError, Resolver
    from .dnsbl import Dnsbl
    from .greylist import Greylist
    from .ratelimit import RateLimit
    from .recipients import Recipients
    from .stores import StoreError, store
# Imported now, before the name `milter` is bound to its class: importing the
# submodule later would rebind the package's `milter` to the module.
from .milter import Milter

if TYPE_CHECKING:
    from .authentication import Authenticate
    from .rspamd_http import Rspamd

__all__ = ['recipients', 'dnsbl', 'greylist', 'rate_limit', 'authenticate', 'rspamd', 'milter',
           'Resolver', 'store', 'DnsError', 'StoreError', 'POLICIES']

recipients = Recipients
dnsbl = Dnsbl
greylist = Greylist
rate_limit = RateLimit
milter = Milter


def _authenticate() -> type[Authenticate]:
    """authentication.py, imported on first use: dkimpy and pyspf load only
    then, and a missing one is MissingExtra naming the extra."""
    with needs_extra('policies', 'policies.authenticate'):
        from .authentication import Authenticate
    return Authenticate


if TYPE_CHECKING:
    authenticate = Authenticate
else:
    def authenticate(*args, **kwargs):
        """SPF, DKIM, DMARC and ARC results in an Authentication-Results
        header: `authentication.Authenticate`, whose signature this is."""
        return _authenticate()(*args, **kwargs)


def _rspamd() -> type[Rspamd]:
    """rspamd_http.py, imported on first use: h11 (its HTTP/1.1) loads only then."""
    with needs_extra('policies', 'policies.rspamd'):
        from .rspamd_http import Rspamd
    return Rspamd


if TYPE_CHECKING:
    rspamd = Rspamd
else:
    def rspamd(*args, **kwargs):
        """rspamd's verdict on each message, over its HTTP protocol:
        `rspamd_http.Rspamd`, whose signature this is."""
        return _rspamd()(*args, **kwargs)


#: The `policies:` entries of the YAML config (policies/config.py), by name.
POLICIES: Mapping[str, Declared] = {
    'recipients': Declared('recipients', lambda: Recipients, trial=TRIAL),
    'dnsbl': Declared('dnsbl', lambda: Dnsbl, trial=TRIAL),
    'greylist': Declared('greylist', lambda: Greylist, trial=TRIAL),
    'rate_limit': Declared('rate_limit', lambda: RateLimit, trial=TRIAL),
    'authenticate': Declared('authenticate', _authenticate, trial=TRIAL),
    'rspamd': Declared('rspamd', _rspamd, trial=TRIAL),
    'milter': Declared('milter', lambda: Milter, trial=TRIAL),
}
