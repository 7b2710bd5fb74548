"""smtp_stack.options: every option's default and validation, at construction
time (docs/api.md: unknown names -> TypeError, bad values -> ValueError)."""
from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import math
import os
import re
import socket
import weakref

import pytest

import smtp_stack
from smtp_stack.options import (OPTIONS, LogLevels, Options, ServerOptions, TlsOptions,
                                TrustList, parse_size)
from smtp_stack.tls import TLS_OPTIONS

PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'


def make(**kw) -> Options:
    kw.setdefault('name', 'mx.test')     # skip the getfqdn() lookup
    return Options(**kw)


def hook(*args):
    return None


# --- unknown names ------------------------------------------------------------
@pytest.mark.parametrize('kw', [{'bogus': 1}, {'Size': 10}, {'maxRecipients': 5},
                                {'authMethods': ['PLAIN']}, {'size': 1, 'bogus': 1}])
def test_unknown_option_is_a_type_error(kw):
    with pytest.raises(TypeError):
        make(**kw)


def test_unknown_names_are_listed_and_win_over_bad_values():
    with pytest.raises(TypeError, match='bogus.*other'):
        make(other=1, bogus=2, size=-1)


def test_smtp_server_rejects_unknown_option():
    with pytest.raises(TypeError):
        smtp_stack.SmtpServer(bogus=1)


def test_smtp_server_rejects_bad_value():
    with pytest.raises(ValueError):
        smtp_stack.SmtpServer(name='mx.test', size=-1)


# The unknown name's likely meaning, as the YAML checker gives it.
@pytest.mark.parametrize('given, meant', [
    ('sise', 'size'), ('max_recipient', 'max_recipients'), ('authMethods', 'auth_methods'),
    ('SNICallback', 'sni_callback'), ('socketTimeout', 'socket_timeout'),
    ('requestOCSP', 'request_ocsp'), ('logBackend', 'log_backend'),
])
def test_unknown_option_names_the_one_meant(given, meant):
    with pytest.raises(TypeError) as caught:
        smtp_stack.SmtpServer(**{given: 1})
    assert str(caught.value) == (
        f"SmtpServer got unknown option(s): {given} (did you mean '{meant}'?)")


def test_unknown_option_far_from_any_is_named_alone():
    with pytest.raises(TypeError) as caught:
        make(xyzzy=1, sise=2)
    assert str(caught.value) == \
        "SmtpServer got unknown option(s): sise (did you mean 'size'?), xyzzy"


# --- the original's options (Node smtp-stack): docs/api.md ------------------------
def test_request_ocsp_false_and_session_none_are_the_originals_defaults():
    opts = make(request_ocsp=False, session=None)
    assert opts.request_ocsp is False and opts.session is None


def test_request_ocsp_true_is_refused_in_one_line_that_says_why():
    with pytest.raises(ValueError) as caught:
        smtp_stack.SmtpServer(name='mx.test', request_ocsp=True)
    assert str(caught.value) == (
        'request_ocsp=True is not supported: OCSP stapling needs a server-side status '
        "callback that Python's ssl module (gevent's TLS) does not have")


def test_a_client_tls_session_is_accepted_and_unused():
    assert make(session=b'\x30\x82').session == b'\x30\x82'


# --- size: one syntax for SmtpServer and the YAML (config.py uses parse_size) -------
@pytest.mark.parametrize('given, size', [
    (0, 0), (1024, 1024), ('0', 0), ('2048', 2048), ('10M', 10 << 20), ('10m', 10 << 20),
    ('10 MiB', 10 << 20), ('10MB', 10 << 20), ('512k', 512 << 10), ('512KiB', 512 << 10),
    ('1G', 1 << 30), (' 25M ', 25 << 20), ('100b', 100),
])
def test_size_in_bytes_or_with_a_binary_suffix(given, size):
    assert make(size=given).size == size
    assert parse_size(given) == size


def test_size_error_shows_the_syntax():
    with pytest.raises(ValueError, match=r'^size must be a number of bytes, e\.g\. 10485760 or 10M$'):
        smtp_stack.SmtpServer(name='mx.test', size='10 apples')


# --- the three lists of options cannot drift apart ----------------------------------
def test_server_options_typeddict_has_exactly_the_options_of_the_table():
    assert set(ServerOptions.__annotations__) == set(OPTIONS)
    assert ServerOptions.__total__ is False


def test_validated_options_declare_exactly_the_options_of_the_table():
    assert set(Options.__annotations__) == set(OPTIONS)


def test_sni_entry_typeddict_has_exactly_the_tls_options():
    assert set(TlsOptions.__annotations__) == set(TLS_OPTIONS)


def test_the_table_is_read_from_the_one_declaration_of_each_option():
    declared = {f.name: (f.metadata['default'], f.metadata['check'])
                for f in dataclasses.fields(Options)}
    assert list(OPTIONS.items()) == list(declared.items())


# --- the validated options: frozen, hashed by identity --------------------------
def test_options_cannot_be_changed_once_validated():
    opts = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.size = 10      # type: ignore[misc]
    assert opts.size == 0


def test_options_are_hashed_by_identity_and_weakly_referenceable():
    # greeting.py caches the EHLO keywords in a WeakKeyDictionary by Options.
    a, b = make(), make()
    cache = weakref.WeakKeyDictionary({a: 1, b: 2})
    assert a != b and cache[a] == 1 and cache[b] == 2
    del a
    gc.collect()
    assert list(cache.values()) == [2]


# --- bad values: one row per option -------------------------------------------
_BOOL_BAD = [1, 0, 'yes', None]
_HOOK_BAD = [1, 'hook', object()]

BAD_VALUES = {
    'store': ['nosuch://x', 5, 'sqlite:'],
    'on_store_error': ['reject', 'TEMPFAIL', 'fail_open', None, True, 451],
    'name': [None, 1, b'mx.test'],
    'banner': [None, 1, b'hi'],
    'secure': _BOOL_BAD,
    'lmtp': _BOOL_BAD,
    'auth_methods': ['PLAIN', None, ['NTLM'], ['PLAIN', 'GSSAPI'], {'PLAIN'}],
    'auth_optional': _BOOL_BAD,
    'allow_insecure_auth': _BOOL_BAD,
    'no_auth_reply': _BOOL_BAD,
    'disabled_commands': ['VRFY', None, ['FOO'], ['VRFY', 'XYZZY'], 1],
    'key': ['not pem', b'not pem', 1, 'é-----BEGIN'],
    'cert': ['not pem', b'not pem', 1, ['-----BEGIN']],
    'ca': ['not pem', b'', 1, [PEM, 'not pem'], [None]],
    'min_version': ['TLSv1.4', 'tlsv1.2', 'SSLv3', None, 1.2],
    'ciphers': [1, b'HIGH'],
    'honor_cipher_order': _BOOL_BAD,
    'session_id_context': [1, b'ctx'],
    'request_cert': _BOOL_BAD,
    'reject_unauthorized': _BOOL_BAD,
    'request_ocsp': [True, 1, 'no', None],
    'session': [5, 'session', object()],
    'sni_options': [None, [], {'a.test': 'x'}, {1: {}}],
    'sni_callback': _HOOK_BAD,
    'socket_timeout': [0, -1, -0.5, 'x', '60', True, None],
    'close_timeout': [-1, -0.1, 'x', True, None],
    'upgrade_timeout': [0, -1, 'x', False, None],
    'size': [-1, 1.5, '-1', '10 apples', '1.5M', '10T', 'M', '', True, None],
    'max_recipients': [0, -1, 1.0, '5', True],
    'max_connections': [-1, 2.0, '5', False],
    'use_proxy': ['yes', 1, ['not-an-ip'], ['10.0.0.0/33'], [True], {'a': 1}],
    'use_xclient': ['10.0.0.1', 2, ['300.1.1.1'], ['::1/129']],
    'use_xforward': ['all', ['1.2.3'], 3.5],
    'ignored_hosts': ['10.0.0.1', True, None, ['x']],
    'disable_reverse_lookup': _BOOL_BAD,
    'log_level': ['LOUD', True, 1.5, None],
    'log_backend': [None, object(), 'smtp_stack', print],
    'max_errors': [-1, 1.5, None],
    'max_connections_per_ip': [-1, '1', None],
    'max_auth_failures': [0, -1, None],
    'bare_newline': ['accept', 'REJECT', None, True],
    'lenient_addresses': _BOOL_BAD,
    'min_data_rate': [-1, 1.5, None, True],
    'greeting_delay': [-1, 'x', None, float('nan')],
    'reject_early_talkers': _BOOL_BAD,
    'max_messages': [-1, 1.5, None],
    'max_junk_commands': [-1, 1.5, None],
    'max_line_length': [-1, 1.5, None],
    'max_auth_failures_per_ip': [-1, 1.5, '3', None],
    'auth_failure_window': [0, -1, 'x', True, None, float('inf')],
    'workers': [0, -1, 1.0, True, '2', None],
    'on_socket': _HOOK_BAD,
    'on_connect': _HOOK_BAD,
    'on_auth': _HOOK_BAD,
    'on_mail_from': _HOOK_BAD,
    'on_rcpt_to': _HOOK_BAD,
    'on_data': _HOOK_BAD,
    'on_close': _HOOK_BAD,
}


def test_bad_value_table_covers_every_option():
    assert set(BAD_VALUES) == set(OPTIONS)


@pytest.mark.parametrize('name, value', [(n, v) for n, vs in BAD_VALUES.items() for v in vs])
def test_bad_value_is_a_value_error(name, value):
    with pytest.raises(ValueError):
        make(**{name: value})


@pytest.mark.parametrize('name', ['socket_timeout', 'close_timeout', 'upgrade_timeout'])
@pytest.mark.parametrize('value', [math.nan, math.inf])
def test_non_finite_seconds_is_a_value_error(name, value):
    with pytest.raises(ValueError):
        make(**{name: value})


# --- good values --------------------------------------------------------------
GOOD_VALUES = [
    ('name', 'mail.example.com', 'mail.example.com'),
    ('banner', 'welcome', 'welcome'),
    ('secure', True, True),
    ('auth_methods', ['cram-md5'], ('PLAIN', 'LOGIN', 'CRAM-MD5')),
    ('auth_methods', ['XOAUTH2', 'PLAIN'], ('LOGIN', 'XOAUTH2', 'PLAIN')),
    ('auth_methods', ('LOGIN', 'login', 'PLAIN'), ('LOGIN', 'PLAIN')),
    ('auth_methods', [], ('PLAIN', 'LOGIN')),
    ('disabled_commands', ['vrfy', 'StartTLS'], frozenset({'VRFY', 'STARTTLS'})),
    ('disabled_commands', ('AUTH',), frozenset({'AUTH'})),
    ('disabled_commands', {'pipelining'}, frozenset({'PIPELINING'})),
    ('disabled_commands', [], frozenset()),
    ('key', PEM, PEM.encode()),
    ('cert', PEM.encode(), PEM.encode()),
    ('ca', None, None),
    ('min_version', 'TLSv1.3', 'TLSv1.3'),
    ('ciphers', 'HIGH:!aNULL', 'HIGH:!aNULL'),
    ('session_id_context', 'ctx', 'ctx'),
    ('sni_options', {'a.test': {'key': PEM}}, {'a.test': {'key': PEM}}),
    ('sni_callback', hook, hook),
    ('socket_timeout', 0.5, 0.5),
    ('socket_timeout', 5, 5.0),
    ('close_timeout', 0, 0.0),
    ('upgrade_timeout', 2, 2.0),
    ('size', 0, 0),
    ('size', 10 * 1024 * 1024, 10 * 1024 * 1024),
    ('max_recipients', 1, 1),
    ('max_connections', 0, 0),
    ('log_level', LogLevels.DEBUG, LogLevels.DEBUG),
    ('log_level', 'debug', LogLevels.DEBUG),
    ('log_level', 'SILENT', LogLevels.SILENT),
    ('log_level', 'trace', LogLevels.TRACE),
    ('log_level', 30, 30),
    ('max_errors', 0, 0),
    ('max_auth_failures', 1, 1),
    ('bare_newline', 'normalize', 'normalize'),
    ('lenient_addresses', True, True),
    ('workers', 1, 1),
    ('workers', 4, 4),
    ('on_connect', hook, hook),
    ('on_close', None, None),
]


@pytest.mark.parametrize('name, value, stored', GOOD_VALUES)
def test_good_value(name, value, stored):
    assert getattr(make(**{name: value}), name) == stored


@pytest.mark.parametrize('name', ['socket_timeout', 'close_timeout', 'upgrade_timeout'])
def test_seconds_are_stored_as_float(name):
    assert type(getattr(make(**{name: 3}), name)) is float


def test_log_backend_accepts_a_logger_or_anything_with_log():
    logger = logging.getLogger('x.y')
    assert make(log_backend=logger).log_backend is logger

    class Sink:
        def log(self, level, msg, *args):
            pass
    sink = Sink()
    assert make(log_backend=sink).log_backend is sink


# --- defaults -------------------------------------------------------------------
DEFAULTS = {
    'store': None,
    'on_store_error': 'accept',
    'banner': '',
    'secure': False,
    'lmtp': False,
    'auth_methods': ('PLAIN', 'LOGIN'),
    'auth_optional': True,
    'allow_insecure_auth': False,
    'no_auth_reply': False,
    'disabled_commands': frozenset(),
    'key': None,
    'cert': None,
    'ca': None,
    'min_version': 'TLSv1.2',
    'ciphers': None,
    'honor_cipher_order': False,
    'session_id_context': None,
    'request_cert': False,
    'reject_unauthorized': True,
    'request_ocsp': False,
    'session': None,
    'sni_options': {},
    'sni_callback': None,
    'socket_timeout': 60,
    'close_timeout': 30,
    'upgrade_timeout': 10,
    'size': 0,
    'max_recipients': 1000,
    'max_connections': 0,
    'disable_reverse_lookup': False,
    'log_level': LogLevels.INFO,
    'max_errors': 20,
    'max_connections_per_ip': 0,
    'max_auth_failures': 3,
    'bare_newline': 'reject',
    'lenient_addresses': False,
    'min_data_rate': 500,
    'greeting_delay': 0,
    'reject_early_talkers': False,
    'max_messages': 1000,
    'max_junk_commands': 100,
    'max_line_length': 0,
    'max_auth_failures_per_ip': 0,
    'auth_failure_window': 600.0,
    'workers': 1,
    'on_socket': None,
    'on_connect': None,
    'on_auth': None,
    'on_mail_from': None,
    'on_rcpt_to': None,
    'on_data': None,
    'on_close': None,
}


@pytest.mark.parametrize('name, value', sorted(DEFAULTS.items()))
def test_default(name, value):
    assert getattr(make(), name) == value


def test_default_name_is_the_fqdn():
    assert Options().name == socket.getfqdn()


def test_default_log_backend():
    assert make().log_backend is logging.getLogger('smtp_stack')


@pytest.mark.parametrize('name', ['use_proxy', 'use_xclient', 'use_xforward', 'ignored_hosts'])
def test_default_trust_lists_trust_nobody(name):
    trust = getattr(make(), name)
    assert isinstance(trust, TrustList)
    assert not trust
    assert not trust.allows('127.0.0.1')


def test_every_option_has_a_known_default():
    assert set(DEFAULTS) | {'name', 'log_backend', 'use_proxy', 'use_xclient',
                            'use_xforward', 'ignored_hosts'} == set(OPTIONS)


def test_mutable_defaults_are_not_shared():
    a, b = make(), make()
    a.sni_options['x'] = {}
    assert b.sni_options == {}


def test_auth_methods_always_include_plain_and_login():
    for given in ([], ['XOAUTH2'], ['CRAM-MD5', 'XOAUTH2'], ['login'], ['plain']):
        methods = make(auth_methods=given).auth_methods
        assert 'PLAIN' in methods and 'LOGIN' in methods
        assert len(set(methods)) == len(methods)


def test_enabled():
    opts = make(disabled_commands=['vrfy'])
    assert not opts.enabled('VRFY')
    assert opts.enabled('EHLO')


# --- TrustList ------------------------------------------------------------------
# (value, ip, allowed)
TRUST = [
    (True, '203.0.113.7', True),
    (True, None, True),
    ('*', '2001:db8::1', True),
    (['*'], '198.51.100.1', True),
    (['10.0.0.1', '*'], '198.51.100.1', True),
    (False, '127.0.0.1', False),
    (None, '127.0.0.1', False),
    ([], '127.0.0.1', False),
    (['127.0.0.1'], '127.0.0.1', True),
    (['127.0.0.1'], '127.0.0.2', False),
    ([' 127.0.0.1 '], '127.0.0.1', True),
    (['10.0.0.0/8'], '10.255.1.2', True),
    (['10.0.0.0/8'], '11.0.0.1', False),
    (['10.1.2.3/8'], '10.9.9.9', True),            # host bits are ignored
    (['192.0.2.0/24', '198.51.100.0/24'], '198.51.100.200', True),
    (('192.0.2.0/24',), '192.0.2.1', True),
    ({'192.0.2.0/24'}, '192.0.2.1', True),
    (frozenset({'192.0.2.1'}), '192.0.2.1', True),
    ([ipaddress.ip_network('192.0.2.0/24')], '192.0.2.9', True),
    (['::1'], '::1', True),
    (['::1'], '::2', False),
    (['2001:db8::/32'], '2001:db8:ffff::1', True),
    (['2001:db8::/32'], '2001:db9::1', False),
    (['fe80::/10'], 'fe80::1%eth0', True),          # scope id ignored
    # IPv4-mapped IPv6 clients (dual-stack sockets) match IPv4 entries
    (['10.0.0.0/8'], '::ffff:10.1.2.3', True),
    (['192.0.2.1'], '::ffff:192.0.2.1', True),
    (['192.0.2.1'], '::ffff:192.0.2.2', False),
    # IPv4 entries never match other IPv6 clients
    (['10.0.0.0/8'], '2001:db8::1', False),
    (['::/0'], '10.0.0.1', False),
    # bad or missing client address: not trusted
    (['10.0.0.0/8'], None, False),
    (['10.0.0.0/8'], '', False),
    (['10.0.0.0/8'], 'not-an-ip', False),
    (['10.0.0.0/8'], 'unix:/tmp/sock', False),
]


@pytest.mark.parametrize('value, ip, allowed', TRUST)
def test_trust_list(value, ip, allowed):
    assert TrustList(value, 'use_proxy').allows(ip) is allowed


@pytest.mark.parametrize('value, truthy', [
    (True, True), ('*', True), (['*'], True), (['10.0.0.1'], True),
    (False, False), (None, False), ([], False),
])
def test_trust_list_truth(value, truthy):
    assert bool(TrustList(value, 'use_proxy')) is truthy


@pytest.mark.parametrize('value', ['10.0.0.1', 'yes', 1, 2.5, {'x': 1}, ['nope'],
                                   ['10.0.0.0/8', 'bad'], ['1.2.3.4/40'], [True]])
def test_trust_list_bad_values_name_the_option(value):
    with pytest.raises(ValueError, match='use_xclient'):
        TrustList(value, 'use_xclient')


@pytest.mark.parametrize('option', ['use_proxy', 'use_xclient', 'use_xforward'])
def test_trust_options_become_trust_lists(option):
    opts = make(**{option: ['10.0.0.0/8']})
    trust = getattr(opts, option)
    assert trust.allows('10.1.1.1') and not trust.allows('192.0.2.1')
    assert getattr(make(**{option: True}), option).allows('192.0.2.1')


def test_ignored_hosts_becomes_a_trust_list():
    trust = make(ignored_hosts=['192.0.2.0/24']).ignored_hosts
    assert trust.allows('192.0.2.10')
    assert not trust.allows('198.51.100.1')


@pytest.mark.parametrize('entry, ip', [
    ('::ffff:192.0.2.1', '::ffff:192.0.2.1'),
    ('::ffff:192.0.2.1', '192.0.2.1'),
    ('::ffff:0:0/96', '::ffff:192.0.2.1'),
])
def test_trust_list_ipv4_mapped_entries(entry, ip):
    assert TrustList([entry], 'use_proxy').allows(ip)


# --- RecordLog: what sessions log through (a fast path to a Logger) ---------------

class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def kept_logger():
    logger = logging.getLogger('smtp_stack.test.recordlog')
    keep = _Keep()
    logger.handlers[:] = [keep]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, keep
    logger.handlers[:] = []
    logger.filters[:] = []


def test_record_log_makes_the_records_logger_log_makes(kept_logger):
    from smtp_stack.server import RecordLog
    logger, keep = kept_logger
    logger.log(20, '[%s] Message accepted: %d bytes', 'abc', 1024)
    RecordLog(logger).log(20, '[%s] Message accepted: %d bytes', 'abc', 1024)
    slow, fast = keep.records
    assert type(fast) is type(slow)
    assert fast.getMessage() == slow.getMessage() == '[abc] Message accepted: 1024 bytes'
    caller = {'pathname', 'filename', 'module', 'lineno', 'funcName'}
    timing = {'created', 'msecs', 'relativeCreated'}
    assert set(vars(fast)) == set(vars(slow))
    for name in set(vars(slow)) - caller - timing:
        assert getattr(fast, name) == getattr(slow, name), name
    assert abs(fast.created - slow.created) < 5
    assert abs(fast.relativeCreated - slow.relativeCreated) < 5000
    assert 0 <= fast.msecs < 1000
    assert fast.module == 'engine' and fast.funcName == 'log'
    formatter = logging.Formatter('%(asctime)s %(levelname)s %(name)s %(process)d '
                                  '%(threadName)s %(message)s')
    assert formatter.format(fast).split(' ', 2)[2] == formatter.format(slow).split(' ', 2)[2]


def test_record_log_honours_levels_filters_and_warning_names(kept_logger):
    from smtp_stack.server import RecordLog
    logger, keep = kept_logger
    fast = RecordLog(logger)
    fast.log(10, 'debug is below the level')
    logger.addFilter(lambda record: 'secret' not in record.getMessage())
    fast.log(20, 'a %s here', 'secret')
    fast.log(30, 'kept')
    assert [(r.levelname, r.getMessage()) for r in keep.records] == [('WARNING', 'kept')]


def test_record_log_leaves_custom_record_factories_in_charge(kept_logger):
    from smtp_stack.server import RecordLog
    logger, keep = kept_logger
    original = logging.getLogRecordFactory()

    class Custom(logging.LogRecord):
        pass
    logging.setLogRecordFactory(Custom)
    try:
        RecordLog(logger).log(20, 'x')
    finally:
        logging.setLogRecordFactory(original)
    assert type(keep.records[0]) is Custom


def test_record_log_only_wraps_loggers():
    from smtp_stack.server import RecordLog, record_log

    class Sink:
        def log(self, level, msg, *args):
            pass
    sink = Sink()
    assert record_log(sink) is sink
    assert isinstance(record_log(logging.getLogger('x.y')), RecordLog)


def test_record_log_gives_a_forked_child_its_own_pid(kept_logger):
    from smtp_stack.server import RecordLog
    logger, keep = kept_logger
    fast = RecordLog(logger)
    fast.log(20, 'in the parent')       # the template is made here, with our pid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: report the pid its record carries
        try:
            fast.log(20, 'in the child')
            os.write(write_end, str(keep.records[-1].process).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    reported = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert keep.records[0].process == os.getpid()
    assert int(reported) == pid


# --- docs/api.md: the original's options, each accepted here --------------------------
# Node smtp-stack's options: its README's example, and the ones its code reads
# (banner, lmtp, authOptional, useXClient, useXForward, ignoredHosts,
# disableReverseLookup) or passes to tls.createSecureContext (ca, ciphers).
NODE_SMTP_STACK = {
    'name', 'banner', 'secure', 'lmtp', 'authMethods', 'authOptional', 'disabledCommands',
    'allowInsecureAuth', 'noAuthReply', 'key', 'cert', 'ca', 'session', 'requestCert',
    'rejectUnauthorized', 'requestOCSP', 'sessionIdContext', 'honorCipherOrder', 'minVersion',
    'ciphers', 'sniOptions', 'SNICallback', 'socketTimeout', 'closeTimeout', 'upgradeTimeout',
    'logLevel', 'logBackend', 'size', 'useProxy', 'useXClient', 'useXForward', 'ignoredHosts',
    'disableReverseLookup', 'onSocket', 'onConnect', 'onAuth', 'onMailFrom', 'onRcptTo',
    'onData', 'onClose',
}


def originals_tables() -> list:
    """The tables under "The original's options" in docs/api.md: for each,
    its rows as (first column's names, second column's names)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, 'docs', 'api.md'), encoding='utf-8').read()
    section = text.split("### The original's options\n", 1)[1].split('\n## ', 1)[0]
    tables, rows = [], None
    for line in section.splitlines():
        if not line.startswith('|'):
            rows = None
            continue
        if rows is None:        # the header row starts a table
            rows = []
            tables.append(rows)
            continue
        if line.startswith('|---'):
            continue
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        rows.append((re.findall(r'`([^`]+)`', cells[0]), re.findall(r'`([^`]+)`', cells[1])))
    return tables


def test_the_originals_table_lists_every_option_of_the_original():
    [originals, _nodemailer] = originals_tables()
    assert sorted(n for node, _ in originals for n in node) == sorted(NODE_SMTP_STACK)
    assert all(len(here) == 1 for _, here in originals)     # each has its Python name


@pytest.mark.parametrize('name', sorted({n for table in originals_tables()
                                         for _, here in table for n in here}))
def test_every_python_name_in_the_originals_tables_is_accepted_at_its_default(name):
    assert name in OPTIONS, f'docs/api.md names {name!r}, which is not an option'
    default = OPTIONS[name][0]
    value = default() if callable(default) else default
    smtp_stack.SmtpServer(**{name: value})     # TypeError for a name it does not accept
