"""What the stores of other processes (SQLite, Redis) share: their calls
off the hub, one error type, unique event members, URLs fit for logs."""
from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable
from typing import TypeVar

from gevent.monkey import is_module_patched
from gevent.threadpool import ThreadPool

from ..offload import OwnThreads
from .protocols import StoreError

T = TypeVar('T')


class Offloaded:
    """The base of the stores whose client library blocks: each call runs
    in threads of the store's own (`offload.OwnThreads`: `threads` per hub
    and per process), not in the hub's pool, because

    - a backend that stalls (a Redis that stopped answering, an SQLite
      file locked by another process) then holds the store's threads for
      its timeout, never the hub's, which flush mail and hash passwords;
    - SQLite needs one thread per connection (`threads = 1`, one
      connection per pool), so two transactions never interleave on it;
    - a forked worker starts with threads and connections of its own
      (`_reset_after_fork`), reusing nothing of its parent's.
    """

    threads = 4
    url: str

    # A client whose only blocking is its socket (redis-py) cooperates by
    # itself once gevent patched `socket`: it then runs in the greenlet.
    cooperative_when_patched = False

    def __init__(self) -> None:
        self._threads = OwnThreads(self.threads, self._reset_after_fork)

    def _pool(self) -> ThreadPool:
        """The threads of the calling hub in this process."""
        return self._threads.pool()

    def _run(self, fn: Callable[[ThreadPool], T]) -> T:
        """fn(pool) in one of `pool`'s threads (`pool` tells a backend which
        of its connections is this thread's); the backend's own errors
        become StoreError, one type for the policies."""
        pool = self._pool()
        try:
            if self.cooperative_when_patched and is_module_patched('socket'):
                return fn(pool)
            result: T = pool.apply(fn, (pool,))
            return result
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f'{self.url}: {type(exc).__name__}: {exc}') from exc

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
