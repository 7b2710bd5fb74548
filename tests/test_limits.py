"""smtp_stack.limits: failures per client address over a sliding window, in
bounded memory (a fake clock: no waiting); the counters of one connection."""
import pytest

from smtp_stack.limits import RecentFailures, SessionCounters


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_blocked_once_the_limit_is_reached_within_the_window(clock):
    failures = RecentFailures(3, 60, clock=clock)
    assert not failures.blocked('192.0.2.1')
    assert failures.add('192.0.2.1') is False
    clock.now += 10
    assert failures.add('192.0.2.1') is False
    assert not failures.blocked('192.0.2.1')
    assert failures.add('192.0.2.1') is True        # the third: the limit
    assert failures.blocked('192.0.2.1')
    assert not failures.blocked('192.0.2.2')        # per address
    assert failures.add('192.0.2.1') is False       # only the one that reached it says so
    assert failures.blocked('192.0.2.1')


def test_failures_older_than_the_window_no_longer_count(clock):
    failures = RecentFailures(2, 60, clock=clock)
    failures.add('a')
    clock.now += 50
    failures.add('a')
    assert failures.blocked('a')
    clock.now += 11                     # the first is 61 s old now
    assert not failures.blocked('a')
    clock.now += 50
    assert not failures.blocked('a') and len(failures) == 0     # forgotten entirely
    failures.add('a')
    assert not failures.blocked('a')


def test_a_key_keeps_at_most_limit_timestamps(clock):
    failures = RecentFailures(3, 600, clock=clock)
    for _ in range(1000):
        clock.now += 0.1
        failures.add('a')
    assert len(failures._times['a']) == 3
    assert failures.blocked('a')


def test_memory_is_bounded_and_the_stalest_keys_go_first(clock):
    failures = RecentFailures(2, 600, max_keys=100, clock=clock)
    failures.add('old')
    failures.add('old')
    for n in range(99):
        clock.now += 1
        failures.add(f'spread-{n}')
    clock.now += 1
    failures.add('old')                 # a fresh failure: now the latest key
    for n in range(99, 150):
        clock.now += 1
        failures.add(f'spread-{n}')
    assert len(failures) == 100
    assert failures.blocked('old')      # kept: its last failure is recent
    assert not failures.blocked('spread-0')     # forgotten (it had one anyway)
    assert 'spread-0' not in failures._times and 'spread-149' in failures._times


# -- SessionCounters: what one connection did ---------------------------------------


def test_errors_reach_max_errors():
    counters = SessionCounters(max_errors=3, max_auth_failures=3, max_messages=0, max_junk=0)
    assert [counters.error() for _ in range(3)] == [None, None, 'errors']


def test_max_errors_0_never_closes():
    counters = SessionCounters(max_errors=0, max_auth_failures=3, max_messages=0, max_junk=0)
    assert all(counters.error() is None for _ in range(100))


def test_auth_failures_close_before_max_errors():
    counters = SessionCounters(max_errors=20, max_auth_failures=2, max_messages=0, max_junk=0)
    assert counters.error(auth_failure=True) is None
    assert counters.error(auth_failure=True) == 'auth'
    assert (counters.errors, counters.auth_failures) == (2, 2)


def test_junk_beyond_the_limit_makes_any_reply_an_error():
    counters = SessionCounters(max_errors=20, max_auth_failures=3, max_messages=0, max_junk=2)
    counters.command(greeting=True, authenticated=False)     # the first greeting is free
    for _ in range(2):
        counters.command(greeting=False, authenticated=False)
        assert not counters.counts_as_error(250)
    counters.command(greeting=False, authenticated=False)
    assert counters.counts_as_error(250)                     # the third junk command
    assert not counters.counts_as_error(250)                 # once per command
    counters.accepted()                                      # a message starts the count over
    counters.command(greeting=False, authenticated=False)
    assert not counters.counts_as_error(250) and counters.messages == 1


def test_a_logged_in_client_is_never_junk_limited():
    counters = SessionCounters(max_errors=20, max_auth_failures=3, max_messages=0, max_junk=1)
    for _ in range(10):
        counters.command(greeting=False, authenticated=True)
    assert not counters.counts_as_error(250)


def test_messages_exhausted_at_max_messages():
    counters = SessionCounters(max_errors=20, max_auth_failures=3, max_messages=2, max_junk=0)
    counters.accepted()
    assert not counters.messages_exhausted
    counters.accepted()
    assert counters.messages_exhausted
    assert not SessionCounters(20, 3, 0, 0).messages_exhausted
