"""`smtp-stack inbox` as a real process: its start-up line, SMTP in, the API
out, AUTH acceptance, the users file, bad arguments, a clean SIGTERM."""
from __future__ import annotations

import json
import re
import signal
import socket
import smtplib
import sys

import pytest

from clirunner import Process, smtp_stack
from inbox_helpers import Http, send
from smtp_stack.cli import build_parser

LINE = re.compile(r'inbox: SMTP on ([0-9.]+):(\d+), web and API on (http://[0-9.]+:\d+/)')


class InboxProcess(Process):
    def __init__(self, cwd, *args):
        super().__init__([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                          '--http', '127.0.0.1:0', *args], cwd)
        try:
            match = self.wait_line(LINE.pattern, 'stdout')
        except AssertionError:
            self.close()
            raise
        self.smtp = (match[1], int(match[2]))
        self.url = match[3]


def test_defaults_are_loopback_and_mailpit_ports():
    args = build_parser().parse_args(['inbox'])
    assert (args.smtp, args.http, args.db, args.max_messages) == (
        '127.0.0.1:1025', '127.0.0.1:8025', 'inbox.db', 500)
    assert not args.smtp_auth_accept_any and args.relay is None and args.ui_auth_file is None


def test_help_documents_every_option(tmp_path):
    result = smtp_stack('inbox', '--help', cwd=tmp_path)
    assert result.returncode == 0
    for flag in ('--smtp', '--http', '--db', '--max-messages', '--smtp-auth-accept-any',
                 '--smtp-starttls', '--ui-auth-file', '--relay', '/api/v1/messages',
                 '/api/v1/search', '/api/v1/message/{ID}/release', '/api/events'):
        assert flag in result.stdout, flag
    assert 'inbox' in smtp_stack('--help', cwd=tmp_path).stdout


def test_catches_mail_serves_it_and_stops_on_sigterm(tmp_path):
    proc = InboxProcess(tmp_path, '--db', 'caught.db', '--max-messages', '2')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.ehlo()
            assert not client.has_extn('auth') and not client.has_extn('starttls')
        for i in range(3):
            send(proc.smtp, subject=f'cli {i}')
        data = Http(proc.url).json('GET', '/api/v1/messages')
        assert [m['Subject'] for m in data['messages']] == ['cli 2', 'cli 1']
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.wait_line('stopped')
    finally:
        proc.close()
    assert (tmp_path / 'caught.db').exists()


def test_accept_any_auth_records_the_user(tmp_path):
    proc = InboxProcess(tmp_path, '--smtp-auth-accept-any')
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.login('whoever', 'anything')
            client.sendmail('a@example.com', ['b@example.com'],
                            b'Subject: authed\r\nFrom: a@example.com\r\n\r\nhi\r\n')
        item = Http(proc.url).json('GET', '/api/v1/messages')['messages'][0]
        assert (item['Subject'], item['Username']) == ('authed', 'whoever')
    finally:
        proc.close()


def test_ui_auth_file(tmp_path):
    hashed = smtp_stack('hash-password', '--scheme', 'pbkdf2-sha256', cwd=tmp_path,
                        input='pw\n').stdout.strip()
    (tmp_path / 'web-users').write_text(f'dev:{hashed}\n')
    proc = InboxProcess(tmp_path, '--ui-auth-file', 'web-users')
    try:
        assert Http(proc.url).get('/').status == 401
        assert Http(proc.url, auth=('dev', 'pw')).get('/').status == 200
    finally:
        proc.close()


@pytest.mark.parametrize('args, status, message', [
    (['--smtp', 'nonsense'], 2, "is not HOST:PORT"),
    (['--http', '127.0.0.1:99999'], 2, 'a port is from 0 to 65535'),
    (['--max-messages', '-1'], 2, 'must be 0 or more'),
    (['--ui-auth-file', 'missing'], 1, '--ui-auth-file'),
    (['--db', '/nonexistent/dir/x.db'], 1, 'cannot open'),
])
def test_bad_arguments(tmp_path, args, status, message):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0', *args,
                        cwd=tmp_path)
    assert result.returncode == status, result
    assert message in result.stderr


@pytest.mark.parametrize('side', ['--smtp', '--http'])
def test_a_port_taken_is_named_in_one_line(tmp_path, side):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        addresses = {'--smtp': '127.0.0.1:0', '--http': '127.0.0.1:0', side: f'127.0.0.1:{port}'}
        result = smtp_stack('inbox', *[x for pair in addresses.items() for x in pair],
                            cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()     # a log line: '<time> ERROR smtp_stack.cli[pid]: ...'
    assert ' ERROR smtp_stack.cli[' in line
    assert line.split(': ', 1)[1] == f'cannot listen on 127.0.0.1:{port}: Address already in use'


def test_a_mistyped_option_gets_the_inbox_usage(tmp_path):
    result = smtp_stack('inbox', '--max-ag', '7d', '--smpt', '127.0.0.1:0', cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith('usage: smtp-stack inbox [-h]')
    assert result.stderr.splitlines()[-1] == (
        'smtp-stack inbox: error: unrecognized arguments: --smpt 127.0.0.1:0 '
        '(did you mean --smtp?)')


@pytest.mark.parametrize('storing', [[], ['--no-store-process']], ids=['process', 'thread'])
def test_verbose_logs_each_session_and_each_message_stored(tmp_path, storing):
    """`--verbose` (Mailpit's): the session's lines, and one line per message
    stored with its id, envelope, size and subject as written, as facts
    in JSON; the same from the store process and from the thread."""
    proc = InboxProcess(tmp_path, '--verbose', '--log-format', 'json', *storing)
    try:
        with smtplib.SMTP(*proc.smtp, timeout=10) as client:
            client.sendmail('ann@example.com', ['bob@example.com', 'hidden@example.com'],
                            b'From: ann@example.com\r\nTo: bob@example.com\r\n'
                            b'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= "quoted"\r\n\r\nhi\r\n')
        connect = json.loads(proc.wait_line(r'"event": "connect"').string)
        stored = json.loads(proc.wait_line(r'"event": "inbox_stored"').string)
        delivery = json.loads(proc.wait_line(r'"event": "delivery"').string)
        accepted = json.loads(proc.wait_line(r'"event": "accepted"').string)
    finally:
        proc.close()
    session = connect['session']
    assert stored['queue_id'] == accepted['queue_id'] and stored['queue_id'].startswith(session)
    assert (stored['sender'], stored['recipients']) == (
        'ann@example.com', ['bob@example.com', 'hidden@example.com'])
    assert stored['subject'] == '=?utf-8?q?Gr=C3=BC=C3=9Fe?= "quoted"'
    assert stored['size'] > 80 and stored['logger'] == 'smtp_stack.inbox'
    assert delivery['message'].endswith('relay=inbox, status=sent (stored)'), delivery
    assert stored['message'] == (
        f'{stored["queue_id"]}: stored in the inbox: from=<ann@example.com>, '
        f'to=<bob@example.com>,<hidden@example.com>, size={stored["size"]}, '
        'subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?= \\"quoted\\""')


def test_without_verbose_a_message_stored_is_not_logged(tmp_path):
    proc = InboxProcess(tmp_path)
    try:
        send(proc.smtp, subject='quiet')
        assert Http(proc.url).json('GET', '/api/v1/messages')['total'] == 1
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.wait_line('stopped')
    finally:
        proc.close()
    logged = '\n'.join(proc.seen['stderr'])
    assert 'stored in the inbox' not in logged and 'connect from' not in logged, logged


def test_tag_rules_from_the_command_tag_new_mail(tmp_path):
    """--tag (Mailpit's 'tags=query' rules) as the command reads them, and
    plus-address tags, on mail that arrives over SMTP."""
    proc = InboxProcess(tmp_path, '--tag', 'billing,money=subject:invoice '
                                           '"urgent=is:unread subject:asap"')
    try:
        send(proc.smtp, subject='Invoice 7', to='ann+signup@example.com')
        send(proc.smtp, subject='call me asap')
        send(proc.smtp, subject='nothing special')
        listed = Http(proc.url).json('GET', '/api/v1/messages')['messages']
    finally:
        proc.close()
    assert {m['Subject']: m['Tags'] for m in listed} == {
        'Invoice 7': ['billing', 'money', 'signup'], 'call me asap': ['urgent'],
        'nothing special': []}
