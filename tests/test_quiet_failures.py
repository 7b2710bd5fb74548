"""A failure in a pool thread or a greenlet of the package is raised to its
caller or logged, never printed: gevent's hub prints an exception that
leaves a thread of its pool or a greenlet on stderr, whatever the log
level. Each test first shows that the capture sees what gevent prints,
then that the package's path prints nothing. And `WarnOnce`: one line per
cause and period."""
from __future__ import annotations

import logging
import socket
import sqlite3
import uuid

import gevent
import pytest

from smtp_stack.errors import SmtpError
from smtp_stack.offload import offload
from smtp_stack.policies import Resolver, dnsbl
from smtp_stack.policies.dns import DnsError
from smtp_stack.state.fail_open import STORE_UNAVAILABLE, WarnOnce, check_mode, store_failed
from smtp_stack.state.protocols import StoreError
from smtp_stack.state.sqlite_store import SqliteStore


def fails():
    raise ValueError('the disk is on fire')


def test_the_capture_sees_what_gevent_prints(capfd):
    with pytest.raises(ValueError):
        gevent.get_hub().threadpool.apply(fails)
    gevent.spawn(fails).join()
    err = capfd.readouterr().err
    assert err.count('ValueError: the disk is on fire') >= 2, err


def test_offload_raises_in_the_caller_and_prints_nothing(capfd):
    with pytest.raises(ValueError, match='on fire'):
        offload(fails)
    with pytest.raises(SystemExit):        # user code's sys.exit(): the caller's to handle
        offload(lambda: exit(3))
    assert offload(lambda: 42) == 42
    assert capfd.readouterr().err == ''


def test_a_store_that_fails_raises_store_error_and_prints_nothing(tmp_path, capfd):
    path = tmp_path / 'state.db'
    store = SqliteStore(str(path), busy_timeout=0.2)
    store.set('k', 'v')
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute('BEGIN IMMEDIATE')        # another writer holds the file
    try:
        with pytest.raises(StoreError, match='database is locked'):
            store.set('k', 'w')
    finally:
        locker.close()
        store.close()
    assert capfd.readouterr().err == ''


def test_dnsbl_with_dns_down_prints_nothing(capfd):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(('127.0.0.1', 0))
    try:
        zone = f'{uuid.uuid4().hex[:8]}.test'
        policy = dnsbl([zone], resolver=Resolver(['127.0.0.1'], port=silent.getsockname()[1],
                                                 timeout=0.2))
        results = [policy.check(f'192.0.2.{n}') for n in range(1, 6)]
    finally:
        silent.close()
    assert all(r.errors == [zone] and r.unsure(1) for r in results)
    assert capfd.readouterr().err == ''


def test_the_resolver_raises_a_fresh_error_for_a_failure_it_remembers():
    """A cached failure raised again as the same object grew its traceback
    by a frame at every raise (one traceback per client, each longer)."""
    resolver = Resolver(['127.0.0.1'], port=_closed_udp_port(), timeout=0.2)
    raised = []
    for _ in range(3):
        with pytest.raises(DnsError) as info:
            resolver.query('x.test', 'A')
        raised.append(info.value)
    assert len({id(e) for e in raised}) == 3
    assert {str(e) for e in raised} == {str(raised[0])}
    depths = [_depth(e.__traceback__) for e in raised]
    assert depths[1] == depths[2], depths


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _depth(tb) -> int:
    depth = 0
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


# -- WarnOnce: one line per cause and period ------------------------------------------

class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_one_line_per_cause_a_reminder_per_period_and_one_on_recovery(caplog):
    clock = Clock()
    warn = WarnOnce(logging.getLogger('test.warnonce'), period=60, clock=clock)
    with caplog.at_level('WARNING', logger='test.warnonce'):
        for _ in range(100):
            warn.failed('greylist store redis://r', 'greylist: %s', 'TimeoutError')
            clock.now += 0.5        # 50 s of failures
        warn.failed('rate_limit store redis://r', 'rate_limit: %s', 'TimeoutError',
                    consequence='tempfail: 451 4.3.5')
        clock.now = 61
        warn.failed('greylist store redis://r', 'greylist: %s', 'TimeoutError')
        warn.ok('greylist store redis://r')
        warn.ok('greylist store redis://r')
        warn.failed('greylist store redis://r', 'greylist: %s', 'ConnectionError')
    assert lines(caplog) == [
        'greylist: TimeoutError (failing open)',
        'rate_limit: TimeoutError (tempfail: 451 4.3.5)',
        'greylist: TimeoutError (failing open; still failing: 100 times in 61 s)',
        'greylist store redis://r: working again',
        'greylist: ConnectionError (failing open)',
    ]
    assert warn.failures['greylist store redis://r'] == 102


def test_store_failed_refuses_with_451_4_3_5_only_for_tempfail(caplog):
    store_failed('accept', f'cause {uuid.uuid4()}', 'x: %s', 'down')
    with pytest.raises(SmtpError) as refused:
        store_failed('tempfail', f'cause {uuid.uuid4()}', 'x: %s', 'down')
    assert refused.value.reply == STORE_UNAVAILABLE
    assert (STORE_UNAVAILABLE.code, STORE_UNAVAILABLE.enhanced) == (451, '4.3.5')
    said = lines(caplog)
    assert len(said) == 2
    assert said[0].endswith('(failing open)') and said[1].endswith('(tempfail: 451 4.3.5)')


@pytest.mark.parametrize('value, kept', [(None, None), ('accept', 'accept'),
                                         ('tempfail', 'tempfail')])
def test_a_policys_on_store_error(value, kept):
    assert check_mode(value, 'greylist') == kept


@pytest.mark.parametrize('value', ['reject', 'TEMPFAIL', True, 451, ''])
def test_a_bad_on_store_error_names_the_policy(value):
    with pytest.raises(ValueError, match="greylist: on_store_error must be 'accept' or"):
        check_mode(value, 'greylist')
