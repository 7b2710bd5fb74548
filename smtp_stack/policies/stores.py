"""Where policies keep state: `store('memory:')`, `store('sqlite:///PATH')`,
`store('redis://HOST:PORT/DB')` (also `rediss://` over TLS and
`unix:///PATH` on a socket file: redis_store.py).

Every store offers the same few operations, each atomic on its own, so
several processes (`workers`) or machines sharing a store count exactly:

    get(key) / set(key, value, ttl) / delete(key)
    add(key, value, ttl) -> bool       set only if absent (first sight of a triplet)
    incr(key, amount=1, ttl=None) -> int
    hit(key, window, limit, now) -> int | None
        a sliding window: record one event at `now` and return how many are
        in (now - window, now] if that is at most `limit`; None (and nothing
        recorded) if it would pass `limit`.

None of them blocks the gevent hub: SQLite calls run in native threads
(gevent's ThreadPool), and so do Redis calls unless gevent patched the
socket module (redis-py then cooperates by itself), so a slow disk or a
stalled Redis delays only the session that asked. A backend failure raises
`StoreError`; the policies catch it and fail open.
"""
from __future__ import annotations

import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeGuard, TypeVar

from gevent import get_hub
from gevent.monkey import is_module_patched
from gevent.threadpool import ThreadPool

from ..extras import needs_extra

if TYPE_CHECKING:
    import sqlite3


class StoreError(Exception):
    """The store could not be reached or refused the operation."""


URLS = 'memory:, sqlite:///PATH, redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH'

# What a store keeps: Redis and SQLite give strings back, the memory store
# the value as it was set.
Value: TypeAlias = str | int | float
T = TypeVar('T')


class Store(Protocol):
    """What the policies and the server's shared limits ask of a store: the
    operations of the module doc, each atomic, raising StoreError when the
    backend fails. `store(url)` makes one; an object of your own with
    these methods may be given as `store=` too. `ttl` and `window` are in
    seconds; a key without a ttl does not expire."""

    @property
    def url(self) -> str:
        """Where the state lives, for logs (without a password)."""

    def get(self, key: str) -> Value | None: ...
    def set(self, key: str, value: Value, ttl: float | None = None) -> None: ...
    # Set only if absent: True when this call set it.
    def add(self, key: str, value: Value, ttl: float | None = None) -> bool: ...
    # The new value; `ttl` None keeps the key's expiry.
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...
    def delete(self, key: str) -> None: ...
    # One event at `now` (default: the store's clock) in a sliding window:
    # the count in (now - window, now], or None (nothing recorded) over `limit`.
    def hit(self, key: str, window: float, limit: int,
            now: float | None = None) -> int | None: ...
    def close(self) -> None: ...


OPERATIONS = ('get', 'set', 'add', 'incr', 'hit', 'delete')


def store(url: str = 'memory:') -> Store:
    """A store for `url`: memory: | sqlite:///PATH | redis://HOST:PORT/DB |
    rediss://HOST:PORT/DB?ssl_ca_certs=/PATH/ca.pem | unix:///PATH?db=DB."""
    if not isinstance(url, str):
        raise ValueError(f'store must be a URL: {URLS}')
    if url in ('memory:', 'memory://', 'memory'):
        return MemoryStore()
    if url.startswith('sqlite:///'):
        path = url[len('sqlite:///'):]    # sqlite:///relative, sqlite:////absolute (SQLAlchemy's)
        if not path:
            raise ValueError('sqlite:///PATH needs a file name')
        from .sqlite_store import SqliteStore
        return SqliteStore(path)
    if url.startswith(('redis://', 'rediss://', 'unix://')):
        with needs_extra('policies', f'a {url.partition(":")[0]}:// store'):
            from .redis_store import RedisStore
        return RedisStore(url)
    raise ValueError(f'store: unknown URL {redacted(url)!r} ({URLS})')


def is_store(value: object) -> TypeGuard[Store]:
    """Whether `value` has the operations of a store."""
    return all(hasattr(value, op) for op in OPERATIONS)


def as_store(value: str | Store | None) -> Store:
    """A policy's `store=` parameter: None (a memory store of its own), a URL
    or a store object."""
    if value is None:
        return MemoryStore()
    if isinstance(value, str):
        return store(value)
    if not is_store(value):
        raise ValueError('store must be a URL or a store object (see policies.store)')
    return value


class MemoryStore:
    """One process only; plain dicts, so no hub is ever blocked."""

    url = 'memory:'

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        # key -> (expires or None, value)
        self._values: dict[str, tuple[float | None, Value]] = {}
        # key -> [(time, expires)]
        self._events: dict[str, list[tuple[float, float]]] = {}
        self._ops = 0

    def _live(self, key: str, now: float) -> tuple[float | None, Value] | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[0] is not None and item[0] <= now:
            del self._values[key]
            return None
        return item

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % 1000:
            return
        for key in [k for k, (exp, _) in self._values.items() if exp is not None and exp <= now]:
            del self._values[key]
        for key in [k for k, times in self._events.items() if not times or times[-1][1] <= now]:
            del self._events[key]

    def get(self, key: str) -> Value | None:
        item = self._live(key, self._clock())
        return None if item is None else item[1]

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        now = self._clock()
        self._sweep(now)
        self._values[key] = (None if ttl is None else now + ttl, value)

    def add(self, key: str, value: Value, ttl: float | None = None) -> bool:
        now = self._clock()
        if self._live(key, now) is not None:
            return False
        self.set(key, value, ttl)
        return True

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        now = self._clock()
        item = self._live(key, now)
        value = int(item[1] if item else 0) + amount
        expires = now + ttl if ttl is not None else (item[0] if item else None)
        self._sweep(now)
        self._values[key] = (expires, value)
        return value

    def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._events.pop(key, None)

    def hit(self, key: str, window: float, limit: int, now: float | None = None) -> int | None:
        now = self._clock() if now is None else now
        times = [t for t in self._events.get(key, ()) if t[0] > now - window]
        if len(times) >= limit:
            self._events[key] = times
            return None
        times.append((now, now + window))
        self._events[key] = times
        self._sweep(now)
        return len(times)

    def close(self) -> None:
        pass


class Offloaded:
    """The base of the stores whose client library blocks: each call runs in
    a pool of native threads. A gevent ThreadPool belongs to one hub, so
    there is one per hub (a server thread, the main thread of a test) and
    per process (a forked worker makes its own on first use and reuses
    nothing of its parent's connections)."""

    threads = 4
    url: str

    def __init__(self) -> None:
        self._pid: int | None = None
        self._per_hub: dict[object, _HubState] = {}
        self._lock = threading.Lock()

    def _state(self) -> _HubState:
        hub = get_hub()
        with self._lock:
            if self._pid != os.getpid():
                self._per_hub = {}
                self._pid = os.getpid()
                self._reset_after_fork()
            state = self._per_hub.get(hub)
            if state is None:
                state = self._per_hub[hub] = _HubState(ThreadPool(self.threads))
        return state

    # A client whose only blocking is its socket (redis-py) cooperates by
    # itself once gevent patched `socket`: it then runs in the greenlet.
    cooperative_when_patched = False

    def _run(self, fn: Callable[[_HubState], T]) -> T:
        state = self._state()
        try:
            if self.cooperative_when_patched and is_module_patched('socket'):
                return fn(state)
            result: T = state.pool.apply(fn, (state,))
            return result
        except StoreError:
            raise
        except Exception as exc:     # the backend's own errors: one type for the policies
            raise StoreError(f'{self.url}: {type(exc).__name__}: {exc}') from exc

    def _reset_after_fork(self) -> None:
        """Drop connections made by another process."""

    def close(self) -> None:
        with self._lock:
            states, self._per_hub = list(self._per_hub.values()), {}
        if self._pid == os.getpid():
            for state in states:
                state.pool.kill()


class _HubState:
    """What one hub's calls use: its thread pool, and a connection for
    backends whose connections are not shared between threads (SQLite)."""

    def __init__(self, pool: ThreadPool):
        self.pool = pool
        self.conn: sqlite3.Connection | None = None


def member_id() -> str:
    """A unique member for a sliding-window event (two at the same instant
    from two machines must both count)."""
    return uuid.uuid4().hex


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
