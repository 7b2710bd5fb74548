"""Prometheus metrics and health endpoints for SmtpServer (and `smtp-stack
serve`'s `metrics: HOST:PORT`).

    from smtp_stack import SmtpServer, metrics

    server = SmtpServer(workers=4)
    exported = metrics.serve(server, '127.0.0.1', 9125)   # before server.start()
    server.start(25)
    ...
    server.stop(); exported.stop()

What is counted is what the log writes: each server's events
(`server.events`, events.Events) go through a `counting.Counted` observer
before the log, and the circuit breakers report to a listener. The counts
live in memory shared with the workers (cells.py), so /metrics, served by
the process that called serve() (the master), sums every worker. The HTTP
side (http.py) needs the `metrics` extra (prometheus-client); counting
does not.

| module | holds |
|---|---|
| `schema.py` | every metric: name, type, labels, help |
| `cells.py` | `Cells`: the shared counters, a part per process |
| `counting.py` | `Counted` (the events observer), `BreakerCounts` |
| `health.py` | `Health`: /livez and /readyz (listening, the stores answer) |
| `http.py` | the collector, the WSGI app, gevent's WSGI server |
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..extras import needs_extra
from ..server import SmtpServer
from ..state import is_store
from ..state.breaker import listeners as breaker_listeners
from ..workers import master_only, master_only_groups, per_worker
from .cells import Cells
from .counting import BreakerCounts, Counted
from .health import Health
from .schema import METRICS, is_gauge

if TYPE_CHECKING:
    from ..state import Store

__all__ = ['Metrics', 'serve', 'METRICS']

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 9125
PARTS_PER_WORKER = 4    # as workers.COUNTERS_PER_WORKER: workers still finishing after reloads


class Metrics:
    """The metrics of `servers` (counted from now on) and their health.

    Make it before the servers start: their workers, forked then, must
    inherit the shared memory. `stores`: stores to probe for /readyz
    besides the servers' own `store` option (a policy's, for instance).
    `serve(host, port)` starts the HTTP side in the calling hub; `stop()`
    stops it and stops counting."""

    def __init__(self, servers: SmtpServer | Iterable[SmtpServer],
                 stores: Iterable[Store] = ()) -> None:
        self.servers: list[SmtpServer] = _servers(servers)
        workers = sum(s.options.workers for s in self.servers if s.options.workers > 1)
        self.cells = Cells(1 + workers * PARTS_PER_WORKER, is_gauge)
        self.health = Health(self.servers, [s for s in stores if is_store(s)])
        self.http: Any = None       # gevent's WSGIServer, while serving
        self._breakers = BreakerCounts(self.cells)
        breaker_listeners.append(self._breakers)
        per_worker.append(self.cells)
        for server in self.servers:
            if not isinstance(server.events, Counted):
                server.events = Counted(server.events, self.cells)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where /metrics is served (the real port when 0 was asked for)."""
        if self.http is None:
            return None
        host, port = self.http.address[:2]
        return host, port

    def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Metrics:
        """Serve /metrics, /livez and /readyz on host:port; returns self.
        MissingExtra without prometheus-client; an OSError naming the
        address when it cannot be bound."""
        with needs_extra('metrics', 'metrics'):
            from .http import SERVING, MetricsApp, start_http
        if self.http is None:
            self.http = start_http(host, port, MetricsApp(self))
            master_only.append(self.http.socket)     # workers must not hold the port
            if SERVING not in master_only_groups:
                master_only_groups.append(SERVING)  # nor its connections
        return self

    def stop(self) -> None:
        """Stop serving and counting (the servers' events go to the log only)."""
        if self.http is not None:
            from .http import SERVING
            if self.http.socket in master_only:
                master_only.remove(self.http.socket)
            if SERVING in master_only_groups:
                master_only_groups.remove(SERVING)
            self.http.stop(timeout=1)
            self.http = None
        for server in self.servers:
            if isinstance(server.events, Counted) and server.events.cells is self.cells:
                server.events = server.events.inner
        if self._breakers in breaker_listeners:
            breaker_listeners.remove(self._breakers)
        if self.cells in per_worker:
            per_worker.remove(self.cells)
        self.cells.close()


def serve(servers: SmtpServer | Iterable[SmtpServer], host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, stores: Iterable[Store] = ()) -> Metrics:
    """Count the sessions of `servers` (one SmtpServer or several) and
    serve /metrics, /livez and /readyz on host:port, in the calling hub:
    `Metrics(servers, stores).serve(host, port)`. Call it before the
    servers start (their workers must inherit the counters)."""
    return Metrics(servers, stores).serve(host, port)


def _servers(servers: SmtpServer | Iterable[SmtpServer]) -> list[SmtpServer]:
    if isinstance(servers, SmtpServer):
        return [servers]
    found = list(servers)
    if not found:
        raise ValueError('metrics: no server to count')
    return found
