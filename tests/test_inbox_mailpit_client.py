"""A real Mailpit API client drives the inbox: npm's `mailpit-api` (2.1.0,
pinned in tests/inbox_client/package-lock.json, installed here with
`npm ci` when missing), run by Node against the inbox over HTTP."""
from __future__ import annotations

import json
import os
import smtplib
import subprocess

import pytest

import peers
from clirunner import Process
from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
from smtp_stack.inbox.release import Relay
from smtp_stack.testing import MailSink
from spamd_private import PrivateSpamd

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'inbox_client')


@pytest.fixture(scope='module')
def node_client():
    node, npm = peers.program('node', 'nodejs'), peers.program('npm', 'nodejs')
    if not os.path.isdir(os.path.join(CLIENT, 'node_modules', 'mailpit-api')):
        subprocess.run([npm, 'ci', '--no-audit', '--no-fund', '--loglevel=error'], cwd=CLIENT,
                       check=True, timeout=180, capture_output=True)
    return node


def test_mailpit_api_client_lists_searches_waits_reads_deletes(tmp_path, node_client):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='Welcome Ann', sender='Shop <shop@example.com>',
             to='ann@example.com')
        send(inbox.smtp, subject='Invoice 7', sender='Shop <shop@example.com>',
             attachments=[('invoice-7.pdf', 'application/pdf', b'%PDF-1.4 ' + b'x' * 1000)])
        client = Process([node_client, 'client.mjs', inbox.url], CLIENT)
        try:
            client.wait_line('^WAITING$', 'stdout', timeout=20)
            send(inbox.smtp, subject='Late arrival', text='It arrived while the client waited.\n')
            line = client.wait_line('^RESULT ', 'stdout', timeout=20).string
            assert client.wait(20) == 0, client.seen
        finally:
            client.close()
    result = json.loads(line[len('RESULT '):])
    assert result == {
        'info': {'Messages': 2, 'Unread': 2},
        'list': ['Invoice 7', 'Welcome Ann'],
        'search': ['Welcome Ann'],
        'waited': 'Late arrival',
        'attachment': {'name': 'invoice-7.pdf', 'size': 1009},
        'read': 'ok',
        'deleted': 'ok',
    }


# Every method of mailpit-api 2.1.0, and what every_method.mjs checked of its answer.
EVERY_METHOD = {
    'getConfiguration': 'ChaosEnabled, MessageRelay',
    'listMessages': 'null Cc, Bcc, Username "", plus-address tag, HTML snippet',
    'getMessageSummary': 'ListUnsubscribe, generated MessageID, Date with its offset, CRLF Text',
    'searchMessages': 'message-id: of a generated Message-ID',
    'sendMessage': 'ID',
    'waitForMessage': 'the sent message, its tags, parts and Bcc',
    'getMessageHeaders': 'Return-Path, Bcc, Message-Id written at arrival',
    'getMessageSource': 'starts Bcc, Message-ID, Return-Path',
    'getMessageAttachment': 'text/csv, its bytes',
    'renderMessageHTML': 'the HTML part, cid: made a part URL',
    'renderMessageText': 'the Text',
    'getTags': 'every tag, by name',
    'setTags': 'replaced; an unused tag is gone',
    'renameTag': 'ok',
    'deleteTag': 'ok; an unknown one 400',
    'getInfo': 'Tags with their counts',
    'setReadStatus': 'all; by search with tz; IDs and Search both: 400',
    'waitForMessages': 'count, exact and query',
    'htmlCheck': 'Platforms, Total, Warnings; a text-only message 400',
    'linkCheck': 'Errors, Links: a private address blocked',
    'spamAssassinCheck': "a real spamd's Score and Rules, not spam",
    'getAttachmentThumbnail': '180x120 JPEG',
    'releaseMessage': 'ok',
    'deleteMessagesBySearch': 'ok',
    'deleteMessages': 'ok',
    'getChaosTriggers': 'the defaults',
    'setChaosTriggers': 'Recipient at 100 %; a bad code 400',
}


def client_methods() -> set[str]:
    """The public methods of MailpitClient, read from the installed package."""
    import re
    with open(os.path.join(CLIENT, 'node_modules', 'mailpit-api', 'dist', 'index.d.mts')) as f:
        declared = f.read().split('declare class MailpitClient', 1)[1].split('\n}', 1)[0]
    return set(re.findall(r'^  (\w+)\(', declared, re.MULTILINE)) - {'constructor', 'request'}


def test_every_method_of_the_mailpit_api_client(tmp_path, node_client):
    """every_method.mjs calls each method with Mailpit's shapes in mind; the
    release reaches a real second server without its Bcc, a private spamd
    answers its spam check, and the chaos trigger it leaves on fails this
    test's RCPT with its code."""
    assert set(EVERY_METHOD) == client_methods()
    first = make_mail(subject='Arrived over SMTP', to='Ann <ann+signup@example.com>',
                      html='<p>Hello from the HTML part<a href="http://127.0.0.1:9/offers">'
                           '</a></p>', text='Hello in text\n',
                      extra_headers={'Date': 'Tue, 03 Feb 2026 10:00:00 +0200',
                                     'List-Unsubscribe': '<mailto:leave@example.com>, '
                                                         '<https://example.com/leave?u=1>',
                                     'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click'})
    del first['Message-ID']
    spamd = PrivateSpamd(tmp_path)
    try:
        with MailSink() as sink, \
                InboxThread(tmp_path / 'inbox.db', relay=Relay(*sink.address),
                            spamassassin=spamd.address) as inbox:
            send(inbox.smtp, first, rcpt=['ann+signup@example.com', 'hidden@example.com'])
            client = Process([node_client, 'every_method.mjs', inbox.url], CLIENT)
            try:
                line = client.wait_line('^RESULT ', 'stdout', timeout=60).string
                assert client.wait(20) == 0, client.seen
            finally:
                client.close()
            [released] = sink.wait_for(1)
            assert released['Subject'] == 'Sent over HTTP' and released['Bcc'] is None
            assert not released.raw.startswith((b'Bcc:', b'Return-Path:'))
            assert [a.address for a in released.envelope.rcpt_to] == ['real@example.net']
            with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as smtp:
                smtp.ehlo()
                assert smtp.mail('a@example.com')[0] == 250
                code, text = smtp.rcpt('b@example.com')
                assert (code, text.endswith(b' Chaos recipient error')) == (452, True)
            Http(inbox.url).json('PUT', '/api/v1/chaos', {})
            send(inbox.smtp, subject='chaos off')
    finally:
        spamd.stop()
    assert json.loads(line[len('RESULT '):]) == EVERY_METHOD
