"""What the policies' cheaper key making (issue 25) must keep: the same
store keys and networks as before, and parameters changed after
construction still applied."""
from __future__ import annotations

import ipaddress
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.policies import common
from smtp_stack.policies.greylist import Greylist, client_network
from smtp_stack.policies.ratelimit import RateLimit
from smtp_stack.session import Session
from smtp_stack.state import MemoryStore, store
from smtp_stack.state.greylisting import GreyKeys, GreyRule

from policy_services import redis_server  # noqa: F401 (fixture)


def network_as_ipaddress_writes_it(ip: common.IPAddress) -> str:
    return str(ipaddress.ip_network(f'{ip}/{24 if ip.version == 4 else 64}', strict=False))


@pytest.mark.parametrize('text', ['0.0.0.0', '192.0.2.77', '10.255.255.255', '255.255.255.255',
                                  '1.2.3.4', '2001:db8::1', '::1', 'fe80::1:2:3:4'])
def test_client_network_is_the_network_ipaddress_writes(text):
    ip = ipaddress.ip_address(text)
    assert client_network(ip) == network_as_ipaddress_writes_it(ip)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_client_network_of_any_ipv4_address(n):
    ip = ipaddress.IPv4Address(n)
    assert client_network(ip) == network_as_ipaddress_writes_it(ip)


class Recording(MemoryStore):
    """A memory store that notes the keys of its sliding-window hits."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def hit(self, key, window, limit, now=None):
        self.keys.append(key)
        return super().hit(key, window, limit, now)


@pytest.mark.parametrize('per, address, key', [
    (3600, '192.0.2.7', 'rate:msg:3600:client:192.0.2.7'),
    (90.5, 'IPv6:2001:DB8::7', 'rate:msg:90.5:client:2001:db8::7'),
    (60, 'IPv6:::ffff:192.0.2.8', 'rate:msg:60:client:192.0.2.8'),
    (60, 'not an address', 'rate:msg:60:client:not an address'),
])
def test_rate_limit_keys_are_written_as_they_always_were(per, address, key):
    """A window counted before an upgrade goes on counting after it."""
    recording = Recording()
    limit = RateLimit(messages=5, per=per, store=recording)
    session = Session('127.0.0.1', 25, address, 40000)
    assert limit.subject(session) == key.split(':', 3)[3]
    limit._hit(None, 'msg', 5, limit.subject(session))  # type: ignore[arg-type]
    assert recording.keys == [key]


def test_client_text_follows_the_address_xclient_gives():
    session = Session('127.0.0.1', 25, '192.0.2.7', 40000)
    assert common.client_text(session) == '192.0.2.7'
    session.remote_address = 'IPv6:2001:DB8:0:0::9'
    assert common.client_text(session) == '2001:db8::9'
    assert common.client_ip(session) == ipaddress.ip_address('2001:db8::9')
    session.remote_address = None
    assert common.client_text(session) == 'None' and common.client_ip(session) is None


@pytest.fixture(params=['memory', 'redis'])
def grey_store(request):
    if request.param == 'memory':
        s = store('memory:')
    else:
        s = store(request.getfixturevalue('redis_server').url)
        s.prefix = f'test:{uuid.uuid4().hex}:'
    yield s
    s.close()


def test_greylist_parameters_changed_after_construction_apply(grey_store):
    """The greylist keeps one rule object while its parameters stay, and
    the Redis store the script arguments of that object: a change makes both again."""
    now = [5_000_000.0]
    grey = Greylist(delay=300, store=grey_store, clock=lambda: now[0])
    a = ipaddress.ip_address('192.0.2.10')
    assert 'in 300 seconds' in grey.check(a, 's@x.test', 'one@y.test').message
    grey.delay = 100
    assert 'in 100 seconds' in grey.check(a, 's@x.test', 'two@y.test').message
    now[0] += 101
    assert grey.check(a, 's@x.test', 'two@y.test') is None
    grey.auto_allow = 1         # the network passed once: allowed from now on
    assert grey.check(a, 's@x.test', 'three@y.test') is None


def test_redis_greylist_arguments_follow_the_rule_object(redis_server):  # noqa: F811
    shared = store(redis_server.url)
    shared.prefix = f'test:{uuid.uuid4().hex}:'
    try:
        keys = GreyKeys('grey:client:n', 'grey:pass:k', 'grey:wait:k')
        assert shared.greylist(keys, 1000.0, GreyRule(300, 3600, 86400, 0)) == 300
        other = GreyKeys('grey:client:n', 'grey:pass:k2', 'grey:wait:k2')
        assert shared.greylist(other, 1000.0, GreyRule(40, 3600, 86400, 0)) == 40
    finally:
        shared.close()


NETS = common.networks(['192.0.2.0/24', '2001:db8::/32'], 'test')


@pytest.mark.parametrize('text, nets, expected', [
    ('192.0.2.9', NETS, True),
    ('192.0.2.9', list(NETS), True),
    ('198.51.100.1', NETS, False),
    ('2001:db8::5', NETS, True),
    ('192.0.2.9', (), False),
    ('192.0.2.9', [], False),
    (None, NETS, False),
])
def test_allowed(text, nets, expected):
    ip = None if text is None else ipaddress.ip_address(text)
    assert common.allowed(ip, nets) is expected
    assert common.allowed(ip, iter(nets)) is expected      # any iterable, a generator too
