"""The YAML configuration of `smtp-stack serve`: load it, check every value.

Every mistake is reported with its path in the document, all of them at
once, before anything listens:

    tls.sni_options.mail.example.com.cert: file not found
    listen[1].port: must be an integer from 0 to 65535
    users[2].password_hash: not a salted hash (make one with: smtp-stack hash-password)

The layout (docs/configuration.md has every key):

    name, banner, size, auth_methods, ...   every SmtpServer option, snake_case
    listen:  [{host, port, secure, lmtp}]   one process serves them all
    tls:     {key, cert, ca, ..., sni_options: {host: {key, cert, ...}}}  (files)
    users:   [{username, password_hash | secret}]  or a file holding that list
    deliver: {maildir: DIR} | {relay: {...}} | {callable: "pkg.module:function"}
    inbox:   {db, http, ...}                the development inbox as the delivery
    log_format: text | json                 how `serve` writes its log (docs/operating.md)
    metrics: HOST:PORT                      /metrics, /livez, /readyz (docs/operating.md)

Relative file names are taken from the directory of the config file. The
values are checked with the very validators SmtpServer uses (options.OPTIONS),
so a config that passes `check-config` starts.

The deliveries are checked by their rows in `sections.DELIVERIES` (a new
kind of delivery is one more row there), the policies by theirs in
`policies.POLICIES`.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import yaml

from .delivery import load_callable
from .envsubst import Substitutions, SubstitutionError, expand
from .extras import MissingExtra, needs_extra
from .logs import FORMATS
from .options import OPTIONS, Options, parse_size, suggest
from .sections import (DEFAULT_MAILDIR, DELIVERIES, SERVER_DEFAULTS, TOP_LEVEL, DeliverySpec,
                       default_delivery)
from .tls import TLS_OPTIONS, build_secure_contexts
from .users import User, parse_hash

if TYPE_CHECKING:
    from .policies.config import PolicySection

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 2525

TLS_KEYS = frozenset(TLS_OPTIONS) | {'sni_options', 'sni_callback', 'request_ocsp'}
FILE_KEYS = ('key', 'cert', 'ca')
HOOKS = frozenset({'on_socket', 'on_connect', 'on_auth', 'on_mail_from', 'on_rcpt_to',
                   'on_data', 'on_close'})
LISTENER_KEYS = ('host', 'port', 'secure', 'lmtp')
# store: see POLICY_KEYS; session (Node's client-side TLS session) means nothing in a file.
SERVER_KEYS = frozenset(OPTIONS) - TLS_KEYS - {'secure', 'lmtp', 'store', 'session'}
POLICY_KEYS = frozenset({'policies', 'store', 'dns'})     # smtp_stack/policies/config.py
USER_KEYS = ('username', 'password_hash', 'secret')
PLAIN_SECRET_METHODS = ('CRAM-MD5', 'XOAUTH2')
Error = tuple[str, str]         # (path in the document, message)


TOP_KEYS = SERVER_KEYS | POLICY_KEYS | set(TOP_LEVEL) | {'listen', 'tls', 'users', 'deliver',
                                                        'secure', 'lmtp', 'log_format',
                                                        'metrics'}


class ConfigError(Exception):
    """Every problem found, each as (path, message)."""

    def __init__(self, errors: Collection[Error]):
        self.errors = list(errors)
        super().__init__('\n'.join(self.lines()))

    def lines(self) -> list[str]:
        return [f'{path}: {message}' if path else message for path, message in self.errors]


@dataclass
class Listener:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    secure: bool = False
    lmtp: bool = False

    def describe(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'


@dataclass
class Config:
    """A checked configuration, ready to build servers from."""
    source: str | None = None
    listeners: list[Listener] = field(default_factory=lambda: [Listener()])
    options: dict[str, Any] = field(default_factory=dict)  # SmtpServer keyword arguments
    raw_options: dict[str, Any] = field(default_factory=dict)  # as written, to compare on reload
    tls: dict[str, Any] = field(default_factory=dict)      # TLS_OPTIONS + sni_options, PEM text
    users: list[User] | None = None
    deliver: DeliverySpec = field(
        default_factory=lambda: DeliverySpec('maildir', {'path': DEFAULT_MAILDIR}))
    policies: PolicySection | None = None       # when the section is used
    log_format: str | None = None       # 'text' or 'json'; None: not said (text)
    metrics: tuple[str, int] | None = None  # where /metrics is served; None: nowhere
    # What ${VAR} references took from the environment: check-config and the
    # errors show the reference, never the value (envsubst.py).
    substitutions: Substitutions = field(default_factory=Substitutions)

    def server_options(self, listener: Listener) -> dict[str, Any]:
        """The SmtpServer keyword arguments for one listener."""
        opts = dict(self.options)
        opts.update({k: v for k, v in self.tls.items() if v is not None})
        opts['secure'] = listener.secure
        opts['lmtp'] = listener.lmtp
        return opts

    @property
    def tls_wanted(self) -> bool:
        disabled = {str(c).upper() for c in self.options.get('disabled_commands', ())}
        return 'STARTTLS' not in disabled or any(each.secure for each in self.listeners)


# -- entry points ------------------------------------------------------------------

def load(path: str | None, *, host: str | None = None, port: int | None = None,
         maildir: str | None = None, workers: int | None = None,
         metrics: str | None = None) -> Config:
    """Read and check `path` (None: the defaults); command-line overrides last.
    Raises ConfigError listing every problem, or MissingExtra when a section
    needs an extra that is not installed."""
    data: object = {}
    base = os.getcwd()
    if path is not None:
        base = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, encoding='utf-8') as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError([('', f'{path}: file not found')]) from None
        except OSError as exc:
            raise ConfigError([('', f'{path}: cannot read: {exc.strerror or exc}')]) from None
        except yaml.YAMLError as exc:
            where = ''
            mark = getattr(exc, 'problem_mark', None)
            if mark is not None:
                where = f' (line {mark.line + 1}, column {mark.column + 1})'
            problem = getattr(exc, 'problem', None) or str(exc)
            raise ConfigError([('', f'{path}: not valid YAML{where}: {problem}')]) from None
        if data is None:
            data = {}
    try:
        data, substitutions = expand(data)
    except SubstitutionError as exc:
        raise ConfigError(exc.errors) from None
    try:
        config = parse(data, base, source=path, host=host, port=port, maildir=maildir,
                       workers=workers, metrics=metrics)
    except ConfigError as exc:
        raise ConfigError(substitutions.redact_errors(exc.errors)) from None
    config.substitutions = substitutions
    return config


def parse(data: object, base: str, *, source: str | None = None, host: str | None = None,
          port: int | None = None, maildir: str | None = None,
          workers: int | None = None, metrics: str | None = None) -> Config:
    checker = _Checker(base)
    if not isinstance(data, dict):      # nothing else can be checked
        kind = 'a list' if isinstance(data, list) else f'{type(data).__name__} {data!r}'
        raise ConfigError([('', f'the configuration must be a YAML mapping (key: value), '
                                f'not {kind}')])
    config = checker.config(data, source)
    if workers is not None:
        if workers < 1:
            checker.error('--workers', 'must be 1 or more')
        else:
            config.options['workers'] = workers
    if host is not None or port is not None:
        if len(config.listeners) > 1:
            checker.error('listen', '--host/--port cannot override several listeners')
        else:
            if host is not None:
                config.listeners[0].host = host
            if port is not None:
                config.listeners[0].port = port
    if maildir is not None:
        config.deliver = checker.delivery('maildir', os.path.abspath(maildir), '--maildir')
    if metrics is not None:
        config.metrics = checker.metrics('--metrics', metrics)
    if not checker.errors:
        checker.trial(config)
    if checker.errors:
        raise ConfigError(checker.errors)
    return config


# -- the checker -------------------------------------------------------------------

def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else str(key)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: 'a string', int: 'an integer', bool: 'true or false', dict: 'a mapping',
             list: 'a list', (int, float): 'a number'}
    return names.get(kind, str(kind))


class _Checker:

    def __init__(self, base: str):
        self.base = base
        self.errors: list[Error] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def reported_paths(self) -> set[str]:
        return {path.split('.', 1)[0] for path, _ in self.errors}

    def unknown(self, path: str, mapping: dict[Any, Any], allowed: Collection[str],
                hint: dict[str, str] | None = None) -> None:
        for key in mapping:
            if key in allowed:
                continue
            if hint and key in hint:
                self.error(_join(path, key), hint[key])
                continue
            meant = suggest(str(key), allowed)      # as SmtpServer(**options) does
            suggestion = f" (did you mean '{meant}'?)" if meant else ''
            self.error(_join(path, key), f'unknown option{suggestion}')

    def typed(self, path: str, value: object, kind: type | tuple[type, ...]) -> bool:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
            return True
        self.error(path, f'must be {_type_name(kind)}')
        return False

    def file_path(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(value)))

    # -- the document ------------------------------------------------------
    def config(self, data: dict[Any, Any], source: str | None) -> Config:
        config = Config(source=source)
        hint = {k: 'a TLS option: put it under tls:' for k in TLS_KEYS}
        hint['session'] = "Node's client-side TLS session: a server has no use for it"
        self.unknown('', data, TOP_KEYS, hint)
        template = Listener()     # top-level secure: and lmtp: are every listener's default
        for key in ('secure', 'lmtp'):
            if key in data and self.typed(key, data[key], bool):
                setattr(template, key, data[key])
        config.options, config.raw_options = self.server_options(data)
        if 'log_format' in data:
            if data['log_format'] in FORMATS:
                config.log_format = data['log_format']
            else:
                self.error('log_format', f'must be one of: {", ".join(FORMATS)}')
        config.listeners = self.listeners(data.get('listen'), template)
        if 'metrics' in data:
            config.metrics = self.metrics('metrics', data['metrics'])
        config.tls = self.tls(data.get('tls'))
        if 'users' in data:
            config.users = self.users(data['users'], config.options)
            if config.users is not None and 'on_auth' in config.options:
                self.error('on_auth', 'cannot be combined with users: (both would answer AUTH)')
        if POLICY_KEYS & set(data):
            key = sorted(POLICY_KEYS & set(data))[0]
            require_extra('policies', f'the {key}: section', 'smtp_stack.policies')
            from .policies import POLICIES
            from .policies.config import SectionChecker
            config.policies = SectionChecker(self, POLICIES).section(data)
            if config.policies.store:   # also the server's store= (per-client limits)
                config.options['store'] = config.policies.store
        top = [kind for kind in TOP_LEVEL if kind in data]
        if top:
            kind = top[0]
            extra, module = TOP_LEVEL[kind]
            require_extra(extra, f'the {kind}: section', module)
            if 'deliver' in data:
                self.error(kind, f'the {kind} is the delivery: use {kind}: or deliver:, not both')
            config.deliver = self.delivery(kind, data[kind], kind)
            for name, value in SERVER_DEFAULTS.get(kind, {}).items():
                config.options.setdefault(name, value)
        elif 'deliver' in data:
            config.deliver = self.deliver(data['deliver'])
        else:   # the default store: ./maildir of the working directory
            config.deliver = self.delivery('maildir', os.path.abspath(DEFAULT_MAILDIR),
                                           'deliver.maildir')
        return config

    def server_options(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        options, raw = {}, {}
        for name in sorted(SERVER_KEYS & set(data)):
            value = data[name]
            raw[name] = value
            try:
                value = self.convert(name, value)
                OPTIONS[name][1](value)
            except ValueError as exc:
                self.error(name, _strip_name(str(exc), name))
                continue
            options[name] = value
        return options, raw

    def convert(self, name: str, value: object) -> object:
        """YAML spellings of values that Python code gives as objects."""
        if name in HOOKS:
            if not isinstance(value, str):
                raise ValueError('must be "package.module:function"')
            return self.callable(value)
        if name == 'log_backend':
            if not isinstance(value, str):
                raise ValueError('must be a logger name')
            return logging.getLogger(value)
        if name == 'size':
            return parse_size(value)    # the parser SmtpServer uses: '10M' in both
        return value

    def callable(self, spec: str) -> Callable[..., Any]:
        # Modules next to the config file can be named without installing them.
        if self.base not in sys.path:
            sys.path.insert(0, self.base)
        return load_callable(spec)

    def listeners(self, value: object, template: Listener) -> list[Listener]:
        if value is None:
            return [replace(template)]
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, list) or not items:
            self.error('listen', 'must be a listener {host, port, secure, lmtp} or a list of them')
            return [replace(template)]
        out, seen = [], set()
        for i, item in enumerate(items):
            path = _join('listen', i) if isinstance(value, list) else 'listen'
            if not isinstance(item, dict):
                self.error(path, 'must be a mapping {host, port, secure, lmtp}')
                continue
            self.unknown(path, item, LISTENER_KEYS)
            listener = replace(template)
            if 'host' in item and self.typed(_join(path, 'host'), item['host'], str):
                listener.host = item['host']
            if 'port' in item:
                port = item['port']
                if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                    self.error(_join(path, 'port'), 'must be an integer from 0 to 65535')
                else:
                    listener.port = port
            for key in ('secure', 'lmtp'):
                if key in item and self.typed(_join(path, key), item[key], bool):
                    setattr(listener, key, item[key])
            where = (listener.host, listener.port)
            if listener.port and where in seen:
                self.error(path, f'{listener.describe()} is listed twice')
            seen.add(where)
            out.append(listener)
        return out or [replace(template)]

    def metrics(self, path: str, value: object) -> tuple[str, int] | None:
        """`metrics: HOST:PORT` (or --metrics): where /metrics is served.
        Its extra must be installed (MissingExtra otherwise)."""
        where = hostport_of(value) if isinstance(value, str) else None
        if where is None:
            self.error(path, 'must be HOST:PORT, such as 127.0.0.1:9125 or [::1]:9125')
            return None
        feature = 'the metrics: section' if path == 'metrics' else path
        require_extra('metrics', feature, 'smtp_stack.metrics.http')
        return where

    # -- tls ---------------------------------------------------------------
    def tls(self, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error('tls', 'must be a mapping')
            return {}
        self.unknown('tls', value, TLS_KEYS)
        settings = self.tls_entry('tls', value)
        if 'request_ocsp' in value:
            try:
                settings['request_ocsp'] = OPTIONS['request_ocsp'][1](value['request_ocsp'])
            except ValueError as exc:
                self.error('tls.request_ocsp', _strip_name(str(exc), 'request_ocsp'))
        if 'sni_callback' in value:
            try:
                settings['sni_callback'] = self.convert('on_socket', value['sni_callback'])
            except ValueError as exc:
                self.error('tls.sni_callback', str(exc))
        sni = value.get('sni_options')
        if sni is not None:
            if not isinstance(sni, dict):
                self.error('tls.sni_options', 'must be a mapping {hostname: {key, cert, ...}}')
            else:
                settings['sni_options'] = {}
                for host, entry in sni.items():
                    path = _join('tls.sni_options', host)
                    if not isinstance(entry, dict):
                        self.error(path, 'must be a mapping {key, cert, ...}')
                        continue
                    self.unknown(path, entry, TLS_OPTIONS)
                    settings['sni_options'][str(host)] = self.tls_entry(path, entry)
        return settings

    def tls_entry(self, path: str, entry: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key in TLS_OPTIONS:
            if key not in entry or entry[key] is None:
                continue
            value = entry[key]
            here = _join(path, key)
            if key in FILE_KEYS:
                pem = self.pem_files(here, value, many=key == 'ca')
                if pem is not None:
                    out[key] = pem
                continue
            try:
                OPTIONS[key][1](value)
                out[key] = value
            except ValueError as exc:
                self.error(here, _strip_name(str(exc), key))
        return out

    def pem_files(self, path: str, value: object, many: bool) -> str | list[str] | None:
        names = value if many and isinstance(value, list) else [value]
        texts = []
        for name in names:
            if not isinstance(name, str) or not name:
                self.error(path, 'must be a file name' + (' or a list of them' if many else ''))
                return None
            full = self.file_path(name)
            try:
                with open(full, encoding='ascii') as f:
                    text = f.read()
            except FileNotFoundError:
                self.error(path, f'{full}: file not found')
                return None
            except (OSError, UnicodeDecodeError) as exc:
                self.error(path, f'cannot read {full}: {getattr(exc, "strerror", None) or exc}')
                return None
            if '-----BEGIN ' not in text:
                self.error(path, f'{full} is not a PEM file')
                return None
            texts.append(text)
        return texts if many and isinstance(value, list) else texts[0]

    # -- users -------------------------------------------------------------
    def users(self, value: object, options: dict[str, Any]) -> list[User] | None:
        path = 'users'
        if isinstance(value, str):
            full = self.file_path(value)
            try:
                with open(full, encoding='utf-8') as f:
                    value = yaml.safe_load(f)
            except FileNotFoundError:
                self.error(path, f'{full}: file not found')
                return None
            except (OSError, yaml.YAMLError) as exc:
                self.error(path, f'{full}: cannot read: {exc}')
                return None
            if isinstance(value, dict) and set(value) == {'users'}:
                value = value['users']
        if value is None:
            value = []
        if not isinstance(value, list):
            self.error(path, 'must be a list of {username, password_hash} (or a file holding one)')
            return None
        methods = [str(m).upper() for m in options.get('auth_methods', ())]
        plain_ok = any(m in methods for m in PLAIN_SECRET_METHODS)
        users, names = [], set()
        hint = {'password': 'store a salted hash as password_hash (smtp-stack hash-password); '
                            'a plain secret: is only for CRAM-MD5/XOAUTH2'}
        for i, item in enumerate(value):
            here = _join(path, i)
            if not isinstance(item, dict):
                self.error(here, 'must be a mapping {username, password_hash}')
                continue
            self.unknown(here, item, USER_KEYS, hint)
            name = item.get('username')
            if not isinstance(name, str) or not name:
                self.error(_join(here, 'username'), 'must be a non-empty string')
                continue
            if name in names:
                self.error(_join(here, 'username'), f'{name!r} is listed twice')
            names.add(name)
            hashed, secret = item.get('password_hash'), item.get('secret')
            if hashed is None and secret is None:
                self.error(here, 'needs password_hash (or secret, for CRAM-MD5/XOAUTH2)')
                continue
            if hashed is not None:
                try:
                    parse_hash(hashed)
                except ValueError as exc:
                    self.error(_join(here, 'password_hash'), str(exc))
                    continue
            if secret is not None:
                if not isinstance(secret, str) or not secret:
                    self.error(_join(here, 'secret'), 'must be a non-empty string')
                    continue
                if not plain_ok:
                    self.error(_join(here, 'secret'),
                               'a plain secret is only for CRAM-MD5/XOAUTH2 users: add one of '
                               'them to auth_methods, or store password_hash instead')
                    continue
            users.append(User(name, hashed, secret))
        return users

    # -- deliver -------------------------------------------------------------
    def deliver(self, value: object) -> DeliverySpec:
        """`deliver:`, exactly one of the kinds that go under it."""
        kinds = [kind for kind in DELIVERIES if kind not in TOP_LEVEL]
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in kinds:
            if isinstance(value, dict):
                self.unknown('deliver', value, kinds)
            forms = ', '.join(f'{kind}: {DELIVERIES[kind].form}' for kind in kinds)
            self.error('deliver', f'must be exactly one of {forms}')
            return default_delivery()
        kind, spec = next(iter(value.items()))
        return self.delivery(kind, spec, _join('deliver', kind))

    def delivery(self, kind: str, value: object, where: str) -> DeliverySpec:
        """The section of delivery `kind`, checked by its row."""
        spec = DELIVERIES[kind].check(value, where, self)
        return DeliverySpec(kind, spec) if spec is not None else default_delivery()

    # -- a trial construction --------------------------------------------------
    def trial(self, config: Config) -> None:
        """Build the TLS contexts and check every listener's options as the
        server will, without listening: whatever they refuse is reported
        here, with its path."""
        if config.tls_wanted:
            name = config.options.get('name') or 'localhost'
            top = {k: v for k, v in config.tls.items() if k in TLS_OPTIONS}
            try:
                build_secure_contexts(top, name)
            except ValueError as exc:
                self.error('tls', str(exc))
                return
            for host, entry in (config.tls.get('sni_options') or {}).items():
                try:
                    build_secure_contexts({**top, 'sni_options': {host: entry}}, name)
                except ValueError as exc:
                    self.error(_join('tls.sni_options', host), _strip_sni(str(exc)))
            if self.errors:
                return
        for i, listener in enumerate(config.listeners):
            try:
                Options(**config.server_options(listener))    # the TLS contexts were built above
            except (TypeError, ValueError) as exc:
                self.error(_join('listen', i) if len(config.listeners) > 1 else '', str(exc))


def require_extra(extra: str, feature: str, module: str) -> None:
    """Import `module` now, so that a section whose extra is not installed
    stops the check with MissingExtra naming the section (the CLI prints
    it as one line and exits 2), not with a traceback when it starts."""
    try:
        with needs_extra(extra, feature):
            importlib.import_module(module)
    except MissingExtra as exc:
        if exc.feature == feature:
            raise
        raise MissingExtra(feature, extra, exc.name) from exc


def hostport_of(text: str) -> tuple[str, int] | None:
    """'127.0.0.1:9125', 'localhost:9125' or '[::1]:9125' -> (host, port);
    None when it is none of these (port 0: the system picks one)."""
    match = re.fullmatch(r'(?:\[([0-9A-Fa-f:.]+)\]|([\w.-]+)):(\d{1,5})', text.strip())
    if match is None or int(match[3]) > 65535:
        return None
    return match[1] or match[2], int(match[3])


def _strip_name(message: str, name: str) -> str:
    """'size must be ...' -> 'must be ...' (the path already names it)."""
    for prefix in (f'{name}: ', f'{name} '):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _strip_sni(message: str) -> str:
    return re.sub(r"^sni_options\[[^\]]*\]: ", '', message)
