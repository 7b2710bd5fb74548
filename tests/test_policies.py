"""Policies over real sockets: a real dnsmasq for DNS, a real redis-server,
SQLite files; client addresses set with XCLIENT so any IP can be tested
over loopback. recipients and dnsbl have modules of their own
(test_policies_recipients.py, test_policies_dnsbl.py)."""
from __future__ import annotations

import smtplib
import socket
import threading
import time

import gevent
import pytest

from smtp_stack import SmtpServer
from smtp_stack.policies import DnsError, Resolver, greylist, rate_limit, store
from smtp_stack.policies.greylist import Greylist

from policy_services import (connect, dns_server, keys,  # noqa: F401 (fixtures)
                             rcpt, redis_server, resolver, serve, wait_for)


# -- the resolver ------------------------------------------------------------------

def test_resolver_reads_txt_a_aaaa_mx_from_dnsmasq(resolver):
    assert resolver.txt('softfail.test') == [b'v=spf1 ~all']
    assert resolver.addresses('mail.amx.test') == ['192.0.2.21']
    assert resolver.addresses('mail.amx.test', 'AAAA') == ['2001:db8::21']
    assert resolver.mx('amx.test') == [(10, 'mail.amx.test')]
    answer = resolver.query('nothing-here.test', 'A')
    assert answer.nxdomain and not answer


def test_resolver_joins_the_strings_of_a_long_txt_record(resolver, keys):
    assert resolver.txt('rsa1._domainkey.example.test') == [keys.rsa.record().encode()]


def test_resolver_caches_answers_for_their_ttl(resolver):
    first = resolver.query('softfail.test', 'TXT')
    assert first.ttl == 60
    assert resolver.query('softfail.test', 'TXT') is first


def test_resolver_times_out_within_its_bound_on_a_silent_server():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(('127.0.0.1', 0))
    try:
        r = Resolver(['127.0.0.1'], port=silent.getsockname()[1], timeout=0.3)
        started = time.monotonic()
        with pytest.raises(DnsError):
            r.query('example.test', 'TXT')
        assert time.monotonic() - started < 1.0
    finally:
        silent.close()


def test_resolver_does_not_block_the_hub_in_an_unpatched_process():
    """Other greenlets run while a lookup waits (this process is not
    monkey-patched: a blocking socket would stop them)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(('127.0.0.1', 0))
    ticks = []

    def ticker():
        for _ in range(20):
            ticks.append(1)
            gevent.sleep(0.01)
    try:
        r = Resolver(['127.0.0.1'], port=silent.getsockname()[1], timeout=0.4)
        job = gevent.spawn(ticker)
        with pytest.raises(DnsError):
            r.query('example.test', 'TXT')
        job.join(2)
        assert len(ticks) >= 10
    finally:
        silent.close()


def test_resolver_refuses_a_bad_nameserver_at_construction():
    with pytest.raises(ValueError):
        Resolver(['not-an-ip'])


# -- stores ----------------------------------------------------------------------------

@pytest.fixture(params=['memory', 'sqlite', 'redis'])
def any_store(request, tmp_path):
    if request.param == 'memory':
        s = store('memory:')
    elif request.param == 'sqlite':
        s = store(f'sqlite:///{tmp_path}/state.db')
    else:
        s = store(request.getfixturevalue('redis_server').url)
        s.delete('k'), s.delete('n'), s.delete('w')
    yield s
    s.close()


def test_store_operations(any_store):
    s = any_store
    assert s.get('k') is None
    assert s.add('k', 'one', 5) is True
    assert s.add('k', 'two', 5) is False
    assert s.get('k') == 'one'
    s.set('k', 'three', 5)
    assert s.get('k') == 'three'
    assert s.incr('n', 2, 5) == 2 and s.incr('n') == 3
    s.delete('k')
    assert s.get('k') is None


def test_store_ttl_expires(any_store):
    any_store.set('k', 'v', 0.2)
    assert any_store.get('k') == 'v'
    assert wait_for(lambda: any_store.get('k') is None, timeout=3)


def test_store_sliding_window_is_exact(any_store):
    now = time.time()
    assert [any_store.hit('w', 10, 3, now + i) for i in range(4)] == [1, 2, 3, None]
    assert any_store.hit('w', 10, 3, now + 10.5) == 3     # the first event left the window


@pytest.mark.parametrize('kind', ['sqlite', 'redis'])
def test_store_counts_exactly_when_threads_race(kind, tmp_path, request):
    """Eight threads (eight hubs, as eight workers would be) hit one key:
    exactly `limit` succeed."""
    url = f'sqlite:///{tmp_path}/race.db' if kind == 'sqlite' else \
        request.getfixturevalue('redis_server').url
    shared = store(url)
    shared.delete('race')
    results = []

    def worker():
        mine = store(url)           # its own connection, as another process would have
        results.extend(mine.hit('race', 60, 20) for _ in range(5))
        mine.close()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(r is not None for r in results) == 20
    shared.close()


def test_store_rejects_unknown_urls():
    with pytest.raises(ValueError):
        store('mysql://x')


# -- greylist --------------------------------------------------------------------------

def test_greylist_logic_with_a_clock():
    now = [1000.0]
    g = Greylist(delay=300, expire=3600, store=store('memory:'), auto_allow=2,
                 clock=lambda: now[0])
    import ipaddress
    ip = ipaddress.ip_address('192.0.2.10')
    assert g.check(ip, 's@x.test', 'r@y.test')[0] == 451
    now[0] += 100
    assert g.check(ip, 's@x.test', 'r@y.test')[0] == 451       # too early
    neighbour = ipaddress.ip_address('192.0.2.200')            # same /24: same triplet
    now[0] += 250
    assert g.check(neighbour, 's@x.test', 'r@y.test') is None
    assert g.check(ip, 's@x.test', 'r@y.test') is None         # passed triplets stay
    assert g.check(ip, 's@x.test', 'other@y.test')[0] == 451   # a new triplet waits
    now[0] += 301
    assert g.check(ip, 's@x.test', 'other@y.test') is None     # second pass of the network
    assert g.check(ip, 'new@x.test', 'new@y.test') is None     # auto-allowed now


def test_greylist_over_smtp_with_redis_shared_by_two_servers(serve, redis_server):
    url = redis_server.url
    a = serve(greylist(delay=0.5, store=store(url), auto_allow=0))
    b = serve(greylist(delay=0.5, store=store(url), auto_allow=0))
    sender, recipient = f'g{time.time_ns()}@x.test', 'r@example.test'
    code, text = rcpt(a, '198.51.100.1', sender, recipient)
    assert code == 451 and b'4.7.1' in text
    assert rcpt(b, '198.51.100.1', sender, recipient)[0] == 451    # b saw a's first sight
    assert wait_for(lambda: rcpt(b, '198.51.100.2', sender, recipient)[0] == 250, timeout=5)
    assert rcpt(a, '198.51.100.3', sender, recipient)[0] == 250    # and a sees b's pass
    assert rcpt(a, '198.51.100.1', sender, recipient, login='u')[0] == 250


def test_greylist_skips_authenticated_and_allow_listed(serve):
    server = serve(greylist(delay=60, allow=['203.0.113.0/24']),
                   on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server, '203.0.113.9', 's@x.test', 'r@example.test')[0] == 250
    assert rcpt(server, '198.51.100.9', 's@x.test', 'r@example.test', login='u')[0] == 250
    assert rcpt(server, '198.51.100.9', 's@x.test', 'r@example.test')[0] == 451


def test_greylist_and_rate_limit_fail_open_when_redis_restarts(serve, redis_server, caplog):
    shared = store(redis_server.url)
    server = serve(greylist(delay=60, store=shared), rate_limit(recipients=100, store=shared))
    sender = f'r{time.time_ns()}@x.test'
    assert rcpt(server, '198.51.100.20', sender, 'r@example.test')[0] == 451
    redis_server.stop()
    try:
        with caplog.at_level('WARNING', logger='smtp_stack.policies'):
            assert rcpt(server, '198.51.100.20', sender, 'r@example.test')[0] == 250
            assert rcpt(server, '198.51.100.21', sender, 'r@example.test')[0] == 250
        failures = [r for r in caplog.records if 'failing open' in r.getMessage()]
        assert len(failures) == 2           # one per policy, not one per RCPT
    finally:
        redis_server.start()
    # back: the new (empty) Redis greylists again
    assert rcpt(server, '198.51.100.22', f'n{time.time_ns()}@x.test', 'r@example.test')[0] == 451


# -- rate_limit ------------------------------------------------------------------------

def test_rate_limit_messages_per_client(serve):
    server = serve(rate_limit(messages=2, per=60))
    client = connect(server, '198.51.100.30')
    try:
        for _ in range(2):
            assert client.mail('a@x.test')[0] == 250
            client.rset()
        code, text = client.mail('a@x.test')
        assert code == 450 and b'4.7.1' in text
    finally:
        client.close()
    other = connect(server, '198.51.100.31')
    assert other.mail('a@x.test')[0] == 250
    other.close()


def test_rate_limit_recipients_per_sender_on_sqlite_shared_by_two_servers(serve, tmp_path):
    url = f'sqlite:///{tmp_path}/rate.db'
    a = serve(rate_limit(recipients=3, per=60, key='sender', store=store(url)))
    b = serve(rate_limit(recipients=3, per=60, key='sender', store=store(url)))
    codes = [rcpt(srv, '198.51.100.40', 'bulk@x.test', f'r{i}@example.test')[0]
             for i, srv in enumerate([a, b, a, b])]
    assert codes == [250, 250, 250, 450]
    assert rcpt(a, '198.51.100.40', 'other@x.test', 'r@example.test')[0] == 250


def test_rate_limit_per_user_window_slides(serve):
    server = serve(rate_limit(recipients=1, per=0.5, key='user'),
                   on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server, '198.51.100.50', 'a@x.test', 'r@example.test', login='alice')[0] == 250
    assert rcpt(server, '198.51.100.51', 'a@x.test', 'r@example.test', login='alice')[0] == 450
    assert rcpt(server, '198.51.100.50', 'a@x.test', 'r@example.test', login='bob')[0] == 250
    assert wait_for(lambda: rcpt(server, '198.51.100.52', 'a@x.test', 'r@example.test',
                                 login='alice')[0] == 250, timeout=5)


def test_rate_limit_refuses_bad_parameters():
    with pytest.raises(ValueError):
        rate_limit()
    with pytest.raises(ValueError):
        rate_limit(messages=0)
    with pytest.raises(ValueError):
        rate_limit(messages=1, key='domain')


# -- never blocking the hub, patched or not ----------------------------------------------

HUB_SCRIPT = r'''
import sys, socket as std_socket
if sys.argv[1] == 'patched':
    from gevent import monkey; monkey.patch_all()
import gevent, time
from smtp_stack.policies import Resolver, store, DnsError, StoreError
dns_port, redis_url = int(sys.argv[2]), sys.argv[3]
silent_udp = std_socket.socket(std_socket.AF_INET, std_socket.SOCK_DGRAM)
silent_udp.bind(('127.0.0.1', 0))
silent_tcp = std_socket.socket(); silent_tcp.bind(('127.0.0.1', 0)); silent_tcp.listen(5)
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic()); gevent.sleep(0.01)
job = gevent.spawn(ticker)
assert Resolver(['127.0.0.1'], port=dns_port).txt('softfail.test') == [b'v=spf1 ~all']
shared = store(redis_url)
assert shared.hit('hub-test-%s' % sys.argv[1], 60, 5) == 1
before = len(ticks)
try:
    Resolver(['127.0.0.1'], port=silent_udp.getsockname()[1], timeout=0.3).txt('x.test')
except DnsError:
    pass
stalled = store('redis://127.0.0.1:%d/0' % silent_tcp.getsockname()[1])
stalled._timeout = 0.3
try:
    stalled.get('k')
except StoreError:
    pass
gaps = [b - a for a, b in zip(ticks[before:], ticks[before + 1:])]
job.kill()
print('ticks', len(ticks) - before, 'max_gap %.3f' % max(gaps))
'''


@pytest.mark.parametrize('mode', ['patched', 'unpatched'])
def test_dns_and_redis_never_block_the_hub(mode, dns_server, redis_server, tmp_path):
    """A DNS server and a Redis that never answer: the ticker greenlet keeps
    running (no gap near the 0.3 s timeouts), with and without monkey.patch_all()."""
    import subprocess
    import sys
    from clirunner import env_with_package
    script = tmp_path / 'hub.py'
    script.write_text(HUB_SCRIPT)
    out = subprocess.run([sys.executable, str(script), mode, str(dns_server.port),
                          redis_server.url], capture_output=True, text=True, timeout=30,
                         env=env_with_package())
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert int(words[1]) >= 20 and float(words[3]) < 0.15, out.stdout


# -- the server option store= ------------------------------------------------------------

def test_max_connections_per_ip_holds_across_servers_on_one_redis(serve, redis_server):
    """Two servers (as two workers or machines) on one Redis: the limit of 2
    connections per client address is counted over both."""
    a = serve(max_connections_per_ip=2, store=redis_server.url)
    b = serve(max_connections_per_ip=2, store=redis_server.url)
    first = smtplib.SMTP(*a.address, timeout=10)
    second = smtplib.SMTP(*b.address, timeout=10)
    try:
        third = smtplib.SMTP(timeout=10)
        code, _ = third.connect(*a.address)
        assert code == 421
        third.close()
    finally:
        first.quit()
        second.quit()
    # both released: room again
    assert wait_for(lambda: _greeting(b) == 220, timeout=5)


def _greeting(server) -> int:
    client = smtplib.SMTP(timeout=10)
    try:
        return client.connect(*server.address)[0]
    finally:
        client.close()


def test_max_auth_failures_per_ip_holds_across_servers_on_one_store(serve, tmp_path):
    url = f'sqlite:///{tmp_path}/limits.db'
    options = dict(max_auth_failures_per_ip=2, max_auth_failures=5, allow_insecure_auth=True,
                   store=url, disabled_commands=['STARTTLS'])
    a, b = serve(**options), serve(**options)
    for server in (a, b):               # one failure on each server
        client = smtplib.SMTP(*server.address, timeout=10)
        client.ehlo('x.test')
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login('u', 'wrong')
        client.close()
    client = smtplib.SMTP(*a.address, timeout=10)
    client.ehlo('x.test')
    code, text = client.docmd('AUTH', 'PLAIN AHUAd3Jvbmc=')
    client.close()
    assert code == 450 and b'too many failed' in text, (code, text)   # replies.AUTH_BLOCKED


def test_store_option_is_checked_at_construction():
    with pytest.raises(ValueError):
        SmtpServer(store='mysql://x')


def test_resolver_over_ipv6_to_dnsmasq_on_loopback(dns_server):
    r = Resolver(['::1'], port=dns_server.port, timeout=2.0)
    assert r.txt('neutral.test') == [b'v=spf1 ?all']


def test_rate_limit_messages_per_sender_counts_each_message_once(serve):
    server = serve(rate_limit(messages=2, per=60, key='sender'))
    client = connect(server, '198.51.100.60')
    try:
        for _ in range(2):
            assert client.mail('list@x.test')[0] == 250
            assert client.rcpt('a@example.test')[0] == 250
            assert client.rcpt('b@example.test')[0] == 250     # same message: not counted again
            client.rset()
        assert client.mail('list@x.test')[0] == 250
        assert client.rcpt('a@example.test')[0] == 450
    finally:
        client.close()


def test_resolver_remembers_a_failure_briefly():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(('127.0.0.1', 0))
    try:
        r = Resolver(['127.0.0.1'], port=silent.getsockname()[1], timeout=0.3)
        with pytest.raises(DnsError):
            r.query('example.test', 'TXT')
        started = time.monotonic()
        with pytest.raises(DnsError):
            r.query('example.test', 'TXT')      # not asked again: no second timeout
        assert time.monotonic() - started < 0.1
    finally:
        silent.close()
