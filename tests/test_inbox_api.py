"""The inbox's Mailpit API v1 over real HTTP, with mail sent by smtplib."""
from __future__ import annotations

import json
import re

import pytest

from inbox_helpers import Http, InboxThread, WebSocket, make_mail, send
from smtp_stack.inbox.release import Relay
from smtp_stack.testing import MailSink

LIST_KEYS = {'total', 'unread', 'count', 'messages_count', 'messages_unread', 'start', 'tags',
             'messages'}
ITEM_KEYS = {'ID', 'MessageID', 'Read', 'From', 'To', 'Cc', 'Bcc', 'ReplyTo', 'Subject',
             'Created', 'Username', 'Tags', 'Size', 'Attachments', 'Snippet'}
# Mailpit's Message: no Read (reading it marks it read), Username always there.
SUMMARY_KEYS = {'ID', 'MessageID', 'From', 'To', 'Cc', 'Bcc', 'ReplyTo', 'ReturnPath',
                'Subject', 'ListUnsubscribe', 'Date', 'Tags', 'Username', 'Text', 'HTML',
                'Size', 'Inline', 'Attachments'}
ISO = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z')


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


@pytest.fixture
def web(inbox):
    client = Http(inbox.url)
    yield client
    client.close()


def listing(web, path='/api/v1/messages'):
    return web.json('GET', path)


def test_list_shape_paging_and_newest_first(inbox, web):
    for i in range(7):
        send(inbox.smtp, subject=f'number {i}')
    data = listing(web, '/api/v1/messages?start=2&limit=3')
    assert set(data) == LIST_KEYS
    assert (data['total'], data['unread'], data['count'], data['messages_count'],
            data['start'], data['tags']) == (7, 7, 3, 7, 2, [])
    assert [m['Subject'] for m in data['messages']] == ['number 4', 'number 3', 'number 2']
    item = data['messages'][0]
    assert set(item) >= ITEM_KEYS
    assert item['From'] == {'Name': 'Alice', 'Address': 'alice@example.com'}
    assert item['To'] == [{'Name': '', 'Address': 'bob@example.com'}]
    assert item['Read'] is False and item['Attachments'] == 0 and ISO.match(item['Created'])
    assert item['Snippet'] == 'Hello Bob, this is the text.'
    everything = listing(web)
    assert [m['Subject'] for m in everything['messages']] == [f'number {i}' for i in range(6, -1, -1)]


def test_message_summary_latest_and_marks_read(inbox, web):
    sent = send(inbox.smtp, subject='Summary', html='<p>Hi <b>Bob</b></p>',
                cc='Carol <carol@example.com>', rcpt=['bob@example.com', 'carol@example.com',
                                                      'dave@example.com'],
                attachments=[('report.pdf', 'application/pdf', b'%PDF-1.4 fake')])
    message = web.json('GET', '/api/v1/message/latest')
    assert list(message) == ['ID', 'MessageID', 'From', 'To', 'Cc', 'Bcc', 'ReplyTo',
                             'ReturnPath', 'Subject', 'ListUnsubscribe', 'Date', 'Tags',
                             'Username', 'Text', 'HTML', 'Size', 'Inline', 'Attachments']
    assert set(message) == SUMMARY_KEYS
    assert message['Subject'] == 'Summary'
    assert message['MessageID'] == sent['Message-ID'].strip('<>')
    assert message['Bcc'] == [{'Name': '', 'Address': 'dave@example.com'}]
    assert message['Cc'] == [{'Name': 'Carol', 'Address': 'carol@example.com'}]
    assert message['ReturnPath'] == 'alice@example.com'
    assert message['Text'] == 'Hello Bob,\r\nthis is the text.\r\n'    # as on the wire
    assert '<b>Bob</b>' in message['HTML']
    assert message['Username'] == '' and message['Tags'] == []
    [attachment] = message['Attachments']
    assert attachment['FileName'] == 'report.pdf' and attachment['ContentType'] == 'application/pdf'
    assert attachment['Size'] == len(b'%PDF-1.4 fake')
    same = web.json('GET', f'/api/v1/message/{message["ID"]}')
    assert same['ID'] == message['ID'] and 'Read' not in same
    assert listing(web)['unread'] == 0 and listing(web)['messages'][0]['Read'] is True


def test_raw_headers_and_part_downloads(inbox, web):
    send(inbox.smtp, subject='Files', attachments=[('data.bin', 'application/octet-stream',
                                                     bytes(range(256)))])
    message = web.json('GET', '/api/v1/message/latest')
    raw = web.get(f'/api/v1/message/{message["ID"]}/raw')
    assert raw.status == 200 and raw.headers['content-type'].startswith('text/plain')
    assert b'Subject: Files\r\n' in raw.body and len(raw.body) == message['Size']
    headers = web.json('GET', f'/api/v1/message/{message["ID"]}/headers')
    assert headers['Subject'] == ['Files'] and headers['From'] == ['Alice <alice@example.com>']
    assert 'Message-Id' in headers and 'Content-Type' in headers
    part = web.get(f'/api/v1/message/{message["ID"]}/part/{message["Attachments"][0]["PartID"]}')
    assert part.status == 200 and part.body == bytes(range(256))
    assert part.headers['content-disposition'] == 'attachment; filename="data.bin"'
    assert 'sandbox' in part.headers['content-security-policy']
    assert web.get(f'/api/v1/message/{message["ID"]}/part/9').status == 404


def test_received_header_of_this_server_is_stored(inbox, web):
    send(inbox.smtp, subject='trace')
    raw = web.get('/api/v1/message/latest/raw').body
    assert raw.startswith((b'Received: ', b'Return-Path: ')), raw[:200]
    assert b'Received: from ' in raw.split(b'\r\n\r\n')[0]


@pytest.mark.parametrize('query, expected', [
    ('invoice', {'Invoice 42', 'Re: invoice'}),
    ('"invoice 42"', {'Invoice 42'}),
    ('from:carol', {'Lunch?'}),
    ('from:example.org', {'Lunch?'}),
    ('to:dave', {'Re: invoice'}),
    ('subject:lunch', {'Lunch?'}),
    ('-invoice', {'Lunch?', 'Photos'}),
    ('!invoice', {'Lunch?', 'Photos'}),
    ('has:attachment', {'Photos'}),
    ('filename:beach', {'Photos'}),
    ('sandwich', {'Lunch?'}),          # in the body
    ('invoice -re:', {'Invoice 42'}),
    ('wi', {'Lunch?'}),                # under three characters: LIKE, not the trigram index
    ('is:unread', {'Invoice 42', 'Re: invoice', 'Lunch?', 'Photos'}),
    ('nothing-like-this', set()),
    ('-nothing-like-this', {'Invoice 42', 'Re: invoice', 'Lunch?', 'Photos'}),
])
def test_search_syntax(inbox, web, query, expected):
    send(inbox.smtp, subject='Invoice 42', text='Please pay.\n')
    send(inbox.smtp, subject='Re: invoice', to='Dave <dave@example.com>')
    send(inbox.smtp, subject='Lunch?', sender='Carol <carol@example.org>', text='A sandwich?\n')
    send(inbox.smtp, subject='Photos', attachments=[('beach.jpg', 'image/jpeg', b'\xff\xd8jpeg')])
    from urllib.parse import quote
    data = web.json('GET', f'/api/v1/search?query={quote(query)}')
    assert set(data) == LIST_KEYS
    assert {m['Subject'] for m in data['messages']} == expected
    assert data['messages_count'] == len(expected) and data['total'] == 4


def test_search_read_flags_and_delete_by_search(inbox, web):
    for subject in ('one', 'two', 'three'):
        send(inbox.smtp, subject=subject)
    ids = {m['Subject']: m['ID'] for m in listing(web)['messages']}
    assert web.request('PUT', '/api/v1/messages', body={'IDs': [ids['one']], 'Read': True}).text == 'ok'
    assert {m['Subject'] for m in web.json('GET', '/api/v1/search?query=is:read')['messages']} == {'one'}
    assert listing(web)['unread'] == 2
    assert web.request('PUT', '/api/v1/messages', body={'Read': True, 'Search': 'subject:two'}).status == 200
    assert listing(web)['unread'] == 1
    assert web.request('PUT', '/api/v1/messages', body={'Read': True}).status == 200     # all
    assert listing(web)['unread'] == 0
    assert web.request('PUT', '/api/v1/messages', body={'IDs': [ids['three']]}).status == 200
    assert [m['Subject'] for m in web.json('GET', '/api/v1/search?query=is:unread')['messages']] == ['three']
    assert web.request('DELETE', '/api/v1/search?query=subject:three').text == 'ok'
    assert {m['Subject'] for m in listing(web)['messages']} == {'one', 'two'}


def test_delete_by_ids_and_all(inbox, web):
    for i in range(4):
        send(inbox.smtp, subject=f'd{i}')
    ids = [m['ID'] for m in listing(web)['messages']]
    reply = web.request('DELETE', '/api/v1/messages', body={'IDs': ids[:2]})
    assert (reply.status, reply.text) == (200, 'ok')
    assert [m['ID'] for m in listing(web)['messages']] == ids[2:]
    assert web.get(f'/api/v1/message/{ids[0]}').status == 404
    assert web.request('DELETE', '/api/v1/messages').status == 200
    data = listing(web)
    assert (data['total'], data['messages']) == (0, [])
    assert web.get('/api/v1/message/latest').status == 404


def test_release_to_a_second_real_server(tmp_path):
    with MailSink() as sink, \
            InboxThread(tmp_path / 'r.db', relay=Relay(*sink.address)) as inbox:
        web = Http(inbox.url)
        send(inbox.smtp, subject='Release me', attachments=[('a.txt', 'text/plain', b'A\n')])
        reply = web.request('POST', '/api/v1/message/latest/release',
                            body={'To': ['real@example.net']})
        assert (reply.status, reply.text) == (200, 'ok')
        [released] = sink.wait_for(1)
        assert released['Subject'] == 'Release me'
        assert [a.address for a in released.envelope.rcpt_to] == ['real@example.net']
        assert released.envelope.mail_from.address == 'alice@example.com'
        assert not released.raw.startswith(b'Return-Path:')
        assert web.request('POST', '/api/v1/message/latest/release', body={'To': []}).status == 400
        assert web.request('POST', '/api/v1/message/latest/release', body={}).status == 400


def test_release_without_relay_or_to_a_dead_one(tmp_path, inbox, web):
    send(inbox.smtp, subject='x')
    assert web.request('POST', '/api/v1/message/latest/release',
                       body={'To': ['a@b.c']}).status == 400
    import socket
    with socket.socket() as free:
        free.bind(('127.0.0.1', 0))
        dead_port = free.getsockname()[1]
    with InboxThread(tmp_path / 'dead.db', relay=Relay('127.0.0.1', dead_port)) as other:
        send(other.smtp, subject='y')
        reply = Http(other.url).request('POST', '/api/v1/message/latest/release',
                                        body={'To': ['a@b.c']})
        assert reply.status == 502 and 'relay failed' in reply.text


def test_info_livez_readyz(inbox, web):
    send(inbox.smtp, subject='counted')
    info = web.json('GET', '/api/v1/info')
    assert {'Version', 'LatestVersion', 'Database', 'DatabaseSize', 'Messages', 'Unread', 'Tags',
            'RuntimeStats'} <= set(info)
    assert (info['Messages'], info['Unread']) == (1, 1)
    assert info['RuntimeStats']['SMTPAccepted'] == 1
    assert info['Database'].endswith('inbox.db') and info['DatabaseSize'] > 0
    assert web.get('/livez').status == 200 and web.get('/readyz').status == 200


@pytest.mark.parametrize('method, path, body, status', [
    ('GET', '/api/v1/message/not-an-id', None, 404),           # Mailpit: no such message
    ('GET', '/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA', None, 404),
    ('GET', '/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA/raw', None, 404),
    ('GET', '/api/v1/message/%3Cscript%3E/headers', None, 404),
    ('GET', '/api/v1/message/latest/part/..%2F..', None, 301),     # to the clean path, as Mailpit
    ('GET', '/api/v1/message/latest/part/1;rm', None, 404),
    ('GET', '/api/v1/search?query=after:yesterday', None, 400),
    ('GET', '/api/v1/search?query=' + 'a%20' * 600, None, 400),
    ('DELETE', '/api/v1/search', None, 400),
    ('DELETE', '/api/v1/messages', b'{not json', 400),
    ('DELETE', '/api/v1/messages', b'[1, 2]', 400),
    ('DELETE', '/api/v1/messages', b'{"IDs": "all"}', 400),
    ('DELETE', '/api/v1/messages', b'{"IDs": ["../../etc"]}', 400),
    ('PUT', '/api/v1/messages', b'{"Read": "yes"}', 400),
    ('POST', '/api/v1/messages', None, 405),
    ('GET', '/api/v2/messages', None, 404),
    ('GET', '/static/../store.py', None, 301),
    ('GET', '/api/events', None, 426),
])
def test_bad_requests_get_a_status_not_a_trace(inbox, web, method, path, body, status):
    send(inbox.smtp, subject='there is one')
    reply = web.request(method, path, raw_body=body)
    assert reply.status == status, reply.text
    assert 'Traceback' not in reply.text and len(reply.body) < 300
    if status == 301:       # a path with '..' is sent to its clean form, which serves no file
        location = reply.headers['location']
        assert '..' not in location and location.startswith('/'), location
        assert web.request('GET', location).status == 404


def test_no_cross_origin_access_is_granted(inbox, web):
    """No CORS (docs/decisions.md): a preflight is the 405 of a method the
    route does not take, and no reply grants another origin anything."""
    send(inbox.smtp, subject='private')
    origin = {'Origin': 'http://evil.example', 'Access-Control-Request-Method': 'DELETE'}
    preflight = web.request('OPTIONS', '/api/v1/messages', headers=origin)
    assert preflight.status == 405
    listed = web.request('GET', '/api/v1/messages', headers={'Origin': 'http://evil.example'})
    assert listed.status == 200
    for reply in (preflight, listed):
        assert not [name for name in reply.headers if name.lower().startswith('access-control-')]


def test_oversized_body_is_413(inbox, web):
    reply = web.request('DELETE', '/api/v1/messages', raw_body=b'{"IDs": [' + b' ' * (2 << 20) + b']}')
    assert reply.status == 413
    web.close()
    assert listing(web)['total'] == 0


def test_security_headers_of_the_page(inbox, web):
    page = web.get('/')
    assert page.status == 200 and page.headers['content-type'].startswith('text/html')
    csp = page.headers['content-security-policy']
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers['x-content-type-options'] == 'nosniff'
    send(inbox.smtp, subject='html', html='<p>x<img src="https://tracker.example/p.gif"></p>')
    uid = web.json('GET', '/api/v1/message/latest')['ID']
    view = web.get(f'/view/{uid}.html')
    csp = view.headers['content-security-policy']
    assert csp.startswith('sandbox') and 'script-src' not in csp and "default-src 'none'" in csp
    assert 'https:' not in csp
    assert 'https:' in web.get(f'/view/{uid}.html?remote=1').headers['content-security-policy']
    assert web.get('/api/v1/message/latest/raw').headers['content-type'].startswith('text/plain')


def test_messages_survive_a_restart_and_are_pruned(tmp_path):
    db = tmp_path / 'keep.db'
    with InboxThread(db, max_messages=3) as inbox:
        for i in range(5):
            send(inbox.smtp, subject=f'k{i}')
    with InboxThread(db, max_messages=3) as again:
        data = Http(again.url).json('GET', '/api/v1/messages')
        assert [m['Subject'] for m in data['messages']] == ['k4', 'k3', 'k2']
        assert data['total'] == 3


def test_basic_auth_from_a_users_file(tmp_path):
    from smtp_stack.inbox.app import load_users
    from smtp_stack.users import hash_password
    users_file = tmp_path / 'users'
    users_file.write_text(f'# web users\nann:{hash_password("s3cret", "pbkdf2-sha256")}\n')
    with InboxThread(tmp_path / 'a.db', users=load_users(str(users_file))) as inbox:
        anonymous = Http(inbox.url)
        reply = anonymous.get('/api/v1/messages')
        assert reply.status == 401 and reply.headers['www-authenticate'].startswith('Basic')
        assert anonymous.get('/livez').status == 200
        assert Http(inbox.url, auth=('ann', 'wrong')).get('/').status == 401
        assert Http(inbox.url, auth=('ann', 's3cret')).get('/api/v1/messages').status == 200


def test_websocket_events_for_new_mail(inbox):
    ws = WebSocket(*inbox.http)
    try:
        send(inbox.smtp, subject='live one')
        event = ws.event('new')
        assert event['Data']['Subject'] == 'live one' and set(event['Data']) >= ITEM_KEYS
        stats = ws.event('stats')
        assert stats['Data']['Total'] == 1 and stats['Data']['Unread'] == 1
        ws.ping()
        Http(inbox.url).request('DELETE', '/api/v1/messages')
        assert ws.event('stats')['Data']['Total'] == 0
    finally:
        ws.close()


def test_websocket_sees_mail_stored_by_another_process(tmp_path):
    """The web side alone (as under gunicorn) polls the file's change counter."""
    import threading
    from smtp_stack.inbox import wsgi_app
    from smtp_stack.inbox.store import Store
    db = str(tmp_path / 'shared.db')
    app = wsgi_app(db)
    ready, holder = threading.Event(), {}

    def serve():
        import gevent
        from gevent.pywsgi import WSGIServer
        server = WSGIServer(('127.0.0.1', 0), app, log=None)
        server.start()
        holder['server'], holder['loop'] = server, gevent.get_hub().loop
        ready.set()
        server.serve_forever()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    ws = WebSocket('127.0.0.1', holder['server'].server_port)
    try:
        Store(db).add(make_mail(subject='from elsewhere').as_bytes(), ['bob@example.com'])
        assert ws.event('new', timeout=5)['Data']['Subject'] == 'from elsewhere'
    finally:
        ws.close()
        holder['loop'].run_callback_threadsafe(holder['server'].stop)
        thread.join(10)


def test_bad_websocket_handshakes(inbox):
    web = Http(inbox.url)
    base = {'Upgrade': 'websocket', 'Connection': 'Upgrade'}
    reply = web.get('/api/events', headers={**base, 'Sec-WebSocket-Version': '8',
                                            'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ=='})
    assert reply.status == 426 and reply.headers['sec-websocket-version'] == '13'
    web.close()
    reply = web.get('/api/events', headers={**base, 'Sec-WebSocket-Version': '13',
                                            'Sec-WebSocket-Key': 'short'})
    assert reply.status == 400


def test_json_is_utf8_and_values_are_data(inbox, web):
    send(inbox.smtp, subject='Grüße <script>alert(1)</script>',
         sender='"<img src=x onerror=alert(1)>" <evil@example.com>')
    reply = web.get('/api/v1/messages')
    assert reply.headers['content-type'] == 'application/json; charset=utf-8'
    item = reply.json()['messages'][0]
    assert item['Subject'] == 'Grüße <script>alert(1)</script>'
    assert item['From']['Name'] == '<img src=x onerror=alert(1)>'
    json.dumps(item)


def test_headers_added_by_middleware_and_the_trace_are_stored(tmp_path):
    """The inbox stores exactly what the delivery hands it: Return-Path,
    headers added with envelope.add_header, Received, then the message."""
    runner = InboxThread(tmp_path / 'h.db')

    def tag(ctx, next):
        if ctx.command_name == 'DATA':
            ctx.session.envelope.add_header('X-Checked', 'yes')
        next()
    runner.inbox.smtp.use(tag)
    with runner:
        sent = send(runner.smtp, subject='tagged')
        web = Http(runner.url)
        head = web.get('/api/v1/message/latest/raw').body.split(b'\r\n\r\n')[0]
        headers = web.json('GET', '/api/v1/message/latest/headers')
    # What CallableDelivery prepends today: the added headers, then Received
    # (a Return-Path, where a delivery writes one, would come first).
    ours, _, theirs = head.partition(b'\r\nFrom: ')
    assert b'X-Checked: yes\r\n' in ours and b'Received: from ' in ours
    assert ours.index(b'X-Checked') < ours.index(b'Received')
    assert theirs.startswith(b'Alice <alice@example.com>') and sent['Message-ID'].encode() in theirs
    assert headers['X-Checked'] == ['yes']


def test_a_refused_body_is_not_stored(tmp_path):
    import smtplib
    with InboxThread(tmp_path / 'big.db', size=2000) as inbox:
        with pytest.raises(smtplib.SMTPException) as refused:
            send(inbox.smtp, subject='too big', text='x' * 5000 + '\n')
        assert '552' in str(refused.value)
        send(inbox.smtp, subject='small')
        data = Http(inbox.url).json('GET', '/api/v1/messages')
        assert [m['Subject'] for m in data['messages']] == ['small']


def test_a_header_in_an_undeclared_8bit_charset_is_stored_and_listed(inbox, web):
    """J\\xf6rg in Latin-1 without an encoded-word: mail clients send it;
    the message must be kept (250), listed and shown, not refused."""
    import smtplib
    raw = (b'From: J\xf6rg <joerg@example.com>\r\nTo: bob@example.com\r\n'
           b'Subject: Gr\xfc\xdfe\r\n\r\nhello \xff\r\n')
    with smtplib.SMTP(*inbox.smtp, timeout=10) as client:
        assert client.sendmail('joerg@example.com', ['bob@example.com'], raw) == {}
    [item] = listing(web)['messages']
    assert item['From'] == {'Name': 'J\ufffdrg', 'Address': 'joerg@example.com'}
    assert item['Subject'] == 'Gr\ufffd\ufffde'
    assert web.get(f'/api/v1/message/{item["ID"]}').status == 200
    assert web.get(f'/api/v1/message/{item["ID"]}/headers').status == 200
    assert web.json('GET', '/api/v1/search?query=joerg')['messages_count'] == 1


def test_the_page_files_are_read_before_serving_not_while(tmp_path):
    """Serving the page opens no file on the hub: a fresh process (its cache
    cold) records, with an audit hook, every file opened under static/
    while the page and its files are fetched over HTTP."""
    import os
    import subprocess
    import sys
    import textwrap
    tests = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(f'''
        import os, sys
        sys.path.insert(0, {tests!r})
        from inbox_helpers import Http, InboxThread
        import smtp_stack.inbox.pages as pages
        static = os.path.realpath(pages.STATIC)
        opened, serving = [], [False]
        def hook(event, args):
            if serving[0] and event == 'open' and isinstance(args[0], str) \\
                    and os.path.realpath(args[0]).startswith(static):
                opened.append(args[0])
        sys.addaudithook(hook)
        with InboxThread({str(tmp_path / 'inbox.db')!r}, relay=None) as inbox:
            web = Http(inbox.url)
            serving[0] = True
            statuses = [web.get(path).status for path in
                        ('/', '/static/app.js', '/static/app.css', '/static/favicon.svg')]
            serving[0] = False
            web.close()
        print(statuses, opened)
    ''')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[200, 200, 200, 200] []'
