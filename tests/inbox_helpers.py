"""Helpers of the inbox tests: an Inbox in a thread, mail over smtplib,
HTTP over http.client, and a websocket client (wsproto on a plain socket).

Every wait is bounded (WAIT seconds); nothing sleeps to synchronise.
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, RejectConnection, Request,
                            TextMessage)

from smtp_stack.inbox.service import Inbox
from smtp_stack.receiver import Receiver

WAIT = 10.0


@contextlib.contextmanager
def receiver_thread(config):
    """`smtp-stack serve`'s Receiver for `config` (an inbox: section among
    it; or a Receiver already made), serving in a thread of its own; its
    servers stopped and the thread joined when the block ends."""
    receiver = config if isinstance(config, Receiver) else Receiver(config)
    started = threading.Event()

    def serve() -> None:
        receiver.start()
        started.set()
        receiver.serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT), 'the receiver did not start'
        yield receiver
    finally:
        for server in receiver.servers:
            server.stop()
        thread.join(WAIT)
    assert not thread.is_alive(), 'the receiver did not stop'


class InboxThread:
    """`smtp-stack inbox` in a thread with its own hub, on free ports."""

    def __init__(self, db, **options):
        options.setdefault('smtp', ('127.0.0.1', 0))
        options.setdefault('http', ('127.0.0.1', 0))
        self.inbox = Inbox(str(db), **options)
        self._ready = threading.Event()
        self._error = None
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True, name='inbox')
        self._thread.start()
        assert self._ready.wait(WAIT), 'the inbox did not start'
        if self._error:
            raise self._error
        return self

    def _run(self):
        import gevent
        self._loop = gevent.get_hub().loop
        try:
            self.inbox.start()
        except BaseException as exc:      # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.inbox.serve_forever()
        finally:
            # Its thread pool (the web side's store calls, each thread with
            # its SQLite connection) and its loop end with it.
            gevent.get_hub().destroy(destroy_loop=True)

    def stop(self):
        if self._thread is None:
            return
        self._loop.run_callback_threadsafe(_spawn_stop, self.inbox)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), 'the inbox did not stop'
        self._thread = None
        self.inbox.store.close()    # this thread's connection, if the test read the store

    @property
    def smtp(self):
        return self.inbox.smtp_address[:2]

    @property
    def url(self):
        return self.inbox.url

    @property
    def http(self):
        return self.inbox.http_address[:2]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _spawn_stop(inbox):
    import gevent
    gevent.spawn(inbox.stop, 2)


def make_mail(subject='Hello', sender='Alice <alice@example.com>', to='bob@example.com',
              text='Hello Bob,\nthis is the text.\n', html=None, attachments=(), cc=None,
              extra_headers=None) -> EmailMessage:
    msg = EmailMessage()
    msg['From'] = sender
    msg['To'] = to
    if cc:
        msg['Cc'] = cc
    msg['Subject'] = subject
    msg['Message-ID'] = f'<{time.monotonic_ns()}.{os.getpid()}@test.example>'
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype='html')
    for filename, ctype, data in attachments:
        main, sub = ctype.split('/')
        msg.add_attachment(data, maintype=main, subtype=sub, filename=filename)
    return msg


def send(address, msg=None, rcpt=None, **kwargs) -> EmailMessage:
    """Send one message over SMTP (smtplib); returns it."""
    msg = msg if msg is not None else make_mail(**kwargs)
    with smtplib.SMTP(address[0], address[1], timeout=WAIT) as client:
        client.send_message(msg, to_addrs=rcpt)
    return msg


def spam_check(inbox, msg) -> dict:
    """Send `msg` to the inbox; its sa-check answer (Mailpit's SpamAssassinResponse)."""
    send(inbox.smtp, msg)
    web = Http(inbox.url)
    try:
        uid = web.json('GET', '/api/v1/messages')['messages'][0]['ID']
        return web.json('GET', f'/api/v1/message/{uid}/sa-check')
    finally:
        web.close()


class Senders:
    """One smtplib session per subject, each in a thread: its reply code
    (and a refusal's text)."""

    def __init__(self, address):
        self.address = address
        self.codes: dict[str, int] = {}
        self.texts: dict[str, bytes] = {}
        self.threads: list[threading.Thread] = []

    def start(self, subject: str) -> None:
        thread = threading.Thread(target=self._send, args=(subject,))
        self.threads.append(thread)
        thread.start()

    def _send(self, subject: str) -> None:
        try:
            send(self.address, make_mail(subject=subject))
            self.codes[subject] = 250
        except smtplib.SMTPDataError as exc:
            self.codes[subject], self.texts[subject] = exc.smtp_code, exc.smtp_error

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT)
            assert not thread.is_alive()


class Http:
    """A keep-alive HTTP/1.1 client for one base URL (http.client)."""

    def __init__(self, base_url, auth=None, timeout=WAIT, context=None):
        """`context`: the ssl context an https URL is verified with."""
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip('/')
        self.timeout = timeout
        self.auth = auth
        self.conn = None
        self.context = context if parts.scheme == 'https' else None
        self.secure = parts.scheme == 'https'

    def request(self, method, path, body=None, headers=None, raw_body=None):
        headers = dict(headers or {})
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault('Content-Type', 'application/json')
        if self.auth:
            token = base64.b64encode(f'{self.auth[0]}:{self.auth[1]}'.encode()).decode()
            headers['Authorization'] = f'Basic {token}'
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = (http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout,
                                                         context=self.context)
                             if self.secure else
                             http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout))
            try:
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.getheader('Connection', '').lower() == 'close':
                self.close()
            return Reply(response.status, dict(response.getheaders()), payload)

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def json(self, method, path, body=None, expect=200):
        reply = self.request(method, path, body=body)
        assert reply.status == expect, (method, path, reply.status, reply.body[:300])
        return json.loads(reply.body)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        return json.loads(self.body)


class WebSocket:
    """A websocket client on a plain socket, framing by wsproto."""

    def __init__(self, host, port, path='/api/events', timeout=WAIT, headers=(), context=None):
        """`context`: over TLS, verified with this ssl context."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if context is not None:
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending = []
        self.partial = []       # the pieces of a text message still arriving
        self.closed = False
        self.sock.sendall(self.ws.send(Request(host=f'{host}:{port}', target=path,
                                               extra_headers=list(headers))))
        event = self._next()
        if isinstance(event, RejectConnection):
            raise ConnectionError(f'rejected: {event.status_code}')
        assert isinstance(event, AcceptConnection), event

    def _next(self):
        """The next whole event. wsproto hands a message over in pieces as
        its bytes arrive (message_finished False until the last), as a
        browser never does: the pieces are joined here."""
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = True
                    self.pending.append(event)
                elif isinstance(event, TextMessage):
                    self.partial.append(event.data)
                    if event.message_finished:
                        self.pending.append(TextMessage(data=''.join(self.partial)))
                        self.partial = []
                else:
                    self.pending.append(event)
            if not data and not self.pending:
                raise ConnectionError('closed')
        return self.pending.pop(0)

    def event(self, kind=None, timeout=WAIT):
        """The next JSON event (of Type `kind`), within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f'no {kind or "event"} within {timeout} s')
            self.sock.settimeout(remaining)
            event = self._next()
            if isinstance(event, CloseConnection):
                raise ConnectionError('closed by the server')
            if isinstance(event, TextMessage):
                data = json.loads(event.data)
                if kind is None or data.get('Type') == kind:
                    return data

    def ping(self, payload=b'hi'):
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def close(self):
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:   # noqa: BLE001 - already gone
            pass
        self.sock.close()


class InboxProcess:
    """The real `smtp-stack inbox` command as a child process, on free
    loopback ports (read from its start-up line); `close()` kills it."""

    LINE = r'inbox: SMTP on ([0-9.]+):(\d+), web and API on (http://[0-9.]+:\d+/)'

    def __init__(self, cwd, *args):
        import sys

        from clirunner import Process
        self.process = Process([sys.executable, '-m', 'smtp_stack', 'inbox', '--smtp', '127.0.0.1:0',
                                '--http', '127.0.0.1:0', *args], cwd)
        try:
            match = self.process.wait_line(self.LINE, 'stdout')
        except AssertionError:
            self.process.close()
            raise
        self.smtp = (match[1], int(match[2]))
        self.url = match[3]

    def close(self):
        self.process.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- a real browser ----------------------------------------------------------------------

def chromium(width=1280, height=800):
    """Debian's headless Chromium driven by selenium through chromium-driver;
    returns (driver, profile directory). The caller quits the driver and
    removes the profile (the page tests' module fixtures do)."""
    import tempfile

    import peers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    binary = peers.program('chromium', 'chromium')
    driver_path = peers.program('chromedriver', 'chromium-driver')
    profile = tempfile.mkdtemp(prefix='inbox-chromium-')
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', '--force-device-scale-factor=1', '--hide-scrollbars',
                 f'--user-data-dir={profile}', f'--window-size={width},{height}'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver, profile


def page_errors(driver):
    """The page's script errors and CSP violations logged since the last call
    (not the refusals the API answered: the page shows those itself)."""
    return [entry['message'] for entry in driver.get_log('browser')
            if entry['level'] == 'SEVERE' and 'Failed to load resource' not in entry['message']]


def wait(driver, condition, what, timeout=WAIT):
    """Until condition(driver) is true (returned), at most `timeout` seconds."""
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def retrying(driver, action, what):
    """Do `action(driver)` again while it meets an element the list replaced
    meanwhile (the list is re-rendered on every event), within WAIT."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains

    def attempt(d):
        try:
            action(d)
            return True
        except StaleElementReferenceException:
            ActionChains(d).reset_actions()        # no key left pressed
            return False
    wait(driver, attempt, what)


def list_subjects(driver):
    """The list's subjects, read in one script (the list is re-rendered on every event)."""
    return driver.execute_script(
        'return [...document.querySelectorAll("#list li.message .subject")].map(e => e.textContent)')


def open_page(driver, url, expected, width=1280, height=800):
    """Load the page at `url` and wait for the list to show `expected` and the websocket."""
    driver.set_window_size(width, height)
    driver.get(url)
    wait(driver, lambda d: list_subjects(d) == expected, f'the list to show {expected}')
    wait(driver, lambda d: d.execute_script('return document.getElementById("live").textContent')
         == 'Live', 'the websocket')


class WsgiThread:
    """A WSGI app made by `make_app()` and served by gevent's WSGI server in a
    thread with its own hub, on a free loopback port (as a mount would serve it)."""

    def __init__(self, make_app):
        self.make_app = make_app
        self.server = None
        self._loop = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='wsgi')

    def _run(self):
        import gevent
        from gevent.pywsgi import WSGIServer
        self.server = WSGIServer(('127.0.0.1', 0), self.make_app(), log=None, error_log=None)
        self.server.start()
        self._loop = gevent.get_hub().loop
        self._ready.set()
        self.server.serve_forever()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(WAIT), 'the WSGI server did not start'
        return self

    def __exit__(self, *exc):
        self._loop.run_callback_threadsafe(self.server.stop)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), 'the WSGI server did not stop'

    @property
    def port(self):
        return self.server.server_port


def mounted(prefix, app):
    """`app` under `prefix` (SCRIPT_NAME), as Werkzeug's DispatcherMiddleware mounts it."""
    def dispatch(environ, start_response):
        path = environ.get('PATH_INFO', '')
        if path != prefix and not path.startswith(prefix + '/'):
            start_response('404 Not Found', [('Content-Type', 'text/plain')])
            return [b'not here\n']
        environ['SCRIPT_NAME'] = environ.get('SCRIPT_NAME', '') + prefix
        environ['PATH_INFO'] = path[len(prefix):]
        return app(environ, start_response)
    return dispatch
