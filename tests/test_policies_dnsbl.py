"""The dnsbl policy against a real dnsmasq serving the test zones
(policy_services.build_zone); client addresses by XCLIENT and PROXY."""
from __future__ import annotations

import re
import socket

import pytest

from smtp_stack.policies import Resolver, dnsbl
from smtp_stack.policies.dnsbl import Dnsbl, parse_codes, query_name, zone_entry

from policy_services import (LISTED_V4, LISTED_V6, dns_server, keys,  # noqa: F401 (fixtures)
                             rcpt, resolver, serve)


def test_dnsbl_query_names_ipv4_and_ipv6_nibbles():
    assert query_name('192.0.2.99', 'bl.test') == '99.2.0.192.bl.test'
    assert query_name('2001:db8::1', 'bl.test') == \
        '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test'


def test_dnsbl_refuses_a_listed_client_naming_zone_and_reason(serve, resolver):
    server = serve(dnsbl(['junk.test', 'bl.test'], resolver=resolver))
    code, text = rcpt(server, LISTED_V4, 'a@x.test', 'b@example.test')
    assert code == 554
    assert b'5.7.1' in text and b'bl.test' in text and b'is listed in bl.test' in text
    assert rcpt(server, '192.0.2.7', 'a@x.test', 'b@example.test')[0] == 250


def test_dnsbl_ipv6_client(serve, resolver):
    server = serve(dnsbl(['bl.test'], resolver=resolver))
    code, text = rcpt(server, LISTED_V6, 'a@x.test', 'b@example.test')
    assert code == 554 and b'IPv6 listing' in text
    assert rcpt(server, '2001:db8::5', 'a@x.test', 'b@example.test')[0] == 250


def test_dnsbl_answers_outside_127_are_no_listing(serve, resolver):
    server = serve(dnsbl(['junk.test'], resolver=resolver))
    assert rcpt(server, LISTED_V4, 'a@x.test', 'b@example.test')[0] == 250


def test_dnsbl_threshold_allow_list_and_authenticated(serve, resolver):
    server = serve(dnsbl(['bl.test', 'bl2.test'], threshold=2, allow=['192.0.2.96/30'],
                         resolver=resolver),
                   on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server, '192.0.2.101', 'a@x.test', 'b@example.test')[0] == 250
    assert rcpt(server, '192.0.2.98', 'a@x.test', 'b@example.test')[0] == 250   # one zone of 2
    server2 = serve(dnsbl(['bl.test', 'bl2.test'], threshold=2, resolver=resolver),
                    on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server2, LISTED_V4, 'a@x.test', 'b@example.test')[0] == 554
    assert rcpt(server2, LISTED_V4, 'a@x.test', 'b@example.test', login='u')[0] == 250
    assert rcpt(server, LISTED_V4, 'a@x.test', 'b@example.test')[0] == 250     # allow-listed


def test_dnsbl_fails_open_when_dns_is_down(serve, caplog):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(('127.0.0.1', 0))
    try:
        down = Resolver(['127.0.0.1'], port=silent.getsockname()[1], timeout=0.2)
        server = serve(dnsbl(['down.test'], resolver=down))
        with caplog.at_level('WARNING', logger='smtp_stack.policies'):
            assert rcpt(server, LISTED_V4, 'a@x.test', 'b@example.test')[0] == 250
            assert rcpt(server, '192.0.2.8', 'a@x.test', 'b@example.test')[0] == 250
        assert sum('down.test' in r.getMessage() for r in caplog.records) == 1
    finally:
        silent.close()



def test_dnsbl_sees_the_client_of_a_proxy_header(serve, resolver):
    """PROXY v1 from a trusted peer: the policy checks the address it names."""
    server = serve(dnsbl(['bl.test'], resolver=resolver), use_proxy=['127.0.0.1'])
    for client_ip, expected in ((LISTED_V4, 554), ('192.0.2.7', 250)):
        sock = socket.create_connection(server.address, timeout=10)
        reader = sock.makefile('rb')
        try:
            sock.sendall(f'PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n'.encode())
            assert reader.readline().startswith(b'220')
            sock.sendall(b'HELO mail.example.test\r\nMAIL FROM:<a@x.test>\r\n'
                         b'RCPT TO:<b@example.test>\r\n')
            codes = [int(reader.readline()[:3]) for _ in range(3)]
            assert codes == [250, 250, expected]
        finally:
            reader.close()
            sock.close()


# -- return codes and weights (Postfix's zone=codes*weight) ----------------------------------

@pytest.mark.parametrize('pattern, inside, outside', [
    ('127.0.0.2', ['127.0.0.2'], ['127.0.0.3', '127.0.1.2']),
    ('127.0.0.[2..11]', ['127.0.0.2', '127.0.0.4', '127.0.0.11'], ['127.0.0.1', '127.0.0.12']),
    ('127.0.0.[2;4..7;10]', ['127.0.0.2', '127.0.0.5', '127.0.0.10'], ['127.0.0.3', '127.0.0.8']),
    ('127.0.[0..255].[1..3]', ['127.0.10.1', '127.0.255.3'], ['127.0.10.0', '127.1.0.1']),
    ('[127].0.0.[2]', ['127.0.0.2'], ['127.0.0.3']),
])
def test_return_code_patterns(pattern, inside, outside):
    codes = parse_codes(pattern)
    assert all(c in codes for c in inside) and not any(c in codes for c in outside)


@pytest.mark.parametrize('entry, zone, patterns, weight', [
    ('bl.test', 'bl.test', (), 1),
    ('bl.test.', 'bl.test', (), 1),
    ('zen.test*3', 'zen.test', (), 3),
    ('zen.test=127.0.0.[2..11]', 'zen.test', ('127.0.0.[2..11]',), 1),
    ('wl.test=127.0.[0..255].[1..3]*-2', 'wl.test', ('127.0.[0..255].[1..3]',), -2),
    ({'zone': 'zen.test', 'codes': ['127.0.0.2', '127.0.0.4'], 'weight': 2},
     'zen.test', ('127.0.0.2', '127.0.0.4'), 2),
    ({'zone': 'zen.test', 'codes': '127.0.0.[10;11]'}, 'zen.test', ('127.0.0.[10;11]',), 1),
])
def test_zone_entries_in_postfix_syntax_and_as_mappings(entry, zone, patterns, weight):
    parsed = zone_entry(entry)
    assert (parsed.zone, tuple(c.text for c in parsed.codes), parsed.weight) == \
        (zone, patterns, weight)


@pytest.mark.parametrize('zones, threshold, message', [
    (['zen.test=127.0.0.[11..2]'], 1, "'11..2' is not a number or range"),
    (['zen.test=127.0.0.256'], 1, 'from 0 to 255'),
    (['zen.test=127.0.0'], 1, 'is not a return code'),
    (['zen.test*x'], 1, 'write zone[=codes][*weight]'),
    (['=127.0.0.2'], 1, 'write zone[=codes][*weight]'),
    (['zen.test=10.0.0.[1..3]'], 1, 'can never match'),
    ([{'zone': 'zen.test', 'weight': True}], 1, 'weight must be an integer'),
    ([{'zone': 'zen.test', 'code': '127.0.0.2'}], 1, 'needs zone, and may have codes and weight'),
    ([{'zone': 'zen.test', 'codes': [2]}], 1, 'codes must be a return code or a list'),
])
def test_bad_zone_entries_are_refused_at_construction(zones, threshold, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dnsbl(zones, threshold=threshold, resolver=Resolver(['127.0.0.1']))


@pytest.mark.parametrize('zones, threshold', [
    (['a.test', 'b.test*2', 'wl.test*-5'], 4),
    (['wl.test*-1'], 1),
    (['a.test'], 2),                # accepted before weights existed: still accepted
])
def test_a_threshold_that_cannot_be_reached_is_a_warning(zones, threshold, caplog):
    with caplog.at_level('WARNING', logger='smtp_stack.policies'):
        dnsbl(zones, threshold=threshold, resolver=Resolver(['127.0.0.1']))
    assert [f'threshold {threshold} cannot be reached' in r.getMessage()
            for r in caplog.records] == [True]


def test_dnsbl_return_code_filter_like_reject_rbl_client(serve, resolver):
    """reject_rbl_client zen.spamhaus.org=127.0.0.[2..11]: a listing whose
    code is outside the filter does not count."""
    server = serve(dnsbl(['zen.test=127.0.0.[2..11]'], resolver=resolver))
    for client, code in [('192.0.2.110', 554), ('192.0.2.111', 554), ('192.0.2.112', 554),
                         ('192.0.2.115', 250), ('192.0.2.7', 250)]:
        reply = rcpt(server, client, 'a@x.test', 'b@example.test')
        assert reply[0] == code, (client, reply)
        assert code == 250 or b'blocked using zen.test' in reply[1]


def test_dnsbl_a_list_of_codes(serve, resolver):
    server = serve(dnsbl([{'zone': 'zen.test', 'codes': ['127.0.0.2', '127.0.0.4']}],
                         resolver=resolver))
    assert [rcpt(server, client, 'a@x.test', 'b@example.test')[0] for client in
            ('192.0.2.110', '192.0.2.111', '192.0.2.112')] == [554, 250, 554]


@pytest.mark.parametrize('zones', [
    ['zen.test'],                                   # no filter
    ['zen.test=127.[0..255].[0..255].[0..255]'],    # a filter that covers them
    ['zen.test=127.255.255.[252..255]*5'],          # a filter of only them, weighed
])
def test_spamhaus_query_errors_never_count_as_listed(serve, resolver, zones):
    """127.255.255.254 (asked through an open resolver) and .255 (too many
    queries) are errors about the query, never a listing."""
    policy = dnsbl(zones, resolver=resolver)
    server = serve(policy)
    for client in ('192.0.2.113', '192.0.2.114'):
        assert rcpt(server, client, 'a@x.test', 'b@example.test')[0] == 250
        result = policy.check(client)
        assert (result.listed, result.score, result.errors) == ([], 0, [])


POSTSCREEN = ['zen.test=127.0.0.2*3', 'zen.test=127.0.0.[10;11]', 'bl2.test*2',
              'wl.test=127.0.[0..255].[1..3]*-2']


@pytest.mark.parametrize('client, score, code, named', [
    ('192.0.2.110', 3, 554, b'zen.test'),        # SBL alone: 3
    ('192.0.2.111', 1, 250, None),               # PBL alone: 1
    ('192.0.2.116', 3, 554, b'bl2.test'),        # PBL 1 + bl2 2: named after the heavier
    ('192.0.2.120', 1, 250, None),               # SBL 3, but allow-listed: -2
    ('192.0.2.121', 0, 250, None),               # wl.test's 127.0.10.0 is outside its filter
    ('192.0.2.112', 1, 250, None),               # XBL's 4 is in no entry; PBL's 11 counts 1
])
def test_dnsbl_weights_and_threshold_like_postscreen(serve, resolver, client, score, code, named):
    """postscreen_dnsbl_sites with weights (one zone in several entries, a
    negative weight for an allow-list) and postscreen_dnsbl_threshold = 3."""
    policy = dnsbl(POSTSCREEN, threshold=3, resolver=resolver)
    assert policy.check(client).score == score
    reply = rcpt(serve(policy), client, 'a@x.test', 'b@example.test')
    assert reply[0] == code
    assert named is None or f'blocked using {named.decode()}'.encode() in reply[1]


def test_dnsbl_each_zone_is_asked_once(resolver):
    policy = Dnsbl(POSTSCREEN, threshold=3, resolver=resolver)
    assert policy.zones == ('zen.test', 'bl2.test', 'wl.test')
    result = policy.check('192.0.2.120')
    assert sorted(result.listed) == [('wl.test', ['127.0.10.2'], None),
                                     ('zen.test', ['127.0.0.2'], None)]
    assert result.weights == {'zen.test': 3, 'wl.test': -2}


def test_two_dnsbl_policies_on_one_server_judge_by_their_own_zones(serve, resolver):
    """The result kept on the session is one policy's; another asks its own zones."""
    server = serve(dnsbl(['junk.test'], resolver=resolver), dnsbl(['bl.test'], resolver=resolver))
    assert rcpt(server, LISTED_V4, 'a@x.test', 'b@example.test')[0] == 554
