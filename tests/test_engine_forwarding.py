"""Behind proxies: PROXY v1/v2 (also through a real HAProxy), XCLIENT, XFORWARD."""
import base64
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from smtp_stack.proxy import PP2_TYPE_AUTHORITY, build_proxy_v1, build_proxy_v2
from smtp_stack.xtext import encode_xtext

import peers
from conftest import WAIT, RawClient


def session_spy(store):
    def spy(ctx, next):
        next()
        s = ctx.session
        store.append(dict(command=ctx.command_name, remote=(s.remote_address, s.remote_port),
                          local=(s.local_address, s.local_port), proxy=s.proxy,
                          host=s.client_hostname, xclient=dict(s.xclient),
                          xforward=dict(s.xforward), user=s.user, helo=s.helo, auth=s.auth))
    return spy


def connect_with(server, header: bytes) -> RawClient:
    c = RawClient(server.address)
    c.send(header)
    return c


# --- PROXY protocol --------------------------------------------------------------

@pytest.mark.parametrize('header, remote, local', [
    (build_proxy_v1('192.0.2.7', 40001, '198.51.100.1', 25), ('192.0.2.7', 40001), ('198.51.100.1', 25)),
    (build_proxy_v1('2001:db8::7', 40002, '2001:db8::1', 587), ('2001:db8::7', 40002), ('2001:db8::1', 587)),
    (build_proxy_v2('192.0.2.8', 40003, '198.51.100.2', 25), ('192.0.2.8', 40003), ('198.51.100.2', 25)),
    (build_proxy_v2('2001:db8::8', 40004, '2001:db8::2', 25), ('2001:db8::8', 40004), ('2001:db8::2', 25)),
])
def test_proxy_header_rewrites_the_client(serve, header, remote, local):
    seen = []
    server = serve(use_proxy=['127.0.0.1'], middleware=[session_spy(seen)])
    c = connect_with(server, header)
    try:
        c.expect(220)
        c.expect(250, 'NOOP')
    finally:
        c.close()
    assert seen[0]['remote'] == remote and seen[0]['local'] == local
    assert seen[0]['host'] == f'[{remote[0]}]'
    assert seen[0]['proxy'].command == 'PROXY'


def test_proxy_v2_tlvs_and_pipelined_smtp_after_the_header(serve):
    seen = []
    server = serve(use_proxy=True, middleware=[session_spy(seen)])
    header = build_proxy_v2('192.0.2.9', 1234, '198.51.100.3', 25,
                            tlvs=[(PP2_TYPE_AUTHORITY, b'mx.example')], crc=True)
    c = connect_with(server, header + b'EHLO x\r\nNOOP\r\n')   # SMTP in the same packet
    try:
        c.expect(220)
        c.expect(250)
        c.expect(250)
    finally:
        c.close()
    assert seen[-1]['proxy'].authority == 'mx.example'
    assert seen[-1]['remote'] == ('192.0.2.9', 1234)


@pytest.mark.parametrize('header', [
    build_proxy_v1(family='UNKNOWN'),
    build_proxy_v2(command='LOCAL'),
])
def test_unknown_and_local_keep_the_socket_addresses(serve, header):
    seen = []
    server = serve(use_proxy=True, middleware=[session_spy(seen)])
    c = connect_with(server, header)
    try:
        c.expect(220)
        c.expect(250, 'NOOP')
        local_port = c.sock.getsockname()[1]
    finally:
        c.close()
    assert seen[0]['remote'] == ('127.0.0.1', local_port)


@pytest.mark.parametrize('data', [
    b'EHLO x\r\n',                                        # no header at all
    b'PROXY TCP4 999.0.2.1 198.51.100.1 1 25\r\n',         # bad address
    b'PROXY TCP4 192.0.2.1 198.51.100.1 1 25' + b' ' * 80 + b'\r\n',   # over 107 bytes
    b'\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd',          # v2 with a short address block
])
def test_malformed_header_closes_only_that_connection(serve, data):
    server = serve(use_proxy=True)
    bad = RawClient(server.address)
    try:
        bad.send(data)
        assert bad.closed() and b'220' not in bad.buf
    finally:
        bad.close()
    good = connect_with(server, build_proxy_v1('192.0.2.1', 1, '192.0.2.2', 25))
    try:
        good.expect(220)
    finally:
        good.close()


def test_missing_header_times_out(serve):
    server = serve(use_proxy=True, upgrade_timeout=0.3)
    c = RawClient(server.address)
    try:
        assert c.closed() and c.buf == b''
    finally:
        c.close()


def test_untrusted_peer_is_served_directly(serve, client):
    seen = []
    server = serve(use_proxy=['192.0.2.0/24'], middleware=[session_spy(seen)])
    c = client(server)                       # no header expected from 127.0.0.1
    c.expect(250, 'NOOP')
    assert seen[0]['proxy'] is None and seen[0]['remote'][0] == '127.0.0.1'
    # and a header it sends is not parsed: it is an unknown command
    assert c.cmd(build_proxy_v1('192.0.2.1', 1, '192.0.2.2', 25).decode().strip())[0] == 500


def test_ignored_hosts_keep_the_proxy_address(serve):
    seen = []
    server = serve(use_proxy=True, ignored_hosts=['127.0.0.1'], middleware=[session_spy(seen)])
    c = connect_with(server, build_proxy_v1('192.0.2.1', 1, '192.0.2.2', 25))
    try:
        c.expect(220)
        c.expect(250, 'NOOP')
    finally:
        c.close()
    assert seen[0]['remote'][0] == '127.0.0.1' and seen[0]['proxy'].source_address == '192.0.2.1'


def test_proxy_header_before_implicit_tls(serve):
    seen = []
    server = serve(use_proxy=True, secure=True, middleware=[session_spy(seen)])
    sock = socket.create_connection(server.address, timeout=WAIT)
    try:
        sock.sendall(build_proxy_v2('192.0.2.10', 5555, '198.51.100.4', 465))
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        tls = ctx.wrap_socket(sock, server_hostname='mx.test')
        smtp_reply = tls.recv(1000)
        tls.sendall(b'NOOP\r\n')
        noop = tls.recv(1000)
        tls.close()
    finally:
        sock.close()
    assert smtp_reply.startswith(b'220') and noop.startswith(b'250')
    assert seen[0]['remote'] == ('192.0.2.10', 5555)


# --- HAProxy ----------------------------------------------------------------------

@pytest.fixture
def haproxy() -> str:
    return peers.program('haproxy', 'haproxy', '/usr/sbin/haproxy')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)     # polling a port HAProxy binds: bounded by the deadline
    raise TimeoutError('haproxy did not start listening')


@pytest.mark.parametrize('send_proxy', ['send-proxy', 'send-proxy-v2'])
def test_through_haproxy(serve, tmp_path, send_proxy, haproxy):
    seen = []
    server = serve(use_proxy=['127.0.0.1'], middleware=[session_spy(seen)])
    front = free_port()
    config = tmp_path / 'haproxy.cfg'
    config.write_text(f"""
global
    maxconn 50
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_in
    bind 127.0.0.1:{front}
    default_backend smtp_stack
backend smtp_stack
    server s1 127.0.0.1:{server.address[1]} {send_proxy}
""")
    proc = subprocess.Popen([haproxy, '-db', '-f', str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(front, proc)
        seen.clear()        # the readiness probe was a (headerful) connection too
        with smtplib.SMTP('127.0.0.1', front, timeout=WAIT) as smtp:
            client_port = smtp.sock.getsockname()[1]
            smtp.sendmail('a@b.example', ['c@d.example'], b'Subject: via haproxy\r\n\r\nhi\r\n')
    finally:
        proc.kill()
        proc.wait(WAIT)
    data = [s for s in seen if s['command'] == 'DATA']
    assert data, seen
    assert data[0]['remote'] == ('127.0.0.1', client_port)
    assert data[0]['local'] == ('127.0.0.1', front)
    assert data[0]['proxy'].version == (2 if send_proxy.endswith('v2') else 1)


# --- XCLIENT ----------------------------------------------------------------------

def test_xclient_rewrites_the_client_and_greets_again(serve, client):
    seen = []
    server = serve(use_xclient=['127.0.0.1'], middleware=[session_spy(seen)],
                   on_auth=lambda session: {'login': session.auth.username}
                   if session.auth.method == 'XCLIENT' else None)
    c = client(server)
    assert any(line.startswith('XCLIENT NAME ADDR') for line in c.expect(250, 'EHLO proxy').split('\n'))
    reply = c.cmd('XCLIENT NAME=client.example ADDR=192.0.2.20 PORT=4242 HELO=orig.example '
                  f'LOGIN={encode_xtext("alice+x@example")}')
    assert reply == (220, 'mx.test ESMTP')
    c.expect(250, 'EHLO proxy')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    last = seen[-1]
    assert last['remote'] == ('192.0.2.20', 4242) and last['host'] == 'client.example'
    assert last['helo'] == 'orig.example'
    assert last['user'] == {'login': 'alice+x@example'}
    assert last['xclient']['ADDR'] == '192.0.2.20'


def test_xclient_ipv6_and_unavailable(serve, client):
    seen = []
    server = serve(use_xclient=True, middleware=[session_spy(seen)])
    c = client(server)
    c.expect(220, 'XCLIENT ADDR=IPV6:2001:db8::5 NAME=[UNAVAILABLE]')
    c.expect(250, 'NOOP')
    assert seen[-1]['remote'][0] == '2001:db8::5' and seen[-1]['host'] == '[2001:db8::5]'


@pytest.mark.parametrize('line, code', [
    ('XCLIENT', 501),
    ('XCLIENT FOO=bar', 501),
    ('XCLIENT ADDR=1.2.3.4 ADDR=1.2.3.5', 501),
    ('XCLIENT ADDR=not-an-ip', 501),
    ('XCLIENT NAME=a+zz', 501),
    ('XCLIENT PORT=70000', 501),
])
def test_xclient_syntax_errors(serve, client, line, code):
    c = client(serve(use_xclient=True))
    assert c.cmd(line)[0] == code


def test_xclient_refused_for_untrusted_peers_and_inside_a_transaction(serve, client):
    c = client(serve(use_xclient=['192.0.2.0/24']))
    assert not any(line.startswith('XCLIENT') for line in c.expect(250, 'EHLO x').split('\n'))
    assert c.cmd('XCLIENT ADDR=192.0.2.1') == (550, '5.7.0 Error: insufficient authorization')
    c2 = client(serve(use_xclient=True))
    c2.expect(250, 'EHLO x')
    c2.expect(250, 'MAIL FROM:<a@b.example>')
    assert c2.cmd('XCLIENT ADDR=192.0.2.1')[0] == 503


def test_swaks_xclient(serve):
    swaks = peers.program('swaks', 'swaks')
    seen = []
    server = serve(use_xclient=True, middleware=[session_spy(seen)])
    result = subprocess.run(
        [swaks, '--server', '127.0.0.1', '--port', str(server.address[1]), '--timeout', '10',
         '--from', 'a@b.example', '--to', 'c@d.example',
         '--xclient-addr', '192.0.2.33', '--xclient-name', 'swaks.example'],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    data = [s for s in seen if s['command'] == 'DATA']
    assert data and data[0]['remote'][0] == '192.0.2.33' and data[0]['host'] == 'swaks.example'


# --- XFORWARD ---------------------------------------------------------------------

def test_xforward_records_the_original_client_per_message(serve, client):
    seen = []
    server = serve(use_xforward=True, middleware=[session_spy(seen)])
    c = client(server)
    assert any(line.startswith('XFORWARD NAME ADDR') for line in c.expect(250, 'EHLO x').split('\n'))
    c.expect(250, 'XFORWARD NAME=orig.example ADDR=192.0.2.40')
    c.expect(250, 'XFORWARD PORT=25 PROTO=ESMTP HELO=orig SOURCE=REMOTE IDENT=abc')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('XFORWARD ADDR=192.0.2.41')[0] == 503
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'x\r\n.\r\n')
    c.expect(250)
    data = [s for s in seen if s['command'] == 'DATA'][0]
    assert data['xforward'] == {'NAME': 'orig.example', 'ADDR': '192.0.2.40', 'PORT': '25',
                                'PROTO': 'ESMTP', 'HELO': 'orig', 'SOURCE': 'REMOTE', 'IDENT': 'abc'}
    assert data['remote'][0] == '127.0.0.1'       # XFORWARD does not replace the connection
    c.expect(250, 'NOOP')
    assert seen[-1]['xforward'] == {}             # reset after the message


def test_xforward_refused_for_untrusted_peers(serve, client):
    c = client(serve())
    assert c.cmd('XFORWARD ADDR=192.0.2.1')[0] == 550


def test_per_ip_limit_counts_the_client_behind_the_proxy(serve):
    server = serve(use_proxy=True, max_connections_per_ip=1)
    one = connect_with(server, build_proxy_v1('192.0.2.50', 1000, '198.51.100.1', 25))
    two = connect_with(server, build_proxy_v1('192.0.2.51', 1001, '198.51.100.1', 25))
    again = connect_with(server, build_proxy_v1('192.0.2.50', 1002, '198.51.100.1', 25))
    try:
        one.expect(220)
        two.expect(220)            # another client behind the same proxy
        assert again.reply()[0] == 421
    finally:
        for c in (one, two, again):
            c.close()


def test_xclient_without_login_forgets_the_proxys_login(serve, client):
    """The login before XCLIENT was the proxy's own: without LOGIN= (or
    with [UNAVAILABLE]) the new client is not logged in, and may AUTH."""
    seen = []
    server = serve(use_xclient=['127.0.0.1'], middleware=[session_spy(seen)],
                   allow_insecure_auth=True,
                   on_auth=lambda session: {'login': session.auth.username})
    c = client(server)
    c.expect(250, 'EHLO proxy')
    c.expect(235, 'AUTH PLAIN ' + base64.b64encode(b'\0proxy\0pw').decode())
    c.expect(250, 'NOOP')
    assert seen[-1]['user'] == {'login': 'proxy'}
    c.expect(220, 'XCLIENT ADDR=192.0.2.20')
    c.expect(250, 'EHLO client.example')
    c.expect(250, 'NOOP')
    assert seen[-1]['user'] is None and seen[-1]['auth'] is None
    c.expect(235, 'AUTH PLAIN ' + base64.b64encode(b'\0ann\0pw').decode())
    c.expect(220, 'XCLIENT LOGIN=bob')
    c.expect(250, 'EHLO client.example')
    c.expect(250, 'NOOP')
    assert seen[-1]['user'] == {'login': 'bob'}
    c.expect(220, 'XCLIENT LOGIN=[UNAVAILABLE]')
    c.expect(250, 'EHLO client.example')
    c.expect(250, 'NOOP')
    assert seen[-1]['user'] is None and seen[-1]['auth'] is None


def test_on_auth_for_xclient_login_sees_the_new_clients_address(serve, client):
    seen = []
    server = serve(use_xclient=['127.0.0.1'],
                   on_auth=lambda session: seen.append(
                       (session.remote_address, session.client_hostname)) or 'ok')
    c = client(server)
    c.expect(250, 'EHLO proxy')
    c.expect(220, 'XCLIENT NAME=client.example ADDR=192.0.2.20 LOGIN=bob')
    assert seen == [('192.0.2.20', 'client.example')]


def test_an_xclient_that_on_auth_refuses_changes_nothing(serve, client):
    """on_auth refusing LOGIN= refuses the command: the session stays the
    proxy's (address, name, attributes, login, greeting)."""
    from smtp_stack import SmtpError

    def on_auth(session):
        if session.auth.method == 'XCLIENT':
            raise SmtpError(535, 'no such user here', '5.7.8')
        return session.auth.username

    seen = []
    server = serve(use_xclient=['127.0.0.1'], middleware=[session_spy(seen)],
                   allow_insecure_auth=True, on_auth=on_auth)
    c = client(server)
    c.expect(250, 'EHLO proxy')
    c.expect(235, 'AUTH PLAIN ' + base64.b64encode(b'\0proxy\0pw').decode())
    c.expect(250, 'NOOP')
    was = dict(seen[-1], command=None)
    assert c.cmd('XCLIENT ADDR=192.0.2.20 NAME=client.example LOGIN=bob')[0] == 535
    c.expect(250, 'NOOP')
    assert dict(seen[-1], command=None) == was
    c.expect(250, 'MAIL FROM:<a@b.example>')      # still greeted: no second EHLO needed
