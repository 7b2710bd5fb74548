"""`--webhook-url`: a POST of each new message's summary, with retries and a
bounded timeout, off the ingest path; against an HTTP server the test runs
on 127.0.0.1."""
from __future__ import annotations

import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clirunner import smtp_stack
from inbox_helpers import WAIT, Http, InboxThread, send
from smtp_stack.inbox.webhook import check_url


class Receiver:
    """An HTTP server that records each POST and answers with the next of
    `statuses` (200 once they run out)."""

    def __init__(self, statuses=()):
        self.requests = queue.Queue()
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.put((self.path, dict(self.headers), body, status))
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/hook?from=inbox'

    def next(self, timeout=WAIT):
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f'no webhook request within {timeout} s') from None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


def hooked_inbox(tmp_path, url, **tweaks):
    inbox = InboxThread(tmp_path / 'inbox.db', webhook_url=url, webhook_limit=0)
    for name, value in {'retry_delay': 0.05, 'timeout': 2.0, **tweaks}.items():
        setattr(inbox.inbox.webhook, name, value)
    return inbox


def test_each_new_message_is_posted_as_its_summary(tmp_path, receiver):
    with hooked_inbox(tmp_path, receiver.url) as inbox:
        send(inbox.smtp, subject='hooked one')
        path, headers, body, _ = receiver.next()
        listed = Http(inbox.url).json('GET', '/api/v1/messages')['messages'][0]
        posted = json.loads(body)
        assert path == '/hook?from=inbox'
        assert headers['Content-Type'] == 'application/json'
        assert headers['User-Agent'].startswith('smtp-stack-inbox/')
        assert posted['ID'] == listed['ID'] and posted['Subject'] == 'hooked one'
        assert 'Mailbox' not in posted      # Mailpit's body, to the field, without mailboxes
        assert set(posted) == set(listed)       # Mailpit's MessageSummary
        # a message stored through the API is posted too
        Http(inbox.url).json('POST', '/api/v1/send', {
            'From': {'Email': 'api@example.com'}, 'To': [{'Email': 'x@example.com'}],
            'Subject': 'sent by API', 'Text': 'hi'})
        assert json.loads(receiver.next()[2])['Subject'] == 'sent by API'


def test_failures_are_retried_and_logged_once_per_period(tmp_path, caplog):
    receiver = Receiver(statuses=[503, 502])
    try:
        with caplog.at_level('INFO', logger='smtp_stack.inbox'), \
                hooked_inbox(tmp_path, receiver.url) as inbox:
            send(inbox.smtp, subject='retried')
            statuses = [receiver.next()[3] for _ in range(3)]
            assert statuses == [503, 502, 200]
            # the sender is sequential: the next message's POST comes after the first's end
            send(inbox.smtp, subject='after')
            assert json.loads(receiver.next()[2])['Subject'] == 'after'
            hook = inbox.inbox.webhook
            assert hook.sent >= 1 and hook.given_up == 0
    finally:
        receiver.close()
    lines = [r.getMessage() for r in caplog.records if 'webhook' in r.getMessage()]
    assert lines == [f'inbox: webhook {receiver.url} failed: 503 Service Unavailable',
                     f'inbox: webhook {receiver.url} works again (2 requests failed)']


def test_a_4xx_is_not_retried(tmp_path):
    receiver = Receiver(statuses=[404])
    try:
        with hooked_inbox(tmp_path, receiver.url) as inbox:
            send(inbox.smtp, subject='refused')
            send(inbox.smtp, subject='accepted')
            assert [json.loads(receiver.next()[2])['Subject'] for _ in range(2)] == [
                'refused', 'accepted']
    finally:
        receiver.close()


def test_a_hanging_webhook_never_holds_up_ingest(tmp_path):
    """The endpoint accepts connections and never answers: mail still goes
    in at once, and each request ends at the timeout."""
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(50)
        url = f'http://127.0.0.1:{silent.getsockname()[1]}/'
        with hooked_inbox(tmp_path, url, timeout=0.3, retries=0) as inbox:
            started = time.monotonic()
            for n in range(5):
                send(inbox.smtp, subject=f'fast {n}')
            listing = Http(inbox.url).json('GET', '/api/v1/messages')
            assert listing['total'] == 5
            assert time.monotonic() - started < 2.0     # five timeouts would be 1.5 s or more
            # the webhook's request arrives and its client gives up at the timeout
            silent.settimeout(WAIT)
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(WAIT)
                received = b''
                while chunk := conn.recv(4096):
                    received += chunk
                assert received.startswith(b'POST / HTTP/1.1')


@pytest.mark.parametrize('url', ['ftp://example.com/', 'localhost:80', 'http://', 'http://h:x/'])
def test_bad_urls_are_refused(url):
    with pytest.raises(ValueError):
        check_url(url)


def test_the_command_checks_the_url(tmp_path):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--webhook-url', 'ftp://x/', cwd=tmp_path)
    assert result.returncode == 2 and 'not an http(s) URL' in result.stderr


def test_the_delay_holds_each_request_back(tmp_path, receiver):
    """--webhook-delay (Mailpit's): a request goes this long after its
    message at the earliest; the 250 does not wait for it."""
    with InboxThread(tmp_path / 'in.db', webhook_url=receiver.url,
                     webhook_delay=0.5) as box:
        accepted = time.monotonic()
        send(box.smtp, subject='held back')
        path, _headers, body, _status = receiver.next()
        assert time.monotonic() - accepted >= 0.5
        assert json.loads(body)['Subject'] == 'held back'
