"""What another site's page could make a browser do to the inbox: read the
events, change or release mail, rebind a DNS name to 127.0.0.1. Over real
HTTP and websocket connections, with the headers a browser sends."""
from __future__ import annotations

import pytest

from smtp_stack.inbox.store import Store

from inbox_helpers import Http, InboxThread, WebSocket, make_mail, send


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', relay=None) as running:
        running.db = str(tmp_path / 'inbox.db')
        yield running


def origin(inbox) -> str:
    return f'http://{inbox.http[0]}:{inbox.http[1]}'


def test_a_websocket_from_another_origin_is_refused(inbox):
    with pytest.raises(ConnectionError, match='rejected: 403'):
        WebSocket(*inbox.http, headers=[(b'Origin', b'http://evil.example')])
    ws = WebSocket(*inbox.http, headers=[(b'Origin', origin(inbox).encode())])   # the page's own
    try:
        send(inbox.smtp, subject='still live')
        assert ws.event('new')['Data']['Subject'] == 'still live'
    finally:
        ws.close()


@pytest.mark.parametrize('headers', [
    {'Origin': 'http://evil.example'},
    {'Sec-Fetch-Site': 'cross-site'},
    {'Sec-Fetch-Site': 'same-site', 'Origin': 'http://mail.localhost:9999'},
])
def test_changes_from_another_site_are_refused_and_change_nothing(inbox, headers):
    send(inbox.smtp, subject='keep me')
    web = Http(inbox.url)
    for method, path, body in [('DELETE', '/api/v1/messages', None),
                               ('PUT', '/api/v1/messages', {'Read': True}),
                               ('POST', '/api/v1/message/latest/release', {'To': ['x@evil.example']})]:
        reply = web.request(method, path, body=body, headers=headers)
        assert reply.status == 403, (method, path, reply.status)
    listed = web.json('GET', '/api/v1/messages')
    assert listed['total'] == 1 and listed['unread'] == 1


def test_the_page_itself_and_non_browser_clients_may_change_mail(inbox):
    send(inbox.smtp, subject='one')
    web = Http(inbox.url)
    same = {'Origin': origin(inbox), 'Sec-Fetch-Site': 'same-origin'}
    assert web.request('PUT', '/api/v1/messages', body={'Read': True}, headers=same).status == 200
    assert web.json('GET', '/api/v1/messages')['unread'] == 0
    assert web.request('DELETE', '/api/v1/messages').status == 200      # no Origin: a script
    assert web.json('GET', '/api/v1/messages')['total'] == 0


@pytest.mark.parametrize('host, status', [
    ('evil.example', 403), ('127.0.0.1.evil.example', 403),
    ('localhost', 200), ('127.0.0.1', 200),
])
def test_a_rebound_dns_name_cannot_read_the_inbox(inbox, host, status):
    web = Http(inbox.url)
    reply = web.get('/api/v1/messages', headers={'Host': f'{host}:{inbox.http[1]}'})
    assert reply.status == status


def test_every_new_message_gets_its_event_even_in_a_burst(inbox):
    """More messages between two polls of the store than one batch holds."""
    ws = WebSocket(*inbox.http)
    try:
        store = Store(inbox.db)
        for i in range(150):
            store.add(make_mail(subject=f'burst {i}').as_bytes(), ['bob@example.com'])
        seen = [ws.event('new')['Data']['Subject'] for _ in range(150)]
    finally:
        ws.close()
    assert seen == [f'burst {i}' for i in range(150)]
