"""What the stores of other processes (SQLite, Redis) share: a circuit
breaker, calls off the hub where the library blocks, one error type,
unique event members, URLs fit for logs."""
from __future__ import annotations

import itertools
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from gevent.threadpool import ThreadPool

from ..offload import OwnThreads, run_in
from .breaker import Breaker, Ticket, breaker
from .protocols import StoreError

T = TypeVar('T')


class Guarded:
    """The circuit breaker of a store whose calls may stall (a Redis, an
    SQLite file): every call passes the breaker of the store's URL
    (breaker.py), so once a call took its whole timeout, the calls of the
    next few seconds fail at once with StoreError, and one probe a period
    finds out whether the store is back: a stalled store costs one timeout
    per period, not one per call. The backend's own errors become
    StoreError, one type for the policies."""

    url: str
    timeout = 1.0           # the backend's own bound on one call (a socket or lock timeout)

    @property
    def breaker(self) -> Breaker:
        """The breaker of this store's URL (shared by every store object of
        it), looked up once: the registry takes a lock (issue 25)."""
        found: Breaker | None = self.__dict__.get('_breaker')
        if found is None:
            found = self.__dict__['_breaker'] = breaker(self.url, slow=self.timeout / 2)
        return found

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) here, in the calling greenlet, through the breaker (a
        backend whose I/O is gevent's: it never blocks the hub). Nothing
        runs between the ticket and the call, so the ticket still holds."""
        guard = self.__dict__.get('_breaker') or self.breaker     # a frame less, once found
        ticket = guard.admit()
        if ticket is None:
            raise StoreError(f'{self.url}: {guard.refusal()}')
        began = time.monotonic()
        try:
            result = fn(*args)
        except Exception as exc:
            self._failed(guard, ticket, began, exc)
        guard.succeeded(ticket)
        return result

    def _failed(self, guard: Breaker, ticket: Ticket, began: float, exc: Exception) -> NoReturn:
        """Tell the breaker; raise the error as StoreError."""
        if isinstance(exc, StoreError):
            guard.failed(ticket, time.monotonic() - began, str(exc))
            raise exc
        guard.failed(ticket, time.monotonic() - began, f'{type(exc).__name__}: {exc}')
        raise StoreError(f'{self.url}: {type(exc).__name__}: {exc}') from exc

    def _attempt(self, guard: Breaker, ticket: Ticket, fn: Callable[[], T]) -> T:
        """One call, where it runs (a pool thread, or the greenlet), its
        outcome told to the breaker there and then."""
        if not guard.still_admits(ticket):
            raise StoreError(f'{self.url}: {guard.refusal()}')
        began = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            self._failed(guard, ticket, began, exc)
        guard.succeeded(ticket)
        return result


class Offloaded(Guarded):
    """The base of the stores whose client library blocks (sqlite3): each
    call runs in threads of the store's own (`offload.OwnThreads`:
    `threads` per hub and per process), not in the hub's pool, because

    - a backend that stalls (an SQLite file locked by another process)
      then holds the store's threads for its timeout, never the hub's,
      which flush mail and hash passwords;
    - SQLite needs one thread per connection (`threads = 1`, one
      connection per pool), so two transactions never interleave on it;
    - a forked worker starts with threads and connections of its own
      (`_reset_after_fork`), reusing nothing of its parent's.

    Every call passes the store's circuit breaker (`Guarded`); the calls
    already queued behind a slow one for a thread look again when their
    thread takes them. A failure is recorded in the thread that saw it,
    before that thread takes its next call. Nothing is raised inside a
    pool thread (offload.run_in): gevent would print it on stderr.
    """

    threads = 4

    def __init__(self) -> None:
        self._threads = OwnThreads(self.threads, self._reset_after_fork)

    def _pool(self) -> ThreadPool:
        """The threads of the calling hub in this process."""
        return self._threads.pool()

    def _run(self, fn: Callable[[ThreadPool], T]) -> T:
        """fn(pool) in one of `pool`'s threads (`pool` tells a backend which
        of its connections is this thread's), through the breaker."""
        guard = self.breaker
        ticket = guard.admit()
        if ticket is None:
            raise StoreError(f'{self.url}: {guard.refusal()}')
        pool = self._pool()
        return run_in(pool, self._attempt, guard, ticket, lambda: fn(pool))

    def _reset_after_fork(self) -> None:
        """Drop connections made by another process."""

    @property
    def _forked(self) -> bool:
        """True in a child process that made no call yet: nothing here is ours."""
        return self._threads.forked

    def close(self) -> None:
        self._threads.close()


def member_id() -> str:
    """A unique member for a sliding-window event (two at the same instant
    from two machines must both count): 64 random bits per process and a
    counter (a uuid4 per event cost more than the rest of a Redis call's
    Python)."""
    return f'{_member_prefix}{next(_member_count):x}'


def _new_member_prefix() -> None:
    """A fresh prefix in each process (a forked worker must not repeat
    its parent's members)."""
    global _member_prefix, _member_count
    _member_prefix = f'{uuid.uuid4().hex[:16]}.'
    _member_count = itertools.count()


_member_prefix = ''
_member_count = itertools.count()
_new_member_prefix()
os.register_at_fork(after_in_child=_new_member_prefix)


def redacted(url: str) -> str:
    """The URL without a password (in its user part or as `password=`), for logs."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    hidden = any(name == 'password' for name, _ in query)
    if parts.password is None and not hidden:
        return url          # as written (urlunsplit would rewrite sqlite:////PATH)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition('@')
        parts = parts._replace(netloc=f'{user.partition(":")[0]}:***@{host}')
    if hidden:
        parts = parts._replace(query=urllib.parse.urlencode(
            [(name, '***' if name == 'password' else value) for name, value in query], safe='/*'))
    return urllib.parse.urlunsplit(parts)
