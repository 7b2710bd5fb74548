"""The server's own per-client limits kept in a store (the option `store=`),
so that they hold across `workers` and across machines sharing one Redis.

`max_connections_per_ip` becomes a counter per address in the store: a
session adds one when it starts and takes it back when it ends. A process
that dies cannot take its sessions back, so each counter expires
`CONNECTION_TTL` seconds after the last session of that address started
(a leaked count lasts that long at most).

`max_auth_failures_per_ip` becomes a sliding window of failures per
address (Store.hit), and a flag, set for `window` seconds when the limit
is reached, that every process checks at AUTH.

A store that fails makes these limits fall back to this process's own
count, with one warning (fail open, as the policies do). With the
server's `on_store_error='tempfail'` they refuse instead, rather than
stop counting across workers: a new connection gets
`421 4.7.0` (the engine's words for a refused connection), an AUTH gets
`454 4.3.5` (RFC 4954 6: a temporary authentication failure). The store's
circuit breaker (backend.py) makes either cost one timeout per period.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..errors import SmtpError
from ..replies import Reply
from .fail_open import check_mode, warnings
from .protocols import Store, StoreError

if TYPE_CHECKING:
    from ..options import OnStoreError

AUTH_UNAVAILABLE = Reply(454, 'Temporary authentication failure, try again later', '4.3.5')

CONNECTION_TTL = 3600


class SharedConnections:
    """claim(ip, limit) -> bool and release(ip), kept in `store`."""

    def __init__(self, store: Store, on_store_error: OnStoreError = 'accept'):
        self.store = store
        self.on_store_error = check_mode(on_store_error, 'max_connections_per_ip') or 'accept'
        self._local: Counter[str] = Counter()     # this process's sessions, and the fallback
        self._shared: Counter[str] = Counter()    # how many of them the store counted

    def claim(self, ip: str, limit: int) -> bool:
        try:
            count = self.store.incr(f'conn:{ip}', 1, CONNECTION_TTL)
            warnings.ok(f'connection limits store {self.store.url}')
        except StoreError as exc:
            if self.on_store_error == 'tempfail':
                warnings.failed(f'connection limits store {self.store.url}',
                                'max_connections_per_ip: %s', exc,
                                consequence='tempfail: connections refused')
                return False
            warnings.failed(f'connection limits store {self.store.url}',
                            'max_connections_per_ip: %s; counting per process', exc)
            if self._local[ip] >= limit:
                return False
            self._local[ip] += 1
            return True
        if count > limit:
            self._take_back(ip)
            return False
        self._local[ip] += 1
        self._shared[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._local[ip] -= 1
        if self._local[ip] <= 0:
            del self._local[ip]
        if self._shared[ip] > 0:
            self._shared[ip] -= 1
            if not self._shared[ip]:
                del self._shared[ip]
            self._take_back(ip)

    def _take_back(self, ip: str) -> None:
        try:
            if self.store.incr(f'conn:{ip}', -1) <= 0:
                self.store.delete(f'conn:{ip}')
        except StoreError:
            pass


class SharedFailures:
    """A FailureCounter (as limits.RecentFailures, per process) over a
    store. With `on_store_error='tempfail'`, `blocked()` raises SmtpError
    (454 4.3.5) while the store cannot say."""

    def __init__(self, store: Store, limit: int, window: float,
                 on_store_error: OnStoreError = 'accept'):
        self.store = store
        self.limit = limit
        self.window = window
        self.on_store_error = check_mode(on_store_error, 'max_auth_failures_per_ip') or 'accept'

    def blocked(self, key: str) -> bool:
        try:
            blocked = self.store.get(f'authfail-blocked:{key}') is not None
        except StoreError as exc:
            self._failed(exc)
            if self.on_store_error == 'tempfail':
                raise SmtpError(AUTH_UNAVAILABLE) from None
            return False
        warnings.ok(f'auth failure store {self.store.url}')
        return blocked

    def _failed(self, exc: StoreError) -> None:
        tempfail = self.on_store_error == 'tempfail'
        warnings.failed(f'auth failure store {self.store.url}', 'max_auth_failures_per_ip: %s',
                        exc, consequence='tempfail: 454 4.3.5' if tempfail else 'failing open')

    def add(self, key: str) -> bool:
        """Count one failure; True when this one reached the limit."""
        try:
            count = self.store.hit(f'authfail:{key}', self.window, 1 << 30)
            if count is not None and count >= self.limit:
                self.store.set(f'authfail-blocked:{key}', count, self.window)
                return count == self.limit
            return False
        except StoreError as exc:
            self._failed(exc)
            return False
