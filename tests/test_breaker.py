"""smtp_stack.state.breaker: the circuit breaker of a dependency, on a clock
of the test's own (no sleeps), and on the stores' thread path (calls
queued behind a slow one fail at once)."""
from __future__ import annotations

import time
import uuid

import gevent
import pytest

from smtp_stack.state import breaker as breakers
from smtp_stack.state.backend import Offloaded
from smtp_stack.state.breaker import Breaker
from smtp_stack.state.protocols import StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def events():
    seen = []

    def listener(source, event):
        seen.append((source.name, event))

    breakers.listeners.append(listener)
    yield seen
    breakers.listeners.remove(listener)


def make(clock, slow=0.5, period=5.0) -> Breaker:
    return Breaker(f'test-{uuid.uuid4().hex[:8]}', slow=slow, period=period, clock=clock)


def test_a_slow_failure_opens_it_and_calls_fail_fast_until_the_period_ends(clock, events):
    guard = make(clock)
    ticket = guard.admit()
    assert ticket is not None and guard.state == 'closed'
    guard.failed(ticket, cost=1.0, error='TimeoutError: timed out')
    assert guard.state == 'open' and guard.opened == 1
    clock.now += 4.9
    assert guard.admit() is None and guard.admit() is None
    assert guard.failed_fast == 2
    assert 'TimeoutError: timed out' in guard.refusal() and 'next try in 0.1 s' in guard.refusal()
    assert [event for _, event in events] == ['open', 'fail_fast', 'fail_fast']


def test_a_failure_that_came_back_at_once_opens_nothing(clock):
    guard = make(clock)
    guard.failed(guard.admit(), cost=0.001, error='ConnectionRefusedError')
    assert guard.state == 'closed' and guard.admit() is not None
    assert guard.failures == 1 and guard.opened == 0


def test_after_the_period_one_probe_goes_alone_and_its_answer_closes_it(clock, events):
    guard = make(clock)
    guard.failed(guard.admit(), cost=1.0, error='timed out')
    clock.now += 5.0
    probe = guard.admit()
    assert probe is not None and probe.probe and guard.state == 'probing'
    assert guard.admit() is None            # the others wait for the probe's answer
    guard.succeeded(probe)
    assert guard.state == 'closed' and guard.admit() is not None
    assert [event for _, event in events] == ['open', 'probe', 'fail_fast', 'close']


def test_a_probe_that_fails_slowly_opens_it_for_another_period(clock):
    guard = make(clock)
    guard.failed(guard.admit(), cost=1.0, error='timed out')
    clock.now += 5.0
    probe = guard.admit()
    clock.now += 1.0
    guard.failed(probe, cost=1.0, error='timed out again')
    assert guard.state == 'open' and guard.opened == 1 and guard.probes == 1
    clock.now += 4.9
    assert guard.admit() is None
    clock.now += 0.1
    assert guard.admit().probe


def test_a_probe_refused_at_once_closes_it(clock):
    """The store went from stalled to not listening: asking costs nothing now."""
    guard = make(clock)
    guard.failed(guard.admit(), cost=1.0, error='timed out')
    clock.now += 5.0
    guard.failed(guard.admit(), cost=0.001, error='refused')
    assert guard.state == 'closed'


def test_a_probe_that_never_reports_stops_counting_after_a_period(clock):
    guard = make(clock)
    guard.failed(guard.admit(), cost=1.0, error='timed out')
    clock.now += 5.0
    assert guard.admit().probe              # its greenlet is killed: no answer ever
    clock.now += 4.9
    assert guard.admit() is None
    clock.now += 0.1
    assert guard.admit().probe


def test_a_call_admitted_before_it_opened_does_not_start_after(clock):
    """A call queued for a store thread behind the one that failed slowly."""
    guard = make(clock)
    early, slow = guard.admit(), guard.admit()
    clock.now += 1.0
    guard.failed(slow, cost=1.0, error='timed out')
    assert not guard.still_admits(early)
    clock.now += 5.0
    probe = guard.admit()
    assert guard.still_admits(probe)
    guard.succeeded(probe)
    assert guard.still_admits(early)        # closed again: nothing to refuse


def test_a_failing_listener_fails_no_call(clock, caplog):
    def broken(source, event):
        raise RuntimeError('metrics down')

    breakers.listeners.append(broken)
    try:
        guard = make(clock)
        guard.failed(guard.admit(), cost=1.0, error='timed out')
    finally:
        breakers.listeners.remove(broken)
    assert guard.state == 'open'
    assert any('metrics down' in r.getMessage() for r in caplog.records)


def test_one_breaker_per_dependency_name():
    name = f'redis://127.0.0.1:1/{uuid.uuid4().hex}'
    first = breakers.breaker(name, slow=0.5)
    assert breakers.breaker(name, slow=2.0) is first
    assert first in breakers.breakers()


class Stalled(Offloaded):
    """A store whose every call takes its whole timeout and fails, in one
    thread (as SQLite's): what a locked file or a stopped Redis does."""

    threads = 1
    timeout = 0.4

    def __init__(self) -> None:
        super().__init__()
        self.url = f'test://stalled/{uuid.uuid4().hex}'
        self.asked = 0

    def get(self, key: str) -> None:
        def stall(pool):
            self.asked += 1
            time.sleep(self.timeout)
            raise OSError('timed out')
        return self._run(stall)


def test_calls_queued_behind_a_slow_one_fail_at_once():
    """Eight calls at once on one thread: one waits the timeout, the seven
    queued behind it fail as soon as the thread takes them (without the
    breaker they would take 8 x 0.4 s, one after the other)."""
    store = Stalled()
    results = []

    def call():
        began = time.monotonic()
        try:
            store.get('k')
        except StoreError as exc:
            results.append((time.monotonic() - began, str(exc)))

    try:
        gevent.joinall([gevent.spawn(call) for _ in range(8)], timeout=10)
    finally:
        store.close()
    assert len(results) == 8 and store.asked == 1
    assert max(elapsed for elapsed, _ in results) < store.timeout + 0.3
    asked = [text for _, text in results if 'not asked' not in text]
    assert asked == [f'{store.url}: OSError: timed out']     # the other seven: not asked
    assert store.breaker.state == 'open'
