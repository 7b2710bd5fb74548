"""Server options: defaults and validation, all at construction time.

Every option (docs/api.md) is declared once, as a field of `Options`: the
type of the value kept, the default and the validator. OPTIONS (name ->
default, validator) is derived from those fields. Unknown names raise
TypeError (naming the option meant, when one is close) and bad values
ValueError, so a mistake never surfaces later on a live connection.
`ServerOptions` is what `SmtpServer(**options)` accepts, for type checkers:
it is written out apart because the types given differ from the types kept
(`size: int | str` in, `int` out) and a TypedDict must be spelled out for a
type checker to read it; a test keeps its keys equal to the fields.
"""
from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import socket
import ssl
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import (TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypedDict, TypeVar,
                    cast)

from .sasl import MAX_RESPONSE_LENGTH
from .sasl import SUPPORTED as SUPPORTED_MECHANISMS

if TYPE_CHECKING:
    from .middleware import AddressHook, AuthHook, SessionHook, SocketHook
    from .state import Store


class LogLevels(IntEnum):
    """Levels of the `log_level` option, on the `logging` scale."""
    TRACE = 5
    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = logging.WARNING
    WARNING = logging.WARNING
    ERROR = logging.ERROR
    FATAL = logging.CRITICAL
    SILENT = 100


class LogBackend(Protocol):
    """What `log_backend` needs besides a `logging.Logger`: `.log()` as a
    Logger has it (Node's smtp-stack took any object with such methods)."""

    def log(self, level: int, msg: str, /, *args: Any) -> None: ...


# -- the types of the options, for type checkers ------------------------------

# The hooks' types are middleware.py's (SocketHook, SessionHook, AuthHook, AddressHook).
SniCallback: TypeAlias = 'Callable[[str], ssl.SSLContext | None]'
Pem: TypeAlias = 'str | bytes'
TlsVersion = Literal['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3']
# True or '*' (every peer), False or None (none), or IPs and CIDRs (may hold '*').
Trust: TypeAlias = 'bool | str | Collection[str] | None'
# What a check does when its store or DNS is down (state/fail_open.py).
OnStoreError = Literal['accept', 'tempfail']
ON_STORE_ERROR: tuple[OnStoreError, ...] = ('accept', 'tempfail')


class TlsOptions(TypedDict, total=False):
    """The TLS settings of one host name in `sni_options` (tls.TLS_OPTIONS)."""
    key: Pem | None
    cert: Pem | None
    ca: Pem | Sequence[Pem] | None
    min_version: TlsVersion
    ciphers: str | None
    honor_cipher_order: bool
    session_id_context: str | None
    request_cert: bool
    reject_unauthorized: bool


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of `SmtpServer(**options)`, one per field of
    `Options`, typed as given (docs/api.md has their meaning and defaults)."""
    name: str
    banner: str
    secure: bool
    lmtp: bool
    auth_methods: Sequence[str]
    auth_optional: bool
    allow_insecure_auth: bool
    no_auth_reply: bool
    disabled_commands: Collection[str]
    key: Pem | None
    cert: Pem | None
    ca: Pem | Sequence[Pem] | None
    min_version: TlsVersion
    ciphers: str | None
    honor_cipher_order: bool
    session_id_context: str | None
    request_cert: bool
    reject_unauthorized: bool
    request_ocsp: bool
    session: bytes | ssl.SSLSession | None
    sni_options: Mapping[str, TlsOptions]
    sni_callback: SniCallback | None
    socket_timeout: float
    close_timeout: float
    upgrade_timeout: float
    size: int | str
    max_recipients: int
    max_connections: int
    use_proxy: Trust
    use_xclient: Trust
    use_xforward: Trust
    ignored_hosts: Collection[str]
    disable_reverse_lookup: bool
    log_level: int | str
    log_backend: logging.Logger | LogBackend
    max_errors: int
    max_connections_per_ip: int
    max_auth_failures: int
    bare_newline: Literal['reject', 'normalize']
    lenient_addresses: bool
    min_data_rate: int
    greeting_delay: float
    reject_early_talkers: bool
    max_messages: int
    max_junk_commands: int
    max_line_length: int
    max_auth_failures_per_ip: int
    store: str | Store | None
    on_store_error: OnStoreError
    auth_failure_window: float
    workers: int
    on_socket: SocketHook | None
    on_connect: SessionHook | None
    on_auth: AuthHook | None
    on_mail_from: AddressHook | None
    on_rcpt_to: AddressHook | None
    on_data: SessionHook | None
    on_close: SessionHook | None


# -- values --------------------------------------------------------------------

Network: TypeAlias = 'ipaddress.IPv4Network | ipaddress.IPv6Network'


class TrustList:
    """Which peers an option trusts: True/'*' (all), False (none), or IPs/CIDRs."""

    def __init__(self, value: object, option: str):
        self.everyone = False
        self.networks: list[Network] = []
        if value is True or value == '*':
            self.everyone = True
        elif value in (False, None):
            pass
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                if item == '*':
                    self.everyone = True
                    continue
                try:
                    network = ipaddress.ip_network(str(item).strip(), strict=False)
                except ValueError:
                    raise ValueError(f'{option}: {item!r} is not an IP address or CIDR') from None
                self.networks.append(_unmapped(network))
        else:
            raise ValueError(f'{option} must be True, False, "*" or a list of IPs/CIDRs')

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def allows(self, ip: str | None) -> bool:
        if self.everyone:
            return True
        if not self.networks or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip.split('%', 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)


_MAPPED = ipaddress.IPv6Network('::ffff:0:0/96')


def _unmapped(net: Network) -> Network:
    """An IPv4-mapped IPv6 network as the IPv4 network it means."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        return ipaddress.ip_network(f'{mapped}/{max(net.prefixlen - 96, 0)}')
    return net


_SIZE = re.compile(r'\s*([0-9]+)\s*(?:([kmg])(?:i?b)?|b)?\s*\Z', re.IGNORECASE)
_SIZE_UNITS = {None: 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}


def parse_size(value: object) -> int:
    """Bytes, from an int >= 0 or a string with a binary suffix: '10M',
    '10 MiB', '512k', '1G' (K = 1024, as Exim reads message_size_limit).
    The one parser of `size`, for SmtpServer and the YAML alike."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError('size must be a number of bytes, e.g. 10485760 or 10M')
    unit = match[2].lower() if match[2] else None
    return int(match[1]) * _SIZE_UNITS[unit]


def suggest(name: str, known: Iterable[str]) -> str | None:
    """The known name someone who wrote `name` most likely meant: the
    snake_case of a Node spelling (authMethods, SNICallback), else the
    closest by difflib's measure, else None."""
    known = [str(k) for k in known]
    snake = re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', name).lower()
    if snake in known:
        return snake
    close = difflib.get_close_matches(snake, known, n=1)
    return close[0] if close else None


KNOWN_AUTH_METHODS = SUPPORTED_MECHANISMS
KNOWN_COMMANDS = frozenset({
    'HELO', 'EHLO', 'LHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT', 'RSET', 'NOOP',
    'QUIT', 'HELP', 'VRFY', 'EXPN', 'STARTTLS', 'AUTH', 'XCLIENT', 'XFORWARD',
    # extensions that can be switched off by name
    'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE',
    'DSN', 'CHUNKING', 'BINARYMIME', 'REQUIRETLS',
})

# -- validators: each takes the value given and returns the value kept -------
# Each is typed with the type it keeps, so that mypy checks it against the
# type declared for its option in `Options`.

Check = Callable[[Any], Any]
T = TypeVar('T')


def _of_type(name: str, kinds: tuple[type, ...], what: str) -> Check:
    def check(v: object) -> object:
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            raise ValueError(f'{name} must be {what}')
        return v
    return check


def _str(name: str) -> Callable[[object], str]:
    return _of_type(name, (str,), 'a string')


def _bool(name: str) -> Callable[[object], bool]:
    return _of_type(name, (bool,), 'True or False')


def _optional_str(name: str) -> Callable[[object], str | None]:
    return _of_type(name, (str, type(None)), 'a string or None')


def _seconds(name: str, allow_zero: bool = False) -> Callable[[object], float]:
    def check(v: object) -> float:
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or v < 0 or (v == 0 and not allow_zero)):
            kind = 'non-negative' if allow_zero else 'positive'
            raise ValueError(f'{name} must be a {kind} number of seconds')
        return float(v)
    return check


def _count(name: str, minimum: int = 0) -> Callable[[object], int]:
    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f'{name} must be an integer >= {minimum}')
        return v
    return check


def _one_pem(name: str, v: object, many: bool) -> bytes:
    if isinstance(v, str):
        v = v.encode('ascii') if v.isascii() else None
    if not isinstance(v, bytes) or b'-----BEGIN' not in v:
        raise ValueError(f'{name} must be PEM text (str or bytes)'
                         + (' or a list of them' if many else ''))
    return v


def _pem(name: str) -> Callable[[object], bytes | None]:
    """PEM text as bytes (key, cert)."""
    return lambda v: None if v is None else _one_pem(name, v, many=False)


def _pems(name: str) -> Callable[[object], bytes | list[bytes] | None]:
    """PEM text as bytes, or a list of them (ca)."""
    def check(v: object) -> bytes | list[bytes] | None:
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return [_one_pem(name, item, many=True) for item in v]
        return _one_pem(name, v, many=True)
    return check


def _callable_or_none(name: str) -> Check:
    def check(v: object) -> object:
        if v is not None and not callable(v):
            raise ValueError(f'{name} must be callable')
        return v
    return check


def _auth_methods(v: object) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise ValueError('auth_methods must be a list of mechanism names')
    methods: list[str] = []
    for m in v:
        m = str(m).upper()
        if m not in KNOWN_AUTH_METHODS:
            raise ValueError(f'auth_methods: unknown mechanism {m!r}')
        if m not in methods:
            methods.append(m)
    # PLAIN and LOGIN are always on (docs/api.md).
    for m in ('LOGIN', 'PLAIN'):
        if m not in methods:
            methods.insert(0, m)
    return tuple(methods)


def _disabled_commands(v: object) -> frozenset[str]:
    if isinstance(v, str) or not isinstance(v, (list, tuple, set, frozenset)):
        raise ValueError('disabled_commands must be a list of command names')
    names = frozenset(str(c).upper() for c in v)
    unknown = names - KNOWN_COMMANDS
    if unknown:
        raise ValueError(f'disabled_commands: unknown command(s) {sorted(unknown)}')
    return names


def _min_version(v: object) -> str:
    if v not in ('TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'):
        raise ValueError("min_version must be one of 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'")
    return str(v)


def _request_ocsp(v: object) -> bool:
    """OCSP stapling (Node's requestOCSP): False only; docs/decisions.md says why."""
    if _bool('request_ocsp')(v):
        raise ValueError('request_ocsp=True is not supported: OCSP stapling needs a server-side '
                         "status callback that Python's ssl module (gevent's TLS) does not have")
    return False


def _session(v: object) -> bytes | ssl.SSLSession | None:
    """Node's client-side TLS `session`: accepted for ported code, unused."""
    if v is not None and not isinstance(v, (bytes, ssl.SSLSession)):
        raise ValueError('session must be None (a client-side TLS session; unused by a server)')
    return v


def _sni_options(v: object) -> dict[str, TlsOptions]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(o, dict)
                                          for k, o in v.items()):
        raise ValueError('sni_options must be a dict {hostname: {key, cert, ...}}')
    return v


def _trust(name: str) -> Callable[[object], TrustList]:
    return lambda v: TrustList(v, name)


def _ignored_hosts(v: object) -> TrustList:
    if isinstance(v, str) or not isinstance(v, (list, tuple, set)):
        raise ValueError('ignored_hosts must be a list of IPs/CIDRs')
    return TrustList(list(v), 'ignored_hosts')


def _log_level(v: object) -> int:
    if isinstance(v, str):
        try:
            return LogLevels[v.upper()]
        except KeyError:
            raise ValueError(f'log_level: unknown level {v!r}') from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError('log_level must be a LogLevels value')
    return int(v)


def _store(v: object) -> Store | None:
    """A URL (memory:, sqlite:///PATH, redis://HOST:PORT/DB) or a store object.
    The stores are the core's (smtp_stack.state); only a Redis URL needs an
    extra (redis-py), and without it MissingExtra (an ImportError) says so."""
    if v is None:
        return None
    from .state import as_store     # only when a store is given: most servers have none
    return as_store(v)      # type: ignore[arg-type]   # as_store checks it


def _on_store_error(v: object) -> OnStoreError:
    for mode in ON_STORE_ERROR:
        if v == mode:
            return mode
    raise ValueError("on_store_error must be 'accept' or 'tempfail'")


def _log_backend(v: object) -> logging.Logger | LogBackend:
    if v is None or not callable(getattr(v, 'log', None)):
        raise ValueError('log_backend must be a logging.Logger (or have .log(level, msg, *args))')
    return cast('logging.Logger | LogBackend', v)     # it has .log()


def _bare_newline(v: object) -> str:
    if v not in ('reject', 'normalize'):
        raise ValueError("bare_newline must be 'reject' or 'normalize'")
    return str(v)


def _workers(v: object) -> int:
    count = _count('workers', 1)(v)
    if count > 1 and not hasattr(os, 'fork'):
        raise ValueError('workers > 1 needs os.fork (not available on this platform)')
    return count


def _logger() -> logging.Logger:
    return logging.getLogger('smtp_stack')


# -- the options ----------------------------------------------------------------

def option(default: object, check: Callable[[Any], T]) -> T:
    """One option of `Options`: its default (a callable default is called
    for each server: a fresh dict, the host's name) and the validator that
    turns what a caller gives (or the default) into the value kept.

    Typed as the value kept, so that mypy checks the validator against the
    attribute's declared type. At run time a dataclass field that keeps both
    in its metadata (OPTIONS reads them there); `Options.__init__`, not the
    dataclass, applies them."""
    return cast(T, field(metadata={'default': default, 'check': check}))


@dataclass(frozen=True, init=False, repr=False, eq=False)
class Options:
    """The validated options, one attribute per option (`options.size`),
    declared once here: the type kept, the default, the validator. OPTIONS
    is derived from these fields; docs/api.md gives each option's meaning.

    Frozen: a server's options never change once validated (the EHLO
    keywords are cached per Options object, weakly, by identity). `eq=False`
    keeps the identity hash that cache needs."""

    name: str = option(socket.getfqdn, _str('name'))
    banner: str = option('', _str('banner'))
    secure: bool = option(False, _bool('secure'))
    lmtp: bool = option(False, _bool('lmtp'))
    auth_methods: tuple[str, ...] = option(('PLAIN', 'LOGIN'), _auth_methods)
    auth_optional: bool = option(True, _bool('auth_optional'))
    allow_insecure_auth: bool = option(False, _bool('allow_insecure_auth'))
    no_auth_reply: bool = option(False, _bool('no_auth_reply'))
    disabled_commands: frozenset[str] = option((), _disabled_commands)
    key: bytes | None = option(None, _pem('key'))
    cert: bytes | None = option(None, _pem('cert'))
    ca: bytes | list[bytes] | None = option(None, _pems('ca'))
    min_version: str = option('TLSv1.2', _min_version)
    ciphers: str | None = option(None, _optional_str('ciphers'))
    honor_cipher_order: bool = option(False, _bool('honor_cipher_order'))
    session_id_context: str | None = option(None, _optional_str('session_id_context'))
    request_cert: bool = option(False, _bool('request_cert'))
    reject_unauthorized: bool = option(True, _bool('reject_unauthorized'))
    # Node's tls.TLSSocket options that smtp-stack passed through (docs/api.md).
    request_ocsp: bool = option(False, _request_ocsp)
    session: bytes | ssl.SSLSession | None = option(None, _session)
    sni_options: dict[str, TlsOptions] = option(dict, _sni_options)
    sni_callback: SniCallback | None = option(None, _callable_or_none('sni_callback'))
    socket_timeout: float = option(60.0, _seconds('socket_timeout'))
    close_timeout: float = option(30.0, _seconds('close_timeout', allow_zero=True))
    upgrade_timeout: float = option(10.0, _seconds('upgrade_timeout'))
    size: int = option(0, parse_size)
    max_recipients: int = option(1000, _count('max_recipients', 1))
    max_connections: int = option(0, _count('max_connections'))
    use_proxy: TrustList = option(False, _trust('use_proxy'))
    use_xclient: TrustList = option(False, _trust('use_xclient'))
    use_xforward: TrustList = option(False, _trust('use_xforward'))
    ignored_hosts: TrustList = option((), _ignored_hosts)
    disable_reverse_lookup: bool = option(False, _bool('disable_reverse_lookup'))
    log_level: int = option(LogLevels.INFO, _log_level)
    log_backend: logging.Logger | LogBackend = option(_logger, _log_backend)
    max_errors: int = option(20, _count('max_errors'))
    max_connections_per_ip: int = option(0, _count('max_connections_per_ip'))
    max_auth_failures: int = option(3, _count('max_auth_failures', 1))
    bare_newline: str = option('reject', _bare_newline)
    lenient_addresses: bool = option(False, _bool('lenient_addresses'))
    # Hardening (docs/security.md, docs/api.md): Postfix/Exim-like defaults.
    min_data_rate: int = option(500, _count('min_data_rate'))
    greeting_delay: float = option(0.0, _seconds('greeting_delay', allow_zero=True))
    reject_early_talkers: bool = option(False, _bool('reject_early_talkers'))
    max_messages: int = option(1000, _count('max_messages'))
    max_junk_commands: int = option(100, _count('max_junk_commands'))
    max_line_length: int = option(0, _count('max_line_length'))
    max_auth_failures_per_ip: int = option(0, _count('max_auth_failures_per_ip'))
    # Where max_connections_per_ip and max_auth_failures_per_ip are counted:
    # None (this process), or a store shared by workers and machines.
    store: Store | None = option(None, _store)
    # A store or DNS that fails: skip the check ('accept') or answer 451 4.3.5.
    on_store_error: OnStoreError = option('accept', _on_store_error)
    auth_failure_window: float = option(600.0, _seconds('auth_failure_window'))
    workers: int = option(1, _workers)
    on_socket: SocketHook | None = option(None, _callable_or_none('on_socket'))
    on_connect: SessionHook | None = option(None, _callable_or_none('on_connect'))
    on_auth: AuthHook | None = option(None, _callable_or_none('on_auth'))
    on_mail_from: AddressHook | None = option(None, _callable_or_none('on_mail_from'))
    on_rcpt_to: AddressHook | None = option(None, _callable_or_none('on_rcpt_to'))
    on_data: SessionHook | None = option(None, _callable_or_none('on_data'))
    on_close: SessionHook | None = option(None, _callable_or_none('on_close'))

    def __init__(self, **given: Any):
        unknown = given.keys() - OPTIONS.keys()
        if unknown:
            raise TypeError(f'SmtpServer got unknown option(s): {unknown_options(unknown)}')
        for name, (default, check) in OPTIONS.items():
            if name in given:
                value = check(given[name])
            else:       # a default is validated too: False becomes a TrustList...
                value = check(default() if callable(default) else default)
            object.__setattr__(self, name, value)       # frozen: only here

    def enabled(self, command: str) -> bool:
        return command not in self.disabled_commands


# name: (default, validator), from the fields of Options, in their order: what
# config.py checks the YAML with, the CLI its --log-level, the docs tests read.
OPTIONS: dict[str, tuple[object, Check]] = {
    f.name: (f.metadata['default'], f.metadata['check']) for f in fields(Options)}

# Longest command line (RFC 5321 4.5.3.1.4: 512 octets with CRLF) and the
# longest AUTH response line (RFC 4954 4: 12,288 octets).
MAX_COMMAND_LINE = 510
MAX_AUTH_LINE = MAX_RESPONSE_LENGTH


def unknown_options(names: Iterable[str]) -> str:
    """'sise (did you mean 'size'?), foo': the unknown names, each with the
    option it most likely meant."""
    parts = []
    for name in sorted(names):
        meant = suggest(name, OPTIONS)
        parts.append(f"{name} (did you mean '{meant}'?)" if meant else name)
    return ', '.join(parts)
