"""Server options: defaults and validation, all at construction time.

Every option (docs/api.md) is declared once in OPTIONS with its default and a
validator; unknown names raise TypeError and bad values ValueError, so a
mistake never surfaces later on a live connection.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import threading
import time
from enum import IntEnum

from .sasl import MAX_RESPONSE_LENGTH
from .sasl import SUPPORTED as SUPPORTED_MECHANISMS


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


class RecordLog:
    """`log(level, msg, *args)` into a `logging.Logger` at a third of the
    cost of `Logger.log()`.

    Logger.log() walks the stack for the caller and derives every field of
    a record again (path, file and module names, process, thread); a session
    logs a line or more per message, so at INFO that is most of what logging
    costs (a tenth of the server's CPU in benchmark (a)). Here each record is
    a copy of a template made once by `logging.LogRecord` (so it has every
    field this Python's records have), with its message, level, time and
    thread filled in, handed to `Logger.handle()`: levels, filters, handlers
    and propagation work as usual. With a custom record factory, or a Logger
    subclass that makes its own records, it is plain `Logger.log()`.
    """

    __slots__ = ('logger', '_templates', '_forks')

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._templates: dict = {}  # level -> the fields of a record at that level
        self._forks = _forks_seen[0]

    def log(self, level: int, msg: str, *args) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        if (logging.getLogRecordFactory() is not logging.LogRecord
                or type(logger).makeRecord is not logging.Logger.makeRecord):
            logger.log(level, msg, *args)
            return
        if self._forks != _forks_seen[0]:
            self._templates = {}        # made again in a forked worker: its pid
            self._forks = _forks_seen[0]
        template = self._templates.get(level)
        if template is None:
            template = self._make_template(level)
        now = time.time()
        record = _new_record(logging.LogRecord)
        record.__dict__ = fields = template.copy()     # a copy of a dict is a memcpy
        fields['msg'] = msg
        fields['args'] = args
        fields['created'] = now
        fields['msecs'] = (now - int(now)) * 1000 // 1
        fields['relativeCreated'] = template['relativeCreated'] + (now - template['created']) * 1000
        thread = template['thread']
        if thread is not None and thread != threading.get_ident():
            fields['thread'] = threading.get_ident()
            fields['threadName'] = threading.current_thread().name
        if logger.filters or logger.disabled:
            logger.handle(record)
        else:
            logger.callHandlers(record)     # what handle() does next, one call less

    def _make_template(self, level: int) -> dict:
        """A record's fields at `level`, its level name as logging names it
        now (a name given with addLevelName later is not seen)."""
        record = logging.LogRecord(self.logger.name, level, _LOG_PATH, 0,
                                   '', (), None, 'log')
        self._templates[level] = template = dict(record.__dict__)
        return template


# Bumped in a forked child, so that templates are remade with its pid
# (rather than asking the kernel for the pid on every record).
_forks_seen = [0]


def _count_fork() -> None:
    _forks_seen[0] += 1


os.register_at_fork(after_in_child=_count_fork)
_new_record = object.__new__
_LOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'engine', 'engine.py')


def record_log(backend):
    """What a session logs through: a RecordLog for a `logging.Logger`,
    any other backend (anything with `.log(level, msg, *args)`) as it is."""
    return RecordLog(backend) if isinstance(backend, logging.Logger) else backend


class TrustList:
    """Which peers an option trusts: True/'*' (all), False (none), or IPs/CIDRs."""

    def __init__(self, value, option: str):
        self.everyone = False
        self.networks: list = []
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
                    self.networks.append(_unmapped(ipaddress.ip_network(str(item).strip(), strict=False)))
                except ValueError:
                    raise ValueError(f'{option}: {item!r} is not an IP address or CIDR') from None
        else:
            raise ValueError(f'{option} must be True, False, "*" or a list of IPs/CIDRs')

    def __bool__(self):
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
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)


_MAPPED = ipaddress.ip_network('::ffff:0:0/96')


def _unmapped(net):
    """An IPv4-mapped IPv6 network as the IPv4 network it means."""
    if net.version == 6 and net.subnet_of(_MAPPED):
        return ipaddress.ip_network(f'{net.network_address.ipv4_mapped}/{max(net.prefixlen - 96, 0)}')
    return net


KNOWN_AUTH_METHODS = SUPPORTED_MECHANISMS
KNOWN_COMMANDS = frozenset({
    'HELO', 'EHLO', 'LHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT', 'RSET', 'NOOP',
    'QUIT', 'HELP', 'VRFY', 'EXPN', 'STARTTLS', 'AUTH', 'XCLIENT', 'XFORWARD',
    # extensions that can be switched off by name
    'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE',
    'DSN', 'CHUNKING', 'BINARYMIME', 'REQUIRETLS',
})


def _str(name):
    def check(v):
        if not isinstance(v, str):
            raise ValueError(f'{name} must be a string')
        return v
    return check


def _bool(name):
    def check(v):
        if not isinstance(v, bool):
            raise ValueError(f'{name} must be True or False')
        return v
    return check


def _seconds(name, allow_zero=False):
    def check(v):
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or v < 0 or (v == 0 and not allow_zero)):
            raise ValueError(f'{name} must be a {"non-negative" if allow_zero else "positive"} number of seconds')
        return float(v)
    return check


def _count(name, minimum=0):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f'{name} must be an integer >= {minimum}')
        return v
    return check


def _pem(name):
    def check(v):
        if v is None:
            return None
        if isinstance(v, str):
            v = v.encode('ascii', 'strict') if v.isascii() else None
        if not isinstance(v, bytes) or b'-----BEGIN' not in v:
            raise ValueError(f'{name} must be PEM text (str or bytes)')
        return v
    return check


def _optional_str(name):
    def check(v):
        if v is not None and not isinstance(v, str):
            raise ValueError(f'{name} must be a string or None')
        return v
    return check


def _callable_or_none(name):
    def check(v):
        if v is not None and not callable(v):
            raise ValueError(f'{name} must be callable')
        return v
    return check


def _auth_methods(v):
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise ValueError('auth_methods must be a list of mechanism names')
    methods = []
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


def _disabled_commands(v):
    if isinstance(v, str) or not isinstance(v, (list, tuple, set, frozenset)):
        raise ValueError('disabled_commands must be a list of command names')
    names = frozenset(str(c).upper() for c in v)
    unknown = names - KNOWN_COMMANDS
    if unknown:
        raise ValueError(f'disabled_commands: unknown command(s) {sorted(unknown)}')
    return names


def _min_version(v):
    if v not in ('TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'):
        raise ValueError("min_version must be one of 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'")
    return v


def _sni_options(v):
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(o, dict) for k, o in v.items()):
        raise ValueError('sni_options must be a dict {hostname: {key, cert, ...}}')
    return v


def _trust(name):
    return lambda v: TrustList(v, name)


def _ignored_hosts(v):
    if isinstance(v, str) or not isinstance(v, (list, tuple, set)):
        raise ValueError('ignored_hosts must be a list of IPs/CIDRs')
    return TrustList(list(v), 'ignored_hosts')


def _log_level(v):
    if isinstance(v, str):
        try:
            return LogLevels[v.upper()]
        except KeyError:
            raise ValueError(f'log_level: unknown level {v!r}') from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError('log_level must be a LogLevels value')
    return int(v)


def _store(v):
    """A URL (memory:, sqlite:///PATH, redis://HOST:PORT/DB) or a store object."""
    if v is None:
        return None
    try:
        from .policies.stores import as_store
    except ImportError as exc:
        raise ValueError(f"store: needs the policies extra: pip install 'smtp_stack[policies]' ({exc})") from None
    return as_store(v)


def _log_backend(v):
    if v is None or not callable(getattr(v, 'log', None)):
        raise ValueError('log_backend must be a logging.Logger (or have .log(level, msg, *args))')
    return v


def _bare_newline(v):
    if v not in ('reject', 'normalize'):
        raise ValueError("bare_newline must be 'reject' or 'normalize'")
    return v


def _workers(v):
    v = _count('workers', 1)(v)
    if v > 1 and not hasattr(os, 'fork'):
        raise ValueError('workers > 1 needs os.fork (not available on this platform)')
    return v


# name: (default, validator); a default that is a callable builds a fresh value.
OPTIONS = {
    'name': (socket.getfqdn, _str('name')),
    'banner': ('', _str('banner')),
    'secure': (False, _bool('secure')),
    'lmtp': (False, _bool('lmtp')),
    'auth_methods': (('PLAIN', 'LOGIN'), _auth_methods),
    'auth_optional': (True, _bool('auth_optional')),
    'allow_insecure_auth': (False, _bool('allow_insecure_auth')),
    'no_auth_reply': (False, _bool('no_auth_reply')),
    'disabled_commands': ((), _disabled_commands),
    'key': (None, _pem('key')),
    'cert': (None, _pem('cert')),
    'ca': (None, _pem('ca')),
    'min_version': ('TLSv1.2', _min_version),
    'ciphers': (None, _optional_str('ciphers')),
    'honor_cipher_order': (False, _bool('honor_cipher_order')),
    'session_id_context': (None, _optional_str('session_id_context')),
    'request_cert': (False, _bool('request_cert')),
    'reject_unauthorized': (True, _bool('reject_unauthorized')),
    'sni_options': (dict, _sni_options),
    'sni_callback': (None, _callable_or_none('sni_callback')),
    'socket_timeout': (60.0, _seconds('socket_timeout')),
    'close_timeout': (30.0, _seconds('close_timeout', allow_zero=True)),
    'upgrade_timeout': (10.0, _seconds('upgrade_timeout')),
    'size': (0, _count('size')),
    'max_recipients': (1000, _count('max_recipients', 1)),
    'max_connections': (0, _count('max_connections')),
    'use_proxy': (False, _trust('use_proxy')),
    'use_xclient': (False, _trust('use_xclient')),
    'use_xforward': (False, _trust('use_xforward')),
    'ignored_hosts': ((), _ignored_hosts),
    'disable_reverse_lookup': (False, _bool('disable_reverse_lookup')),
    'log_level': (LogLevels.INFO, _log_level),
    'log_backend': (lambda: logging.getLogger('smtp_stack'), _log_backend),
    'max_errors': (20, _count('max_errors')),
    'max_connections_per_ip': (0, _count('max_connections_per_ip')),
    'max_auth_failures': (3, _count('max_auth_failures', 1)),
    'bare_newline': ('reject', _bare_newline),
    'lenient_addresses': (False, _bool('lenient_addresses')),
    # Hardening (docs/security.md, docs/api.md): Postfix/Exim-like defaults.
    'min_data_rate': (500, _count('min_data_rate')),
    'greeting_delay': (0.0, _seconds('greeting_delay', allow_zero=True)),
    'reject_early_talkers': (False, _bool('reject_early_talkers')),
    'max_messages': (1000, _count('max_messages')),
    'max_junk_commands': (100, _count('max_junk_commands')),
    'max_line_length': (0, _count('max_line_length')),
    'max_auth_failures_per_ip': (0, _count('max_auth_failures_per_ip')),
    # Where max_connections_per_ip and max_auth_failures_per_ip are counted:
    # None (this process), or a policies store shared by workers and machines.
    'store': (None, _store),
    'auth_failure_window': (600.0, _seconds('auth_failure_window')),
    'workers': (1, _workers),
    'on_socket': (None, _callable_or_none('on_socket')),
    'on_connect': (None, _callable_or_none('on_connect')),
    'on_auth': (None, _callable_or_none('on_auth')),
    'on_mail_from': (None, _callable_or_none('on_mail_from')),
    'on_rcpt_to': (None, _callable_or_none('on_rcpt_to')),
    'on_data': (None, _callable_or_none('on_data')),
    'on_close': (None, _callable_or_none('on_close')),
}

# Longest command line (RFC 5321 4.5.3.1.4: 512 octets with CRLF) and the
# longest AUTH response line (RFC 4954 4: 12,288 octets).
MAX_COMMAND_LINE = 510
MAX_AUTH_LINE = MAX_RESPONSE_LENGTH


class Options:
    """The validated options, as attributes (`options.size`)."""

    def __init__(self, **given):
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise TypeError(f'SmtpServer got unknown option(s): {", ".join(unknown)}')
        for name, (default, check) in OPTIONS.items():
            if name in given:
                value = check(given[name])
            else:
                value = default() if callable(default) else default
                if name in ('disabled_commands', 'ignored_hosts', 'use_proxy',
                            'use_xclient', 'use_xforward', 'auth_methods'):
                    value = check(value)
            setattr(self, name, value)

    def enabled(self, command: str) -> bool:
        return command not in self.disabled_commands
