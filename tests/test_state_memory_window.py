"""MemoryStore.hit: a sliding window that drops old events from its front
(amortised O(1) per hit), with the counts of a plain scan of the window."""
from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.state import MemoryStore


class Scan:
    """The window as a plain list scanned at each hit: what the contract says."""

    def __init__(self):
        self.events: dict[str, list[float]] = {}

    def hit(self, key, window, limit, now):
        times = [t for t in self.events.get(key, []) if t > now - window]
        self.events[key] = times
        if len(times) >= limit:
            return None
        times.append(now)
        return len(times)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(['a', 'b']), st.integers(-5, 60),
                          st.sampled_from([1.0, 5.0, 30.0]), st.integers(0, 6)), max_size=80))
def test_the_counts_of_a_scan_of_the_window(hits):
    """Times mostly going forward, sometimes back (a caller's `now`)."""
    store, scan = MemoryStore(), Scan()
    clock = 1000.0
    for key, step, window, limit in hits:
        clock += step / 4
        assert store.hit(key, window, limit, clock) == scan.hit(key, window, limit, clock)


def test_a_hit_does_not_scan_a_full_window():
    """20,000 events in the window, 20,000 hits more: a scan of the window
    at each hit is 400 million comparisons; dropping from the front is a
    few each."""
    store = MemoryStore()
    now = 1000.0
    for i in range(20_000):
        store.hit('busy', 3600, 10**9, now + i * 0.001)
    start = time.process_time()
    for i in range(20_000):
        assert store.hit('busy', 3600, 10**9, now + 20 + i * 0.001) == 20_001 + i
    assert time.process_time() - start < 2.0


def test_old_windows_are_forgotten():
    clock = [1000.0]
    store = MemoryStore(clock=lambda: clock[0])
    for i in range(3):
        store.hit(f'w{i}', 10, 5)
    clock[0] += 11
    for _ in range(1000):           # the sweep runs every 1000 operations
        store.set('other', 1)
    assert not any(key.startswith('w') for key in store._events)
