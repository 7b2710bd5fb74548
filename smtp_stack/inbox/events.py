"""`/api/events`: a websocket that tells the page (and any client) of new mail.

The frames are Mailpit's: `{"Type": "stats", "Data": {"Total", "Unread",
"Version"}}` as soon as a client is connected and after every change of
the store; `{"Type": "new", "Data": <message list item>}` for each new
message; `delete` (`{"ID"}`) for each message deleted by ID or by a
search of up to 200 matches, `truncate` when all were, `prune` when many
went at once (more matches, pruning beyond max_messages, a tag renamed
or deleted: reload the list); `update` (`{"ID", "Read"}` or `{"ID",
"Tags"}`) for each message whose read flag or tags were set.

Each mailbox (mailboxes.py) has its own stream: a client hears only of
the mailbox it connected to (`/api/events` of the default one,
`/mailbox/NAME/api/events` of another), and its `stats` are that
mailbox's counts, sent when they change or the mailbox had an event.

Where the events come from: a `Broker` watches the store. It is nudged at
once by the store of the same process (the `smtp-stack inbox` command,
where the SMTP side writes), and polls the database's change counter
every `interval` seconds otherwise, so a web side in another process (a
gunicorn mount) still sees what the SMTP process stored. New messages are
read from the messages table (none is missed, however many arrive between
two looks); the other events from the store's event log, which keeps the
last thousand (database.py).

RFC 6455 framing, masking, fragmentation, ping/pong and the closing
handshake are wsproto's (`wsproto.connection.Connection`); this module only
checks the opening handshake (RFC 6455 4.2.1) on the request the WSGI
server already parsed and answers it (4.2.2), then shuttles bytes between
the socket and wsproto. The upgrade needs a server that hands the raw
connection to the application after a 101: gevent's WSGI server does (its
`wsgi.input` is then the socket's reader); elsewhere the endpoint answers
501 and the page falls back to polling the API.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import gevent.event
import gevent.lock
import gevent.queue
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token

from .. import __version__
from ..offload import offload
from .http import Environ, HttpError, StartResponse
from .mailboxes import DEFAULT

if TYPE_CHECKING:
    from .store import Store

# An event as sent: {"Type": ..., "Data": ...}; None tells a subscriber to stop.
Message = dict[str, Any]
# (changes counter, newest row id, last event): Store.watermark()
Watermark = tuple[int, int, int]
EVERY_MAILBOX = None        # a subscriber of every mailbox's events (the webhook)


class Reader(Protocol):
    """The upgraded connection's reader (gevent's `wsgi.input`)."""

    def read1(self, size: int, /) -> bytes: ...
    def close(self) -> None: ...

log = logging.getLogger('smtp_stack.inbox')

QUEUE_SIZE = 500            # events a slow client may lag behind before it is dropped
PING_EVERY = 25.0           # seconds; keeps proxies from closing an idle socket
READ_SIZE = 65536


class Broker:
    """Fans the store's changes out to the websocket subscribers of one hub."""

    def __init__(self, store: Store, interval: float = 0.5):
        self.store = store
        self.interval = interval
        # gevent.queue.Queue of Message | None -> the mailbox it hears of (None: all)
        self._subscribers: dict[Any, str | None] = {}
        self._counts: dict[str, tuple[int, int]] = {}     # the stats last sent, by mailbox
        self._watcher: Any = None               # the greenlet of _watch
        self._wake: Any = None                  # a gevent.event.Event
        self._loop: Any = None                  # the hub's loop, for the store's threads
        store.on_change(self._nudge)

    def _nudge(self) -> None:
        """Called by the store after a commit, from whatever thread did it."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.run_callback_threadsafe(wake.set)

    def subscribe(self, mailbox: str | None = DEFAULT) -> Any:
        """A gevent.queue.Queue of the events (Message) of `mailbox`
        (EVERY_MAILBOX: of all, without stats, each with a `Mailbox` key
        naming whose it is), None when cut loose."""
        queue = gevent.queue.Queue()
        self._subscribers[queue] = mailbox
        if self._watcher is None or self._watcher.dead:
            self._wake = gevent.event.Event()
            self._loop = gevent.get_hub().loop
            self._counts = {}
            self._watcher = gevent.spawn(self._watch, offload(self.store.watermark))
        return queue

    def unsubscribe(self, queue: Any) -> None:
        self._subscribers.pop(queue, None)

    def greeted(self, mailbox: str, total: int, unread: int) -> None:
        """A subscriber was told these counts: the next stats of `mailbox`
        go out when they change (or it has an event), not before."""
        self._counts.setdefault(mailbox, (total, unread))

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _watch(self, last: Watermark) -> None:
        while self._subscribers:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                state = offload(self.store.watermark)
                if state == last:
                    continue
                new: list[tuple[str, Message]] = (
                    offload(self.store.newer_than, last[1], state[1] - last[1])   # all of them
                    if state[1] > last[1] else [])
                logged = offload(self.store.logged_since, last[2]) if state[2] > last[2] else []
                watched = {box for box in self._subscribers.values() if box is not None}
                counts = offload(self.store.counts, watched)
            except Exception:       # noqa: BLE001 - a locked or vanished file: try again
                log.exception('inbox events: cannot read the store')
                continue
            touched = {box for box, _item in new} | {box for _seq, box, _event in logged}
            for box, item in new:
                self.publish({'Type': 'new', 'Data': item}, box)
            for _seq, box, event in logged:
                self.publish(event, box)
            for box, (total, unread) in counts.items():
                if box in touched or self._counts.get(box) != (total, unread):
                    self.publish(stats_event(total, unread), box, everyone=False)
            self._counts.update(counts)
            for box in set(self._counts) - set(self._subscribers.values()):
                del self._counts[box]       # nobody listens there now
            last = state

    def publish(self, event: Message, mailbox: str = DEFAULT, everyone: bool = True) -> None:
        """To the subscribers of `mailbox` (and, if `everyone`, of every mailbox)."""
        for queue, heard in list(self._subscribers.items()):
            if heard != mailbox and not (heard is None and everyone):
                continue
            if queue.qsize() >= QUEUE_SIZE:     # it stopped reading: cut it loose
                self._subscribers.pop(queue, None)
                queue.put(None)
            else:
                queue.put(event if heard is not None else {**event, 'Mailbox': mailbox})


def stats_event(total: int, unread: int) -> Message:
    """Mailpit's `stats` event: a mailbox's counts."""
    return {'Type': 'stats', 'Data': {'Total': total, 'Unread': unread, 'Version': __version__}}


def check_handshake(environ: Environ) -> str:
    """The Sec-WebSocket-Accept value for a valid opening handshake
    (RFC 6455 4.2.1), else HttpError 400 (or 426 for another version)."""
    if environ.get('REQUEST_METHOD') != 'GET':
        raise HttpError(405, 'websocket handshakes use GET', [('Allow', 'GET')])
    if environ.get('HTTP_UPGRADE', '').lower() != 'websocket' or 'upgrade' not in {
            t.strip().lower() for t in environ.get('HTTP_CONNECTION', '').split(',')}:
        raise HttpError(426, 'this endpoint is a websocket', [('Upgrade', 'websocket')])
    if environ.get('HTTP_SEC_WEBSOCKET_VERSION', '') != '13':
        raise HttpError(426, 'websocket version 13 only', [('Sec-WebSocket-Version', '13')])
    key = environ.get('HTTP_SEC_WEBSOCKET_KEY', '').strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HttpError(400, 'bad Sec-WebSocket-Key') from None
    return generate_accept_token(key.encode('ascii')).decode('ascii')


def can_upgrade(environ: Environ) -> bool:
    """gevent's WSGI server gives an upgraded request the raw reader."""
    return (environ.get('SERVER_SOFTWARE', '').startswith('gevent')
            and environ.get('wsgi.input_terminated') is False)


def websocket_app(environ: Environ, start_response: StartResponse,
                  broker: Broker, mailbox: str = DEFAULT) -> list[bytes]:
    """The events of `mailbox` on the websocket this request opens."""
    accept = check_handshake(environ)
    if not can_upgrade(environ):
        raise HttpError(501, 'websockets need gevent\'s WSGI server here; poll /api/v1/messages')
    # Subscribed before the 101 goes out: a client that stores a message
    # as soon as it is connected must still hear of it.
    queue = broker.subscribe(mailbox)
    reader = environ['wsgi.input']
    try:
        _changes, _newest, total, unread, _event = offload(broker.store.state, mailbox)
        queue.put(stats_event(total, unread))       # Mailpit's greeting
        broker.greeted(mailbox, total, unread)
        write = start_response('101 Switching Protocols', [
            ('Upgrade', 'websocket'), ('Connection', 'Upgrade'), ('Sec-WebSocket-Accept', accept)])
        write(b'')          # the 101 goes out now; the socket is ours from here
        Session(reader, write, broker, queue).run()
    finally:
        broker.unsubscribe(queue)
        # gevent's handler stops reading requests on this connection.
        reader.close()
    return []


class Session:
    """One websocket: events out, pings and the close handshake in."""

    def __init__(self, reader: Reader, write: Callable[[bytes], object], broker: Broker,
                 queue: Any):
        self.reader = reader
        self.write = write
        self.broker = broker
        self.ws = Connection(ConnectionType.SERVER)
        self.lock = gevent.lock.Semaphore()
        self.queue = queue

    def send(self, event: Event) -> None:
        with self.lock:
            self.write(self.ws.send(event))

    def run(self) -> None:
        pump = gevent.spawn(self._read)
        try:
            while not pump.dead:
                try:
                    event = self.queue.get(timeout=PING_EVERY)
                except gevent.queue.Empty:
                    self.send(Ping())
                    continue
                if event is None:
                    break
                self.send(TextMessage(data=json.dumps(event, ensure_ascii=False)))
        except (OSError, LocalProtocolError):
            pass
        finally:
            pump.kill(block=True, timeout=1)

    def _read(self) -> None:
        """Answer pings and the close handshake; ignore what the client says."""
        try:
            while True:
                data = self.reader.read1(READ_SIZE)
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, Ping):
                        self.send(event.response())
                    elif isinstance(event, CloseConnection):
                        self.send(event.response())
                        return
                if not data:
                    return
        except (OSError, LocalProtocolError, RemoteProtocolError):
            return
        finally:
            self.queue.put(None)
