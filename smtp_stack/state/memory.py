"""`memory:`: state for one process, in plain dicts (no hub is ever blocked)."""
from __future__ import annotations

import time
from collections.abc import Callable

from .greylisting import GreyKeys, GreyRule, decide
from .protocols import Value


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

    def greylist(self, keys: GreyKeys, now: float, rule: GreyRule) -> float | None:
        return decide(self, keys, now, rule)     # no switch inside: atomic

    def close(self) -> None:
        pass
