"""The link check's `allow_internal_http_requests` (Mailpit's
`--allow-internal-http-requests`), over real sockets: a link to a server on
127.0.0.1, by address and by a name that resolves there (`localhost`), is
refused (451, the server never asked) without it and checked with it, from
the command, the `inbox:` section of `serve` and the library; and which
addresses are internal (IPv6 ones that carry an internal IPv4 address
too: a name may resolve to them; links with IPv6 literals are no links
to Mailpit's pattern, nor to ours)."""
from __future__ import annotations

import http.server
import threading

import pytest

from inbox_helpers import WAIT, Http, InboxProcess, WsgiThread, receiver_thread, send
from smtp_stack.config import parse
from smtp_stack.inbox.app import InboxApp
from smtp_stack.inbox.linkcheck import is_internal
from smtp_stack.inbox.store import Store

BLOCKED = (451, 'Blocked private/reserved address')


class _Asked(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /ok with 200 and notes every path asked."""
    asked: list[str] = []

    def do_HEAD(self):
        self.asked.append(self.path)
        self.send_response(200 if self.path == '/ok' else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def target():
    """A server on 127.0.0.1; yields its port."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Asked)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Asked.asked = []
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


def links_to(port):
    """The same server by address and by a name that resolves to it."""
    return [f'http://127.0.0.1:{port}/ok', f'http://localhost:{port}/ok']


def html_of(links):
    return '<p>' + ''.join(f'<a href="{link}">link</a>' for link in links) + '</p>'


def statuses(web):
    answer = web.json('GET', '/api/v1/message/latest/link-check')
    return [(link['URL'], link['StatusCode'], link['Status']) for link in answer['Links']]


def test_the_command_refuses_internal_links_unless_told(tmp_path, target):
    links = links_to(target)
    with InboxProcess(tmp_path) as inbox:
        send(inbox.smtp, subject='links', html=html_of(links))
        web = Http(inbox.url)
        assert statuses(web) == [(link, *BLOCKED) for link in links]
        web.close()
    assert _Asked.asked == []           # not even a connection was made
    with InboxProcess(tmp_path, '--allow-internal-http-requests') as inbox:
        web = Http(inbox.url)
        assert statuses(web) == [(link, 200, 'OK') for link in links]
        web.close()
    assert _Asked.asked == ['/ok', '/ok']


def section_config(section, tmp_path):
    return parse({'name': 'mx.test', 'disable_reverse_lookup': True,
                  'disabled_commands': ['STARTTLS'],
                  'listen': [{'host': '127.0.0.1', 'port': 0}],
                  'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0', **section}},
                 str(tmp_path))


@pytest.mark.parametrize('section, expected', [
    ({}, BLOCKED),
    ({'allow_internal_http_requests': False}, BLOCKED),
    ({'allow_internal_http_requests': True}, (200, 'OK')),
])
def test_the_section_key(tmp_path, target, section, expected):
    with receiver_thread(section_config(section, tmp_path)) as receiver:
        links = links_to(target)
        send(receiver.servers[0].address[:2], subject='links', html=html_of(links))
        host, port = receiver.delivery.target.http_address[:2]
        web = Http(f'http://{host}:{port}/')
        assert statuses(web) == [(link, *expected) for link in links]
        web.close()


def inbox_app(db, allowed):
    return InboxApp(Store(db), allow_internal_http_requests=allowed)


def wsgi_app(db, allowed):
    from smtp_stack.inbox import wsgi_app
    return wsgi_app(db, allow_internal_http_requests=allowed)


@pytest.mark.parametrize('make', [inbox_app, wsgi_app])
@pytest.mark.parametrize('allowed, expected', [(False, BLOCKED), (True, (200, 'OK'))])
def test_the_library_argument(tmp_path, target, allowed, expected, make):
    links = links_to(target)
    with WsgiThread(lambda: make(str(tmp_path / 'i.db'), allowed)) as served:
        web = Http(f'http://127.0.0.1:{served.port}/')
        web.json('POST', '/api/v1/send', {'From': {'Email': 'shop@example.test'},
                                          'To': [{'Email': 'ann@example.test'}],
                                          'Subject': 'links', 'HTML': html_of(links)})
        assert statuses(web) == [(link, *expected) for link in links]
        web.close()


@pytest.mark.parametrize('address, internal', [
    ('127.0.0.1', True), ('10.1.2.3', True), ('100.64.0.1', True), ('169.254.169.254', True),
    ('0.0.0.0', True), ('224.0.0.1', True), ('::1', True), ('::', True), ('fe80::1%eth0', True),
    ('fc00::1', True), ('ff0e::1', True),
    ('::ffff:10.0.0.1', True), ('::127.0.0.1', True), ('64:ff9b::a00:1', True),
    ('2002:a9fe:a9fe::1', True), ('64:ff9b:1::808:808', True),
    ('8.8.8.8', False), ('2606:4700::1111', False), ('::ffff:8.8.8.8', False),
    ('64:ff9b::808:808', False), ('2002:808:808::1', False),
])
def test_which_addresses_are_internal(address, internal):
    assert is_internal(address) is internal
