"""spf.SpfCache: an SPF result kept while the DNS answers it was read from
are good, keyed by what it depended on; against a dnsmasq of its own
(records with macros of the sender, of the time, and a short TTL)."""
from __future__ import annotations

import socket
import time

import pytest

from smtp_stack.policies import Resolver
from smtp_stack.policies.spf import SpfCache, SpfResult, check_helo, check_spf

from policy_services import DnsServer, Zone

TTL = 60


@pytest.fixture(scope='module')
def dns(tmp_path_factory):
    zone = Zone()
    zone.host('ready.test', '192.0.2.1')
    zone.txt('plain.test', 'v=spf1 ip4:192.0.2.0/24 -all')
    zone.txt('helo.plain.test', 'v=spf1 ip4:192.0.2.0/24 -all')
    zone.txt('local.test', 'v=spf1 exists:%{l}.ok.local.test -all')     # per local part
    zone.host('alice.ok.local.test', '127.0.0.2')
    zone.txt('domain.test', 'v=spf1 exists:%{d}.ok.local.test -all')    # the domain: in the key
    zone.host('domain.test.ok.local.test', '127.0.0.2')
    zone.txt('time.test', 'v=spf1 -all exp=why.time.test')
    zone.txt('why.time.test', 'refused at %{t}')
    server = DnsServer(zone, str(tmp_path_factory.mktemp('spf-cache')), ttl=TTL)
    yield server
    server.stop()


@pytest.fixture
def resolver(dns):
    return Resolver(['127.0.0.1'], port=dns.port, timeout=2.0)


@pytest.fixture
def dead_resolver():
    """A resolver whose nameserver never answers: whatever it is asked is a temperror."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    yield Resolver(['127.0.0.1'], port=sock.getsockname()[1], timeout=0.2)
    sock.close()


def test_a_kept_result_is_given_without_evaluating_again(resolver, dead_resolver):
    cache = SpfCache()
    first = check_spf(resolver, '192.0.2.5', 'a@plain.test', 'mx.plain.test', cache=cache)
    assert first.result == 'pass'
    # the same question through a resolver that cannot answer: only the cache can
    assert check_spf(dead_resolver, '192.0.2.5', 'b@plain.test', 'mx.plain.test',
                     cache=cache) == first
    assert check_spf(dead_resolver, '192.0.2.5', 'b@plain.test', 'mx.plain.test').result \
        == 'temperror'


@pytest.mark.parametrize('ip, sender, helo', [
    ('192.0.2.6', 'a@plain.test', 'mx.plain.test'),       # another client
    ('192.0.2.5', 'a@other.plain.test', 'mx.plain.test'),  # another domain
    ('192.0.2.5', 'a@plain.test', 'mx2.plain.test'),      # another HELO name (%{h})
])
def test_what_the_result_depends_on_is_in_the_key(resolver, dead_resolver, ip, sender, helo):
    cache = SpfCache()
    check_spf(resolver, '192.0.2.5', 'a@plain.test', 'mx.plain.test', cache=cache)
    assert check_spf(dead_resolver, ip, sender, helo, cache=cache).result == 'temperror'


def test_a_record_with_a_macro_of_the_local_part_is_kept_per_sender(resolver):
    cache = SpfCache()
    assert check_spf(resolver, '192.0.2.5', 'alice@local.test', 'mx.test',
                     cache=cache).result == 'pass'
    assert check_spf(resolver, '192.0.2.5', 'bob@local.test', 'mx.test',
                     cache=cache).result == 'fail'
    assert check_spf(resolver, '192.0.2.5', 'alice@local.test', 'mx.test',
                     cache=cache).result == 'pass'


def test_a_record_with_a_macro_of_the_domain_is_kept_per_domain(resolver, dead_resolver):
    cache = SpfCache()
    assert check_spf(resolver, '192.0.2.5', 'x@domain.test', 'mx.test',
                     cache=cache).result == 'pass'
    assert check_spf(dead_resolver, '192.0.2.5', 'y@domain.test', 'mx.test',
                     cache=cache).result == 'pass'


def test_a_record_with_the_time_macro_is_not_kept(resolver, dead_resolver):
    cache = SpfCache()
    first = check_spf(resolver, '192.0.2.5', 'a@time.test', 'mx.test', cache=cache)
    assert first.result == 'fail' and first.explanation.startswith('refused at ')
    assert check_spf(dead_resolver, '192.0.2.5', 'a@time.test', 'mx.test',
                     cache=cache).result == 'temperror'


def test_a_temperror_is_not_kept(resolver, dead_resolver):
    cache = SpfCache()
    assert check_spf(dead_resolver, '192.0.2.5', 'a@plain.test', 'mx.test',
                     cache=cache).result == 'temperror'
    assert check_spf(resolver, '192.0.2.5', 'a@plain.test', 'mx.test',
                     cache=cache).result == 'pass'


def test_a_result_is_kept_no_longer_than_its_answers(resolver):
    """Kept until the first of the answers read expires, as the resolver
    keeps them (dnsmasq answers with TTL seconds)."""
    cache = SpfCache()
    before = time.monotonic()
    check_spf(resolver, '192.0.2.5', 'a@plain.test', 'mx.plain.test', cache=cache)
    check_helo(resolver, '192.0.2.5', 'helo.plain.test', cache=cache)
    [(good_until, _, _), (helo_until, _, _)] = cache._kept.values()
    for until in (good_until, helo_until):
        assert before + TTL - 1 <= until <= time.monotonic() + TTL


def test_an_expired_result_or_another_senders_is_not_given():
    from smtp_stack.policies.spf import _Evaluation
    cache = SpfCache()
    result = SpfResult('pass', 'mailfrom', 'plain.test')
    key = ('mailfrom', '192.0.2.5', 'plain.test', 'mx.test')
    cache.put(key, 'a@plain.test', result, _Evaluation(None, time.monotonic() - 1))
    assert cache.get(key, 'a@plain.test') is None
    cache.put(key, 'a@plain.test', result,
              _Evaluation(None, time.monotonic() + 60, per_sender=True))
    assert cache.get(key, 'a@plain.test') == result
    assert cache.get(key, 'b@plain.test') is None


def test_the_cache_is_bounded():
    from smtp_stack.policies.spf import _Evaluation
    cache = SpfCache(size=3)
    for i in range(5):
        cache.put(('mailfrom', f'192.0.2.{i}', 'plain.test', ''), '',
                  SpfResult('pass', 'mailfrom', 'plain.test'),
                  _Evaluation(None, time.monotonic() + 60))
    assert len(cache._kept) == 3
    assert cache.get(('mailfrom', '192.0.2.0', 'plain.test', ''), '') is None
    assert cache.get(('mailfrom', '192.0.2.4', 'plain.test', ''), '') is not None
