"""The ready-to-run receiver behind `smtp-stack serve`: one SmtpServer per
listener, all sharing one delivery and one table of users, and a reload that
swaps TLS certificates, users and the delivery without dropping a session.

Reload semantics (SIGHUP):
- TLS contexts are rebuilt from the files and replace the entries of each
  server's `secure_context` in place: the next handshake uses them.
- Users are replaced at once: the next AUTH, in any session, sees them.
- The delivery is replaced for new sessions; a session that is open keeps
  the delivery it started with until it ends (a relay's upstream
  connection belongs to one delivery, and a message must not be split).
  A delivery that listens itself (the inbox: section) needs a restart.
- Anything else (listeners, server options) needs a restart: reported.

The delivery is built from its row of sections.DELIVERIES and shared by
every server as a component (middleware.Component): the servers tell it
of their sessions, and of their start and stop.

With `metrics: HOST:PORT` every server's sessions are counted (made before
the servers start, so that their workers inherit the counters) and
/metrics, /livez and /readyz are served from this process once the
servers listen; /readyz also asks the stores of the policies.
"""
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import gevent

from .config import Config, Listener
from .middleware import Lifecycle, reload_of
from .server import SmtpServer
from .state import is_store
from .tls import TLS_OPTIONS, build_secure_contexts, install_sni
from .users import Users

if TYPE_CHECKING:
    from .delivery.base import Delivery
    from .metrics import Metrics
    from .middleware import Context, Next
    from .session import Session


class DeliverySwitch:
    """The one middleware every server uses; forwards to the current delivery.

    Each session is pinned to the delivery that was current when it opened,
    so a reload never changes the delivery under a transaction in progress.
    A component (middleware.Component) that passes on what its servers tell
    it: a session's opening and end to the delivery the session is pinned
    to, a server's start and stop to the current one.
    """

    def __init__(self, target: Delivery):
        self._pinned: dict[Session, tuple[Delivery, Lifecycle]] = {}
        self.target = target

    @property
    def target(self) -> Delivery:
        return self._current[0]

    @target.setter
    def target(self, target: Delivery) -> None:
        self._current = (target, Lifecycle.of(target))

    def describe(self) -> str:
        return self.target.describe()

    def __call__(self, ctx: Context, next: Next) -> None:
        pinned = self._pinned.get(ctx.session) or self._pin(ctx.session)
        return pinned[0](ctx, next)

    def _pin(self, session: Session) -> tuple[Delivery, Lifecycle]:
        pinned = self._pinned[session] = self._current
        return pinned

    def session_opened(self, session: Session) -> None:
        for opened in self._pin(session)[1].opened:
            opened(session)

    def session_closed(self, session: Session) -> None:
        pinned = self._pinned.pop(session, None)
        for closed in pinned[1].closed if pinned is not None else ():
            closed(session)

    def start(self, server: SmtpServer) -> None:
        for start, _ in self._current[1].serving:
            if start is not None:
                start(server)

    def stop(self, server: SmtpServer) -> None:
        for stop in self._current[1].stops:
            stop(server)


class Receiver:
    """The servers of a configuration: one SmtpServer per kind of listener
    (plain, implicit TLS, LMTP...), started once per address of that kind."""

    def __init__(self, config: Config):
        self.config = config
        self.users = Users(config.users or [])
        self.delivery = DeliverySwitch(config.deliver.build())
        # policies: after the delivery, so inside it: authenticate adds its header
        # before the delivery writes the message (docs/policies.md)
        self.policies = config.policies.build() if config.policies else []
        self.servers: list[SmtpServer] = []
        self._kind_of: list[SmtpServer] = []        # per listener: its server
        # server -> the address its last start() bound
        self._last_bound: dict[SmtpServer, tuple[str, int]] = {}
        kinds: dict[tuple[bool, bool], SmtpServer] = {}
        for listener in config.listeners:
            kind = (listener.secure, listener.lmtp)
            if kind not in kinds:
                kinds[kind] = self._make_server(listener)
                self.servers.append(kinds[kind])
            self._kind_of.append(kinds[kind])
        self.bound: list[tuple[str, int] | None] = []     # as bound, in listener order
        self.metrics: Metrics | None = None
        if config.metrics is not None:
            from .metrics import Metrics
            stores = [store for store in (getattr(p, 'store', None) for p in self.policies)
                      if is_store(store)]
            self.metrics = Metrics(self.servers, stores)

    def _make_server(self, listener: Listener) -> SmtpServer:
        options = self.config.server_options(listener)
        if 'on_auth' not in options:
            options['on_auth'] = self.users.on_auth
        server = SmtpServer(**options)
        # The CLI handles SIGTERM/SIGHUP itself (reloading users, TLS and
        # delivery before server.reload() re-forks workers): one handler only.
        server.handle_signals = False
        server.use(self.delivery)
        for policy in self.policies:
            server.use(policy)
        # 'listening' reports each bound address (port 0 becomes the real one).
        server.on('listening', lambda address, server=server:
                  self._last_bound.__setitem__(server, address))
        return server

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Receiver:
        started: list[SmtpServer] = []
        try:
            for server, listener in zip(self._kind_of, self.config.listeners, strict=True):
                server.start(listener.port, listener.host)
                self.bound.append(self._last_bound.get(server))
                started.append(server)
            if self.metrics is not None and self.config.metrics is not None:
                self.metrics.serve(*self.config.metrics)
        except BaseException:
            for server in dict.fromkeys(started):
                server.stop(0)
            if self.metrics is not None:
                self.metrics.stop()
            raise
        return self

    def serve_forever(self) -> None:
        gevent.joinall([gevent.spawn(server.serve_forever) for server in self.servers])

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: every server's stop() at once (close_timeout each); then
        the metrics (/readyz says 'stopping' meanwhile)."""
        gevent.joinall([gevent.spawn(server.stop, timeout) for server in self.servers])
        if self.metrics is not None:
            self.metrics.stop()

    @property
    def open_sessions(self) -> int:
        return sum(server.connections for server in self.servers)

    def describe(self) -> str:
        """The one start-up line: where it listens and where mail goes."""
        parts = []
        pairs = zip(self._kind_of, self.config.listeners, strict=True)
        for i, (server, listener) in enumerate(pairs):
            bound = self.bound[i] if i < len(self.bound) else None
            host, port = bound or (listener.host, listener.port)
            host = f'[{host}]' if ':' in host else host
            kind = 'LMTP' if listener.lmtp else 'SMTP'
            if listener.secure:
                kind += 'S' if kind == 'SMTP' else ' over TLS'
            elif server.options.enabled('STARTTLS'):
                kind += '+STARTTLS'
            parts.append(f'{host}:{port} ({kind})')
        line = 'listening on ' + ', '.join(parts)
        if self.config.tls_wanted and not self.config.tls.get('cert'):
            line += f'; TLS with a self-signed certificate for {self.servers[0].options.name}'
        line = f'{line}; mail goes to {self.delivery.describe()}'
        where = self.metrics.address if self.metrics is not None else None
        if where is not None:
            host = f'[{where[0]}]' if ':' in where[0] else where[0]
            line += f'; metrics on http://{host}:{where[1]}/metrics'
        return line

    # -- reload ----------------------------------------------------------------
    def reload(self, new: Config) -> list[str]:
        """Apply what can change live; the list says what needs a restart."""
        old = self.config
        notes = []
        if [vars(each) for each in new.listeners] != [vars(each) for each in old.listeners]:
            notes.append('listen: changed; restart to apply')
        for key in sorted(set(old.raw_options) | set(new.raw_options)):
            if old.raw_options.get(key) != new.raw_options.get(key):
                notes.append(f'{key}: changed; restart to apply')
        if new.metrics != old.metrics:
            notes.append('metrics: changed; restart to apply')
        if _policies_key(new) != _policies_key(old):
            notes.append('policies: changed; restart to apply')
        for policy in self.policies:       # recipients' addresses_file: read it again now
            reload = reload_of(policy)
            if reload is not None:
                reload()
        self._reload_tls(new)
        self.users.replace(new.users or [])
        if _delivery_key(new) != _delivery_key(old):
            listening = [each.kind for each in (new.deliver, old.deliver) if not each.section.live]
            if listening:       # the inbox: its web side listens
                notes.append(f'{listening[0]}: changed; restart to apply')
            else:
                self.delivery.target = new.deliver.build()
        self.config = new
        for server in self.servers:
            if getattr(server, 'worker_pids', None):
                server.reload()     # workers > 1: fork fresh workers from this state
        return notes

    def _reload_tls(self, new: Config) -> None:
        """Rebuild every context from the files (they may have changed even if
        the config did not: renewed certificates) and swap them in place."""
        settings = {k: new.tls.get(k) for k in TLS_OPTIONS}
        settings['sni_options'] = new.tls.get('sni_options') or {}
        built: dict[str, dict[str, ssl.SSLContext]] = {}
        for server in self.servers:
            if not server.secure_context:
                continue        # this server does no TLS
            name = server.options.name
            if name not in built:
                built[name] = build_secure_contexts(settings, name)
            contexts = server.secure_context
            contexts.clear()
            contexts.update(built[name])
            install_sni(contexts, new.tls.get('sni_callback') or server.options.sni_callback)


def _policies_key(config: Config) -> str | None:
    return repr(config.policies.raw) if config.policies else None


def _delivery_key(config: Config) -> tuple[str, list[tuple[str, str]]]:
    kind, spec = config.deliver
    return kind, sorted((k, repr(v)) for k, v in spec.items() if k != 'fn')
