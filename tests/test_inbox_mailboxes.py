"""Mailboxes (`--mailboxes by-user | by-recipient | off`), past Mailpit: mail
sent over SMTP (smtplib, with AUTH for by-user) lands in its mailbox, and
each mailbox has its own list, search, unread counts, tags, IDs and
websocket stream under `/mailbox/NAME/` (http.client, a websocket client,
Mailpit's npm and PyPI clients given that base URL); UI users see the
default mailbox and their own; POP3 users read theirs (poplib)."""
from __future__ import annotations

import base64
import json
import os
import poplib
import smtplib
import sqlite3
import subprocess
import types
from datetime import datetime, timezone

import pytest

import peers
from clirunner import smtp_stack
from inbox_helpers import WAIT, Http, InboxThread, WebSocket, make_mail, send
from smtp_stack.inbox.mailboxes import Routing, mailbox_name, mailbox_path
from smtp_stack.inbox.parse import parse_message
from smtp_stack.inbox.schema import SCHEMA_VERSION
from smtp_stack.inbox.store import Store, list_item, new_id
from smtp_stack.users import hash_password

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'inbox_client')


def send_as(address, user, **kwargs):
    """One message over SMTP after AUTH PLAIN as `user` (any password)."""
    msg = make_mail(**kwargs)
    with smtplib.SMTP(address[0], address[1], timeout=WAIT) as client:
        client.login(user, 'any password')
        client.send_message(msg)
    return msg


def subjects(web, mailbox=''):
    prefix = f'/mailbox/{mailbox}' if mailbox else ''
    return [m['Subject'] for m in web.json('GET', f'{prefix}/api/v1/messages')['messages']]


@pytest.fixture
def by_user(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True) as running:
        yield running


# -- which mailbox: the pure rules --------------------------------------------------------

@pytest.mark.parametrize('mode, pattern, user, rcpt, expected', [
    ('off', None, 'ann', ['bob@example.com'], ['']),
    ('by-user', None, 'Ann', ['bob@example.com'], ['ann']),
    ('by-user', None, None, ['bob@example.com'], ['']),
    ('by-user', None, 'a/b', [], ['']),                  # no name: the default mailbox
    ('by-recipient', None, 'ann', ['Bob@Example.com', 'eve@example.com', 'bob@example.com'],
     ['bob@example.com', 'eve@example.com']),
    ('by-recipient', None, None, [], ['']),
    ('by-recipient', 'test+*@example.com', None,
     ['test+ann@example.com', 'other@example.com', 'TEST+Ann@example.com', 'test+@example.com'],
     ['ann', '']),
])
def test_which_mailboxes_a_message_goes_to(mode, pattern, user, rcpt, expected):
    assert Routing.of(mode, pattern).mailboxes(user, rcpt) == expected


@pytest.mark.parametrize('text, name', [
    ('Ann', 'ann'), (' bob@Example.COM ', 'bob@example.com'), ('a+b%c', 'a+b%c'),
    ('', None), (None, None), ('a/b', None), ('a b', None), ('..', None), ('.', None),
    ('x\x00', None), ('x' * 255, None), ('x' * 254, 'x' * 254),
])
def test_mailbox_names(text, name):
    assert mailbox_name(text) == name


@pytest.mark.parametrize('mode, pattern, error', [
    ('sideways', None, 'mailboxes must be one of off, by-user, by-recipient'),
    ('by-user', '*@example.com', 'a mailbox pattern needs mailboxes by-recipient'),
    ('by-recipient', 'test+@example.com', 'an address with one *'),
    ('by-recipient', '*+*@example.com', 'an address with one *'),
    ('by-recipient', 'test+*', 'an address with one *'),
])
def test_bad_modes_and_patterns_say_why(mode, pattern, error):
    with pytest.raises(ValueError, match=error.replace('*', r'\*')):
        Routing.of(mode, pattern)


def test_mailbox_paths_are_quoted_under_the_root():
    assert mailbox_path('', '') == '/'
    assert mailbox_path('/inbox', 'ann@example.com') == '/inbox/mailbox/ann@example.com/'
    assert mailbox_path('/inbox/', 'a%b?#\\') == '/inbox/mailbox/a%25b%3F%23%5C/'


# -- by-user over SMTP and the API --------------------------------------------------------

def test_by_user_each_mailbox_has_its_own_list_ids_search_and_counts(by_user):
    send_as(by_user.smtp, 'Ann', subject='for ann 1')
    send_as(by_user.smtp, 'ann', subject='for ann 2')
    send_as(by_user.smtp, 'bob', subject='for bob')
    send(by_user.smtp, subject='without auth')
    web = Http(by_user.url)
    assert subjects(web) == ['without auth']                 # the API unchanged for the default
    assert subjects(web, 'ann') == ['for ann 2', 'for ann 1']
    assert subjects(web, 'ANN') == ['for ann 2', 'for ann 1']   # names are case-insensitive
    assert subjects(web, 'bob') == ['for bob']
    assert subjects(web, 'nobody') == []                     # a mailbox without mail is empty
    ann = web.json('GET', '/mailbox/ann/api/v1/messages')
    assert (ann['total'], ann['unread']) == (2, 2)
    assert [m['Username'] for m in ann['messages']] == ['ann', 'Ann']    # as they logged in
    first = ann['messages'][1]['ID']
    # An ID is its mailbox's: unknown anywhere else.
    assert web.get(f'/api/v1/message/{first}').status == 404
    assert web.get(f'/mailbox/bob/api/v1/message/{first}').status == 404
    assert web.get(f'/mailbox/bob/view/{first}.txt').status == 404
    opened = web.json('GET', f'/mailbox/ann/api/v1/message/{first}')     # marks it read
    assert opened['Subject'] == 'for ann 1'
    assert web.get(f'/mailbox/ann/api/v1/message/{first}/raw').body.startswith(b'Return-Path:')
    assert web.json('GET', '/mailbox/ann/api/v1/info')['Unread'] == 1
    assert web.json('GET', '/api/v1/info')['Messages'] == 1
    found = web.json('GET', '/mailbox/ann/api/v1/search?query=for')
    assert (found['messages_count'], found['total']) == (2, 2)
    assert web.json('GET', '/mailbox/bob/api/v1/search?query=ann')['messages_count'] == 0
    assert web.json('GET', '/api/v1/mailboxes') == {
        'Mode': 'by-user', 'Mailbox': '', 'Mailboxes': [
            {'Name': '', 'Path': '/', 'Total': 1, 'Unread': 1},
            {'Name': 'ann', 'Path': '/mailbox/ann/', 'Total': 2, 'Unread': 1},
            {'Name': 'bob', 'Path': '/mailbox/bob/', 'Total': 1, 'Unread': 1}]}
    assert web.json('GET', '/mailbox/bob/api/v1/mailboxes')['Mailbox'] == 'bob'
    # Writes stay in their mailbox too.
    assert web.request('PUT', '/mailbox/bob/api/v1/messages', body={'Read': True}).status == 200
    assert web.json('GET', '/mailbox/ann/api/v1/info')['Unread'] == 1
    assert web.request('DELETE', '/mailbox/ann/api/v1/messages').status == 200
    assert subjects(web, 'ann') == [] and subjects(web, 'bob') == ['for bob']
    assert subjects(web) == ['without auth']


def test_tags_are_each_mailbox_s_own(by_user):
    send_as(by_user.smtp, 'ann', subject='tagged for ann', extra_headers={'X-Tags': 'urgent'})
    send_as(by_user.smtp, 'bob', subject='tagged for bob', extra_headers={'X-Tags': 'urgent'})
    web = Http(by_user.url)
    assert web.json('GET', '/mailbox/ann/api/v1/tags') == ['urgent']
    assert web.json('GET', '/api/v1/tags') == []
    assert web.request('PUT', '/mailbox/ann/api/v1/tags/urgent', body={'Name': 'later'}).status \
        == 200
    assert web.json('GET', '/mailbox/ann/api/v1/tags') == ['later']
    assert web.json('GET', '/mailbox/bob/api/v1/tags') == ['urgent']   # bob's is left alone
    assert web.json('GET', '/mailbox/bob/api/v1/search?query=tag:urgent')['messages_count'] == 1
    assert web.json('GET', '/mailbox/bob/api/v1/info')['Tags'] == {'urgent': 1}
    assert web.request('DELETE', '/mailbox/bob/api/v1/tags/later').status == 400   # not bob's
    [ann] = web.json('GET', '/mailbox/ann/api/v1/messages')['messages']
    assert web.request('PUT', '/mailbox/ann/api/v1/tags',
                       body={'IDs': [ann['ID']], 'Tags': ['urgent', 'mine']}).status == 200
    assert web.json('GET', '/mailbox/ann/api/v1/tags') == ['mine', 'urgent']
    assert web.json('GET', '/mailbox/bob/api/v1/tags') == ['urgent']


def test_send_under_a_prefix_stores_there_and_at_the_root_as_smtp_would(by_user):
    web = Http(by_user.url)
    request = {'From': {'Email': 'app@example.com'}, 'To': [{'Email': 'x@example.com'}],
               'Subject': 'sent by the API'}
    sent = web.json('POST', '/mailbox/carol/api/v1/send', body=request)
    assert [m['ID'] for m in web.json('GET', '/mailbox/carol/api/v1/messages')['messages']] \
        == [sent['ID']]
    web.json('POST', '/api/v1/send', body={**request, 'Subject': 'no user'})
    assert subjects(web) == ['no user']              # no basic-auth user: the default mailbox


def test_max_messages_bounds_each_mailbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                     max_messages=2) as inbox:
        for n in range(3):
            send_as(inbox.smtp, 'ann', subject=f'ann {n}')
        send_as(inbox.smtp, 'bob', subject='bob 0')
        web = Http(inbox.url)
        assert subjects(web, 'ann') == ['ann 2', 'ann 1']
        assert subjects(web, 'bob') == ['bob 0']        # not pushed out by ann's mail


# -- by-recipient --------------------------------------------------------------------------

def test_by_recipient_a_copy_per_mailbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-recipient') as inbox:
        send(inbox.smtp, subject='to two', to='Ann <ann@example.com>',
             rcpt=['ann@example.com', 'Bob@example.com', 'bob@example.com'])
        send(inbox.smtp, subject='to nobody known', rcpt=['eve@example.com'])
        web = Http(inbox.url)
        assert subjects(web) == []
        ann = web.json('GET', '/mailbox/ann@example.com/api/v1/messages')['messages']
        bob = web.json('GET', '/mailbox/bob@example.com/api/v1/messages')['messages']
        assert [m['Subject'] for m in ann] == [m['Subject'] for m in bob] == ['to two']
        assert ann[0]['ID'] != bob[0]['ID']
        web.json('GET', f'/mailbox/ann@example.com/api/v1/message/{ann[0]["ID"]}')   # read
        assert web.json('GET', '/mailbox/bob@example.com/api/v1/messages')['unread'] == 1
        names = [box['Name'] for box in web.json('GET', '/api/v1/mailboxes')['Mailboxes']]
        assert names == ['', 'ann@example.com', 'bob@example.com', 'eve@example.com']


def test_by_recipient_with_a_pattern(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-recipient',
                     mailbox_pattern='test+*@example.com') as inbox:
        send(inbox.smtp, subject='for ann', rcpt=['test+ann@example.com'])
        send(inbox.smtp, subject='mixed', rcpt=['test+bob@example.com', 'ops@example.com'])
        web = Http(inbox.url)
        assert subjects(web, 'ann') == ['for ann']
        assert subjects(web, 'bob') == ['mixed']
        assert subjects(web) == ['mixed']          # ops@ matches no pattern: the default


# -- who sees what ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ui_users():
    return {'ann': hash_password('ann pw'), 'bob': hash_password('bob pw')}


def test_ui_users_see_the_default_mailbox_and_their_own(tmp_path, ui_users):
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                     users=ui_users) as inbox:
        send_as(inbox.smtp, 'ann', subject='for ann')
        send_as(inbox.smtp, 'bob', subject='for bob')
        send(inbox.smtp, subject='for everyone')
        ann = Http(inbox.url, auth=('ann', 'ann pw'))
        assert subjects(ann) == ['for everyone']
        assert subjects(ann, 'ann') == ['for ann']
        for path in ('/mailbox/bob/api/v1/messages', '/mailbox/BOB/', '/mailbox/nobody/',
                     '/mailbox/bob/api/v1/mailboxes', '/mailbox/bob/static/app.js'):
            reply = ann.get(path)
            assert (reply.status, reply.text) == (403, 'this mailbox is not yours\n'), path
        [bob_item] = Http(inbox.url, auth=('bob', 'bob pw')).json(
            'GET', '/mailbox/bob/api/v1/messages')['messages']
        assert ann.get(f'/api/v1/message/{bob_item["ID"]}').status == 404
        assert ann.json('GET', '/api/v1/mailboxes')['Mailboxes'] == [
            {'Name': '', 'Path': '/', 'Total': 1, 'Unread': 1},
            {'Name': 'ann', 'Path': '/mailbox/ann/', 'Total': 1, 'Unread': 1}]
        assert Http(inbox.url).get('/mailbox/ann/api/v1/messages').status == 401
        token = base64.b64encode(b'ann:ann pw').decode()
        with pytest.raises(ConnectionError, match='403'):
            WebSocket(*inbox.http, path='/mailbox/bob/api/events',
                      headers=[('Authorization', f'Basic {token}')])
        mine = WebSocket(*inbox.http, path='/mailbox/ann/api/events',
                         headers=[('Authorization', f'Basic {token}')])
        assert mine.event('stats')['Data']['Total'] == 1
        mine.close()


def test_without_ui_users_every_mailbox_is_visible(by_user):
    send_as(by_user.smtp, 'bob', subject='for bob')
    assert subjects(Http(by_user.url), 'bob') == ['for bob']


def test_without_mailboxes_a_mailbox_path_is_unknown(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='one mailbox')
        web = Http(inbox.url)
        assert web.get('/mailbox/ann/api/v1/messages').status == 404
        assert web.json('GET', '/api/v1/mailboxes') == {
            'Mode': 'off', 'Mailbox': '',
            'Mailboxes': [{'Name': '', 'Path': '/', 'Total': 1, 'Unread': 1}]}


def test_a_mailbox_without_its_slash_is_redirected(by_user):
    reply = Http(by_user.url).get('/mailbox/ann')
    assert (reply.status, reply.headers['location']) == (301, '/mailbox/ann/')
    page = Http(by_user.url).get('/mailbox/ann/')
    assert page.status == 200 and b'static/app.js' in page.body


# -- the websocket --------------------------------------------------------------------------

def events_until(ws, last):
    """The events of `ws` up to the first for which last(event) is true."""
    seen = []
    while not seen or not last(seen[-1]):
        seen.append(ws.event())
    return seen


def test_each_mailbox_has_its_own_websocket_stream(by_user):
    send_as(by_user.smtp, 'ann', subject='already there')
    ws = WebSocket(*by_user.http, path='/mailbox/ann/api/events')
    default = WebSocket(*by_user.http)
    try:
        assert ws.event()['Data']['Total'] == 1             # the greeting: ann's counts
        assert default.event()['Data']['Total'] == 0
        send_as(by_user.smtp, 'bob', subject='for bob')        # sent first: not ann's
        send_as(by_user.smtp, 'ann', subject='for ann')
        seen = events_until(ws, lambda e: e['Type'] == 'stats')
        assert [(e['Type'], e['Data'].get('Subject')) for e in seen] == [
            ('new', 'for ann'), ('stats', None)]
        assert (seen[1]['Data']['Total'], seen[1]['Data']['Unread']) == (2, 2)
        send(by_user.smtp, subject='for the default')
        seen = events_until(default, lambda e: e['Type'] == 'stats')
        assert [(e['Type'], e['Data'].get('Subject')) for e in seen] == [
            ('new', 'for the default'), ('stats', None)]
        web = Http(by_user.url)
        web.request('DELETE', '/api/v1/messages')               # the default's truncate ...
        assert [e['Type'] for e in events_until(default, lambda e: e['Type'] == 'stats')] \
            == ['truncate', 'stats']
        web.request('DELETE', '/mailbox/ann/api/v1/messages')   # ... is not in ann's stream
        seen = events_until(ws, lambda e: e['Type'] == 'stats')
        assert [e['Type'] for e in seen] == ['truncate', 'stats']
        assert seen[1]['Data']['Total'] == 0
    finally:
        ws.close()
        default.close()


def test_a_mailbox_s_websocket_from_another_site_is_refused(by_user):
    with pytest.raises(ConnectionError, match='403'):
        WebSocket(*by_user.http, path='/mailbox/ann/api/events',
                  headers=[('Origin', 'http://evil.example')])
    reply = Http(by_user.url).request('DELETE', '/mailbox/ann/api/v1/messages',
                                      headers={'Origin': 'http://evil.example'})
    assert reply.status == 403


def test_the_webhook_hears_of_every_mailbox_s_mail_and_names_the_mailbox(tmp_path):
    from test_inbox_webhook import Receiver
    receiver = Receiver()
    try:
        with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                         webhook_url=receiver.url, webhook_limit=0) as inbox:
            send_as(inbox.smtp, 'ann', subject='for ann')
            posted = json.loads(receiver.next()[2])
            assert (posted['Subject'], posted['Mailbox']) == ('for ann', 'ann')
            send(inbox.smtp, subject='for the default')
            posted = json.loads(receiver.next()[2])
            assert (posted['Subject'], posted['Mailbox']) == ('for the default', '')
    finally:
        receiver.close()


def test_the_webhook_posts_each_recipient_mailbox_s_copy(tmp_path):
    from test_inbox_webhook import Receiver
    receiver = Receiver()
    try:
        with InboxThread(tmp_path / 'inbox.db', mailboxes='by-recipient',
                         mailbox_pattern='test+*@example.com',
                         webhook_url=receiver.url, webhook_limit=0) as inbox:
            send(inbox.smtp, subject='to two', to='test+ann@example.com, bob@example.com')
            posted = [json.loads(receiver.next()[2]) for _ in range(2)]
            assert sorted((p['Mailbox'], p['Subject']) for p in posted) == [
                ('', 'to two'), ('ann', 'to two')]
            assert len({p['ID'] for p in posted}) == 2      # a copy each, its own ID
    finally:
        receiver.close()


# -- POP3 -------------------------------------------------------------------------------

def test_pop3_users_read_the_mailbox_of_their_name(tmp_path):
    users = {'ann': hash_password('pop ann'), 'bob': hash_password('pop bob')}
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                     pop3=('127.0.0.1', 0), pop3_users=users) as inbox:
        send_as(inbox.smtp, 'ann', subject='ann 1')
        send_as(inbox.smtp, 'ann', subject='ann 2')
        send_as(inbox.smtp, 'bob', subject='bob 1')
        send(inbox.smtp, subject='nobody')
        port = inbox.inbox.pop3_address[1]
        client = poplib.POP3('127.0.0.1', port, timeout=WAIT)
        client.user('ann')
        client.pass_('pop ann')
        assert client.stat()[0] == 2
        assert b'Subject: ann 2' in client.retr(1)[1]
        client.dele(1)
        client.quit()
        bob = poplib.POP3('127.0.0.1', port, timeout=WAIT)
        bob.user('bob')
        bob.pass_('pop bob')
        assert bob.stat()[0] == 1 and b'Subject: bob 1' in bob.retr(1)[1]
        bob.quit()
        web = Http(inbox.url)
        assert subjects(web, 'ann') == ['ann 1'] and subjects(web, 'bob') == ['bob 1']
        assert subjects(web) == ['nobody']


def test_a_pop3_login_with_a_slash_reads_the_default_mailbox(tmp_path):
    """`USER ann/` with ann's password: the mail no mailbox took (sent
    without AUTH); the slash is no part of any mailbox name."""
    users = {'ann': hash_password('pop ann')}
    with InboxThread(tmp_path / 'inbox.db', mailboxes='by-user', accept_any_auth=True,
                     pop3=('127.0.0.1', 0), pop3_users=users) as inbox:
        send_as(inbox.smtp, 'ann', subject='for ann')
        send(inbox.smtp, subject='nobody 1')
        send(inbox.smtp, subject='nobody 2')
        port = inbox.inbox.pop3_address[1]
        client = poplib.POP3('127.0.0.1', port, timeout=WAIT)
        client.user('ann/')
        client.pass_('pop ann')
        assert client.stat()[0] == 2
        assert b'Subject: nobody 2' in b'\r\n'.join(client.retr(1)[1])
        client.dele(2)
        client.quit()
        assert subjects(Http(inbox.url)) == ['nobody 2']
        assert subjects(Http(inbox.url), 'ann') == ['for ann']
        for user, password in (('ann/', 'wrong'), ('bob/', 'pop ann'), ('ann/ann', 'pop ann')):
            other = poplib.POP3('127.0.0.1', port, timeout=WAIT)
            other.user(user)
            with pytest.raises(poplib.error_proto, match='-ERR'):
                other.pass_(password)
            other.close()


# -- Mailpit's clients, given a mailbox's base URL ---------------------------------------

# Mailpit's null Bcc, which the PyPI client's MessageSummary types as a list.
@pytest.mark.filterwarnings('ignore:.*non-optional type bcc:RuntimeWarning')
def test_mailpit_clients_work_unchanged_on_a_mailbox(by_user):
    send_as(by_user.smtp, 'ann', subject='for ann')
    send_as(by_user.smtp, 'bob', subject='for bob')
    base = by_user.url + 'mailbox/ann'
    node = peers.program('node', 'nodejs')
    if not os.path.isdir(os.path.join(CLIENT, 'node_modules', 'mailpit-api')):
        subprocess.run([peers.program('npm', 'nodejs'), 'ci', '--no-audit', '--no-fund',
                        '--loglevel=error'], cwd=CLIENT, check=True, timeout=180,
                       capture_output=True)
    script = ("import { MailpitClient } from 'mailpit-api';"
              'const m = new MailpitClient(process.argv[1]);'
              'const list = await m.listMessages();'
              'const info = await m.getInfo();'
              'console.log(JSON.stringify({subjects: list.messages.map((x) => x.Subject),'
              ' total: list.total, messages: info.Messages}));')
    result = subprocess.run([node, '--input-type=module', '-e', script, base], cwd=CLIENT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {'subjects': ['for ann'], 'total': 1, 'messages': 1}
    peers.python_module('httpx')
    api = types.SimpleNamespace(module=peers.python_module('mailpit.client.api'))
    client = api.module.API(base, timeout=10)
    assert [m.subject for m in client.get_messages().messages] == ['for ann']


# -- a file of the inbox before mailboxes (schema version 2) -------------------------------

# The tables of schema version 2, as the inbox before mailboxes made them (its
# migrations 1 and 2): written out here, never taken from the package, so that
# a change of the package's migrations cannot change what "before" means.
VERSION_2_SCHEMA = """
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT NOT NULL UNIQUE,
    created_ts  REAL NOT NULL,
    read        INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL,
    attachments INTEGER NOT NULL,
    inline      INTEGER NOT NULL,
    username    TEXT,
    summary     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    raw         BLOB NOT NULL
);
CREATE VIRTUAL TABLE search USING fts5(
    subject, sender, to_, cc, bcc, reply_to, message_id, body, filenames, tokenize = 'trigram'
);
CREATE TRIGGER messages_gone AFTER DELETE ON messages BEGIN
    DELETE FROM search WHERE rowid = old.id;
END;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('changes', 0);
CREATE TABLE tags (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE
);
CREATE TABLE message_tags (
    message INTEGER NOT NULL,
    tag     INTEGER NOT NULL,
    PRIMARY KEY (message, tag)
) WITHOUT ROWID;
CREATE INDEX message_tags_by_tag ON message_tags (tag);
CREATE TRIGGER messages_untagged AFTER DELETE ON messages BEGIN
    DELETE FROM message_tags WHERE message = old.id;
END;
CREATE TRIGGER tags_unused AFTER DELETE ON message_tags
    WHEN NOT EXISTS (SELECT 1 FROM message_tags WHERE tag = old.tag) BEGIN
    DELETE FROM tags WHERE id = old.tag;
END;
CREATE TABLE events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    data TEXT
);
PRAGMA user_version = 2;
"""


def version_2_file(path) -> list[str]:
    """An inbox file as the inbox before mailboxes left it: two messages
    (rows as its Store.add wrote them), tagged `Urgent` and `old`, one
    read, and two events in the log. Their IDs, newest first."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executescript(VERSION_2_SCHEMA)
    uids = []
    for n, tags in enumerate((['Urgent'], ['Urgent', 'old'])):
        raw = make_mail(subject=f'before mailboxes {n}').as_bytes()
        fields = parse_message(raw, (), datetime.now(timezone.utc))
        uid = new_id()
        detail = {k: fields[k] for k in ('Date', 'ReturnPath', 'Text', 'HTML', 'Attachments',
                                          'Inline', 'ListUnsubscribe')}
        row = db.execute(
            'INSERT INTO messages (uid, created_ts, read, size, attachments, inline, username,'
            ' summary, detail, raw) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?, ?)',
            (uid, 1.0 + n, 1 - n, len(raw), 'ann' if n else None,
             json.dumps(list_item(uid, fields, 'ann' if n else None)), json.dumps(detail),
             raw)).lastrowid
        db.execute('INSERT INTO search (rowid, subject, body) VALUES (?, ?, ?)',
                   (row, fields['Subject'], fields['Text']))
        for tag in tags:
            db.execute('INSERT OR IGNORE INTO tags (name) VALUES (?)', (tag,))
            db.execute('INSERT INTO message_tags SELECT ?, id FROM tags WHERE name = ?',
                       (row, tag))
        uids.insert(0, uid)
    db.execute("INSERT INTO events (type, data) VALUES ('update', ?), ('prune', 'null')",
               (json.dumps({'ID': uids[1], 'Read': True}),))
    db.execute("UPDATE meta SET value = 5 WHERE key = 'changes'")
    db.close()
    return uids


def test_a_file_from_before_mailboxes_is_the_default_mailbox_after_migration(tmp_path):
    path = tmp_path / 'v2.db'
    newer, older = version_2_file(path)
    store = Store(str(path), routing=Routing.of('by-user'))
    assert sqlite3.connect(str(path)).execute('PRAGMA user_version').fetchone() \
        == (SCHEMA_VERSION,) and SCHEMA_VERSION >= 3
    listed = store.listing()
    assert [(m['ID'], m['Subject'], m['Read'], m['Tags'], m['Username'])
            for m in listed['messages']] == [
        (newer, 'before mailboxes 1', False, ['old', 'Urgent'], 'ann'),
        (older, 'before mailboxes 0', True, ['Urgent'], '')]
    assert (listed['total'], listed['unread'], listed['tags']) == (2, 1, ['old', 'Urgent'])
    assert store.mailboxes() == [('', 2, 1)]
    assert store.state()[0] == 5                    # the change counter goes on
    assert store.listing(query='tag:urgent')['messages_count'] == 2
    assert store.listing(query='mailboxes 1')['messages_count'] == 1   # its search rows
    assert [e['Type'] for _seq, e in store.events_since(0)] == ['update', 'prune']
    assert store.summary(older, mark_read=False)['Subject'] == 'before mailboxes 0'
    # The migrated tags are the default mailbox's: ann's new ones are hers.
    store.add(make_mail(subject='after', extra_headers={'X-Tags': 'urgent'}).as_bytes(),
              username='ann')
    assert store.tags('ann') == ['urgent'] and store.tags() == ['old', 'Urgent']
    store.rename_tag('Urgent', 'later')
    assert store.tags() == ['later', 'old'] and store.tags('ann') == ['urgent']
    store.delete([newer])                           # the triggers still tidy up
    assert store.tags() == ['later'] and store.listing(query='mailboxes 1')['messages_count'] == 0
    store.delete_tag('later')
    assert store.tags() == [] and store.tags('ann') == ['urgent']


# -- the command ---------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['--mailboxes', 'by-user'], '--mailboxes by-user needs --smtp-auth-accept-any'),
    (['--mailboxes', 'by-recipient', '--mailbox-pattern', 'nostar@example.com'],
     'an address with one *'),
    (['--mailbox-pattern', '*@example.com'], 'a mailbox pattern needs mailboxes by-recipient'),
    (['--mailboxes', 'sideways'], "invalid choice: 'sideways'"),
])
def test_bad_mailbox_arguments(tmp_path, args, message):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0', *args,
                        cwd=tmp_path)
    assert result.returncode == 2, result
    assert message in result.stderr


def test_the_store_alone_keeps_mailboxes_apart(tmp_path):
    store = Store(str(tmp_path / 'inbox.db'), routing=Routing.of('by-user'))
    raw = make_mail(subject='kept apart').as_bytes()
    item = store.add(raw, ['x@example.com'], username='ann')
    assert store.raw(item['ID']) is None and store.raw(item['ID'], 'ann') is not None
    assert store.delete([item['ID']]) == 0 and store.delete([item['ID']], 'ann') == 1
    assert store.mailboxes() == []
