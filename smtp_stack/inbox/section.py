"""The inbox as the delivery of `smtp-stack serve` (its `inbox:` section).

A middleware like the other deliveries, and a component
(middleware.Component): its web side runs while the servers it is
registered on run. The Receiver shares one delivery between its servers,
so the web side starts with the first server's start() and stops with
the last one's stop(). See `inbox/config.py` for the keys.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .app import InboxApp, load_users
from .capture import Capture
from .release import Relay
from .service import start_web
from .store import Store

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..server import SmtpServer


class InboxDelivery:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.store = Store(spec['db'], spec.get('max_messages', 500))
        self.capture = Capture(self.store)
        self._deliver = self.capture.delivery()
        users = load_users(spec['ui_auth_file']) if spec.get('ui_auth_file') else None
        relay = Relay(*spec['relay']) if spec.get('relay') else None
        self.app = InboxApp(self.store, relay=relay, users=users, stats=self.capture.stats)
        self.http: Any = None       # gevent's WSGIServer, while the web side runs
        self._serving: set[SmtpServer] = set()     # the started servers it is registered on

    def __call__(self, ctx: Context, next: Next) -> None:
        return self._deliver(ctx, next)

    def describe(self) -> str:
        from .config import describe
        return describe({**self.spec, 'db': self.store.path, 'http': self.http_address
                         or self.spec.get('http', ('127.0.0.1', 8025))})

    def start(self, server: SmtpServer) -> None:
        """The web side starts with the first server (OSError naming its
        address when that cannot be bound)."""
        if not self._serving:
            self.http = start_web(self.spec.get('http', ('127.0.0.1', 8025)), self.app)
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
