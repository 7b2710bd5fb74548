"""POP3 of the inbox (`--pop3`): RFC 1939 as Mailpit serves it, STLS
(RFC 2595), driven by Python's poplib and by fetchmail over 127.0.0.1."""
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
from smtp_stack.inbox.pop3 import Pop3Session, multiline, top
from smtp_stack.tls import create_context, generate_self_signed
from smtp_stack.users import hash_password

USER, PASSWORD = 'dev', 'pop secret'


@pytest.fixture(scope='module')
def users():
    return {USER: hash_password(PASSWORD)}


@pytest.fixture(scope='module')
def localhost_pair():
    return generate_self_signed('localhost')


@pytest.fixture
def inbox(tmp_path, users, localhost_pair):
    key, cert = localhost_pair
    with InboxThread(tmp_path / 'inbox.db', pop3=('127.0.0.1', 0), pop3_users=users,
                     pop3_tls=create_context(key, cert)) as running:
        yield running


def pop3_port(inbox):
    return inbox.inbox.pop3_address[1]


def login(inbox):
    client = poplib.POP3('127.0.0.1', pop3_port(inbox), timeout=WAIT)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def api_ids(inbox):
    return [m['ID'] for m in Http(inbox.url).json('GET', '/api/v1/messages')['messages']]


def test_stat_list_uidl_retr_top_as_the_api_sees_them(inbox):
    for n in range(3):
        send(inbox.smtp, subject=f'number {n}', text=f'line one\n.dotted line\nline {n}\n')
    ids = api_ids(inbox)
    web = Http(inbox.url)
    client = login(inbox)
    try:
        count, size = client.stat()
        raws = [web.get(f'/api/v1/message/{uid}/raw').body for uid in ids]
        assert count == 3 and size == sum(len(raw) for raw in raws)
        _, listing, _ = client.list()
        assert [int(line.split()[1]) for line in listing] == [len(raw) for raw in raws]
        _, uidl, _ = client.uidl()
        assert [line.split()[1].decode() for line in uidl] == ids     # newest first
        assert client.uidl(2).split()[2].decode() == ids[1]
        _, lines, octets = client.retr(1)
        assert b'\r\n'.join(lines) + b'\r\n' == raws[0]      # '.dotted' survives the stuffing
        assert b'.dotted line' in lines
        _, head, _ = client.top(1, 1)
        assert head[-2:] == [b'', b'line one'] and b'Subject: number 2' in head
        assert client.noop().startswith(b'+OK')
    finally:
        client.quit()


def test_dele_takes_effect_at_quit_and_rset_undoes_it(inbox):
    for n in range(3):
        send(inbox.smtp, subject=f'number {n}')
    ids = api_ids(inbox)
    client = login(inbox)
    client.dele(1)
    assert client.stat()[0] == 2            # RFC 1939 5: a marked message is not listed
    with pytest.raises(poplib.error_proto, match='no such message'):
        client.retr(1)
    assert api_ids(inbox) == ids            # nothing deleted before QUIT
    client.rset()
    assert client.stat()[0] == 3
    client.dele(2)
    client.dele(3)
    assert client.quit().startswith(b'+OK')
    assert api_ids(inbox) == ids[:1]


def test_a_dropped_connection_deletes_nothing(inbox):
    send(inbox.smtp, subject='kept')
    ids = api_ids(inbox)
    client = login(inbox)
    client.dele(1)
    client.close()      # no QUIT: no UPDATE state
    probe = login(inbox)        # a new session after the old one is gone
    assert probe.stat()[0] == 1
    probe.quit()
    assert api_ids(inbox) == ids


def test_bad_passwords_are_refused_and_the_third_closes(inbox):
    client = poplib.POP3('127.0.0.1', pop3_port(inbox), timeout=WAIT)
    client.user(USER)
    with pytest.raises(poplib.error_proto, match='invalid'):
        client.pass_('wrong')
    with pytest.raises(poplib.error_proto, match='not authenticated'):
        client.stat()
    client.user('nobody')
    with pytest.raises(poplib.error_proto, match='invalid'):
        client.pass_(PASSWORD)
    client.user(USER)
    with pytest.raises(poplib.error_proto, match='invalid'):
        client.pass_('wrong again')
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        client.noop()
    client.close()


def test_stls_then_login_over_tls(inbox, localhost_pair):
    send(inbox.smtp, subject='over TLS')
    client = poplib.POP3('127.0.0.1', pop3_port(inbox), timeout=WAIT)
    assert 'STLS' in client.capa()
    context = ssl.create_default_context(cadata=localhost_pair[1].decode())
    context.check_hostname = False      # the certificate names localhost; we dial 127.0.0.1
    client.stls(context)
    assert isinstance(client.sock, ssl.SSLSocket)
    assert 'STLS' not in client.capa()     # RFC 2595 4: not offered twice
    client.user(USER)
    client.pass_(PASSWORD)
    _, lines, _ = client.retr(1)
    assert b'Subject: over TLS' in lines
    client.quit()


def test_plaintext_sent_after_stls_is_not_taken_as_a_command(inbox, localhost_pair):
    """RFC 2595 4: what arrives with STLS in the clear (an injected USER) is dropped."""
    with socket.create_connection(('127.0.0.1', pop3_port(inbox)), timeout=WAIT) as raw:
        reader = raw.makefile('rb')
        assert reader.readline().startswith(b'+OK')
        raw.sendall(b'STLS\r\nUSER ' + USER.encode() + b'\r\n')
        assert reader.readline().startswith(b'+OK')
        context = ssl.create_default_context(cadata=localhost_pair[1].decode())
        context.check_hostname = False
        with context.wrap_socket(raw) as tls:
            tls.sendall(b'PASS ' + PASSWORD.encode() + b'\r\n')
            assert tls.recv(200).startswith(b'-ERR USER first')


def test_a_command_line_too_long_is_refused_and_the_session_goes_on(inbox):
    with socket.create_connection(('127.0.0.1', pop3_port(inbox)), timeout=WAIT) as raw:
        reader = raw.makefile('rb')
        reader.readline()
        raw.sendall(b'USER ' + b'x' * 5000 + b'\r\nCAPA\r\n')
        assert reader.readline() == b'-ERR line too long\r\n'
        assert reader.readline().startswith(b'+OK capability')


def test_the_session_rules_without_sockets():
    class Drop:
        def authenticate(self, user, password):
            return password == 'ok'

        def listing(self):
            return [('A', 10), ('B', 20)]

        def raw(self, uid):
            return b'Subject: x\r\n\r\n.one\r\ntwo\r\n'

        def delete(self, uids):
            self.gone = list(uids)
            return len(uids)

    drop = Drop()
    session = Pop3Session(drop)
    assert session.handle(b'STAT\r\n').data.startswith(b'-ERR not authenticated')
    assert session.handle(b'STLS\r\n').data.startswith(b'-ERR')       # not offered
    assert session.handle(b'USER me\r\n').data == b'+OK\r\n'
    assert session.handle(b'PASS ok\r\n').data.startswith(b'+OK')
    assert session.handle(b'USER again\r\n').data.startswith(b'-ERR')
    assert session.handle(b'RETR 1\r\n').data.endswith(b'\r\n\r\n..one\r\ntwo\r\n.\r\n')
    assert session.handle(b'LIST 3\r\n').data.startswith(b'-ERR no such message')
    assert session.handle(b'DELE 2\r\n').data.startswith(b'+OK')
    assert session.handle(b'DELE 2\r\n').data.startswith(b'-ERR')
    reply = session.handle(b'QUIT\r\n')
    assert reply.close and drop.gone == ['B']
    assert multiline('x', b'a\n.\nb').data == b'+OK x\r\na\n..\nb\r\n.\r\n'
    assert multiline('x', b'.a\r\n').data == b'+OK x\r\n..a\r\n.\r\n'
    assert top(b'H: 1\r\n\r\na\r\nb\r\n', 0) == b'H: 1\r\n\r\n'
    assert top(b'H: 1\r\n\r\na\r\nb\r\n', 5) == b'H: 1\r\n\r\na\r\nb\r\n'


def test_fetchmail_fetches_over_stls_and_deletes(inbox, tmp_path, localhost_pair):
    for n in range(2):
        send(inbox.smtp, make_mail(subject=f'for fetchmail {n}'))
    log, fetched = fetch_all(tmp_path, pop3_port(inbox), USER, PASSWORD, localhost_pair[1],
                             implicit_tls=False)
    assert 'POP3> STLS' in log and 'POP3> QUIT' in log
    assert 'Subject: for fetchmail 0' in fetched and 'Subject: for fetchmail 1' in fetched
    assert api_ids(inbox) == []         # fetchmail deleted them: applied at its QUIT


@pytest.mark.parametrize('args, status, message', [
    (['--pop3', '127.0.0.1:0'], 2, '--pop3 needs --pop3-auth-file'),
    (['--pop3-tls-implicit'], 2, 'need --pop3 HOST:PORT or --pop3-auth-file'),
    (['--pop3', 'nonsense', '--pop3-auth-file', 'users'], 2, '--pop3:'),
    (['--pop3', '127.0.0.1:0', '--pop3-auth-file', 'missing'], 1, '--pop3-auth-file'),
])
def test_bad_pop3_arguments(tmp_path, args, status, message):
    (tmp_path / 'users').write_text(f'{USER}:{hash_password(PASSWORD)}\n')
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0', *args,
                        cwd=tmp_path)
    assert result.returncode == status, result
    assert message in result.stderr


def test_the_command_serves_pop3(tmp_path, users):
    (tmp_path / 'users').write_text(f'{USER}:{users[USER]}\n')
    proc = Process([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                    '--http', '127.0.0.1:0', '--pop3', '127.0.0.1:0',
                    '--pop3-auth-file', 'users'], tmp_path)
    try:
        match = proc.wait_line(r'SMTP on 127.0.0.1:(\d+).*POP3 on 127.0.0.1:(\d+)', 'stdout')
        send(('127.0.0.1', int(match[1])), subject='via the command')
        client = poplib.POP3('127.0.0.1', int(match[2]), timeout=WAIT)
        assert 'STLS' in client.capa()      # a self-signed certificate by default
        client.user(USER)
        client.pass_(PASSWORD)
        assert b'Subject: via the command' in client.retr(1)[1]
        client.quit()
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.close()
