"""Dependency outages, as an admin meets them: a real redis-server stopped
(SIGSTOP) or killed (kill -9), an SQLite file locked by another process, a
resolver with nothing answering, each under 32 sessions at once against a
server in a process of its own (outage_helpers.Served).

Each pins what the outage may cost: the slowest MAIL (or the RCPT where
the policy acts) within the dependency's timeout plus 0.5 s, however many
sessions wait (before the breakers: Redis stopped, 8 s for 32 sessions);
the sessions that come next fail fast; nothing on the server's stderr; one
warning per cause in its log; and with `on_store_error='tempfail'` every
client gets 451 4.3.5 and nothing is lost (each message accepted and
stored once, or refused with a 4xx)."""
from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
from collections import Counter

import pytest

from outage_helpers import Served, nothing_lost, sessions, tracebacks
from policy_services import RedisServer, wait_for

TIMEOUT = 1.0           # the store's socket or lock timeout, the resolver's timeout
SLACK = 0.5             # what the slowest session may wait beyond it
FAST = 0.5              # what a session may wait once the breaker is open
SESSIONS = 32


@pytest.fixture
def redis(tmp_path):
    workdir = tmp_path / 'redis'
    workdir.mkdir()
    server = RedisServer(str(workdir))
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)     # stopped by the test: it can die now
    server.stop()


def serve(tmp_path, mode: str, **spec) -> Served:
    spec.setdefault('store_timeout', TIMEOUT)
    if mode != 'accept':                # accept: the default, not given
        spec.setdefault('options', {})['on_store_error'] = mode
    workdir = tmp_path / 'server'
    workdir.mkdir()
    return Served(spec, str(workdir))


def causes(log: list[str]) -> Counter:
    """The warnings of the policies' logger, by what they are about."""
    said = [line.split(': ', 2)[1] for line in log if line.startswith('WARNING smtp_stack.')]
    return Counter(text.split(':')[0] for text in said)


def check_outcomes(outcomes, mode: str, step: str) -> None:
    """accept: every message through; tempfail: 451 4.3.5 at `step`."""
    if mode == 'accept':
        assert all(o.accepted for o in outcomes), outcomes
        return
    for o in outcomes:
        code, text = (o.mail, o.mail_text) if step == 'MAIL' else (o.rcpt, o.rcpt_text)
        assert (code, text[:5]) == (451, '4.3.5'), o


def check_quiet(served: Served, expected: dict[str, int]) -> None:
    """Nothing printed on stderr; in the log, one warning per cause."""
    assert tracebacks(served.stderr()) == [], served.stderr()[-3000:]
    assert causes(served.log()) == expected, served.log()


REDIS_POLICIES = [['rate_limit', {'messages': 100000}], ['greylist', {}]]


@pytest.mark.parametrize('mode', ['accept', 'tempfail'])
@pytest.mark.parametrize('patched', [False, True], ids=['threads', 'patched'])
def test_a_stopped_redis_costs_one_timeout(tmp_path, redis, mode, patched):
    served = serve(tmp_path, mode, store=redis.url, policies=REDIS_POLICIES, patched=patched)
    try:
        sessions(served.address, 1, 'warm', first_ip=250)       # connected while it answers
        os.kill(redis.proc.pid, signal.SIGSTOP)
        first = sessions(served.address, SESSIONS, 'a', first_ip=10)
        after = sessions(served.address, SESSIONS, 'b', first_ip=60)
    finally:
        served.stop()
    assert max(o.mail_time for o in first) < TIMEOUT + SLACK
    assert max(o.mail_time + o.rcpt_time for o in after) < FAST
    check_outcomes(first + after, mode, 'MAIL')
    nothing_lost(served, first + after)
    # rate_limit at MAIL; greylist at RCPT, which tempfail never reaches
    check_quiet(served, {'rate_limit': 1, 'greylist': 1} if mode == 'accept'
                else {'rate_limit': 1})


@pytest.mark.parametrize('mode', ['accept', 'tempfail'])
def test_a_killed_redis_costs_nothing(tmp_path, redis, mode):
    served = serve(tmp_path, mode, store=redis.url, policies=REDIS_POLICIES)
    try:
        sessions(served.address, 1, 'warm', first_ip=250)
        os.kill(redis.proc.pid, signal.SIGKILL)
        redis.proc.wait(10)
        outcomes = sessions(served.address, SESSIONS, 'k', first_ip=10)
    finally:
        served.stop()
    assert max(o.mail_time + o.rcpt_time for o in outcomes) < TIMEOUT + SLACK
    check_outcomes(outcomes, mode, 'MAIL')
    nothing_lost(served, outcomes)
    check_quiet(served, {'rate_limit': 1, 'greylist': 1} if mode == 'accept'
                else {'rate_limit': 1})


def test_redis_back_is_used_again_and_said_so(tmp_path, redis):
    """After the outage a probe finds Redis and greylisting works again."""
    served = serve(tmp_path, 'accept', store=redis.url, policies=[['greylist', {}]])
    try:
        sessions(served.address, 1, 'warm', first_ip=250)
        os.kill(redis.proc.pid, signal.SIGSTOP)
        during = sessions(served.address, 4, 'd', first_ip=10)
        os.kill(redis.proc.pid, signal.SIGCONT)
        greylisted = wait_for(lambda: [o for o in sessions(served.address, 1, 'r', first_ip=99)
                                       if o.rcpt == 451 and o.rcpt_text.startswith('4.7.1')],
                              timeout=15)
    finally:
        served.stop()
    assert all(o.accepted for o in during) and greylisted
    assert any(re.search(r'greylist store redis://\S+: working again', line)
               for line in served.log()), served.log()
    assert tracebacks(served.stderr()) == []


@pytest.mark.parametrize('mode', ['accept', 'tempfail'])
@pytest.mark.parametrize('dns', ['silent', 'refusing'])
def test_dns_down_costs_one_timeout(tmp_path, mode, dns):
    """A resolver that never answers (a socket that reads nothing) and one
    with nothing listening (ICMP port unreachable): dnsbl acts at RCPT."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(('127.0.0.1', 0))
    port = udp.getsockname()[1]
    if dns == 'refusing':
        udp.close()
    try:
        served = serve(tmp_path, mode, dns_port=port, dns_timeout=TIMEOUT,
                       policies=[['dnsbl', {'zones': ['bl.test']}]])
        try:
            first = sessions(served.address, SESSIONS, 'a', first_ip=10)
            after = sessions(served.address, SESSIONS, 'b', first_ip=60)
        finally:
            served.stop()
    finally:
        udp.close()
    assert max(o.rcpt_time for o in first) < TIMEOUT + SLACK
    assert max(o.mail_time + o.rcpt_time for o in after) < FAST
    check_outcomes(first + after, mode, 'RCPT')
    nothing_lost(served, first + after)
    check_quiet(served, {'dnsbl': 1})


@pytest.mark.parametrize('mode', ['accept', 'tempfail'])
def test_an_sqlite_file_locked_by_another_process_costs_one_timeout(tmp_path, mode):
    path = tmp_path / 'state.db'
    served = serve(tmp_path, mode, store=f'sqlite:///{path}',
                   policies=[['rate_limit', {'messages': 100000}]])
    locker = None
    try:
        sessions(served.address, 1, 'warm', first_ip=250)      # the file and its schema exist
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute('BEGIN IMMEDIATE')                       # this process holds the lock
        first = sessions(served.address, SESSIONS, 'a', first_ip=10)
        after = sessions(served.address, SESSIONS, 'b', first_ip=60)
    finally:
        if locker is not None:
            locker.close()
        served.stop()
    assert max(o.mail_time for o in first) < TIMEOUT + SLACK
    assert max(o.mail_time + o.rcpt_time for o in after) < FAST
    check_outcomes(first + after, mode, 'MAIL')
    nothing_lost(served, first + after)
    check_quiet(served, {'rate_limit': 1})
