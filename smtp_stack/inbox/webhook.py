"""`--webhook-url`: a POST for each new message, as Mailpit's webhook.

The body is the message's summary as JSON (Mailpit's MessageSummary: the
`new` websocket event's Data), `Content-Type: application/json`. At most
`limit` requests a second (Mailpit's `--webhook-limit`, 5 by default),
each `delay` seconds after its message at the earliest (`--webhook-delay`).
With mailboxes (`--mailboxes`, past Mailpit), a field of our own beside
Mailpit's, `Mailbox`, names the mailbox the message went to ("" for the
default one; a copy per mailbox is a request per copy); without, the body
is Mailpit's to the field.

Never in the way of ingest: the webhook is a subscriber of the events
broker (events.py), so it hears of every new message however it came
(SMTP, `POST /api/v1/send`, another process writing the same file), in
every mailbox, after it is stored; a reader greenlet moves each into a
bounded queue at once (the broker never sees it lag), and a sender
greenlet posts them one by one on gevent sockets with a `timeout` per
request. A failed request (no connection, a timeout, a 5xx or 429) is
tried again up to `retries` times, waiting `retry_delay`, then twice
that, ...; a message still not delivered is given up. Failures are
logged once per failure period: one WARNING when they start, one INFO
line (with the count) when a request succeeds again. When the queue is
full the oldest waiting summary goes.
"""
from __future__ import annotations

import collections
import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.socket
import gevent.ssl

from .. import __version__, logs
from .events import EVERY_MAILBOX, Broker

log = logs.get('smtp_stack.inbox')

TIMEOUT = 5.0
RETRIES = 3
RETRY_DELAY = 1.0
LIMIT = 5.0             # requests a second (Mailpit's --webhook-limit default)
QUEUE_SIZE = 1000
RETRIED_STATUSES = frozenset({429})     # and every 5xx


class WebhookError(Exception):
    """One request that did not get a 2xx (the reason, for the log)."""


def check_url(url: str) -> str:
    """The URL if it is http(s)://host...; ValueError saying why not."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ('http', 'https') or not parts.hostname:
        raise ValueError(f'not an http(s) URL: {url!r}')
    try:
        _ = parts.port      # urlsplit checks the port only when asked
    except ValueError as exc:
        raise ValueError(f'{url!r}: {exc}') from None
    return url


class Webhook:
    """Posts each new message's summary to `url`, off the ingest path."""

    def __init__(self, url: str, broker: Broker, *, timeout: float = TIMEOUT,
                 retries: int = RETRIES, retry_delay: float = RETRY_DELAY,
                 limit: float = LIMIT, queue_size: int = QUEUE_SIZE, delay: float = 0.0):
        self.url = check_url(url)
        self.delay = delay          # Mailpit's --webhook-delay: seconds after the message
        self.broker = broker
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.min_gap = 1.0 / limit if limit > 0 else 0.0
        # (when heard, summary), oldest first
        self.pending: collections.deque[tuple[float, dict[str, Any]]] = \
            collections.deque(maxlen=queue_size)
        self.sent = 0
        self.given_up = 0
        self._failures = 0          # failed requests in the current failure period
        self._wake = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._queue: Any = None

    def start(self) -> None:
        """In the hub that serves the inbox (the broker's subscribers live there)."""
        if not self._greenlets:
            self._queue = self.broker.subscribe(EVERY_MAILBOX)
            self._greenlets = [gevent.spawn(self._listen), gevent.spawn(self._send_all)]

    def stop(self) -> None:
        gevent.killall(self._greenlets, block=True, timeout=2)
        self._greenlets = []
        if self._queue is not None:
            self.broker.unsubscribe(self._queue)
            self._queue = None

    def _listen(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:       # cut loose by the broker: subscribe again
                self._queue = self.broker.subscribe(EVERY_MAILBOX)
                continue
            if event.get('Type') == 'new':
                summary = event['Data']
                if self.broker.store.routing.on:
                    summary = {**summary, 'Mailbox': event.get('Mailbox', '')}
                self.pending.append((time.monotonic(), summary))
                self._wake.set()

    def _send_all(self) -> None:
        last = 0.0
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.pending:
                heard, summary = self.pending.popleft()
                now = time.monotonic()
                wait = max(last + self.min_gap, heard + self.delay) - now
                if wait > 0:
                    gevent.sleep(wait)      # the rate limit and the delay, no synchronisation
                last = time.monotonic()
                self.deliver(summary)

    def deliver(self, summary: dict[str, Any]) -> bool:
        """POST one summary, with the retries; False when it was given up."""
        body = json.dumps(summary).encode()
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                self._post(body)
            except (OSError, http.client.HTTPException, WebhookError) as exc:
                self._failed(exc)
                if isinstance(exc, WebhookError) and not exc.args[1]:
                    break           # a 4xx other than 429: asking again will not help
                if attempt < self.retries:
                    gevent.sleep(delay)
                    delay *= 2
                continue
            self._worked()
            return True
        self.given_up += 1
        return False

    def _post(self, body: bytes) -> None:
        parts = urlsplit(self.url)
        secure = parts.scheme.lower() == 'https'
        connection = _Connection(parts.hostname or '', parts.port or (443 if secure else 80),
                                 secure, self.timeout)
        try:
            target = (parts.path or '/') + (f'?{parts.query}' if parts.query else '')
            connection.request('POST', target, body=body, headers={
                'Content-Type': 'application/json',
                'User-Agent': f'smtp-stack-inbox/{__version__}'})
            response = connection.getresponse()
            response.read(65536)
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            retry = response.status >= 500 or response.status in RETRIED_STATUSES
            raise WebhookError(f'{response.status} {response.reason}', retry)

    def _failed(self, exc: BaseException) -> None:
        if self._failures == 0:
            reason = exc.args[0] if isinstance(exc, WebhookError) else exc
            log.warning('inbox: webhook %s failed: %s', self.url, reason)
        self._failures += 1

    def _worked(self) -> None:
        if self._failures:
            log.info('inbox: webhook %s works again (%d requests failed)',
                     self.url, self._failures)
        self._failures = 0
        self.sent += 1


class _Connection(http.client.HTTPConnection):
    """http.client on gevent sockets (the process is not monkey-patched)."""

    def __init__(self, host: str, port: int, secure: bool, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._secure = secure

    def connect(self) -> None:
        sock = gevent.socket.create_connection((self.host, self.port), self.timeout)
        if self._secure:
            context = gevent.ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock
