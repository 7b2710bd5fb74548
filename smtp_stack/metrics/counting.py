"""The events of the sessions, counted: `Counted` is an events.Events
observer that counts each event into shared cells (cells.py) and hands it
on to the observer it wraps (the log), so the metrics count exactly what
the log writes. The breakers' events are counted by `BreakerCounts`.

It runs in each session's greenlet, on the hot path: an accepted message
costs two histogram observations (its size, and the transaction's time
from the MAIL noted by the engine, events.began_at); the totals of messages
and bytes are read from the size histogram. Commands are counted as the
log has them: the refused ones (4xx, 5xx) at each refusal, the others (2xx)
from the session's summary when it ends, so a command costs nothing here.
A bug here must cost no session: each event is counted inside a try, its
first failure logged.
"""
from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from time import monotonic
from typing import TYPE_CHECKING

from gevent.monkey import get_original

from ..events import DELIVERY, ENGINE, LIMIT, MIDDLEWARE, began_at
from . import schema as S
from .cells import Cells, Key

if TYPE_CHECKING:
    from ..addresses import Address
    from ..events import Events
    from ..replies import Reply
    from ..session import Envelope, Session
    from ..state.breaker import Breaker, Event

log = logging.getLogger('smtp_stack.metrics')
_native_lock = get_original('_thread', 'allocate_lock')

# Who refused, when it is not a component: no policy decision.
NOT_POLICIES = frozenset({ENGINE, LIMIT, MIDDLEWARE, DELIVERY})
MECHANISMS = frozenset({'PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'})

_SIZE = (S.MESSAGE_SIZE,)
_TIME = (S.TRANSACTION_TIME,)
_SIZE_BOUNDS = S.SIZE_BUCKETS + (float('inf'),)
_TIME_BOUNDS = S.TIME_BUCKETS + (float('inf'),)
_SIZE_WIDTH = S.BY_NAME[S.MESSAGE_SIZE].width
_TIME_WIDTH = S.BY_NAME[S.TRANSACTION_TIME].width


def reply_class(reply: Reply) -> str:
    return f'{reply.code // 100}xx'


def delivery_kind(relay: str) -> str:
    """'maildir', 'callable' or 'relay' (a host and port, or a socket path):
    what a delivery line's relay= names, without the host."""
    if relay == 'maildir' or relay.startswith('callable '):
        return relay.partition(' ')[0]
    return 'relay'


def is_policy(by: str) -> bool:
    """A component's name (a policy, a middleware of yours), not the engine,
    a limit, a bare ctx.send(), a delivery or a hook."""
    return by not in NOT_POLICIES and not by.startswith('on_')


class Counted:
    """Events counted into `cells`, then passed on to `inner`."""

    def __init__(self, inner: Events, cells: Cells) -> None:
        self.inner = inner
        self.cells = cells
        self._kinds: dict[str, str] = {}       # relay -> delivery kind
        self._failed: set[str] = set()

    def _bug(self, event: str) -> None:
        if event not in self._failed:
            self._failed.add(event)
            log.exception('counting the %s event failed; it is not counted', event)

    def _observe(self, key: Key, width: int, bounds: tuple[float, ...], value: float) -> None:
        cells = self.cells
        first = cells.cell(key, width)
        if first is not None:
            values = cells.values
            values[first + bisect_left(bounds, value)] += 1
            values[first + width - 1] += value

    # -- the events (events.Events) -------------------------------------------
    def connected(self, session: Session) -> None:
        try:
            add = self.cells.add
            add((S.CONNECTIONS,))
            add((S.SESSIONS_OPEN,))
        except Exception:
            self._bug('connected')
        self.inner.connected(session)

    def tls(self, session: Session, failure: str | None) -> None:
        try:
            self.cells.add((S.TLS_HANDSHAKES, 'success' if failure is None else 'failure'))
        except Exception:
            self._bug('tls')
        self.inner.tls(session, failure)

    def authenticated(self, session: Session, mechanism: str) -> None:
        try:
            self.cells.add((S.AUTH, _mechanism(mechanism), 'success'))
        except Exception:
            self._bug('authenticated')
        self.inner.authenticated(session, mechanism)

    def auth_failed(self, session: Session, mechanism: str, username: str | None,
                    reply: Reply) -> None:
        try:
            add = self.cells.add
            add((S.AUTH, _mechanism(mechanism), 'failure'))
            add((S.COMMANDS, 'AUTH', reply_class(reply)))
        except Exception:
            self._bug('auth_failed')
        self.inner.auth_failed(session, mechanism, username, reply)

    def refused(self, session: Session, command: str, reply: Reply, by: str,
                address: Address | None, queue_id: str | None) -> None:
        try:
            add = self.cells.add
            kind = reply_class(reply)
            if command == 'CONNECT':
                add((S.CONNECTIONS_REFUSED, by))
            else:
                add((S.COMMANDS, command, kind))
                add((S.REFUSALS, command, kind, by))
                if command in ('DATA', 'BDAT'):
                    add((S.MESSAGES_REFUSED, by, kind))
            if is_policy(by):
                add((S.POLICY_DECISIONS, by, 'reject' if reply.code >= 500 else 'tempfail'))
        except Exception:
            self._bug('refused')
        self.inner.refused(session, command, reply, by, address, queue_id)

    def accepted(self, session: Session, envelope: Envelope, queue_id: str,
                 size: int) -> None:
        try:
            self._observe(_SIZE, _SIZE_WIDTH, _SIZE_BOUNDS, size)
            began = began_at(envelope)
            if began is not None:
                self._observe(_TIME, _TIME_WIDTH, _TIME_BOUNDS, monotonic() - began)
        except Exception:
            self._bug('accepted')
        self.inner.accepted(session, envelope, queue_id, size)

    def delivered(self, session: Session, queue_id: str, recipients: Sequence[Address],
                  status: str, relay: str, reason: str) -> None:
        try:
            kind = self._kinds.get(relay)
            if kind is None:
                kind = delivery_kind(relay)
                if len(self._kinds) < 64:
                    self._kinds[relay] = kind
            self.cells.add((S.DELIVERIES, kind, status), len(recipients))
        except Exception:
            self._bug('delivered')
        self.inner.delivered(session, queue_id, recipients, status, relay, reason)

    def disconnected(self, session: Session, commands: Mapping[str, int],
                     failed: Mapping[str, int]) -> None:
        try:
            add = self.cells.add
            add((S.SESSIONS_OPEN,), -1)
            for verb, count in commands.items():    # the 4xx and 5xx: when refused
                refused = failed.get(verb, 0)
                if count > refused:
                    add((S.COMMANDS, verb.upper(), '2xx'), count - refused)
        except Exception:
            self._bug('disconnected')
        self.inner.disconnected(session, commands, failed)


def _mechanism(name: str) -> str:
    """A mechanism as a label: one of ours, else 'other' (never the client's word)."""
    upper = name.upper()
    return upper if upper in MECHANISMS else 'other'


class BreakerCounts:
    """A state.breaker listener: each breaker's opening and calls failed
    fast, and whether it is open now, counted into `cells`. Breakers
    report from pool threads, so the counts are made under a lock of this
    process (a fork gets a fresh one)."""

    def __init__(self, cells: Cells) -> None:
        self.cells = cells
        self._pid = os.getpid()
        self._lock = _native_lock()

    def __call__(self, breaker: Breaker, event: Event) -> None:
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), _native_lock()
        cells = self.cells
        name = breaker.name
        with self._lock:
            if event == 'open':
                cells.add((S.BREAKER_OPENED, name))
                cells.set((S.BREAKER_OPEN, name), 1.0)
            elif event == 'close':
                cells.set((S.BREAKER_OPEN, name), 0.0)
            elif event == 'fail_fast':
                cells.add((S.BREAKER_FAILED_FAST, name))
