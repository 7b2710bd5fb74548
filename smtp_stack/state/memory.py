"""`memory:`: state for one process, in plain dicts (no hub is ever blocked)."""
from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable

from .greylisting import GreyKeys, GreyRule, decide
from .protocols import Value


class Window:
    """The events of one sliding window: their times in order, oldest
    first, and when the newest stops counting. A hit drops the events
    that left the window from the front (each event is dropped once) and
    adds its own at the back: amortised O(1), where a scan of the whole
    window was O(events) per hit."""

    __slots__ = ('times', 'until')

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.until = 0.0

    def drop_before(self, start: float) -> None:
        """Forget the events at or before `start` (out of the window)."""
        times = self.times
        while times and times[0] <= start:
            times.popleft()

    def add(self, at: float, until: float) -> None:
        times = self.times
        if not times or times[-1] <= at:
            times.append(at)
        else:           # a clock that went back (or a caller's `now`): kept in order
            times.insert(bisect.bisect_right(times, at), at)
        self.until = max(self.until, until)


class MemoryStore:
    """One process only; plain dicts, so no hub is ever blocked."""

    url = 'memory:'

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        # key -> (expires or None, value)
        self._values: dict[str, tuple[float | None, Value]] = {}
        self._events: dict[str, Window] = {}
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
        for key in [k for k, window in self._events.items() if window.until <= now]:
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
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = Window()
        events.drop_before(now - window)
        if len(events.times) >= limit:
            return None
        events.add(now, now + window)
        self._sweep(now)
        return len(events.times)

    def greylist(self, keys: GreyKeys, now: float, rule: GreyRule) -> float | None:
        return decide(self, keys, now, rule)     # no switch inside: atomic

    def close(self) -> None:
        pass
