"""The dnsbl policy against a real dnsmasq serving the test zones
(policy_services.build_zone); client addresses by XCLIENT and PROXY."""
from __future__ import annotations

import socket

import pytest

from smtp_stack.policies import Resolver, dnsbl
from smtp_stack.policies.dnsbl import query_name

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
