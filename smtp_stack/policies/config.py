"""The `policies:`, `store:` and `dns:` sections of the YAML configuration.

    dns:   {nameservers: [127.0.0.1], port: 53, timeout: 2}   # default: /etc/resolv.conf
    store: redis://127.0.0.1:6379/0                          # default: memory:
    policies:                        # in this order, each a middleware
      - dnsbl: {zones: ['zen.spamhaus.org=127.0.0.[2..11]*2', bl.example], threshold: 2}
      - recipients: {domains: [example.com], addresses_file: users.txt}
      - greylist: {delay: 5m}
      - rate_limit: {messages: 100, per: 1h}
      - authenticate: {enforce_dmarc: true}

The names and parameters are those of the Python factories; durations may
be written 300, '5m', '1h', '36d'. Every mistake is reported with its path
(policies[2].greylist.delay: must be ...), and every entry is built once at
check time, so a config that passes `check-config` starts.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..extras import MissingExtra

if TYPE_CHECKING:
    from ..middleware import Middleware

Report = Callable[[str, str], None]     # the config checker's error(path, message)

_DURATION = re.compile(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*\Z')
_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}

STRINGS, NUMBER, INTEGER, BOOL, STRING, DURATION, FILE, CALLABLE, STORE, SEAL, ZONES = (
    'a list of strings', 'a number', 'an integer', 'true or false', 'a string',
    "a duration (300, '5m', '1h', '36d')", 'a file name', '"package.module:function"',
    'a store URL', 'a mapping {selector, domain, key_file}',
    "a list of zones, each 'zone[=codes][*weight]' or {zone, codes, weight}")
PARAMETERS = {
    'recipients': {'domains': STRINGS, 'addresses': STRINGS, 'addresses_file': FILE,
                   'lookup': CALLABLE},
    'dnsbl': {'zones': ZONES, 'allow': STRINGS, 'threshold': INTEGER},
    'greylist': {'delay': DURATION, 'expire': DURATION, 'retry_window': DURATION,
                 'auto_allow': INTEGER, 'allow': STRINGS, 'store': STORE},
    'rate_limit': {'messages': INTEGER, 'recipients': INTEGER, 'per': DURATION,
                   'key': STRING, 'store': STORE},
    'authenticate': {'spf': BOOL, 'dkim': BOOL, 'dmarc': BOOL, 'arc': BOOL,
                     'enforce_dmarc': BOOL, 'authserv_id': STRING, 'arc_seal': SEAL,
                     'max_verify_bytes': INTEGER, 'remove_forged': BOOL},
}
DNS_KEYS = {'nameservers': STRINGS, 'port': INTEGER, 'timeout': NUMBER}
USES_DNS = ('dnsbl', 'authenticate')
USES_STORE = ('greylist', 'rate_limit')


@dataclass
class PolicySection:
    """The checked section: build() makes the middleware, in order."""
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    store: str | None = None
    dns: dict[str, Any] = field(default_factory=dict)
    raw: object = None                              # as written, to compare on reload

    def __bool__(self) -> bool:
        return bool(self.entries)

    def build(self) -> list[Middleware]:
        from . import FACTORIES, Resolver, store as open_store
        resolver = Resolver(**self.dns) if any(n in USES_DNS for n, _ in self.entries) else None
        shared = open_store(self.store or 'memory:') \
            if any(n in USES_STORE for n, _ in self.entries) else None
        built = []
        for name, kwargs in self.entries:
            kwargs = dict(kwargs)
            if name in USES_DNS:
                kwargs['resolver'] = resolver
            if name in USES_STORE:
                kwargs['store'] = open_store(kwargs['store']) if 'store' in kwargs else shared
            built.append(FACTORIES[name](**kwargs))
        return built


def duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError
    return float(match[1]) * _UNITS[match[2]]


class SectionChecker:
    """Checks the three keys with the config checker's `error(path, message)`,
    `file_path(name)` and `callable(spec)`."""

    def __init__(self, error: Report, file_path: Callable[[str], str],
                 load_callable: Callable[[str], Callable[..., Any]]):
        self.error = error
        self.file_path = file_path
        self.load_callable = load_callable

    def section(self, data: dict[str, Any]) -> PolicySection:
        out = PolicySection(raw=(data.get('policies'), data.get('store'), data.get('dns')))
        if data.get('store') is not None:
            out.store = self.store_url('store', data['store'])
        if data.get('dns') is not None:
            out.dns = self.dns(data['dns'])
        value = data.get('policies')
        if value is None:
            return out
        if not isinstance(value, list):
            self.error('policies', 'must be a list of {name: {parameters}}, e.g. '
                                   '- greylist: {delay: 300}')
            return out
        for i, item in enumerate(value):
            path = f'policies[{i}]'
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                self.error(path, 'must be one policy: {name: {parameters}}')
                continue
            name, params = next(iter(item.items()))
            if name not in PARAMETERS:
                self.error(path, f'unknown policy {name!r} (one of {", ".join(PARAMETERS)})')
                continue
            params = {} if params is None else params
            if not isinstance(params, dict):
                self.error(f'{path}.{name}', 'must be a mapping of parameters')
                continue
            kwargs = self.parameters(f'{path}.{name}', name, params)
            if kwargs is not None:
                out.entries.append((name, kwargs))
        return out

    def parameters(self, path: str, name: str,
                   params: dict[str, Any]) -> dict[str, Any] | None:
        allowed = PARAMETERS[name]
        kwargs: dict[str, Any] = {}
        ok = True
        for key, value in params.items():
            here = f'{path}.{key}'
            kind = allowed.get(key)
            if kind is None:
                self.error(here, f'unknown parameter (one of {", ".join(allowed)})')
                ok = False
                continue
            try:
                kwargs[key] = self.convert(kind, value, here)
            except ValueError as exc:
                self.error(here, str(exc) or f'must be {kind}')
                ok = False
        if not ok:
            return None
        try:       # the factory's own checks, now rather than at start-up
            from . import FACTORIES
            trial = dict(kwargs)
            if name in USES_DNS:
                from .dns import Resolver
                trial['resolver'] = Resolver(['127.0.0.1'])
            if name in USES_STORE:
                trial['store'] = 'memory:'
            FACTORIES[name](**trial)
        except (TypeError, ValueError, OSError) as exc:
            self.error(path, str(exc).replace(f'{name}: ', ''))
            return None
        except MissingExtra as exc:     # the CLI's one line: this entry needs it
            raise MissingExtra(path, exc.extra, exc.name) from exc
        return kwargs

    def convert(self, kind: str, value: Any, path: str) -> Any:
        if kind == STRINGS:
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise ValueError
            return [str(v) for v in value]
        if kind == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
            return value
        if kind == ZONES:       # each entry is checked by the factory (dnsbl.zone_entry)
            value = [value] if isinstance(value, (str, dict)) else value
            if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
                raise ValueError
            return value
        if kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            return value
        if kind == BOOL:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == STRING:
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind == DURATION:
            return duration(value)
        if kind == FILE:
            if not isinstance(value, str) or not value:
                raise ValueError
            return self.file_path(value)
        if kind == CALLABLE:
            if not isinstance(value, str):
                raise ValueError
            return self.load_callable(value)
        if kind == STORE:
            return self.store_url(path, value, report=False)
        if kind == SEAL:
            if not isinstance(value, dict) or set(value) != {'selector', 'domain', 'key_file'}:
                raise ValueError
            try:
                with open(self.file_path(str(value['key_file'])), 'rb') as f:
                    key = f.read()
            except OSError as exc:
                raise ValueError(f'key_file: {exc.strerror or exc}') from None
            return {'selector': value['selector'], 'domain': value['domain'], 'key': key}
        raise AssertionError(kind)

    def store_url(self, path: str, value: object, report: bool = True) -> str | None:
        from .stores import URLS
        from .stores import store as open_store
        try:
            if not isinstance(value, str):
                raise ValueError(f'must be a store URL: {URLS}')
            if value.startswith('sqlite:///') and not value.startswith('sqlite:////'):
                value = 'sqlite:///' + self.file_path(value[len('sqlite:///'):])
            if value.startswith('rediss://'):
                value = self.tls_files(value)
            open_store(value).close()
            return value
        except MissingExtra as exc:     # redis
            raise MissingExtra(path, exc.extra, exc.name) from exc
        except (ValueError, ImportError) as exc:
            if not report:
                raise ValueError(str(exc).replace('store: ', '')) from None
            self.error(path, str(exc).replace('store: ', ''))
            return None

    def tls_files(self, url: str) -> str:
        """rediss:// with its certificate files (ssl_ca_certs=ca.pem ...)
        relative to the configuration file, as every file name in it is."""
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        from .redis_store import SSL_FILES
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if not any(name in SSL_FILES for name, _ in query):
            return url
        query = [(name, self.file_path(value) if name in SSL_FILES else value)
                 for name, value in query]
        return urlunsplit(parts._replace(query=urlencode(query, safe='/')))

    def dns(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error('dns', 'must be a mapping {nameservers, port, timeout}')
            return {}
        out = {}
        for key, item in value.items():
            kind = DNS_KEYS.get(key)
            if kind is None:
                self.error(f'dns.{key}', f'unknown option (one of {", ".join(DNS_KEYS)})')
                continue
            try:
                out[key] = self.convert(kind, item, f'dns.{key}')
            except ValueError:
                self.error(f'dns.{key}', f'must be {kind}')
        try:
            from .dns import Resolver
            Resolver(**out)
        except ValueError as exc:
            self.error('dns', str(exc))
            return {}
        return out
