"""policies.common.client_ip: parsed once per session and address, and
again when XCLIENT changed the address within the session."""
from __future__ import annotations

import smtplib

from smtp_stack.policies import common, rate_limit
from smtp_stack.session import Session

from policy_services import serve  # noqa: F401 (fixture)


def test_parsed_once_per_session_and_address(monkeypatch):
    parsed = []
    parse = common.parse_ip
    monkeypatch.setattr(common, 'parse_ip', lambda text: parsed.append(text) or parse(text))
    session = Session('127.0.0.1', 25, '192.0.2.7', 40000)
    assert [str(common.client_ip(session)) for _ in range(3)] == ['192.0.2.7'] * 3
    session.remote_address = 'IPv6:::ffff:192.0.2.8'       # XCLIENT ADDR=
    assert str(common.client_ip(session)) == '192.0.2.8'
    assert common.client_ip(Session('127.0.0.1', 25, 'garbage', 1)) is None
    assert parsed == ['192.0.2.7', 'IPv6:::ffff:192.0.2.8', 'garbage']


def test_a_session_object_without_attributes_is_parsed_each_time():
    class Fixed:
        __slots__ = ('remote_address',)

        def __init__(self, address):
            self.remote_address = address
    assert str(common.client_ip(Fixed('2001:db8::1%eth0'))) == '2001:db8::1'


def test_a_policy_sees_the_address_xclient_gives_later_in_the_session(serve):  # noqa: F811
    """One message per client address: the second XCLIENT of the session
    makes another client, whose message is not the first's."""
    server = serve(rate_limit(messages=1, per=3600))
    client = smtplib.SMTP(*server.address, timeout=10)
    try:
        client.ehlo('proxy.test')
        for address, expected in (('192.0.2.31', [250, 450]), ('192.0.2.32', [250, 450])):
            assert client.docmd('XCLIENT', f'ADDR={address}')[0] == 220
            client.ehlo_resp = None
            client.ehlo('mail.example.test')
            codes = []
            for _ in expected:
                codes.append(client.mail('a@example.test')[0])
                client.rset()
            assert codes == expected, address
    finally:
        client.close()
