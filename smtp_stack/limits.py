"""Counting what clients did across their connections (no sockets here).

`RecentFailures` backs `max_auth_failures_per_ip`: a client that reconnects
after each `max_auth_failures` (which counts per connection) would otherwise
guess passwords without end, as Postfix's `smtpd_client_auth_rate_limit`
and Dovecot's auth penalty also guard against.
"""
from __future__ import annotations

import time


class RecentFailures:
    """How many failures each key (a client address) had in the last
    `window` seconds; `blocked(key)` once it reached `limit`.

    Memory stays bounded: a key keeps at most `limit` timestamps, and at
    most `max_keys` keys are kept: beyond that, those whose last failure is
    oldest are forgotten first (an attacker spreading over many addresses
    can make us forget, never grow).
    """

    def __init__(self, limit: int, window: float, max_keys: int = 10_000,
                 clock=time.monotonic):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._times: dict = {}      # key -> failure times, oldest first; keys by last failure

    def __len__(self) -> int:
        return len(self._times)

    def blocked(self, key) -> bool:
        times = self._times.get(key)
        if times is None:
            return False
        recent = self._recent(times, self._clock())
        if not recent:
            del self._times[key]
            return False
        self._times[key] = recent
        return len(recent) >= self.limit

    def add(self, key) -> bool:
        """Count one failure now; True when this one reached the limit."""
        now = self._clock()
        times = self._recent(self._times.pop(key, ()), now)
        reached = len(times) == self.limit - 1
        times.append(now)
        del times[:-self.limit]
        self._times[key] = times        # last in order: the latest failure
        while len(self._times) > self.max_keys:      # the stalest first, O(1) each
            del self._times[next(iter(self._times))]
        return reached

    def _recent(self, times, now: float) -> list:
        since = now - self.window
        return [t for t in times if t > since]
