"""The inbox as the delivery of `smtp-stack serve` (its `inbox:` section).

A middleware like the other deliveries (the Receiver puts it behind its
DeliverySwitch), plus `start_web()`/`stop_web()` for the web side, which the
Receiver calls beside its servers' own. See `inbox/config.py` for the keys.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .app import InboxApp, load_users
from .capture import Capture
from .release import Relay
from .service import web_server
from .store import Store

if TYPE_CHECKING:
    from ..middleware import Context, Next


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

    def __call__(self, ctx: Context, next: Next) -> None:
        return self._deliver(ctx, next)

    def describe(self) -> str:
        return f'inbox {self.store.path}'

    def start_web(self) -> None:
        self.http = web_server(self.spec.get('http', ('127.0.0.1', 8025)), self.app)
        self.http.start()

    @property
    def http_address(self) -> tuple[Any, ...] | None:
        return self.http.address if self.http is not None else None

    def stop_web(self) -> None:
        if self.http is not None:
            self.http.stop(timeout=1)
            self.http = None
