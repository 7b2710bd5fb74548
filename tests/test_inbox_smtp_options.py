"""Mailpit's command-line flags of `smtp-stack inbox`, over real sockets: the
SMTP ones (the users file with AUTH required over TLS, a certificate of
one's own, STARTTLS or TLS required, the recipient allowlist refused or
taken and left out, recipients and size limits), chaos from the start,
message dates as arrival times, title-cased tags, the log file, Mailpit's
environment variables and short option names, and the combinations
Mailpit refuses."""
from __future__ import annotations

import argparse
import hashlib
import smtplib
import socket
import ssl
import sys
import time

import pytest

from clirunner import Process, smtp_stack
from conftest import wait_until
from inbox_helpers import WAIT, Http, InboxThread, WebSocket, make_mail
from smtp_stack.cli import build_parser
from smtp_stack.inbox.command import ENVIRONMENT, add_parser, defaults_from_environment
from smtp_stack.inbox.tags import parse_tag_rules
from smtp_stack.testing_tls import loopback_certificates
from smtp_stack.users import hash_password
from test_inbox_cli import LINE

PASSWORD = 'secret pw'


class InboxProcess(Process):
    """`smtp-stack inbox` on free ports, with these arguments and variables."""

    def __init__(self, cwd, *args, env=None):
        super().__init__([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                          '--http', '127.0.0.1:0', *args], cwd, env=env)
        try:
            match = self.wait_line(LINE.pattern, 'stdout')
        except AssertionError:
            self.close()
            raise
        self.line = match.string
        self.smtp = (match[1], int(match[2]))
        self.url = match[3]


@pytest.fixture(scope='module')
def users_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('users') / 'smtp-users'
    path.write_text(f'dev:{hash_password(PASSWORD, "pbkdf2-sha256")}\n')
    return path


@pytest.fixture(scope='module')
def tls_files(tmp_path_factory):
    """The loopback certificate (signed by the test CA) and its key, as files."""
    made = loopback_certificates()
    folder = tmp_path_factory.mktemp('tls')
    (folder / 'cert.pem').write_bytes(made.cert_pem)
    (folder / 'key.pem').write_bytes(made.key_pem)
    return folder / 'cert.pem', folder / 'key.pem', made


def verifying_context(made) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=made.ca_file)
    return context


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def stored(url):
    return Http(url).json('GET', '/api/v1/messages')['messages']


# -- the users file, and a certificate of one's own ---------------------------------


def test_auth_file_users_only_over_starttls_with_the_given_certificate(tmp_path, users_file,
                                                                       tls_files):
    cert, key, made = tls_files
    proc = InboxProcess(tmp_path, '--smtp-auth-file', str(users_file),
                        '--smtp-tls-cert', str(cert), '--smtp-tls-key', str(key))
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo('client.test')
            assert client.has_extn('starttls') and not client.has_extn('auth')
            # no mail without AUTH (Mailpit's AuthRequired), no AUTH before TLS
            assert client.mail('a@example.com')[0] == 530
            client.starttls(context=verifying_context(made))     # our certificate, verified
            der = client.sock.getpeercert(binary_form=True)
            assert hashlib.sha256(der).digest() == hashlib.sha256(
                ssl.PEM_cert_to_DER_cert(made.cert_pem.decode())).digest()
            client.ehlo('client.test')
            assert client.has_extn('auth')
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login('dev', 'wrong')
            assert refused.value.smtp_code == 535
            client.login('dev', PASSWORD)
            client.send_message(make_mail(subject='with a login'))
        [item] = stored(proc.url)
        assert (item['Subject'], item['Username']) == ('with a login', 'dev')
    finally:
        proc.close()


def test_auth_file_without_tls_when_allowed_insecure(tmp_path, users_file):
    proc = InboxProcess(tmp_path, '--smtp-auth-file', str(users_file),
                        '--smtp-auth-allow-insecure')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo('client.test')
            assert client.has_extn('auth') and not client.has_extn('starttls')
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login('nobody', PASSWORD)        # a name not in the file
            client.login('dev', PASSWORD)
            client.send_message(make_mail(subject='plain login'))
        assert [m['Username'] for m in stored(proc.url)] == ['dev']
    finally:
        proc.close()


def test_require_tls_is_smtps_from_the_first_byte(tmp_path, tls_files):
    cert, key, made = tls_files
    proc = InboxProcess(tmp_path, '--smtp-require-tls', '--smtp-tls-cert', str(cert),
                        '--smtp-tls-key', str(key))
    try:
        with smtplib.SMTP_SSL(*proc.smtp, timeout=10,
                              context=verifying_context(made)) as client:
            client.ehlo('client.test')
            assert not client.has_extn('starttls')
            client.send_message(make_mail(subject='over smtps'))
        with pytest.raises((smtplib.SMTPException, OSError)):
            with smtplib.SMTP(*proc.smtp, timeout=3) as client:     # plain: no greeting
                client.ehlo('client.test')
        assert [m['Subject'] for m in stored(proc.url)] == ['over smtps']
    finally:
        proc.close()


def test_require_starttls_with_a_self_signed_certificate(tmp_path):
    proc = InboxProcess(tmp_path, '--smtp-require-starttls')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo('client.test')
            code, text = client.mail('a@example.com')
            assert (code, text) == (530, b'5.7.0 Must issue a STARTTLS command first')
            assert client.rcpt('b@example.com')[0] == 530
            client.starttls(context=unverified_context())
            client.ehlo('client.test')
            client.send_message(make_mail(subject='after starttls'))
        assert [m['Subject'] for m in stored(proc.url)] == ['after starttls']
    finally:
        proc.close()


# -- recipients --------------------------------------------------------------------------


def test_allowed_recipients_refuse_others_and_count_them(tmp_path):
    with InboxThread(tmp_path / 'in.db', allowed_recipients=r'@example\.com$') as box:
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.ehlo('client.test')
            client.mail('a@example.org')
            assert client.rcpt('ok@example.com')[0] == 250
            code, text = client.rcpt('else@example.net')
            assert (code, text) == (550, b'5.1.0 Requested action not taken: '
                                         b'mailbox unavailable')
            assert client.data(make_mail(subject='allowed', to='ok@example.com').as_string())[0] == 250
        http = Http(box.url)
        [item] = http.json('GET', '/api/v1/messages')['messages']
        assert item['Subject'] == 'allowed'
        assert [a['Address'] for a in item['To']] == ['ok@example.com'] and item['Bcc'] is None
        assert http.json('GET', '/api/v1/info')['RuntimeStats']['SMTPRejected'] == 1


def test_ignored_recipients_get_250_and_are_left_out(tmp_path):
    with InboxThread(tmp_path / 'in.db', allowed_recipients='^ok@',
                     ignore_rejected_recipients=True) as box:
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            refused = client.sendmail('a@example.org', ['ok@example.com', 'hidden@example.com'],
                                      make_mail(subject='one of two', to='ok@example.com')
                                      .as_string())
            assert refused == {}
            # none allowed: taken with 250, and not stored (Mailpit drops it)
            client.mail('a@example.org')
            assert client.rcpt('nobody@example.com')[0] == 250
            code, text = client.data(make_mail(subject='nobody').as_string())
            assert code == 250 and b'not stored' in text
        http = Http(box.url)
        [item] = http.json('GET', '/api/v1/messages')['messages']
        assert item['Subject'] == 'one of two'
        assert item['Bcc'] is None          # the ignored recipient is named nowhere
        raw = http.request('GET', f'/api/v1/message/{item["ID"]}/raw').body
        assert b'hidden@example.com' not in raw
        assert http.json('GET', '/api/v1/info')['RuntimeStats']['SMTPRejected'] == 2


def test_recipient_and_size_limits(tmp_path):
    proc = InboxProcess(tmp_path, '--smtp-max-recipients', '2', '--max-message-size', '1')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo('client.test')
            assert client.esmtp_features['size'] == str(1 << 20)
            client.mail('a@example.org')
            assert [client.rcpt(f'r{i}@example.com')[0] for i in range(3)] == [250, 250, 452]
            client.rset()
            big = make_mail(subject='too big', text=('x' * 998 + '\n') * 1100)
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.send_message(big)        # SIZE= says it at MAIL
            assert refused.value.smtp_code == 552
        assert stored(proc.url) == []
    finally:
        proc.close()


# -- chaos, environment, names -----------------------------------------------------------


def test_chaos_triggers_from_the_start(tmp_path):
    proc = InboxProcess(tmp_path, '--chaos-triggers', 'Sender:451:100,recipient:550:0')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo('client.test')
            assert client.mail('a@example.org') == (451, b'4.3.0 Chaos sender error')
        triggers = Http(proc.url).json('GET', '/api/v1/chaos')
        assert triggers['Sender'] == {'ErrorCode': 451, 'Probability': 100}
        assert triggers['Recipient'] == {'ErrorCode': 550, 'Probability': 0}
    finally:
        proc.close()


def test_mailpits_environment_variables(tmp_path):
    """A docker-compose file written for Mailpit, its variables as they are."""
    proc = InboxProcess(tmp_path, env={
        'MP_DATABASE': 'from-env.db', 'MP_MAX_MESSAGES': '2', 'MP_SMTP_AUTH_ACCEPT_ANY': 'true',
        'MP_SMTP_AUTH_ALLOW_INSECURE': '1', 'MP_SMTP_ALLOWED_RECIPIENTS': '@example\\.com$',
        'MP_TAG': 'env=subject:tagged', 'MP_VERBOSE': 'no'})
    try:
        assert 'from-env.db' in proc.line and 'newest 2 kept' in proc.line
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.login('envuser', 'x')
            assert client.sendmail('a@example.org', ['x@example.com', 'y@example.net'],
                                   make_mail(subject='tagged').as_string()) == {
                'y@example.net': (550, b'5.1.0 Requested action not taken: mailbox unavailable')}
        [item] = stored(proc.url)
        assert (item['Username'], item['Tags']) == ('envuser', ['env'])
    finally:
        proc.close()
    assert (tmp_path / 'from-env.db').exists()


def test_an_option_given_wins_over_its_variable():
    parser = argparse.ArgumentParser()
    inbox = add_parser(parser.add_subparsers())
    found = defaults_from_environment(inbox, {'MP_MAX_MESSAGES': '7', 'MP_QUIET': 'Yes',
                                              'MP_SMTP_RELAY_HOST': 'relay.test',
                                              'MP_VERBOSE': 'off', 'MP_DATABASE': ''})
    assert found == {'max_messages': '7', 'quiet': True, 'verbose': False,
                     'relay': 'relay.test:25'}
    inbox.set_defaults(**found)
    args = parser.parse_args(['inbox'])
    assert (args.max_messages, args.quiet, args.relay) == (7, True, 'relay.test:25')
    assert parser.parse_args(['inbox', '--max', '9']).max_messages == 9
    assert set(ENVIRONMENT) <= set(vars(args))      # every variable names an option


def test_mailpits_short_and_long_names():
    args = build_parser().parse_args(['inbox', '-d', 'a.db', '-l', '127.0.0.1:1', '-m', '0',
                                      '-s', '127.0.0.1:2', '--database', 'b.db'])
    assert (args.db, args.http, args.max_messages, args.smtp) == (
        'b.db', '127.0.0.1:1', 0, '127.0.0.1:2')


def test_max_zero_keeps_every_message(tmp_path):
    with InboxThread(tmp_path / 'in.db', max_messages=0) as box:
        for i in range(3):
            with smtplib.SMTP(*box.smtp, timeout=10) as client:
                client.send_message(make_mail(subject=f'kept {i}'))
        assert len(Http(box.url).json('GET', '/api/v1/messages')['messages']) == 3
        assert 'every message kept' in box.inbox.describe()


@pytest.mark.parametrize('args, message', [
    (['--smtp-require-tls', '--smtp-require-starttls'], 'cannot be required together'),
    (['--smtp-require-starttls', '--smtp-auth-allow-insecure'], 'TLS cannot be required'),
    (['--smtp-auth-file', 'f', '--smtp-auth-accept-any'], 'not both'),
    (['--smtp-auth-file', 'f'], 'authentication requires STARTTLS or TLS'),
    (['--smtp-tls-key', 'k.pem'], '--smtp-tls-key needs --smtp-tls-cert'),
    (['--smtp-allowed-recipients', '(unclosed'], 'missing ), unterminated subpattern'),
    (['--chaos-triggers', 'Sender:451'], 'expected Sender, Recipient or Authentication'),
    (['--chaos-triggers', 'Sender:600:5'], 'between 400 and 599'),
    (['--max-message-size', '-1'], 'must be 0 or more'),
    (['--ui-tls-key', 'k.pem'], '--ui-tls-key needs --ui-tls-cert'),
    (['--send-api-auth-file', 'f', '--send-api-auth-accept-any'], 'choose one'),
    (['--enable-prometheus', 'yes'], "--enable-prometheus: 'yes' is not true, false or HOST:PORT"),
    (['--smtp', 'yes'], "--smtp: 'yes' is not HOST:PORT"),
])
def test_combinations_mailpit_refuses(tmp_path, args, message):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0', *args,
                        cwd=tmp_path)
    assert result.returncode in (1, 2), result
    assert message in result.stderr, result.stderr


def test_a_bad_certificate_file_is_said_at_start(tmp_path):
    (tmp_path / 'cert.pem').write_text('not a certificate\n')
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--smtp-tls-cert', 'cert.pem', cwd=tmp_path)
    assert result.returncode == 1 and '--smtp-tls-cert' in result.stderr


# -- the store's and the page's flags -----------------------------------------------------


def test_message_dates_as_arrival_times(tmp_path):
    """--use-message-dates: Created is the Date field's moment (the store
    process reads it too), or the arrival when there is none."""
    with InboxThread(tmp_path / 'in.db', use_message_dates=True) as box:
        dated = make_mail(subject='dated', extra_headers={
            'Date': 'Tue, 03 Feb 2026 10:00:00 +0100'})
        undated = make_mail(subject='undated')
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.send_message(dated)
            client.sendmail('a@example.org', ['b@example.com'],
                            undated.as_string().replace('Date:', 'X-Old-Date:'))
        items = {m['Subject']: m for m in Http(box.url).json('GET', '/api/v1/messages')[
            'messages']}
        assert items['dated']['Created'] == '2026-02-03T09:00:00.000Z'
        assert items['undated']['Created'].startswith(
            time.strftime('%Y-%m-%d', time.gmtime()))


def test_title_cased_tags(tmp_path):
    with InboxThread(tmp_path / 'in.db', tags_title_case=True,
                     tag_rules=parse_tag_rules('kept-as-is=subject:tags')) as box:
        msg = make_mail(subject='tags', to='ann+sign.up@example.com',
                        extra_headers={'X-Tags': 'needs review, urgent,2fa-codes'})
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.send_message(msg)
        [item] = Http(box.url).json('GET', '/api/v1/messages')['messages']
        assert item['Tags'] == ['2fa-Codes', 'kept-as-is', 'Needs Review', 'Sign.up',
                                'Urgent']


def test_the_log_file_takes_the_log(tmp_path):
    proc = InboxProcess(tmp_path, '--verbose', '--log-file', 'inbox.log')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.send_message(make_mail(subject='logged'))
        log = tmp_path / 'inbox.log'
        assert wait_until(lambda: 'stored in the inbox' in log.read_text(), WAIT)
        assert 'subject="logged"' in log.read_text()
    finally:
        proc.close()
    assert 'stored in the inbox' not in ''.join(proc.seen['stderr'])


def test_the_delete_all_button_hidden_says_so(tmp_path):
    with InboxThread(tmp_path / 'in.db', hide_delete_all_button=True) as box:
        assert Http(box.url).json('GET', '/api/v1/webui')['HideDeleteAllButton'] is True
    with InboxThread(tmp_path / 'in.db') as box:
        assert Http(box.url).json('GET', '/api/v1/webui')['HideDeleteAllButton'] is False


# -- the web side over HTTPS ----------------------------------------------------------------


def test_the_web_side_over_https_with_its_websocket(tmp_path, tls_files):
    """--ui-tls-cert/--ui-tls-key (Mailpit's): the page, the API and the
    websocket over TLS, with the certificate given (verified by its CA)."""
    cert, key, made = tls_files
    context = verifying_context(made)
    with InboxThread(tmp_path / 'in.db',
                     http_tls=_context_of(made)) as box:
        assert box.url.startswith('https://127.0.0.1:')
        web = Http(box.url.replace('127.0.0.1', 'localhost'), context=context)
        assert web.get('/').status == 200
        events = WebSocket('localhost', box.http[1], context=context)
        try:
            events.event('stats')
            with smtplib.SMTP(*box.smtp, timeout=10) as client:
                client.send_message(make_mail(subject='over https'))
            assert events.event('new')['Data']['Subject'] == 'over https'
        finally:
            events.close()
        assert [m['Subject'] for m in web.json('GET', '/api/v1/messages')['messages']] == [
            'over https']
        with pytest.raises(ssl.SSLError):       # no certificate a client trusts by default
            Http(box.url, context=ssl.create_default_context()).get('/')


def test_the_command_serves_https(tmp_path, tls_files):
    cert, key, made = tls_files
    proc = Process([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                    '--http', '127.0.0.1:0', '--ui-tls-cert', str(cert), '--ui-tls-key',
                    str(key)], tmp_path)
    try:
        match = proc.wait_line(r'web and API on https://127\.0\.0\.1:(\d+)/', 'stdout')
        web = Http(f'https://localhost:{match[1]}/', context=verifying_context(made))
        assert web.json('GET', '/api/v1/info')['Messages'] == 0
    finally:
        proc.close()


def _context_of(made):
    import gevent.ssl
    from smtp_stack.tls import create_context
    return create_context(made.key_pem, made.cert_pem, context_class=gevent.ssl.SSLContext)


def test_a_stdlib_context_for_the_web_side_is_refused(tmp_path):
    from smtp_stack.tls import create_context
    with pytest.raises(ValueError, match="must be gevent.ssl's"):
        InboxThread(tmp_path / 'in.db', http_tls=create_context())
    assert not (tmp_path / 'in.db').exists()         # before anything was opened


@pytest.mark.parametrize('store_process', [True, False], ids=['process', 'thread'])
def test_duplicate_message_ids_are_left_out(tmp_path, store_process):
    """--ignore-duplicate-ids (Mailpit's): a message whose Message-ID the
    inbox holds gets 250 and is not stored, counted as SMTPIgnored; the
    send API answers it with no ID; another Message-ID is stored."""
    with InboxThread(tmp_path / 'in.db', ignore_duplicate_ids=True,
                     store_process=store_process) as box:
        first = make_mail(subject='first')
        again = make_mail(subject='again')
        again.replace_header('Message-ID', first['Message-ID'])
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.send_message(first)
            code, text = client.data(again.as_string()) if client.mail(
                'a@example.org')[0] == 250 and client.rcpt('b@example.com')[0] == 250 else (0, b'')
            assert code == 250 and b'not stored' in text
            client.send_message(make_mail(subject='other'))
        http = Http(box.url)
        sent = http.json('POST', '/api/v1/send', {
            'From': {'Email': 'a@example.org'}, 'To': [{'Email': 'b@example.com'}],
            'Subject': 'by the API', 'Text': 'x',
            'Headers': {'Message-ID': first['Message-ID']}})
        assert sent == {'ID': ''}
        assert sorted(m['Subject'] for m in http.json('GET', '/api/v1/messages')[
            'messages']) == ['first', 'other']
        info = http.json('GET', '/api/v1/info')
        assert (info['RuntimeStats']['SMTPIgnored'], info['RuntimeStats']['SMTPAccepted']) == (
            2, 2)
        assert http.json('GET', '/api/v1/webui')['DuplicatesIgnored'] is True


def test_mailpits_lenient_readings_of_its_flags(tmp_path):
    """Where Mailpit warns and runs, or reads a value its own way, so do we:
    a users file alone serves POP3 on Mailpit's port (here on loopback),
    0 recipients is the default,
    --quiet with --verbose is verbose, and --smtp-ignore-rejected-recipients
    alone is a warning."""
    from smtp_stack.inbox.command import _pop3_options, _smtp_options
    users = tmp_path / 'users'
    users.write_text(f'dev:{hash_password(PASSWORD, "pbkdf2-sha256")}\n')
    parser = argparse.ArgumentParser()
    inbox = add_parser(parser.add_subparsers())
    args = inbox.parse_args(['--pop3-auth-file', str(users), '--smtp-max-recipients', '0',
                             '--quiet', '--verbose', '--smtp-ignore-rejected-recipients'])
    assert _pop3_options(args)['pop3'] == ('127.0.0.1', 1110)
    options = _smtp_options(args)
    assert 'max_recipients' not in options and 'log_level' not in options
    proc = InboxProcess(tmp_path, '--smtp-ignore-rejected-recipients')
    try:
        proc.wait_line('warning: --smtp-ignore-rejected-recipients does nothing')
    finally:
        proc.close()


def test_the_allowlist_judges_only_recipients_the_server_took(tmp_path):
    """A RCPT the server refuses for its own reasons (before MAIL, a bad
    parameter, over the limit) gets that reply, and is neither counted nor
    logged as refused by the allowlist (Mailpit checks it last too)."""
    with InboxThread(tmp_path / 'in.db', allowed_recipients='^ok@',
                     max_recipients=1) as box:
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.ehlo('client.test')
            assert client.rcpt('no@example.com')[0] == 503          # no MAIL yet
            client.mail('a@example.org')
            assert client.rcpt('no@example.com', ['FOO=BAR'])[0] == 555
            assert client.rcpt('no@example.com')[0] == 550          # the allowlist
            assert client.rcpt('ok@example.com')[0] == 250
            assert client.rcpt('no@example.com')[0] == 452          # over the limit
        info = Http(box.url).json('GET', '/api/v1/info')
        assert info['RuntimeStats']['SMTPRejected'] == 1


def test_a_bdat_before_starttls_has_its_chunk_skipped(tmp_path):
    """RFC 3030 2: a refused BDAT's chunk is data, never commands."""
    with InboxThread(tmp_path / 'in.db', starttls=True, require_starttls=True) as box:
        with socket.create_connection(box.smtp, timeout=10) as sock:
            reader = sock.makefile('rb')
            assert reader.readline().startswith(b'220')
            sock.sendall(b'EHLO client.test\r\n')
            while not reader.readline().startswith(b'250 '):
                pass
            sock.sendall(b'BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nQUIT\r\n')
            replies = [reader.readline() for _ in range(2)]
        assert replies[0].startswith(b'503') and replies[1].startswith(b'221'), replies


def test_a_date_utc_cannot_hold_is_no_arrival_time(tmp_path):
    with InboxThread(tmp_path / 'in.db', use_message_dates=True) as box:
        late = make_mail(subject='late', extra_headers={
            'Date': 'Fri, 31 Dec 9999 23:00:00 -0200'})
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            client.send_message(late)
        [item] = Http(box.url).json('GET', '/api/v1/messages')['messages']
        assert item['Created'].startswith(time.strftime('%Y-', time.gmtime()))


def test_the_send_api_has_users_of_its_own(tmp_path, users_file):
    """--send-api-auth-file (Mailpit's): POST /api/v1/send takes its users,
    not the web side's, and they open nothing else; --send-api-auth-accept-any
    opens the send API alone."""
    from smtp_stack.inbox.app import load_users
    web_users = tmp_path / 'web-users'
    web_users.write_text(f'web:{hash_password("web pw", "pbkdf2-sha256")}\n')
    message = {'From': {'Email': 'a@example.org'}, 'To': [{'Email': 'b@example.com'}],
               'Subject': 'sent', 'Text': 'x'}
    with InboxThread(tmp_path / 'in.db', users=load_users(str(web_users)),
                     send_users=load_users(str(users_file))) as box:
        sender = Http(box.url, auth=('dev', PASSWORD))
        assert sender.request('POST', '/api/v1/send', body=message).status == 200
        assert sender.get('/api/v1/messages').status == 401
        web = Http(box.url, auth=('web', 'web pw'))
        assert web.request('POST', '/api/v1/send', body=message).status == 401
        assert [m['Subject'] for m in web.json('GET', '/api/v1/messages')['messages']] == [
            'sent']
    with InboxThread(tmp_path / 'open.db', users=load_users(str(web_users)),
                     send_accept_any=True) as box:
        anyone = Http(box.url)
        assert anyone.request('POST', '/api/v1/send', body=message).status == 200
        assert anyone.get('/api/v1/messages').status == 401


# -- Mailpit's Prometheus metrics ----------------------------------------------------------


def test_a_real_prometheus_scrapes_mailpits_metrics(tmp_path):
    """--enable-prometheus HOST:PORT (Mailpit's separate metrics server): a
    real Prometheus scrapes Mailpit's metric names with the inbox's values."""
    from prometheus_private import Prometheus
    from policy_services import free_port
    port = free_port()
    with InboxThread(tmp_path / 'in.db', prometheus=f'127.0.0.1:{port}',
                     allowed_recipients='^ok@',
                     tag_rules=parse_tag_rules('ops=subject:alert')) as box:
        assert f'metrics on http://127.0.0.1:{port}/metrics' in box.inbox.describe()
        with smtplib.SMTP(*box.smtp, timeout=10) as client:
            for subject in ('alert one', 'alert two', 'plain'):
                client.sendmail('a@example.org', ['ok@example.com'],
                                make_mail(subject=subject, to='ok@example.com').as_string())
            client.mail('a@example.org')
            assert client.rcpt('no@example.com')[0] == 550
        assert Http(box.url).get('/metrics').status == 404     # not on the web side
        prometheus = Prometheus(str(tmp_path), [f'127.0.0.1:{port}'], job='inbox')
        try:
            prometheus.wait_for_values({
                'messages': 'mailpit_messages', 'unread': 'mailpit_messages_unread',
                'accepted': 'mailpit_smtp_accepted_total',
                'rejected': 'mailpit_smtp_rejected_total',
                'ops': 'mailpit_tag_messages{tag="ops"}', 'up': 'up{job="inbox"}',
            }, {'messages': 3.0, 'unread': 3.0, 'accepted': 3.0, 'rejected': 1.0,
                'ops': 2.0, 'up': 1.0})
            assert prometheus.value('mailpit_database_size_bytes') > 0
            assert prometheus.value('mailpit_smtp_accepted_size_bytes_total') > 0
        finally:
            prometheus.stop()


def test_metrics_on_the_web_side_behind_its_users(tmp_path, users_file):
    from smtp_stack.inbox.app import load_users
    with InboxThread(tmp_path / 'in.db', prometheus='true',
                     users=load_users(str(users_file))) as box:
        assert Http(box.url).get('/metrics').status == 401
        reply = Http(box.url, auth=('dev', PASSWORD)).get('/metrics')
        assert reply.status == 200
        assert dict((k.lower(), v) for k, v in reply.headers.items())['content-type'].startswith(
            'text/plain')
        text = reply.body.decode()
        assert '# TYPE mailpit_smtp_accepted_total counter' in text
        assert 'mailpit_messages 0.0' in text


def test_a_failed_tls_handshake_is_no_traceback(tmp_path, tls_files, capfd):
    """Plain HTTP to the HTTPS port, or a client that refuses the
    certificate: the connection is closed, nothing is printed, and the
    web side goes on serving."""
    cert, key, made = tls_files
    with InboxThread(tmp_path / 'in.db', http_tls=_context_of(made)) as box:
        port = box.http[1]
        with socket.create_connection(('127.0.0.1', port), timeout=10) as plain:
            plain.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:            # closed with the request unread
                answer = b''
            assert answer == b''                    # no HTTP answer in the clear
        with pytest.raises(ssl.SSLError):           # a client that refuses the certificate
            Http(f'https://localhost:{port}/', context=ssl.create_default_context()).get('/')
        web = Http(f'https://localhost:{port}/', context=verifying_context(made))
        assert web.get('/livez').status == 200
    assert 'Traceback' not in capfd.readouterr().err


def test_a_taken_metrics_port_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                            '--enable-prometheus', f'127.0.0.1:{port}', cwd=tmp_path)
    assert result.returncode == 1
    assert f'cannot listen on 127.0.0.1:{port}: Address already in use' in result.stderr
