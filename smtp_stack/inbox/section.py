"""The inbox as the delivery of `smtp-stack serve` (its `inbox:` section).

    inbox:
      db: inbox.db              # relative to the config file's directory
      http: 127.0.0.1:8025      # the web page, Mailpit's API, /api/events
      max_messages: 500
      ui_auth_file: web-users   # optional: "name:hash" lines (smtp-stack hash-password)
      relay: 127.0.0.1:25       # optional: where "release" sends a message

With it, the inbox is the delivery: every message the configured servers
accept (with their listeners, TLS, users, policies) is stored in the inbox,
and the web side runs in the same process. It replaces `deliver:` (both at
once are an error: one delivery per server). The keys are the parameters
`InboxDelivery` declares (params.py); config.py has its row.

A middleware like the other deliveries, and a component
(middleware.Component): its web side runs while the servers it is
registered on run. The Receiver shares one delivery between its servers,
so the web side starts with the first server's start() and stops with
the last one's stop(). config.py stops a file with an `inbox:` section
before it gets here when the `inbox` extra is missing (MissingExtra,
naming the section).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

from ..params import COUNT, Kind, Reader
from .app import InboxApp, load_users
from .capture import Capture
from .chaos import ChaosMiddleware
from .release import Relay, parse_hostport
from .service import DEFAULT_HTTP, start_web
from .store import Store

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..server import SmtpServer


def _db(value: Any, reader: Reader) -> str:
    """A file name taken from the configuration's directory, which must exist."""
    if not isinstance(value, str) or not value:
        raise ValueError
    path = reader.file_path(value)
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f'{os.path.dirname(path)} is not a directory')
    return path


def _users_file(value: Any, reader: Reader) -> str:
    path = reader.file_path(str(value))
    if not os.path.isfile(path):
        raise ValueError('file not found')
    return path


DB = Kind('a file name', _db, default_too=True)     # inbox.db next to the configuration
ADDRESS = Kind('HOST:PORT', lambda value, reader: parse_hostport(str(value)),
               show=lambda address: f'{address[0]}:{address[1]}')
USERS_FILE = Kind('a file name', _users_file)


class InboxDelivery:
    def __init__(self, db: Annotated[str, DB] = 'inbox.db',
                 http: Annotated[tuple[str, int], ADDRESS] = DEFAULT_HTTP,
                 max_messages: Annotated[int, COUNT] = 500,
                 ui_auth_file: Annotated[str | None, USERS_FILE] = None,
                 relay: Annotated[tuple[str, int] | None, ADDRESS] = None):
        self.store = Store(db, max_messages)
        self.capture = Capture(self.store)
        self._deliver = self.capture.delivery()
        users = load_users(ui_auth_file) if ui_auth_file else None
        self.app = InboxApp(self.store, relay=Relay(*relay) if relay else None, users=users,
                            stats=self.capture.stats)
        self.chaos = ChaosMiddleware(self.app.chaos)    # PUT /api/v1/chaos fails commands
        self.web_address = http
        self.http: Any = None       # gevent's WSGIServer, while the web side runs
        self._serving: set[SmtpServer] = set()     # the started servers it is registered on

    def __call__(self, ctx: Context, next: Next) -> None:
        self.chaos(ctx, lambda: self._deliver(ctx, next))

    def describe(self) -> str:
        return describe({'db': self.store.path, 'http': self.http_address or self.web_address})

    def start(self, server: SmtpServer) -> None:
        """The web side starts with the first server (OSError naming its
        address when that cannot be bound)."""
        if not self._serving:
            self.http = start_web(self.web_address, self.app)
        self._serving.add(server)

    def stop(self, server: SmtpServer) -> None:
        """... and stops with the last."""
        self._serving.discard(server)
        if not self._serving and self.http is not None:
            self.http.stop(timeout=1)
            self.http = None

    @property
    def http_address(self) -> tuple[Any, ...] | None:
        return self.http.address if self.http is not None else None


def describe(spec: dict[str, Any]) -> str:
    """'inbox /srv/inbox.db (web and API on http://127.0.0.1:8025/)'."""
    host, port = spec.get('http', DEFAULT_HTTP)[:2]
    host = f'[{host}]' if ':' in host else host
    return f'inbox {spec.get("db")} (web and API on http://{host}:{port}/)'
