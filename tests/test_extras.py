"""A feature whose extra is not installed stops with one sentence naming the
extra: the CLI prints it as one line and exits 2, without a traceback;
`import smtp_stack.policies` raises it as an ImportError.

Each test runs a fresh Python in which the extra's package cannot be
imported (`sys.modules[name] = None` before smtp_stack is imported), the
state of a machine where `pip install smtp_stack` left the extra out.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from clirunner import WAIT, env_with_package

INBOX = "needs the 'inbox' extra: pip install 'smtp_stack[inbox]' (wsproto is not installed)"
POLICIES = "needs the 'policies' extra: pip install 'smtp_stack[policies]'"


def python_without(missing: list, code: str, cwd) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter where the packages `missing` cannot be imported."""
    prelude = ''.join(f'sys.modules[{name!r}] = None\n' for name in missing)
    program = f'import sys\n{prelude}{textwrap.dedent(code)}'
    return subprocess.run([sys.executable, '-c', program], cwd=str(cwd), env=env_with_package(),
                          capture_output=True, text=True, timeout=WAIT * 3)


def cli_without(missing: list, *args: str, cwd) -> subprocess.CompletedProcess:
    return python_without(missing, f'from smtp_stack.cli import main\nsys.exit(main({list(args)!r}))',
                          cwd)


def assert_one_line(result: subprocess.CompletedProcess, line: str) -> None:
    assert 'Traceback' not in result.stderr, result.stderr
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [line], '')


# -- the inbox (wsproto) -------------------------------------------------------------

def test_inbox_command_without_its_extra(tmp_path):
    result = cli_without(['wsproto'], 'inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                         cwd=tmp_path)
    assert_one_line(result, f'smtp-stack inbox {INBOX}')
    assert not (tmp_path / 'inbox.db').exists()     # nothing was started


def test_the_inbox_command_is_described_without_its_extra(tmp_path):
    result = cli_without(['wsproto'], 'inbox', '--help', cwd=tmp_path)
    assert result.returncode == 0 and '--max-messages' in result.stdout


@pytest.mark.parametrize('command', ['check-config', 'serve'])
def test_an_inbox_section_without_its_extra(tmp_path, command):
    (tmp_path / 'smtp.yaml').write_text('inbox: {db: caught.db}\nlisten: {port: 0}\n')
    args = ['check-config', 'smtp.yaml'] if command == 'check-config' else \
        ['serve', '--config', 'smtp.yaml']
    assert_one_line(cli_without(['wsproto'], *args, cwd=tmp_path),
                    f'the inbox: section {INBOX}')


# -- the policies (dnspython, dkimpy, pyspf, publicsuffixlist ...) ----------------------

@pytest.mark.parametrize('command', ['check-config', 'serve'])
@pytest.mark.parametrize('section, missing, line', [
    ('policies: [{greylist: {delay: 5m}}]\n', 'dns',
     f'the policies: section {POLICIES} (dns is not installed)'),
    ('store: "memory:"\n', 'dns', f'the store: section {POLICIES} (dns is not installed)'),
    ('policies: [authenticate]\n', 'dkim',
     f'policies[0].authenticate {POLICIES} (dkim is not installed)'),
    ('policies: [authenticate]\n', 'publicsuffixlist',
     f'policies[0].authenticate {POLICIES} (publicsuffixlist is not installed)'),
])
def test_a_policies_section_without_its_extra(tmp_path, command, section, missing, line):
    (tmp_path / 'smtp.yaml').write_text(section)
    args = ['check-config', 'smtp.yaml'] if command == 'check-config' else \
        ['serve', '--config', 'smtp.yaml', '--port', '0']
    assert_one_line(cli_without([missing], *args, cwd=tmp_path), line)


def test_import_policies_without_its_extra_is_an_import_error_in_one_sentence(tmp_path):
    result = python_without(['dns'], '''
        try:
            import smtp_stack.policies
        except ImportError as exc:      # what code that guards the import catches
            print(type(exc).__name__, exc, sep=': ')
    ''', tmp_path)
    assert (result.returncode, result.stderr) == (0, '')
    assert result.stdout.splitlines() == [
        f'MissingExtra: smtp_stack.policies {POLICIES} (dns is not installed)']


def test_import_policies_without_its_extra_uncaught(tmp_path):
    result = python_without(['dns'], 'import smtp_stack.policies', tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f'smtp_stack.extras.MissingExtra: smtp_stack.policies {POLICIES} (dns is not installed)')


@pytest.mark.parametrize('missing', ['dkim', 'spf', 'publicsuffixlist'])
def test_authenticate_without_its_libraries(tmp_path, missing):
    result = python_without([missing], '''
        from smtp_stack import policies
        try:
            policies.authenticate()
        except ImportError as exc:
            print(type(exc).__name__, exc, sep=': ')
    ''', tmp_path)
    assert (result.returncode, result.stderr) == (0, '')
    assert result.stdout.splitlines() == [
        f'MissingExtra: policies.authenticate {POLICIES} ({missing} is not installed)']


def test_the_store_option_without_the_extra(tmp_path):
    """The stores are in the core (smtp_stack.state): memory: and sqlite: need
    nothing optional; a Redis URL needs redis-py, of the policies extra."""
    result = python_without(['dns', 'redis'], '''
        from smtp_stack import SmtpServer
        import os
        for url in ('memory:', 'sqlite:///' + os.path.abspath('state.db'),
                    'redis://127.0.0.1:6379/0'):
            try:
                print(type(SmtpServer(name='mx.test', store=url).options.store).__name__)
            except ImportError as exc:
                print(type(exc).__name__, exc, sep=': ')
    ''', tmp_path)
    assert (result.returncode, result.stderr) == (0, '')
    assert result.stdout.splitlines() == [
        'MemoryStore', 'SqliteStore',
        f'MissingExtra: a redis:// store {POLICIES} (redis is not installed)']


def test_the_core_needs_no_extra(tmp_path):
    """SmtpServer, the CLI's serve and check-config: nothing optional imported."""
    (tmp_path / 'smtp.yaml').write_text('name: mx.test\nsize: 10M\nlisten: {port: 2599}\n')
    result = cli_without(['wsproto', 'dns', 'dkim', 'spf', 'publicsuffixlist', 'redis'],
                         'check-config', 'smtp.yaml', cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ''), result
    assert result.stdout.startswith('smtp.yaml: OK (listen 127.0.0.1:2599;')
