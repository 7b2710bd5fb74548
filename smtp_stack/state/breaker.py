"""A circuit breaker per dependency (a Redis, an SQLite file, a resolver,
a relay's upstream), so that an outage costs one timeout per period, not
one per call.

    closed ──a slow failure──▶ open ──`period` s later: one call──▶ probing
      ▲                         ▲                                    │
      └──────── a success ──────┼──────── the probe answers ─────────┘
                                └──────── the probe fails ───────────┘

Closed, every call goes through. A call that failed *slowly* (it cost at
least `slow` seconds: a timeout, a lock wait) opens the breaker: for
`period` seconds every call fails at once, without asking, and so does a
call admitted before but not yet started (one queued behind the slow
ones for a thread). Then the first call is let through as a probe, alone:
its success closes the breaker, its failure opens it for another period.
A probe that never reports (its greenlet was killed) stops counting as
one after `period`.

A failure that came back at once (connection refused: a Redis being
restarted, an upstream that is not listening) does not open it: asking
again costs nothing, and the next call finds the dependency as soon as it
is back. So a stalled Redis costs one session one timeout per period,
and a restarted one is used again at once.

Every method may be called from any thread (the stores record a failure
in the pool thread that saw it, before that thread takes its next call):
the state is guarded by a native lock, held for a few assignments only,
never across I/O. After a fork the child gets fresh locks.

For metrics: `breakers()` lists every breaker of the process, each with
its `state` and counters (`opened`, `probes`, `failed_fast`, `failures`);
`listeners` are called as `listener(breaker, event)` on each 'open',
'probe', 'close' and 'fail_fast', in the thread that caused it (keep them
short and thread-safe, a prometheus_client Counter.inc() is).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeAlias

from gevent.monkey import get_original

log = logging.getLogger('smtp_stack.state')

PERIOD = 5.0        # seconds a breaker stays open before it lets one probe through

State: TypeAlias = Literal['closed', 'open', 'probing']
Event: TypeAlias = Literal['open', 'probe', 'close', 'fail_fast']
Listener: TypeAlias = Callable[['Breaker', Event], None]

#: Called as listener(breaker, event) for every breaker's events (metrics).
listeners: list[Listener] = []

# A native lock even in a monkey-patched process: pool threads take it too.
_native_lock = get_original('_thread', 'allocate_lock')


class Ticket(NamedTuple):
    """A call let through: when (`at`, the breaker's clock) and whether as
    the probe. A tuple: one is made per store call, and a frozen dataclass
    cost three times as much to make."""
    at: float
    probe: bool = False


class Breaker:
    """The breaker of one dependency, `name` as logs and metrics show it
    (a store's URL without its password, 'dns 127.0.0.1:53', 'upstream
    host:25'). `slow`: a failure that cost at least this many seconds
    opens it (its owner passes half its timeout)."""

    def __init__(self, name: str, slow: float, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.slow = slow
        self.period = period
        self.clock = clock
        self._lock = _native_lock()
        self._opened_at: float | None = None      # None: closed
        self._retry_at = 0.0                      # open until then
        self._probe_until = 0.0                   # a probe is out until then
        self.last_error = ''
        # Counters since the process started, for metrics.
        self.opened = 0         # closed -> open
        self.probes = 0         # calls let through as the probe
        self.failed_fast = 0    # calls refused without asking
        self.failures = 0       # calls that asked and failed (slowly or not)

    def __repr__(self) -> str:
        return f'<Breaker {self.name} {self.state}>'

    @property
    def state(self) -> State:
        now = self.clock()
        if self._opened_at is None:
            return 'closed'
        return 'probing' if now >= self._retry_at and now < self._probe_until else 'open'

    def admit(self) -> Ticket | None:
        """A ticket for a call that may go, or None: fail fast (the reason
        is `refusal()`)."""
        now = self.clock()
        if self._opened_at is None:     # closed (one read, no lock): what most calls find
            return Ticket(now)
        with self._lock:
            if self._opened_at is None:
                return Ticket(now)
            if now < self._retry_at or now < self._probe_until:
                self.failed_fast += 1
                event: Event = 'fail_fast'
                ticket = None
            else:
                self._probe_until = now + self.period
                self.probes += 1
                event, ticket = 'probe', Ticket(now, probe=True)
        _emit(self, event)
        return ticket

    def still_admits(self, ticket: Ticket) -> bool:
        """Whether a call admitted with `ticket` may start now: not if the
        breaker opened since (it waited behind calls that failed slowly)."""
        opened = self._opened_at
        if ticket.probe or opened is None or opened <= ticket.at:
            return True
        with self._lock:
            self.failed_fast += 1
        _emit(self, 'fail_fast')
        return False

    def succeeded(self, ticket: Ticket) -> None:
        """The dependency answered: closed from now on."""
        if self._opened_at is None:
            return
        with self._lock:
            was_open = self._opened_at is not None
            self._opened_at = None
            self._probe_until = 0.0
        if was_open:
            _emit(self, 'close')

    def failed(self, ticket: Ticket, cost: float, error: str) -> None:
        """A call failed after `cost` seconds: open if that was slow (or
        it was the probe that failed slowly), else as it was."""
        now = self.clock()
        with self._lock:
            self.failures += 1
            self.last_error = error
            if cost < self.slow:
                if ticket.probe:        # refused at once: asking costs nothing again
                    self._opened_at, self._probe_until = None, 0.0
                    event: Event | None = 'close'
                else:
                    event = None
            else:
                event = 'open' if self._opened_at is None else None
                self.opened += event is not None
                self._opened_at = now
                self._retry_at = now + self.period
                if ticket.probe:
                    self._probe_until = 0.0
        if event is not None:
            _emit(self, event)

    def refusal(self) -> str:
        """Why a call fails fast, for its error message."""
        left = max(0.0, self._retry_at - self.clock())
        return (f'not asked: failing since a call took over {self.slow:g} s '
                f'({self.last_error}); next try in {left:.1f} s')

    def _after_fork(self) -> None:
        self._lock = _native_lock()


_breakers: dict[str, Breaker] = {}
_registry_lock = _native_lock()


def breaker(name: str, slow: float, period: float = PERIOD) -> Breaker:
    """The breaker of the dependency `name`, made on first use: every
    client of one dependency (two store objects for one Redis URL, the
    relays of several servers to one upstream) shares it."""
    with _registry_lock:
        found = _breakers.get(name)
        if found is None:
            found = _breakers[name] = Breaker(name, slow, period)
    return found


def breakers() -> list[Breaker]:
    """Every breaker of this process (a snapshot), for metrics and health."""
    with _registry_lock:
        return list(_breakers.values())


def _emit(source: Breaker, event: Event) -> None:
    for listener in list(listeners):
        try:
            listener(source, event)
        except Exception as exc:        # a metrics bug must not fail a store call
            log.warning('breaker listener %r failed on %s %s: %r', listener, source.name,
                        event, exc)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = _native_lock()
    for each in _breakers.values():
        each._after_fork()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
