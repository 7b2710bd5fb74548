"""pytest plugin (entry point `pytest11`): the `smtp_server` and
`smtp_server_session` fixtures, the `smtp_server` marker and the ini keys.

Options come in three layers, the nearest winning: MailSink's defaults
(any AUTH accepted, STARTTLS with a certificate of the run-time CA), the
project's ini keys, then `@pytest.mark.smtp_server(**options)` on the test,
its class or its module (for `smtp_server` only: the session's sink is
shared, so a test cannot reconfigure it).
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from .testing import TLS_MODES, MailSink

MARKER = 'smtp_server'

#: ini key -> (type, default, help). Each sets the MailSink keyword of the
#: same name without the prefix; `smtp_server_options` takes any SmtpServer option.
INI_KEYS: dict[str, tuple[Literal['string', 'bool', 'linelist'], Any, str]] = {
    'smtp_server_tls': (
        'string', '', f'how the smtp_server fixtures offer TLS: {", ".join(TLS_MODES)}'),
    'smtp_server_auth_required': (
        'bool', False, 'the smtp_server fixtures refuse MAIL before AUTH (530)'),
    'smtp_server_users': (
        'linelist', [], 'user:password lines: the only logins the smtp_server fixtures '
                        'accept (default: any)'),
    'smtp_server_host': (
        'string', '', 'address the smtp_server fixtures listen on (default 127.0.0.1)'),
    'smtp_server_port': (
        'string', '', 'port the smtp_server fixtures listen on (default: a free one)'),
    'smtp_server_options': (
        'linelist', [], 'name = value lines: SmtpServer options for the smtp_server '
                        'fixtures (values are Python literals, else strings)'),
}

_SESSION_SINK = pytest.StashKey[MailSink]()


def pytest_addoption(parser: pytest.Parser) -> None:
    for name, (kind, default, help_text) in INI_KEYS.items():
        parser.addini(name, help_text, type=kind, default=default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        'markers', f'{MARKER}(**options): MailSink options (users, auth_required, tls, '
                   'host, port, any SmtpServer option) for the smtp_server fixture of this test')
    ini_options(config)     # a malformed ini key stops the run now, not in every test


def ini_options(config: pytest.Config) -> dict[str, Any]:
    """MailSink keywords from the ini keys that are set; UsageError for a bad one."""
    options: dict[str, Any] = {}
    for line in _lines(config, 'smtp_server_options'):
        name, equals, value = line.partition('=')
        if not equals or not name.strip().isidentifier():
            raise pytest.UsageError(f'smtp_server_options: {line!r} is not "name = value"')
        options[name.strip()] = _literal(value.strip())
    tls = str(config.getini('smtp_server_tls')).strip()
    if tls:
        if tls not in TLS_MODES:
            raise pytest.UsageError(f'smtp_server_tls: {tls!r} is not one of '
                                    f'{", ".join(TLS_MODES)}')
        options['tls'] = tls
    if config.getini('smtp_server_auth_required'):
        options['auth_required'] = True
    users = {}
    for line in _lines(config, 'smtp_server_users'):
        user, colon, password = line.partition(':')
        if not colon or not user or not password:
            raise pytest.UsageError(f'smtp_server_users: {line!r} is not "user:password"')
        users[user] = password
    if users:
        options['users'] = users
    host = str(config.getini('smtp_server_host')).strip()
    if host:
        options['host'] = host
    port = str(config.getini('smtp_server_port')).strip()
    if port:
        if not port.isdigit() or int(port) > 65535:
            raise pytest.UsageError(f'smtp_server_port: {port!r} is not a port number')
        options['port'] = int(port)
    return options


def _lines(config: pytest.Config, name: str) -> list[str]:
    return [line.strip() for line in config.getini(name) if line.strip()]


def _literal(text: str) -> Any:
    """`1000`, `True`, `['PLAIN']` as Python values; anything else as the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def marker_options(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """The options of the smtp_server markers on a test, its class and module,
    the nearest winning for each keyword."""
    options: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers(MARKER))):
        if marker.args:
            raise pytest.UsageError(f'@pytest.mark.{MARKER} takes keyword options only '
                                    f'(got {marker.args!r})')
        options.update(marker.kwargs)
    return options


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[MailSink]:
    """A running MailSink on 127.0.0.1 and a free port, stopped after the test.

    By default it accepts AUTH with any credentials and offers STARTTLS
    with a certificate that `ssl.create_default_context(cafile=
    smtp_server.ca_file)` verifies. The ini keys `smtp_server_*` and
    `@pytest.mark.smtp_server(**options)` change that."""
    options = {**ini_options(request.config), **marker_options(request.node)}
    with MailSink(**options) as sink:
        yield sink


@pytest.fixture(scope='session')
def smtp_server_session(request: pytest.FixtureRequest) -> Iterator[MailSink]:
    """One MailSink for the whole session (configured by the ini keys),
    emptied before each test: for apps whose mail settings are made once."""
    with MailSink(**ini_options(request.config)) as sink:
        request.config.stash[_SESSION_SINK] = sink
        try:
            yield sink
        finally:
            del request.config.stash[_SESSION_SINK]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Empty the session's sink before each test (and before its fixtures,
    which may send mail the test expects to find)."""
    if ('smtp_server_session' in getattr(item, 'fixturenames', ())
            and 'smtp_server' not in getattr(item, 'fixturenames', ())
            and item.get_closest_marker(MARKER) is not None):
        pytest.fail(f'@pytest.mark.{MARKER} configures the smtp_server fixture; this test '
                    'uses only smtp_server_session, which is shared by every test and '
                    'takes its options from the smtp_server_* ini keys', pytrace=False)
    sink = item.config.stash.get(_SESSION_SINK, None)
    if sink is not None:
        sink.clear()
