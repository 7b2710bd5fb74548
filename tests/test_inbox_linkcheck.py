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
import socket
import ssl
import tempfile
import threading
import time

import pytest

from inbox_helpers import WAIT, Http, InboxProcess, WsgiThread, receiver_thread, send
from smtp_stack.config import parse
from smtp_stack.inbox.app import InboxApp
from smtp_stack.inbox.linkcheck import LinkChecker, is_internal
from smtp_stack.inbox.store import Store
from smtp_stack.testing_tls import loopback_certificates

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


class _RawServer:
    """A TCP server on 127.0.0.1 whose one job, `serve(conn)`, runs for
    each connection in a thread; its port; closed with the block."""

    def __init__(self, serve):
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._one, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _one(self, conn):
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
        for thread in self.threads:
            thread.join(WAIT)


def test_a_link_that_never_answers_ends_at_the_timeout():
    done = threading.Event()
    with _RawServer(lambda conn: done.wait(WAIT)) as silent:
        checker = LinkChecker(allow_internal=True, timeout=0.3)
        began = time.monotonic()
        result = checker.status(f'http://127.0.0.1:{silent.port}/slow')
        waited = time.monotonic() - began
        done.set()
    assert (result['StatusCode'], result['Status']) == (0, 'timed out')
    assert 0.3 <= waited < 2, waited


def test_an_endless_header_section_is_cut_short():
    """A HEAD answer is read to the end of its header section only, which is
    bounded (100 fields of 64 KiB at most): a server that never ends it
    costs no memory and no more than the timeout."""
    def endless(conn):
        conn.sendall(b'HTTP/1.1 200 OK\r\n')
        for n in range(100_000):
            conn.sendall(b'X-Field-%d: %s\r\n' % (n, b'y' * 100))
    with _RawServer(endless) as server:
        result = LinkChecker(allow_internal=True, timeout=5).status(
            f'http://127.0.0.1:{server.port}/')
    assert result['StatusCode'] == 0 and 'more than 100 headers' in result['Status'], result


def test_an_https_link_is_checked_over_tls_with_its_certificate_verified():
    """The TLS handshake happens and the certificate is verified: one signed
    by the tests' own CA (not a public one) is refused, as a browser would."""
    certs = loopback_certificates()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.NamedTemporaryFile('wb', suffix='.pem') as pem:
        pem.write(certs.key_pem + certs.cert_pem)
        pem.flush()
        context.load_cert_chain(pem.name)
    handshakes: list[bool] = []

    def tls(conn):
        try:
            with context.wrap_socket(conn, server_side=True):
                handshakes.append(True)
        except ssl.SSLError:
            handshakes.append(False)        # the client refused our certificate
    with _RawServer(tls) as server:
        result = LinkChecker(allow_internal=True, timeout=5).status(
            f'https://localhost:{server.port}/')
    assert result['StatusCode'] == 0 and 'local issuer certificate' in result['Status'], result
    assert handshakes == [False]
