"""The `milter:` section of a YAML file, for `smtp-stack milter --config FILE`.

    milter:
      listen: inet:127.0.0.1:8891        # or unix:/run/smtp-stack/milter.sock
      name: mx.example.com               # the authserv-id of authenticate's header
      middleware:                        # each 'package.module:name', a middleware
        - filters:check_recipients       #   fn(ctx, next), outermost first
      policies:                          # as in smtp-stack serve (docs/policies.md)
        - authenticate: {}
      store: sqlite:///state.db          # and dns:, on_store_error:, as there
      on_rcpt_to: filters:known_user     # the hooks, as 'package.module:function'
      size: 50M
      log_level: info
      log_format: text                   # or json

Modules next to the configuration file can be named without installing
them. Every mistake is reported with its path, and a configuration that
loads builds its server (the policies' trial construction included).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..delivery import load_callable
from ..envsubst import SubstitutionError, expand
from ..logs import FORMATS
from ..options import OPTIONS, parse_size, suggest
from .server import DEFAULT_LISTEN, OWN_OPTIONS, SMTP_OPTIONS, MilterServer, parse_listen

HOOKS = frozenset({'on_connect', 'on_auth', 'on_mail_from', 'on_rcpt_to', 'on_data',
                   'on_close'})
POLICY_KEYS = frozenset({'policies', 'store', 'dns'})
SECTION_KEYS = (SMTP_OPTIONS | OWN_OPTIONS | POLICY_KEYS
                | {'listen', 'middleware', 'log_format'}) - {'log_backend'}

Error = tuple[str, str]


class MilterConfigError(Exception):
    """Every problem of a configuration, as (path, message) pairs."""

    def __init__(self, errors: Collection[Error]) -> None:
        super().__init__('\n'.join(self.lines_of(errors)))
        self.errors = list(errors)

    @staticmethod
    def lines_of(errors: Collection[Error]) -> list[str]:
        return [f'{path}: {message}' if path else message for path, message in errors]

    def lines(self) -> list[str]:
        return self.lines_of(self.errors)


@dataclass
class MilterConfig:
    """A checked `milter:` section: `build()` makes the MilterServer."""
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    options: dict[str, Any] = field(default_factory=dict)
    middleware: list[Callable[..., Any]] = field(default_factory=list)
    middleware_names: list[str] = field(default_factory=list)
    policies: Any = None            # a policies.config.PolicySection, when used
    log_format: str = 'text'

    def build(self) -> MilterServer:
        """The server with its middleware, then its policies, in order."""
        server = MilterServer(**self.options)
        for fn in self.middleware:
            server.use(fn)
        for policy in self.policies.build() if self.policies else []:
            server.use(policy)
        return server

    def describe(self) -> str:
        parts = [f'middleware {", ".join(self.middleware_names)}'] if self.middleware else []
        if self.policies:
            parts.append('policies ' + ', '.join(name for name, _ in self.policies.entries))
        return '; '.join(parts) or 'no middleware'


def load(path: str, listen: str | None = None) -> MilterConfig:
    """Read and check `path`; `listen` overrides the file's. Raises
    MilterConfigError listing every problem."""
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise MilterConfigError([('', f'{path}: file not found')]) from None
    except OSError as exc:
        raise MilterConfigError([('', f'{path}: cannot read: {exc.strerror or exc}')]) from None
    except yaml.YAMLError as exc:
        raise MilterConfigError([('', f'{path}: not valid YAML: {exc}')]) from None
    try:
        data, substitutions = expand(data)
    except SubstitutionError as exc:
        raise MilterConfigError(exc.errors) from None
    try:
        return parse(data, base, listen)
    except MilterConfigError as exc:
        raise MilterConfigError(substitutions.redact_errors(exc.errors)) from None


def parse(data: object, base: str, listen: str | None = None) -> MilterConfig:
    checker = _Checker(base)
    config = checker.document(data)
    if listen is not None:
        config.listen = checker.listen('--listen', listen)
    if not checker.errors:
        try:
            config.build()      # what the options and policies say, tried once now
        except (TypeError, ValueError) as exc:
            checker.error('milter', str(exc))
    if checker.errors:
        raise MilterConfigError(checker.errors)
    return config


class _Checker:
    """Reports every problem with its path (the Reader the policies' checker takes)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.errors: list[Error] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def file_path(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(name)))

    def callable(self, spec: str) -> Callable[..., Any]:
        if self.base not in sys.path:       # modules next to the configuration file
            sys.path.insert(0, self.base)
        return load_callable(spec)

    def document(self, data: object) -> MilterConfig:
        config = MilterConfig()
        if not isinstance(data, dict) or not isinstance(data.get('milter'), dict):
            self.error('', 'the configuration must be a YAML mapping with a milter: section '
                           '(listen, middleware, policies, options)')
            return config
        for key in data:
            if key != 'milter':
                self.error(str(key), 'unknown section (everything goes under milter:)')
        section: dict[str, Any] = data['milter']
        for key in section:
            if key not in SECTION_KEYS:
                meant = suggest(str(key), SECTION_KEYS)
                hint = f" (did you mean '{meant}'?)" if meant else ''
                self.error(f'milter.{key}', f'unknown option{hint}')
        if 'listen' in section:
            config.listen = self.listen('milter.listen', section['listen'])
        if 'middleware' in section:
            self.middleware(section['middleware'], config)
        if section.get('log_format', 'text') not in FORMATS:
            self.error('milter.log_format', f'must be one of: {", ".join(FORMATS)}')
        else:
            config.log_format = section.get('log_format', 'text')
        for name in sorted((SMTP_OPTIONS | OWN_OPTIONS) & set(section)):
            value = section[name]
            try:
                config.options[name] = self.option(name, value)
            except ValueError as exc:
                self.error(f'milter.{name}', str(exc).replace(f'{name} ', '', 1) or 'bad value')
        if POLICY_KEYS & set(section):
            self.policies(section, config)
        return config

    def listen(self, path: str, value: object) -> list[str]:
        items = value if isinstance(value, list) else [value]
        good = []
        for item in items:
            try:
                parse_listen(item)      # type: ignore[arg-type]
            except ValueError as exc:
                self.error(path, str(exc))
                continue
            good.append(str(item))
        return good

    def middleware(self, value: object, config: MilterConfig) -> None:
        items = value if isinstance(value, list) else [value]
        for i, spec in enumerate(items):
            path = f'milter.middleware[{i}]'
            if not isinstance(spec, str):
                self.error(path, 'must be "package.module:name"')
                continue
            try:
                config.middleware.append(self.callable(spec))
                config.middleware_names.append(spec)
            except ValueError as exc:
                self.error(path, str(exc))

    def option(self, name: str, value: object) -> object:
        if name in HOOKS:
            if not isinstance(value, str):
                raise ValueError('must be "package.module:function"')
            return self.callable(value)
        if name == 'size':
            return parse_size(value)
        if name in OPTIONS and name not in OWN_OPTIONS:
            OPTIONS[name][1](value)
        return value

    def policies(self, section: dict[str, Any], config: MilterConfig) -> None:
        from ..config import require_extra
        from ..extras import MissingExtra
        try:
            require_extra('policies', 'the policies: section', 'smtp_stack.policies')
            from ..policies import POLICIES
            from ..policies.config import SectionChecker
            config.policies = SectionChecker(self, POLICIES).section(section)
        except MissingExtra as exc:
            self.error('milter.policies', str(exc))
            return
        if config.policies.store:       # also the server's store= (per-client limits)
            config.options['store'] = config.policies.store


def log_level_of(config: MilterConfig) -> int:
    """The logging level `log_level` asks for (INFO by default)."""
    value = config.options.get('log_level')
    return int(OPTIONS['log_level'][1](value)) if value is not None else logging.INFO
