"""The rest of Mailpit's API v1 over real HTTP: send, tags, chaos (with an
SMTP client that gets the injected errors), /view/{ID}.html and .txt,
swagger.json, the checks this inbox does not make, and the data and paging
as Mailpit gives them; the websocket's stats, delete and update events."""
from __future__ import annotations

import base64
import http.server
import re
import smtplib
import socket
import threading
from urllib.parse import quote

import pytest

from inbox_helpers import WAIT, Http, InboxThread, WebSocket, make_mail, send
from smtp_stack.inbox.app import ROUTES


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', accept_any_auth=True) as running:
        yield running


@pytest.fixture
def web(inbox):
    client = Http(inbox.url)
    yield client
    client.close()


def latest(web):
    return web.json('GET', '/api/v1/message/latest')


# -- the data of a message ------------------------------------------------------------------

def test_what_the_store_writes_into_a_message_as_mailpit_does(inbox, web):
    msg = make_mail(subject='No ID', to='bob@example.com')
    del msg['Message-ID']
    send(inbox.smtp, msg, rcpt=['bob@example.com', 'hidden@example.com'])
    raw = web.get('/api/v1/message/latest/raw').body
    assert re.match(rb'Bcc: hidden@example\.com\r\nMessage-ID: <[0-9A-Za-z]{22}@smtp-stack>\r\n'
                    rb'Return-Path: <alice@example\.com>\r\nReceived: from ', raw), raw[:300]
    headers = web.json('GET', '/api/v1/message/latest/headers')
    assert headers['Return-Path'] == ['<alice@example.com>']
    assert headers['Bcc'] == ['hidden@example.com']
    message = latest(web)
    assert message['MessageID'] == headers['Message-Id'][0].strip('<>')
    assert message['Bcc'] == [{'Name': '', 'Address': 'hidden@example.com'}]
    found = web.json('GET', f'/api/v1/search?query=message-id:{quote(message["MessageID"])}')
    assert [m['ID'] for m in found['messages']] == [message['ID']]


def test_list_unsubscribe_snippet_date_and_shapes(inbox, web):
    send(inbox.smtp, subject='Newsletter', html='<p>Read <b>this</b> first</p>',
         extra_headers={'List-Unsubscribe': '<https://example.com/u?id=7>, <mailto:u@example.com>',
                        'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
                        'Date': 'Mon, 02 Feb 2026 08:30:00 -0500'})
    [item] = web.json('GET', '/api/v1/messages')['messages']
    assert (item['Cc'], item['Bcc'], item['ReplyTo'], item['Username']) == (None, None, [], '')
    assert item['Snippet'] == 'Read this first'                     # from the HTML part
    message = latest(web)
    assert message['ListUnsubscribe'] == {
        'Header': '<https://example.com/u?id=7>, <mailto:u@example.com>',
        'Links': ['https://example.com/u?id=7', 'mailto:u@example.com'], 'Errors': '',
        'HeaderPost': 'List-Unsubscribe=One-Click'}
    assert message['Date'] == '2026-02-02T08:30:00-05:00'
    assert (message['Cc'], message['Bcc'], message['Username']) == ([], [], '')
    assert message['Text'].endswith('\r\n') and '\r\n' in message['HTML']


def test_username_of_an_smtp_login(inbox, web):
    with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
        client.login('tester', 'anything')
        client.send_message(make_mail(subject='logged in'))
    assert web.json('GET', '/api/v1/messages')['messages'][0]['Username'] == 'tester'
    assert latest(web)['Username'] == 'tester'


# -- paging and searching as Mailpit -----------------------------------------------------------

def test_paging_and_search_parameters_as_mailpit_reads_them(inbox, web):
    for i in range(3):
        send(inbox.smtp, subject=f'page {i}')

    def subjects(path):
        return [m['Subject'] for m in web.json('GET', path)['messages']]
    assert subjects('/api/v1/messages?limit=0&start=2') == ['page 2', 'page 1', 'page 0']
    assert subjects('/api/v1/messages?start=abc&limit=-5') == ['page 2', 'page 1', 'page 0']
    assert subjects('/api/v1/messages?start=1&limit=1x') == ['page 1', 'page 0']
    assert subjects('/api/v1/messages?before=2000-01-01T00:00:00Z') == []
    none = web.json('GET', '/api/v1/search?query=page&limit=0')
    assert (none['messages'], none['messages_count'], none['messages_unread']) == ([], 3, 3)
    assert subjects('/api/v1/search?query=is:wings') == []          # a word, not a 400
    for path in ('/api/v1/search', '/api/v1/search?query=%20'):
        reply = web.get(path)
        assert (reply.status, reply.text) == (400, 'Error: no search query\n')
    assert web.json('GET', '/api/v1/message/latest?query=subject:%22page%201%22')['Subject'] == \
        'page 1'
    assert web.get('/api/v1/message/latest?query=nothing-like-it').status == 404
    ids = [m['ID'] for m in web.json('GET', '/api/v1/messages')['messages']]
    both = web.request('PUT', '/api/v1/messages', body={'IDs': ids[:1], 'Search': 'page',
                                                        'Read': True})
    assert (both.status, both.text) == (400, 'You may specify either IDs or a search query, '
                                             'not both\n')
    assert web.json('GET', '/api/v1/messages')['unread'] == 2      # latest?query read one


def test_mailpits_search_filters_over_http(inbox, web):
    """addressed: (From and Reply-To too), larger:/smaller: (k = 1024 bytes),
    as /api/v1/search answers them."""
    send(inbox.smtp, subject='small one', sender='Ann <ann@example.com>', to='bob@example.com')
    send(inbox.smtp, subject='large one', sender='Cy <cy@example.com>', to='dee@example.com',
         text='x' * 3000 + '\n', extra_headers={'Reply-To': 'replies@example.com'})

    def found(query):
        return {m['Subject'] for m in web.json('GET', f'/api/v1/search?query={query}')['messages']}
    assert found('addressed:ann@example.com') == {'small one'}          # From
    assert found('addressed:replies@example.com') == {'large one'}      # Reply-To
    assert found('addressed:dee@') == {'large one'}                     # To
    assert found('larger:2k') == {'large one'}
    assert found('smaller:2k') == {'small one'}
    assert found('larger:2k%20-subject:large') == set()


# -- send --------------------------------------------------------------------------------------

def test_send_stores_the_message_as_if_it_came_over_smtp(tmp_path):
    from smtp_stack.inbox.app import load_users
    from smtp_stack.users import hash_password
    users = tmp_path / 'users'
    users.write_text(f'api:{hash_password("pw", "pbkdf2-sha256")}\n')
    with InboxThread(tmp_path / 's.db', users=load_users(str(users))) as inbox:
        web = Http(inbox.url, auth=('api', 'pw'))
        sent = web.json('POST', '/api/v1/send', {
            'From': {'Email': 'shop@example.com'}, 'To': [{'Email': 'ann+orders@example.com'}],
            'Subject': 'Your order', 'Text': 'Thanks', 'Tags': ['api'],
            'Attachments': [{'Content': base64.b64encode(b'%PDF-1').decode(),
                             'Filename': 'bill.pdf'}]})
        assert list(sent) == ['ID']
        message = web.json('GET', f'/api/v1/message/{sent["ID"]}')
        assert (message['Subject'], message['Text'], message['Username']) == (
            'Your order', 'Thanks', 'api')
        assert message['Tags'] == ['api', 'orders'] and message['ReturnPath'] == 'shop@example.com'
        assert message['Attachments'][0]['ContentType'] == 'application/pdf'
        info = web.json('GET', '/api/v1/info')
        assert info['RuntimeStats']['SMTPAccepted'] == 1
        refused = web.request('POST', '/api/v1/send', body={'From': {'Email': 'a@example.com'}})
        assert refused.status == 400 and refused.headers['content-type'].startswith(
            'application/json')
        assert refused.json() == {'Error': 'error building message: no recipients (to, cc, bcc) '
                                           'set'}
        garbled = web.request('POST', '/api/v1/send', raw_body=b'{not json')
        assert (garbled.status, garbled.json()) == (400, {'Error': 'the body is not valid JSON'})
        assert Http(inbox.url).request('POST', '/api/v1/send', body={}).status == 401


# -- tags --------------------------------------------------------------------------------------

def test_tags_at_arrival_by_id_rename_and_delete(inbox, web):
    send(inbox.smtp, subject='plus', to='Ann <ann+signup+EU@example.com>')
    send(inbox.smtp, subject='x-tags', extra_headers={'X-Tags': 'Urgent, billing ,urgent'})
    items = {m['Subject']: m for m in web.json('GET', '/api/v1/messages')['messages']}
    assert items['plus']['Tags'] == ['EU', 'signup']
    assert items['x-tags']['Tags'] == ['billing', 'Urgent']
    assert web.json('GET', '/api/v1/tags') == ['billing', 'EU', 'signup', 'Urgent']
    ids = [items['plus']['ID'], items['x-tags']['ID']]
    assert web.request('PUT', '/api/v1/tags', body={'IDs': ids, 'Tags': ['urgent', 'new/tag!']}
                       ).text == 'ok'
    listing = web.json('GET', '/api/v1/messages')
    assert [m['Tags'] for m in listing['messages']] == [['new tag', 'Urgent']] * 2
    assert listing['tags'] == ['new tag', 'Urgent']                 # unused ones are gone
    assert web.json('GET', '/api/v1/info')['Tags'] == {'new tag': 2, 'Urgent': 2}
    assert web.request('PUT', '/api/v1/tags/new%20tag', body={'Name': 'Fresh'}).text == 'ok'
    taken = web.request('PUT', '/api/v1/tags/Fresh', body={'Name': 'urgent'})
    assert (taken.status, taken.text) == (400, 'tag already exists: urgent\n')
    assert web.request('DELETE', '/api/v1/tags/URGENT').text == 'ok'
    assert web.json('GET', '/api/v1/search?query=tag:fresh')['messages_count'] == 2
    assert web.json('GET', '/api/v1/tags') == ['Fresh']
    assert web.request('DELETE', '/api/v1/tags/urgent').status == 400
    assert web.request('PUT', '/api/v1/tags', body={'IDs': ids}).text == 'ok'    # none left
    assert web.json('GET', '/api/v1/tags') == []
    assert web.request('PUT', '/api/v1/tags', body={'IDs': 'all'}).status == 400


# -- chaos -------------------------------------------------------------------------------------

def test_chaos_fails_the_smtp_commands_it_is_told_to(inbox, web):
    assert web.json('GET', '/api/v1/webui')['ChaosEnabled'] is True
    triggers = web.json('PUT', '/api/v1/chaos', {'Sender': {'ErrorCode': 421,
                                                            'Probability': 100},
                                                 'Authentication': {'Probability': 100}})
    assert triggers == {'Sender': {'ErrorCode': 421, 'Probability': 100},
                        'Recipient': {'ErrorCode': 451, 'Probability': 0},
                        'Authentication': {'ErrorCode': 535, 'Probability': 100}}
    with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
        client.ehlo()
        code, text = client.docmd('AUTH', 'PLAIN AHRlc3QAdGVzdA==')
        assert (code, text.endswith(b'Chaos authentication error')) == (535, True)
        code, text = client.mail('a@example.com')
        assert (code, text.endswith(b'Chaos sender error')) == (421, True)
    for bad in ({'Sender': {'ErrorCode': 250, 'Probability': 1}},
                {'Recipient': {'ErrorCode': 450, 'Probability': 101}},
                {'Recipient': {'ErrorCode': '450'}}, {'Sender': 5}):
        assert web.request('PUT', '/api/v1/chaos', body=bad).status == 400
    assert web.json('GET', '/api/v1/chaos')['Sender'] == {'ErrorCode': 421, 'Probability': 100}
    web.json('PUT', '/api/v1/chaos', {})
    send(inbox.smtp, subject='through again')
    assert latest(web)['Subject'] == 'through again'


def test_chaos_in_the_inbox_section_of_serve(tmp_path):
    from smtp_stack import SmtpServer
    from smtp_stack.inbox.section import InboxDelivery
    delivery = InboxDelivery(db=str(tmp_path / 'i.db'), http=('127.0.0.1', 0))
    delivery.app.chaos.set({'Recipient': {'ErrorCode': 450, 'Probability': 100}})
    server = SmtpServer(disable_reverse_lookup=True)
    server.use(delivery)
    from smtp_stack.testing import ServerThread
    with ServerThread(server) as running:
        with smtplib.SMTP(*running.address, timeout=WAIT) as client:
            client.ehlo()
            assert client.mail('a@example.com')[0] == 250
            assert client.rcpt('b@example.com')[0] == 450


# -- /view, the checks, swagger ----------------------------------------------------------------

def test_view_html_and_text(inbox, web):
    msg = make_mail(subject='Pictured', html='<p>Logo: <img src="cid:logo@x"></p>')
    msg.get_payload()[1].add_related(b'\x89PNG', 'image', 'png', cid='<logo@x>')
    send(inbox.smtp, msg)
    send(inbox.smtp, subject='Plain only')
    items = {m['Subject']: m['ID'] for m in web.json('GET', '/api/v1/messages')['messages']}
    uid = items['Pictured']
    view = web.get(f'/view/{uid}.html?embed=1')
    assert view.body.decode() == ('<!DOCTYPE html><base target="_blank"><p>Logo: <img src="'
                                  f'/api/v1/message/{uid}/part/2.2"></p>\r\n')
    assert view.headers['content-security-policy'].startswith('sandbox')
    assert web.json('GET', '/api/v1/messages')['unread'] == 2       # embed=1 marks nothing
    plain = web.get(f'/view/{uid}.html')
    assert plain.body.decode().startswith('<p>Logo: ') and "script-src" not in \
        plain.headers['content-security-policy']
    assert web.json('GET', '/api/v1/messages')['unread'] == 1       # as Mailpit: read now
    missing = web.get(f'/view/{items["Plain only"]}.html')
    assert (missing.status, missing.text) == (404, 'This message does not contain a HTML part\n')
    text = web.get(f'/view/{items["Plain only"]}.txt')
    assert text.headers['content-type'] == 'text/plain; charset=utf-8'
    assert text.text == 'Hello Bob,\r\nthis is the text.\r\n'
    assert web.get('/view/latest.txt').text == text.text
    assert web.get('/view/AAAAAAAAAAAAAAAAAAAAAA.txt').status == 404


@pytest.mark.parametrize('path, missing', [
    ('sa-check', 'spamd')])     # html-check: test_inbox_htmlcheck; thumbnails: test_inbox_thumb
def test_the_checks_this_inbox_does_not_make_say_why(inbox, web, path, missing):
    send(inbox.smtp, subject='checked')
    reply = web.get(f'/api/v1/message/latest/{path}')
    assert reply.status == 501 and missing in reply.json()['Error']
    assert web.get(f'/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA/{path}').status == 404


def test_swagger_describes_every_route_and_nothing_else(inbox, web):
    doc = web.json('GET', '/api/v1/swagger.json')
    described = {(method.upper(), path) for path, methods in doc['paths'].items()
                 for method in methods}
    assert described == {(method, path) for method, path, _handler in ROUTES}
    refs = set(re.findall(r'"#/definitions/(\w+)"', web.get('/api/v1/swagger.json').text))
    assert refs <= set(doc['definitions'])
    for path, methods in doc['paths'].items():
        for operation in methods.values():
            named = {p['name'] for p in operation['parameters'] if p['in'] == 'path'}
            assert named == set(re.findall(r'\{(\w+)\}', path)), path


# -- the websocket --------------------------------------------------------------------------

def test_websocket_greets_with_stats_and_sends_delete_and_update_events(inbox, web):
    for subject in ('one', 'two', 'three'):
        send(inbox.smtp, subject=subject)
    ids = {m['Subject']: m['ID'] for m in web.json('GET', '/api/v1/messages')['messages']}
    ws = WebSocket(*inbox.http)
    try:
        assert ws.event()['Type'] == 'stats'         # the first frame, before any change
        web.get(f'/api/v1/message/{ids["one"]}')
        assert ws.event('update')['Data'] == {'ID': ids['one'], 'Read': True}
        web.request('PUT', '/api/v1/tags', body={'IDs': [ids['two']], 'Tags': ['x']})
        assert ws.event('update')['Data'] == {'ID': ids['two'], 'Tags': ['x']}
        web.request('DELETE', '/api/v1/messages', body={'IDs': [ids['two']]})
        assert ws.event('delete')['Data'] == {'ID': ids['two']}
        assert ws.event('stats')['Data']['Total'] == 2
        web.request('DELETE', '/api/v1/messages')
        assert ws.event('truncate')['Data'] is None
    finally:
        ws.close()


class _Links(http.server.BaseHTTPRequestHandler):
    """What the links of the link-check test answer (on 127.0.0.1)."""
    asked: list[str] = []

    def do_HEAD(self):
        self.asked.append(self.path)
        moves = {'/moved': '/ok', '/loop': '/loop'}
        code = 200 if self.path == '/ok' else 301 if self.path in moves else 404
        self.send_response(code)
        if self.path in moves:
            self.send_header('Location', moves[self.path])
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def links_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Links)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Links.asked = []
    yield f'http://127.0.0.1:{server.server_port}'
    server.shutdown()
    thread.join(WAIT)


def test_link_check_asks_each_link_once(inbox, web, links_server):
    with socket.socket() as free:
        free.bind(('127.0.0.1', 0))
        closed = f'http://127.0.0.1:{free.getsockname()[1]}/'
    html = (f'<p><a href="{links_server}/ok">ok</a> <a href="{links_server}/missing">x</a>'
            f'<img src="{links_server}/moved"><a href="mailto:a@example.com">m</a>'
            f'<a href="{links_server}/ok">again</a><a href="{closed}">closed</a></p>')
    send(inbox.smtp, subject='links', html=html, text=f'see <{links_server}/loop>\n')
    blocked = web.json('GET', '/api/v1/message/latest/link-check')
    assert blocked['Errors'] == 5 and {link['StatusCode'] for link in blocked['Links']} == {451}
    assert _Links.asked == []                       # private addresses: not asked by default
    inbox.inbox.app.link_checker.allow_internal = True
    checked = web.json('GET', '/api/v1/message/latest/link-check')
    assert [(link['URL'].replace(links_server, ''), link['StatusCode'], link['Status'])
            for link in checked['Links']] == [
        ('/ok', 200, 'OK'), ('/missing', 404, 'Not Found'), (closed, 0, 'Connection refused'),
        ('/moved', 301, 'Moved Permanently'), ('/loop', 301, 'Moved Permanently')]
    assert checked['Errors'] == 2
    followed = web.json('GET', '/api/v1/message/latest/link-check?follow=true')['Links']
    assert [(link['StatusCode'], link['Status']) for link in followed][3:] == [
        (200, 'OK'), (0, 'too many redirects')]
