"""POP3 over implicit TLS (`--pop3-tls-implicit`, POP3S: RFC 8314 3.3, port
995's way, Mailpit's only POP3 over TLS): TLS from the first byte, driven by
Python's `poplib.POP3_SSL` and by fetchmail (`ssl`), over 127.0.0.1."""
from __future__ import annotations

import poplib
import signal
import socket
import ssl
import sys

import pytest

from clirunner import Process, smtp_stack
from fetchmail_run import fetch_all
from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
from smtp_stack.tls import create_context, generate_self_signed
from smtp_stack.users import hash_password

USER, PASSWORD = 'dev', 'pop secret'


@pytest.fixture(scope='module')
def localhost_pair():
    return generate_self_signed('localhost')


@pytest.fixture
def inbox(tmp_path, localhost_pair):
    key, cert = localhost_pair
    with InboxThread(tmp_path / 'inbox.db', pop3=('127.0.0.1', 0),
                     pop3_users={USER: hash_password(PASSWORD)},
                     pop3_tls=create_context(key, cert), pop3_tls_implicit=True) as running:
        yield running


def port(inbox):
    return inbox.inbox.pop3_address[1]


def verifying(cert: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cert.decode())
    context.check_hostname = False      # the certificate names localhost; we dial 127.0.0.1
    return context


def test_poplib_pop3_ssl_reads_and_deletes(inbox, localhost_pair):
    send(inbox.smtp, subject='over POP3S', text='line\n.dotted\n')
    client = poplib.POP3_SSL('127.0.0.1', port(inbox), timeout=WAIT,
                             context=verifying(localhost_pair[1]))
    try:
        assert client.getwelcome().startswith(b'+OK')
        assert isinstance(client.sock, ssl.SSLSocket)
        capabilities = client.capa()
        assert 'STLS' not in capabilities and 'USER' in capabilities   # TLS is on already
        with pytest.raises(poplib.error_proto, match='TLS is already on|not offered'):
            client._shortcmd('STLS')
        client.user(USER)
        client.pass_(PASSWORD)
        assert client.stat()[0] == 1
        _, lines, _ = client.retr(1)
        assert b'Subject: over POP3S' in lines and b'.dotted' in lines
        client.dele(1)
    finally:
        client.quit()
    assert Http(inbox.url).json('GET', '/api/v1/messages')['total'] == 0


def test_a_client_speaking_plaintext_gets_no_greeting(inbox):
    """Nothing is said in the clear on a POP3S port: a plaintext client's
    first line is taken as a broken handshake, and the server goes on."""
    with socket.create_connection(('127.0.0.1', port(inbox)), timeout=WAIT) as raw:
        raw.sendall(b'USER dev\r\n')
        data = raw.recv(1024)
        assert not data.startswith(b'+OK')
    client = poplib.POP3_SSL('127.0.0.1', port(inbox), timeout=WAIT,
                             context=ssl._create_unverified_context())
    assert client.getwelcome().startswith(b'+OK')
    client.quit()


def test_fetchmail_fetches_over_implicit_tls(inbox, tmp_path, localhost_pair):
    for n in range(2):
        send(inbox.smtp, make_mail(subject=f'for fetchmail over ssl {n}'))
    log, fetched = fetch_all(tmp_path, port(inbox), USER, PASSWORD, localhost_pair[1],
                             implicit_tls=True)
    assert 'POP3> STLS' not in log and 'POP3> QUIT' in log
    assert 'Subject: for fetchmail over ssl 0' in fetched
    assert 'Subject: for fetchmail over ssl 1' in fetched
    assert Http(inbox.url).json('GET', '/api/v1/messages')['total'] == 0


def test_the_command_serves_pop3s(tmp_path):
    (tmp_path / 'users').write_text(f'{USER}:{hash_password(PASSWORD)}\n')
    proc = Process([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                    '--http', '127.0.0.1:0', '--pop3', '127.0.0.1:0',
                    '--pop3-auth-file', 'users', '--pop3-tls-implicit'], tmp_path)
    try:
        match = proc.wait_line(r'SMTP on 127.0.0.1:(\d+).*POP3S on 127.0.0.1:(\d+)', 'stdout')
        send(('127.0.0.1', int(match[1])), subject='via the command')
        client = poplib.POP3_SSL('127.0.0.1', int(match[2]), timeout=WAIT,
                                 context=ssl._create_unverified_context())   # self-signed
        client.user(USER)
        client.pass_(PASSWORD)
        assert b'Subject: via the command' in client.retr(1)[1]
        client.quit()
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.close()


def test_pop3_tls_implicit_needs_pop3(tmp_path):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--pop3-tls-implicit', cwd=tmp_path)
    assert result.returncode == 2, result
    assert 'need --pop3 HOST:PORT' in result.stderr
