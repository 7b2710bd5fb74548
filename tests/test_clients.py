"""Mail clients people send through, run as the real programs against a real
server over loopback: msmtp and ssmtp (Debian packages) and the npm client
nodemailer (pinned in tests/nodemailer_client/package-lock.json, installed
here with `npm ci` when missing). Each sends in plain text, after STARTTLS
with AUTH, over implicit TLS with AUTH, and with CRAM-MD5 where it offers
it; each test reads what the server received, not only the exit status.

msmtp and nodemailer verify the server's certificate against the sink's CA
file (`MailSink.ca_file`), as a user of a private CA configures them; ssmtp
cannot verify a server at all (it has no option for a trust file).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from smtp_stack.testing import MailSink
from smtp_stack.tls import generate_self_signed

import peers

HOST = '127.0.0.1'
RUN_TIMEOUT = 30       # seconds a client program may take, at most
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nodemailer_client')
USERS = {'alice': 'secret'}     # the sink's only user; the CRAM-MD5 secret too


@pytest.fixture
def sink():
    """sink(**switches) -> a started MailSink (its users: alice, password
    'secret'; its certificate signed by the CA in `sink.ca_file`, which the
    clients that can verify are given); stopped after the test."""
    started = []

    def start(**switches):
        started.append(MailSink(users=USERS, **switches).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


def received(sink):
    """What the server took in: envelope, AUTH, TLS and the message's text
    (test_thunderbird.py reads it the same way)."""
    message = sink.wait_for(1, timeout=10)[0]
    session = message.session
    return {
        'mail_from': message.envelope.mail_from.address,
        'rcpt_to': [rcpt.address for rcpt in message.envelope.rcpt_to],
        'user': session.user,
        'method': session.auth.method if session.auth else None,
        'secure': session.secure,
        'subject': message['Subject'],
        'text': message.get_content(),
    }


def run(args, stdin: bytes = b'', home=None):
    """Run a client program to its end (bounded), HOME in the test's directory
    so that nothing it reads or writes there is the machine's."""
    env = dict(os.environ, HOME=str(home)) if home else None
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=RUN_TIMEOUT,
                            env=env)
    return result.returncode, (result.stdout + result.stderr).decode('utf-8', 'replace')


MESSAGE = b'From: alice@b.example\nTo: c@d.example\nSubject: %s\n\nHello from %s.\n'

# Each case: (name, the sink's switches, the client's settings, the user the
# server records, the AUTH mechanism, TLS); the name is the message's subject.


# --- msmtp ---------------------------------------------------------------------------

MSMTP_CASES = [
    ('plain', {}, {'tls': 'off'}, None, None, False),
    ('starttls-auth-plain', {}, {'auth': 'plain'}, 'alice', 'PLAIN', True),
    ('starttls-auth-login', {}, {'auth': 'login'}, 'alice', 'LOGIN', True),
    ('implicit-tls-auth-plain', {'tls': 'implicit'}, {'auth': 'plain', 'tls_starttls': 'off'},
     'alice', 'PLAIN', True),
    ('starttls-cram-md5', {}, {'auth': 'cram-md5'}, 'alice', 'CRAM-MD5', True),
]


def msmtp_config(tmp_path, port: int, trust_file: str, settings: dict) -> str:
    """An msmtp configuration file of the test's own (never /etc/msmtprc):
    TLS on and verified against `trust_file` unless `settings` say otherwise."""
    lines = {'host': HOST, 'port': str(port), 'from': 'alice@b.example',
             'domain': 'client.test', 'tls': 'on', 'tls_starttls': 'on',
             'tls_trust_file': trust_file, 'auth': 'off', 'timeout': '10', **settings}
    if lines['auth'] != 'off':
        lines.update(user='alice', password='secret')
    if lines['tls'] == 'off':
        del lines['tls_trust_file'], lines['tls_starttls']
    path = tmp_path / 'msmtprc'
    path.write_text('account default\n' + ''.join(f'{k} {v}\n' for k, v in lines.items()))
    path.chmod(0o600)       # msmtp refuses a file with a password that others can read
    return str(path)


@pytest.mark.parametrize('case, options, settings, user, method, secure', MSMTP_CASES,
                         ids=[case[0] for case in MSMTP_CASES])
def test_msmtp_sends(sink, tmp_path, case, options, settings, user, method, secure):
    msmtp = peers.program('msmtp', 'msmtp')
    server = sink(**options)
    config = msmtp_config(tmp_path, server.address[1], server.ca_file, settings)
    status, output = run([msmtp, f'--file={config}', 'c@d.example'],
                         MESSAGE % (case.encode(), b'msmtp'), home=tmp_path)
    assert status == 0, output
    assert received(server) == {
        'mail_from': 'alice@b.example', 'rcpt_to': ['c@d.example'], 'user': user,
        'method': method, 'secure': secure, 'subject': case, 'text': 'Hello from msmtp.\n'}


def test_msmtp_refuses_a_certificate_it_was_not_told_to_trust(sink, tmp_path):
    """The trust in the cases above is real: with another certificate as its
    trust file, msmtp stops at the handshake and nothing is sent."""
    msmtp = peers.program('msmtp', 'msmtp')
    server = sink()
    other = tmp_path / 'other.pem'
    other.write_bytes(generate_self_signed('other.test')[1])
    config = msmtp_config(tmp_path, server.address[1], str(other), {'auth': 'plain'})
    status, output = run([msmtp, f'--file={config}', 'c@d.example'],
                         MESSAGE % (b'refused', b'msmtp'), home=tmp_path)
    assert status != 0
    assert 'TLS certificate verification failed' in output, output
    assert server.messages == []


# --- ssmtp ---------------------------------------------------------------------------

# ssmtp and Postfix (the milter tests) both provide mail-transport-agent and
# conflict: .ci/run installs Postfix and unpacks ssmtp's package here instead.
UNPACKED_SSMTP = '/opt/ci-peers/ssmtp/usr/sbin/ssmtp'

# ssmtp knows AUTH LOGIN (its default) and CRAM-MD5, and no PLAIN.
SSMTP_CASES = [
    ('plain', {}, {}, None, None, False),
    ('starttls-auth-login', {}, {'UseSTARTTLS': 'YES', 'AuthUser': 'alice'},
     'alice', 'LOGIN', True),
    ('implicit-tls-auth-login', {'tls': 'implicit'}, {'UseTLS': 'YES', 'AuthUser': 'alice'},
     'alice', 'LOGIN', True),
    ('starttls-cram-md5', {}, {'UseSTARTTLS': 'YES', 'AuthUser': 'alice',
                               'AuthMethod': 'cram-md5'}, 'alice', 'CRAM-MD5', True),
]


def ssmtp_config(tmp_path, port: int, settings: dict) -> str:
    """An ssmtp.conf of the test's own, given with -C (never /etc/ssmtp)."""
    lines = {'mailhub': f'{HOST}:{port}', 'hostname': 'client.test',
             'FromLineOverride': 'YES', **settings}
    if 'AuthUser' in lines:
        lines['AuthPass'] = 'secret'
    path = tmp_path / 'ssmtp.conf'
    path.write_text(''.join(f'{k}={v}\n' for k, v in lines.items()))
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize('case, options, settings, user, method, secure', SSMTP_CASES,
                         ids=[case[0] for case in SSMTP_CASES])
def test_ssmtp_sends(sink, tmp_path, case, options, settings, user, method, secure):
    ssmtp = peers.program('ssmtp', 'ssmtp', fallback=('/usr/sbin/ssmtp', UNPACKED_SSMTP))
    server = sink(**options)
    config = ssmtp_config(tmp_path, server.address[1], settings)
    status, output = run([ssmtp, '-C', config, '-f', 'alice@b.example', 'c@d.example'],
                         MESSAGE % (case.encode(), b'ssmtp'), home=tmp_path)
    assert status == 0, output
    assert received(server) == {
        'mail_from': 'alice@b.example', 'rcpt_to': ['c@d.example'], 'user': user,
        'method': method, 'secure': secure, 'subject': case, 'text': 'Hello from ssmtp.\n'}


# --- nodemailer (npm) ----------------------------------------------------------------

@pytest.fixture(scope='module')
def node():
    """node, with tests/nodemailer_client's pinned packages installed."""
    node, npm = peers.program('node', 'nodejs'), peers.program('npm', 'nodejs')
    if not os.path.isdir(os.path.join(CLIENT, 'node_modules', 'nodemailer')):
        subprocess.run([npm, 'ci', '--no-audit', '--no-fund', '--loglevel=error'], cwd=CLIENT,
                       check=True, timeout=180, capture_output=True)
    return node


AUTH = {'user': 'alice', 'pass': 'secret'}
NODEMAILER_CASES = [
    ('plain', {}, {'ignoreTLS': True}, None, None, False),
    ('starttls-auth-plain', {}, {'requireTLS': True, 'auth': AUTH, 'authMethod': 'PLAIN'},
     'alice', 'PLAIN', True),
    ('implicit-tls-auth-login', {'tls': 'implicit'},
     {'secure': True, 'auth': AUTH, 'authMethod': 'LOGIN'}, 'alice', 'LOGIN', True),
    ('starttls-cram-md5', {}, {'requireTLS': True, 'auth': AUTH, 'authMethod': 'CRAM-MD5'},
     'alice', 'CRAM-MD5', True),
]
TEXT = 'Grüße from nodemailer: ünïcödé in the body.\n'


@pytest.mark.parametrize('case, options, settings, user, method, secure', NODEMAILER_CASES,
                         ids=[case[0] for case in NODEMAILER_CASES])
def test_nodemailer_sends(sink, node, case, options, settings, user, method, secure):
    server = sink(**options)
    transport = {'host': HOST, 'port': server.address[1], 'name': 'client.test',
                 'tls': {'caFile': server.ca_file}, **settings}
    message = {'from': 'Alice <alice@b.example>', 'to': 'c@d.example', 'subject': case,
               'text': TEXT}
    status, output = run([node, os.path.join(CLIENT, 'send.mjs'),
                          json.dumps({'transport': transport, 'message': message})])
    assert status == 0, output
    result = json.loads(output.split('RESULT ', 1)[1])
    assert result['accepted'] == ['c@d.example']
    assert received(server) == {
        'mail_from': 'alice@b.example', 'rcpt_to': ['c@d.example'], 'user': user,
        'method': method, 'secure': secure, 'subject': case, 'text': TEXT}
