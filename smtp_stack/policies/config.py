"""The `policies:`, `store:` and `dns:` sections of the YAML configuration.

    dns:   {nameservers: [127.0.0.1], port: 53, timeout: 2}   # default: /etc/resolv.conf
    store: redis://127.0.0.1:6379/0                          # default: memory:
    on_store_error: tempfail         # the server's option; default accept (fail open)
    policies:                        # in this order, each a middleware
      - dnsbl: {zones: ['zen.spamhaus.org=127.0.0.[2..11]*2', bl.example], threshold: 2}
      - recipients: {domains: [example.com], addresses_file: users.txt}
      - greylist: {delay: 5m}
      - rate_limit: {messages: 100, per: 1h}
      - authenticate: {enforce_dmarc: true}
      - rspamd: {url: 'http://127.0.0.1:11333', timeout: 10, fail_open: false}
      - milter: {address: 'inet:127.0.0.1:8891', name: opendkim, default_action: accept}
                                     # default_action: tempfail, accept, reject or quarantine

The names are those of the registry (`policies.POLICIES`); the parameters
those the policies' classes declare in their signatures (params.py), with
the kinds below for what only a policy takes: a store URL, DNSBL zones, an
ARC seal, what to do when the store or DNS is down (`on_store_error`, each
policy's own, else the top-level one). Durations may be written 300, '5m',
'1h', '36d'. Every mistake is reported with its path
(policies[2].greylist.delay: must be ...), and every entry is built once
at check time, so a config that passes `check-config` starts.

This module imports no policy (they import their kinds from here): the
registry is handed to `SectionChecker` by the configuration's checker.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..extras import MissingExtra
from ..params import INTEGER, NUMBER, STRINGS, Declared, Kind, Reader, duration

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = ['STORE', 'ZONES', 'SEAL', 'ON_STORE_ERROR', 'PolicySection', 'SectionChecker',
           'duration']

DNS_KEYS = {'nameservers': STRINGS, 'port': INTEGER, 'timeout': NUMBER}
# What a trial construction at check time gives the parameters YAML does not.
TRIAL = {'resolver': lambda: _resolver(['127.0.0.1']), 'store': lambda: 'memory:'}


# -- the kinds only policies take ------------------------------------------------

def _store(value: Any, reader: Reader) -> str:
    """A store URL that opens, its file names taken from the configuration's
    directory (sqlite:///state.db, rediss://...?ssl_ca_certs=ca.pem)."""
    from ..state.urls import URLS
    from ..state.urls import store as open_store
    if not isinstance(value, str):
        raise ValueError(f'must be a store URL: {URLS}')
    if value.startswith('sqlite:///') and not value.startswith('sqlite:////'):
        value = 'sqlite:///' + reader.file_path(value[len('sqlite:///'):])
    if value.startswith('rediss://'):
        value = _tls_files(value, reader)
    try:
        open_store(value).close()
    except MissingExtra:                    # redis: the caller names the path
        raise
    except (ValueError, ImportError) as exc:
        raise ValueError(str(exc).replace('store: ', '')) from None
    return value


def _tls_files(url: str, reader: Reader) -> str:
    """rediss:// with its certificate files (ssl_ca_certs=ca.pem ...)
    relative to the configuration file, as every file name in it is."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from ..state.redis_store import SSL_FILES
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in SSL_FILES for name, _ in query):
        return url
    query = [(name, reader.file_path(value) if name in SSL_FILES else value)
             for name, value in query]
    return urlunsplit(parts._replace(query=urlencode(query, safe='/')))


def _zones(value: Any, reader: Reader) -> list[Any]:
    """Each entry is checked by the policy itself (dnsbl.zone_entry)."""
    value = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
        raise ValueError
    return value


def _seal(value: Any, reader: Reader) -> dict[str, Any]:
    """{selector, domain, key_file} -> {selector, domain, key}: the key read now."""
    if not isinstance(value, dict) or set(value) != {'selector', 'domain', 'key_file'}:
        raise ValueError
    try:
        with open(reader.file_path(str(value['key_file'])), 'rb') as f:
            key = f.read()
    except OSError as exc:
        raise ValueError(f'key_file: {exc.strerror or exc}') from None
    return {'selector': value['selector'], 'domain': value['domain'], 'key': key}


def _on_store_error(value: Any, reader: Reader) -> str:
    from ..options import ON_STORE_ERROR as MODES
    if value not in MODES:
        raise ValueError
    return str(value)


STORE = Kind('a store URL', _store)
# A policy's own; absent, the top-level `on_store_error:` (the server's option).
ON_STORE_ERROR = Kind('accept or tempfail', _on_store_error)
ZONES = Kind("a list of zones, each 'zone[=codes][*weight]' or {zone, codes, weight}", _zones)
SEAL = Kind('a mapping {selector, domain, key_file}', _seal)


# -- the sections ----------------------------------------------------------------

@dataclass
class PolicySection:
    """The checked section: build() makes the middleware, in order."""
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    store: str | None = None
    dns: dict[str, Any] = field(default_factory=dict)
    raw: object = None                              # as written, to compare on reload
    registry: Mapping[str, Declared] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def build(self) -> list[Middleware]:
        from ..state.urls import store as open_store
        rows = [(self.registry[name], spec) for name, spec in self.entries]
        resolver = _resolver(**self.dns) if any(row.takes('resolver') for row, _ in rows) else None
        shared = open_store(self.store or 'memory:') \
            if any(row.takes('store') for row, _ in rows) else None
        built = []
        for row, spec in rows:
            kwargs = dict(spec)
            if row.takes('resolver'):
                kwargs['resolver'] = resolver
            if row.takes('store'):
                kwargs['store'] = open_store(kwargs['store']) if 'store' in kwargs else shared
            built.append(row.build(kwargs))
        return built


class SectionChecker:
    """Checks the three keys, reporting through the configuration's reader
    (`error(path, message)`, `file_path(name)`, `callable(spec)`), each
    policy against its row of `registry` (policies.POLICIES)."""

    def __init__(self, reader: Reader, registry: Mapping[str, Declared]):
        self.reader = reader
        self.registry = registry

    def section(self, data: dict[str, Any]) -> PolicySection:
        out = PolicySection(raw=(data.get('policies'), data.get('store'), data.get('dns')),
                            registry=self.registry)
        if data.get('store') is not None:
            out.store = self.store_url('store', data['store'])
        if data.get('dns') is not None:
            out.dns = self.dns(data['dns'])
        value = data.get('policies')
        if value is None:
            return out
        if not isinstance(value, list):
            self.reader.error('policies', 'must be a list of {name: {parameters}}, e.g. '
                                          '- greylist: {delay: 300}')
            return out
        for i, item in enumerate(value):
            path = f'policies[{i}]'
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                self.reader.error(path, 'must be one policy: {name: {parameters}}')
                continue
            name, params = next(iter(item.items()))
            row = self.registry.get(name)
            if row is None:
                self.reader.error(path, f'unknown policy {name!r} '
                                        f'(one of {", ".join(self.registry)})')
                continue
            spec = row.check(params, f'{path}.{name}', self.reader)
            if spec is not None:
                out.entries.append((name, spec))
        return out

    def store_url(self, path: str, value: object) -> str | None:
        try:
            return _store(value, self.reader)
        except MissingExtra as exc:     # redis
            raise MissingExtra(path, exc.extra, exc.name) from exc
        except ValueError as exc:
            self.reader.error(path, str(exc))
            return None

    def dns(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.reader.error('dns', 'must be a mapping {nameservers, port, timeout}')
            return {}
        out = {}
        for key, item in value.items():
            kind = DNS_KEYS.get(key)
            if kind is None:
                self.reader.error(f'dns.{key}', f'unknown option (one of {", ".join(DNS_KEYS)})')
                continue
            try:
                out[key] = kind.convert(item, self.reader)
            except ValueError:
                self.reader.error(f'dns.{key}', f'must be {kind.words}')
        try:
            _resolver(**out)
        except ValueError as exc:
            self.reader.error('dns', str(exc))
            return {}
        return out


def _resolver(*args: Any, **kwargs: Any) -> Any:
    from .dns import Resolver
    return Resolver(*args, **kwargs)
