"""What /livez and /readyz answer.

Alive: the process answers HTTP (its hub runs). Ready: every server is
listening (a server with workers: at least one worker serves) and is not
stopping, and every store the servers and policies use answers. A store is
asked through its own client (`get` of a key nobody writes), so its
circuit breaker counts the probe like any call: while a store is down the
breaker fails the probe at once, and lets one through every few seconds
(state/breaker.py). The probe runs in a greenlet of its own; /readyz waits
for it at most PROBE_WAIT seconds and calls a store that has not answered
by then not ready, so a stalled store never holds the HTTP side, let alone
the hub. One answer serves the requests of the next FRESH seconds.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent

if TYPE_CHECKING:
    from ..server import SmtpServer
    from ..state import Store

PROBE_KEY = 'smtp_stack:readyz'     # read, never written
PROBE_WAIT = 0.5                    # seconds /readyz waits for a store's answer
FRESH = 1.0                         # seconds an answer is reused


class StoreProbe:
    """Whether one store answers, asked at most once per FRESH seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = str(getattr(store, 'url', '') or type(store).__name__)
        self._asked_at = -FRESH
        self._error: str | None = None
        self._probe: gevent.Greenlet[Any, None] | None = None

    def problem(self, wait: float = PROBE_WAIT) -> str | None:
        """Why the store is not ready, or None."""
        if time.monotonic() - self._asked_at < FRESH:
            return self._error
        probe = self._probe
        if probe is None or probe.dead:
            probe = self._probe = gevent.spawn(self._ask)
        probe.join(timeout=wait)
        if not probe.dead:
            return f'store {self.url}: no answer within {wait:g} s'
        return self._error

    def _ask(self) -> None:
        try:
            self.store.get(PROBE_KEY)
            error = None
        except Exception as exc:    # StoreError, or a store of the application's
            text = str(exc) or type(exc).__name__
            error = f'store {text}' if text.startswith(self.url) else f'store {self.url}: {text}'
        self._error = error
        self._asked_at = time.monotonic()


class Health:
    """The answers of /livez and /readyz for `servers` and `stores`."""

    def __init__(self, servers: Sequence[SmtpServer], stores: Sequence[Store] = ()) -> None:
        self.servers = list(servers)
        found: dict[str, StoreProbe] = {}
        for store in [*stores, *(s.options.store for s in servers if s.options.store)]:
            probe = StoreProbe(store)
            found.setdefault(probe.url, probe)
        self.probes = list(found.values())

    def problems(self) -> list[str]:
        """Why this is not ready to take mail, one line each; [] when it is."""
        problems = []
        for server in self.servers:
            where = _where(server)
            if server.stopping:
                problems.append(f'{where}: stopping')
            elif server.options.workers > 1 and server.worker_id is None:
                if not server.worker_pids:
                    problems.append(f'{where}: no worker serving')
            elif not server.listeners:
                problems.append(f'{where}: not listening')
        for probe in self.probes:
            problem = probe.problem()
            if problem is not None:
                problems.append(problem)
        return problems

    def serving(self) -> int:
        """Processes serving sessions: each server's workers, or 1."""
        count = 0
        for server in self.servers:
            if server.options.workers > 1 and server.worker_id is None:
                count += len(server.worker_pids)
            elif server.listeners and not server.stopping:
                count += 1
        return count


def _where(server: SmtpServer) -> str:
    address = server.address
    if address is None:
        return f'server {server.options.name}'
    host, port = address[:2]
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
