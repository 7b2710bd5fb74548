"""${VAR} in the YAML through the `smtp-stack` command: check-config and
serve take values from the environment, name an unset variable with its key,
and never print what a variable holds."""
import mailbox
import signal
import smtplib
import textwrap

import pytest

from clirunner import Serve, smtp_stack
from conftest import WAIT

SECRET = 'Tr0ub4dor-s3cret'
# auth_methods is valid only once substituted: these tests cannot pass on
# a file read as written.
RELAY = '''\
listen: {host: "${SMTP_HOST}", port: 2525}
auth_methods: ["${AUTH_MECH}"]
deliver:
  relay:
    host: ${RELAY_HOST}
    port: 587
    username: relay-user
    password: ${RELAY_PASSWORD}
'''


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def environment(monkeypatch):
    """The variables RELAY uses, set; `monkeypatch` to change them."""
    monkeypatch.setenv('SMTP_HOST', '127.0.0.1')
    monkeypatch.setenv('AUTH_MECH', 'PLAIN')
    monkeypatch.setenv('RELAY_HOST', 'relay.internal.test')
    monkeypatch.setenv('RELAY_PASSWORD', SECRET)
    return monkeypatch


def test_check_config_takes_the_environment_and_prints_only_the_references(
        environment, tmp_path):
    config = write(tmp_path / 'smtp.yaml', RELAY)
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, '')
    assert result.stdout.splitlines() == [
        f'{config}: OK (listen ${{SMTP_HOST}}:2525; 0 user(s); '
        'mail goes to relay to SMTP ${RELAY_HOST}:587)']
    assert SECRET not in result.stdout + result.stderr


def test_check_config_names_the_key_and_each_unset_variable(environment, tmp_path):
    environment.delenv('RELAY_PASSWORD')
    environment.delenv('RELAY_HOST')
    config = write(tmp_path / 'smtp.yaml', RELAY)
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'deliver.relay.host: ${RELAY_HOST} is not set',
        'deliver.relay.password: ${RELAY_PASSWORD} is not set',
    ]


def test_an_error_about_a_substituted_value_shows_the_reference_not_the_value(
        environment, tmp_path):
    environment.setenv('LOG_LEVEL', 'L0g-level-s3cret')
    config = write(tmp_path / 'smtp.yaml', RELAY + 'log_level: ${LOG_LEVEL}\n')
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["log_level: unknown level '${LOG_LEVEL}'"]
    assert 's3cret' not in result.stdout + result.stderr


def test_defaults_and_literals_need_no_environment(monkeypatch, tmp_path):
    monkeypatch.delenv('SMTP_STACK_MAILDIR', raising=False)
    config = write(tmp_path / 'smtp.yaml', '''\
        banner: "costs $${PRICE}"
        deliver: {maildir: "${SMTP_STACK_MAILDIR:-./mail}"}
    ''')
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f'mail goes to maildir {tmp_path / "mail"})\n')


def test_serve_delivers_where_the_environment_says(monkeypatch, tmp_path):
    box = tmp_path / 'from-env'
    monkeypatch.setenv('SMTP_STACK_MAILDIR', str(box))
    config = write(tmp_path / 'smtp.yaml', 'deliver: {maildir: "${SMTP_STACK_MAILDIR}"}\n')
    proc = Serve(tmp_path, '--config', config, '--port', '0')
    try:
        with smtplib.SMTP(*proc.address, timeout=WAIT) as client:
            client.sendmail('a@b.example', ['c@d.example'],
                            b'Subject: env\r\n\r\nhello\r\n')
        [message] = list(mailbox.Maildir(str(box), create=False))
        assert message['Subject'] == 'env'
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.close()


def test_serve_with_an_unset_variable_exits_1_naming_it(environment, tmp_path):
    environment.delenv('RELAY_PASSWORD')
    config = write(tmp_path / 'smtp.yaml', RELAY)
    result = smtp_stack('serve', '--config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'smtp-stack: deliver.relay.password: ${RELAY_PASSWORD} is not set']
