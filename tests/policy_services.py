"""Real services for the policy tests: dnsmasq serving a generated zone and
redis-server, each on a free loopback port, started by the tests and
stopped by their PID. Nothing here mocks DNS or Redis.

The zone (`Zone`) is written as dnsmasq configuration lines: TXT for SPF,
DKIM keys (generated at test time, never stored) and DMARC; A/AAAA/MX for
SPF's a and mx mechanisms; A and TXT entries for DNSBL zones, IPv4 and
IPv6 (nibble) names. Only .test names (RFC 6761) and documentation
addresses appear, and nothing connects to those addresses.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import gevent
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtp_stack import LogLevels, SmtpServer
from smtp_stack.testing import ServerThread

from peers import missing, program

WAIT = 10.0


def require(name: str, fallback: str, package: str) -> str:
    """The path of a service's binary (peers.program: skipped on a
    developer's machine without it, failed in CI, which installs it)."""
    return program(name, package, fallback)


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(('127.0.0.1', 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(('127.0.0.1', port))
                except OSError:
                    continue
            return port
    raise RuntimeError('no free port')


def wait_for(predicate, timeout: float = WAIT, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'{predicate} did not become true in {timeout} s')
        time.sleep(step)


class HubPauses:
    """A greenlet that ticks every 10 ms while the code under test runs:
    `longest` is the longest time it waited, so how long the hub stopped."""

    def __init__(self):
        self.longest = 0.0
        self._ticker = None

    def start(self):
        self._ticker = gevent.spawn(self._tick)
        gevent.sleep(0.02)          # it runs before the code under test does
        return self

    def _tick(self) -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def stop(self) -> None:
        self._ticker.kill()


def stop_pid(proc: subprocess.Popen, grace: float = WAIT) -> None:
    """SIGTERM to the process we started, SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)


# -- keys -----------------------------------------------------------------------

class RsaKey:
    def __init__(self, bits: int = 1024):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption())
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_b64 = base64.b64encode(der).decode()

    def record(self) -> str:
        return f'v=DKIM1; k=rsa; p={self.public_b64}'


class Ed25519Key:
    def __init__(self):
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        self.private_b64 = base64.b64encode(seed)       # the form dkimpy signs with
        self.public_b64 = base64.b64encode(raw).decode()

    def record(self) -> str:
        return f'v=DKIM1; k=ed25519; p={self.public_b64}'


# -- the zone --------------------------------------------------------------------

class Zone:
    """dnsmasq lines for a test zone; `txt`, `host`, `mx` add records."""

    def __init__(self):
        self.lines = []

    def txt(self, name: str, text: str) -> None:
        # dnsmasq: each quoted string is one <character-string> (255 bytes at most)
        parts = [text[i:i + 250] for i in range(0, len(text), 250)] or ['']
        quoted = ','.join('"' + p.replace('\\', '\\\\').replace('"', '\\"') + '"' for p in parts)
        self.lines.append(f'txt-record={name},{quoted}')

    def host(self, name: str, *addresses: str) -> None:
        self.lines.append(f'host-record={name},{",".join(addresses)}')

    def mx(self, name: str, target: str, preference: int = 10) -> None:
        self.lines.append(f'mx-host={name},{target},{preference}')

    def cname(self, name: str, target: str) -> None:
        self.lines.append(f'cname={name},{target}')


class DnsServer:
    """dnsmasq on 127.0.0.1:port, authoritative-only for .test and .arpa
    (--local: unknown names are NXDOMAIN, nothing is forwarded anywhere)."""

    def __init__(self, zone: Zone, workdir: str, ttl: int = 60):
        self.port = free_port()
        conf = os.path.join(workdir, 'dnsmasq.conf')
        with open(conf, 'w') as f:
            f.write('\n'.join(zone.lines) + '\n')
        binary = require('dnsmasq', '/usr/sbin/dnsmasq', 'dnsmasq-base')
        self.proc = subprocess.Popen(
            [binary, '--keep-in-foreground', '--conf-file=' + conf, '--no-resolv', '--no-hosts',
             '--no-poll', '--bind-interfaces', '--listen-address=127.0.0.1,::1',
             f'--port={self.port}', '--pid-file=', '--user=root', '--group=root',
             '--local=/test/', '--local=/arpa/', f'--local-ttl={ttl}', '--cache-size=0',
             '--log-facility=' + os.path.join(workdir, 'dnsmasq.log')],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._answers)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError('dnsmasq exited: ' + self.proc.stderr.read().decode())
        import dns.message
        import dns.query
        q = dns.message.make_query('ready.test', 'A')
        dns.query.udp(q, '127.0.0.1', timeout=0.5, port=self.port)
        return True

    def stop(self) -> None:
        stop_pid(self.proc)


class RedisTls:
    """Certificates made at test time for a TLS redis-server, in `workdir`:
    a CA, the server's (for the name localhost) and a client's, each as
    files (`ca`, `cert`, `key`, `client_cert`, `client_key`)."""

    def __init__(self, workdir: str):
        from cryptography.x509.oid import ExtendedKeyUsageOID
        from test_tls import issue, make_ca
        authority = make_ca('smtp_stack test Redis CA')
        self.ca = self._write(workdir, 'redis-ca.pem', authority[2])
        self.key, self.cert = (self._write(workdir, f'redis-server.{kind}', pem) for kind, pem in
                               zip(('key', 'pem'), issue(authority, 'localhost',
                                                         ExtendedKeyUsageOID.SERVER_AUTH),
                                   strict=True))
        self.client_key, self.client_cert = (
            self._write(workdir, f'redis-client.{kind}', pem)
            for kind, pem in zip(('key', 'pem'), issue(authority, 'smtp-stack'), strict=True))

    @staticmethod
    def _write(workdir: str, name: str, pem: bytes) -> str:
        path = os.path.join(workdir, name)
        with open(path, 'wb') as f:
            f.write(pem)
        return path


class RedisServer:
    """redis-server on loopback, no persistence; `restart()` keeps the address.

    By default on 127.0.0.1:port. `unix=True`: on a socket file in `workdir`
    only (`unixsocket`, `port 0`). `tls=RedisTls(...)`: TLS only (`tls-port`,
    `port 0`, on 127.0.0.1 and ::1 for the name localhost), asking for a
    client certificate when `client_certs`."""

    def __init__(self, workdir: str, unix: bool = False, tls: RedisTls | None = None,
                 client_certs: bool = False):
        self.workdir = workdir
        self.socket = os.path.join(workdir, 'redis.sock') if unix else None
        self.tls = tls
        self.client_certs = client_certs
        self.port = None if unix else free_port()
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        if self.socket:
            return f'unix://{self.socket}?db=0'
        if self.tls:
            return f'rediss://localhost:{self.port}/0?ssl_ca_certs={self.tls.ca}'
        return f'redis://127.0.0.1:{self.port}/0'

    def _listen(self) -> list:
        if self.socket:
            return ['--port', '0', '--unixsocket', self.socket, '--unixsocketperm', '700']
        if self.tls:
            return ['--port', '0', '--tls-port', str(self.port), '--bind', '127.0.0.1', '-::1',
                    '--tls-cert-file', self.tls.cert, '--tls-key-file', self.tls.key,
                    '--tls-ca-cert-file', self.tls.ca,
                    '--tls-auth-clients', 'yes' if self.client_certs else 'no']
        return ['--port', str(self.port), '--bind', '127.0.0.1']

    def start(self) -> None:
        binary = require('redis-server', '/usr/bin/redis-server', 'redis-server')
        self.proc = subprocess.Popen(
            [binary, *self._listen(), '--save', '', '--appendonly', 'no', '--dir', self.workdir,
             '--daemonize', 'no', '--protected-mode', 'no', '--loglevel', 'warning'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.proc.poll() is not None or self.ping())
        if self.proc.poll() is not None:
            error = self.proc.stderr.read().decode(errors='replace')
            if self.tls and 'tls' in error.lower():
                self._no_tls(error)
            raise RuntimeError(f'redis-server exited: {error}')

    @staticmethod
    def _no_tls(error: str) -> None:
        """A redis-server built without TLS (BUILD_TLS=no). Debian's package
        (.ci/apt-packages) has it, so CI fails; elsewhere the test is skipped."""
        missing(f'a redis-server built with TLS ({error.strip().splitlines()[-1]})',
                'redis-server')

    def _connect(self):
        if self.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(1)
            sock.connect(self.socket)
            return sock
        sock = socket.create_connection(('127.0.0.1', self.port), timeout=1)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=self.tls.ca)
        if self.client_certs:
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context.wrap_socket(sock, server_hostname='localhost')

    def ping(self) -> bool:
        with self._connect() as s:
            s.sendall(b'PING\r\n')
            return s.recv(16).startswith(b'+PONG')

    def stop(self) -> None:
        stop_pid(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


# -- the test zone shared by the policy tests ----------------------------------------

SPF_RECORDS = {
    'example.test': 'v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all',
    'softfail.test': 'v=spf1 ~all',
    'neutral.test': 'v=spf1 ?all',
    'amx.test': 'v=spf1 a mx -all',
    'redirect.test': 'v=spf1 redirect=example.test',
    'macro.test': 'v=spf1 exists:%{i}.allow.macro.test -all',
    'toomany.test': 'v=spf1 ' + ' '.join(f'include:l{i}.test' for i in range(11)) + ' -all',
    'void.test': 'v=spf1 a:nx1.test a:nx2.test a:nx3.test -all',
    'dkimonly.test': 'v=spf1 -all',
    'strict.test': 'v=spf1 ip4:192.0.2.0/24 -all',
    'none-policy.test': 'v=spf1 -all',
    'helo.example.test': 'v=spf1 ip4:192.0.2.0/24 -all',
}
DMARC_RECORDS = {
    'example.test': 'v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test',
    'dkimonly.test': 'v=DMARC1; p=reject',
    'strict.test': 'v=DMARC1; p=reject; adkim=s; aspf=s',
    'none-policy.test': 'v=DMARC1; p=none',
    'halfpct.test': 'v=DMARC1; p=reject; pct=0',
}
LISTED_V4 = '192.0.2.99'
LISTED_V6 = '2001:db8::99'
# Return codes as a list answers them (client -> A records), for the code
# filters and weights: zen.test answers as Spamhaus ZEN does (2 SBL, 4 XBL,
# 10 and 11 PBL, 127.255.255.x errors about the query), wl.test as an
# allow-list (DNSWL: 127.0.x.y) and bl2.test as above.
DNSBL_CODES = {
    'zen.test': {'192.0.2.110': ['127.0.0.2'], '192.0.2.111': ['127.0.0.10'],
                 '192.0.2.112': ['127.0.0.4', '127.0.0.11'], '192.0.2.113': ['127.255.255.254'],
                 '192.0.2.114': ['127.255.255.255'], '192.0.2.115': ['127.0.0.20'],
                 '192.0.2.116': ['127.0.0.10'], '192.0.2.120': ['127.0.0.2']},
    'wl.test': {'192.0.2.120': ['127.0.10.2'], '192.0.2.121': ['127.0.10.0']},
    'bl2.test': {'192.0.2.116': ['127.0.0.2']},
}


class Keys:
    """DKIM keys made for this test run: published (rsa1, ed1, wrong: a key
    other than the one we sign with) and used by the tests to sign."""

    def __init__(self):
        self.rsa = RsaKey()
        self.ed = Ed25519Key()
        self.other = RsaKey()
        self.opendkim = RsaKey()     # OpenDKIM signs with it, as selector odk


def build_zone(keys: Keys) -> Zone:
    zone = Zone()
    zone.host('ready.test', '192.0.2.1')
    for name, text in SPF_RECORDS.items():
        zone.txt(name, text)
    for i in range(11):
        zone.txt(f'l{i}.test', 'v=spf1 ip4:203.0.113.250 ?all')
    zone.host('amx.test', '192.0.2.20')
    zone.mx('amx.test', 'mail.amx.test')
    zone.host('mail.amx.test', '192.0.2.21', '2001:db8::21')
    zone.host('192.0.2.55.allow.macro.test', '127.0.0.2')
    zone.host('nospf.test', '192.0.2.30')
    for name, text in DMARC_RECORDS.items():
        zone.txt(f'_dmarc.{name}', text)
    for domain in ('example.test', 'dkimonly.test', 'strict.test', 'none-policy.test',
                   'sub.example.test', 'other.test', 'halfpct.test'):
        zone.txt(f'rsa1._domainkey.{domain}', keys.rsa.record())
        zone.txt(f'ed1._domainkey.{domain}', keys.ed.record())
        zone.txt(f'wrong._domainkey.{domain}', keys.other.record())
    zone.txt('odk._domainkey.example.test', keys.opendkim.record())
    # DNSBLs: bl.test lists LISTED_V4 and LISTED_V6 with reasons, bl2.test LISTED_V4,
    # junk.test answers outside 127/8 (which is no listing)
    from smtp_stack.policies.dnsbl import query_name
    for zone_name in ('bl.test', 'bl2.test'):
        zone.host(query_name(LISTED_V4, zone_name), '127.0.0.2')
        zone.txt(query_name(LISTED_V4, zone_name), f'{LISTED_V4} is listed in {zone_name}')
    zone.host(query_name(LISTED_V6, 'bl.test'), '127.0.0.4')
    zone.txt(query_name(LISTED_V6, 'bl.test'), 'IPv6 listing')
    zone.host(query_name(LISTED_V4, 'junk.test'), '10.0.0.1')
    zone.host(query_name('192.0.2.98', 'bl2.test'), '127.0.0.3')
    for zone_name, answers in DNSBL_CODES.items():
        for client, codes in answers.items():
            for code in codes:      # one line each: dnsmasq keeps one IPv4 address a line
                zone.host(query_name(client, zone_name), code)
    return zone


# -- OpenDKIM, a second and independent signer ------------------------------------------

MILTER_SCRIPT = """
local function check(what, result)
  if result ~= nil then error(what .. " failed: " .. tostring(result)) end
end
conn = mt.connect("inet:%(port)d@127.0.0.1", 40, 0.25)
if conn == nil then error("cannot connect") end
check("conninfo", mt.conninfo(conn, "localhost", "127.0.0.1"))
mt.macro(conn, SMFIC_MAIL, "i", "test-id")
check("mailfrom", mt.mailfrom(conn, "<%(sender)s>"))
check("rcptto", mt.rcptto(conn, "<bob@mx.test>"))
%(headers)s
check("eoh", mt.eoh(conn))
check("body", mt.bodystring(conn, %(body)s))
check("eom", mt.eom(conn))
io.stdout:write(mt.getheader(conn, "DKIM-Signature", 0))
mt.disconnect(conn)
"""


def lua_string(text: str) -> str:
    return '"' + ''.join(c if c.isalnum() or c in ' .,:;<>@=+-_/()' else f'\\{ord(c):03d}'
                         for c in text) + '"'


class OpenDkim:
    """The opendkim milter on 127.0.0.1:port signing for example.test with
    selector odk; `sign(headers, body)` runs a message through it with
    miltertest and returns the DKIM-Signature field it added, as bytes."""

    def __init__(self, key: RsaKey, workdir: str):
        self.workdir = workdir
        self.port = free_port()
        keyfile = os.path.join(workdir, 'odk.pem')
        with open(keyfile, 'wb') as f:
            f.write(key.private_pem)
        conf = os.path.join(workdir, 'opendkim.conf')
        with open(conf, 'w') as f:
            f.write(f'Mode s\nDomain example.test\nSelector odk\nKeyFile {keyfile}\n'
                    'SignatureAlgorithm rsa-sha256\nCanonicalization relaxed/simple\n'
                    'Syslog no\nRequireSafeKeys false\nBackground no\n'
                    f'Socket inet:{self.port}@127.0.0.1\nInternalHosts 127.0.0.1\n')
        binary = shutil.which('opendkim') or '/usr/sbin/opendkim'
        self.proc = subprocess.Popen([binary, '-f', '-x', conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._listening)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError('opendkim exited: ' + self.proc.stderr.read().decode())
        with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
            return True

    def sign(self, headers: list, body: str, sender: str = 'alice@example.test') -> bytes:
        lines = '\n'.join(f'check({lua_string(n)}, mt.header(conn, {lua_string(n)}, '
                          f'{lua_string(v)}))' for n, v in headers)
        script = os.path.join(self.workdir, 'sign.lua')
        with open(script, 'w') as f:
            f.write(MILTER_SCRIPT % {'port': self.port, 'sender': sender, 'headers': lines,
                                     'body': lua_string(body)})
        out = subprocess.run([shutil.which('miltertest') or '/usr/bin/miltertest', '-s', script],
                             capture_output=True, timeout=WAIT)
        if out.returncode != 0:
            raise RuntimeError(f'miltertest: {out.stderr.decode()}')
        value = out.stdout.decode().replace('\r\n', '\n').replace('\n', '\r\n')
        return b'DKIM-Signature:' + value.encode() + b'\r\n'

    def stop(self) -> None:
        stop_pid(self.proc, grace=0.5)     # it lingers for seconds after SIGTERM


# -- the fixtures the policy test modules share (imported by name there) --------------

@pytest.fixture(scope='module')
def keys():
    return Keys()


@pytest.fixture(scope='module')
def dns_server(tmp_path_factory, keys):
    server = DnsServer(build_zone(keys), str(tmp_path_factory.mktemp('dns')))
    yield server
    server.stop()


@pytest.fixture(scope='module')
def redis_server(tmp_path_factory):
    server = RedisServer(str(tmp_path_factory.mktemp('redis')))
    yield server
    server.stop()


@pytest.fixture(scope='module')
def redis_unix_server(tmp_path_factory):
    server = RedisServer(str(tmp_path_factory.mktemp('redis-unix')), unix=True)
    yield server
    server.stop()


@pytest.fixture(scope='module')
def redis_tls(tmp_path_factory):
    return RedisTls(str(tmp_path_factory.mktemp('redis-tls-files')))


@pytest.fixture(scope='module')
def redis_tls_server(tmp_path_factory, redis_tls):
    server = RedisServer(str(tmp_path_factory.mktemp('redis-tls')), tls=redis_tls)
    yield server
    server.stop()


@pytest.fixture
def resolver(dns_server):
    from smtp_stack.policies import Resolver
    return Resolver(['127.0.0.1'], port=dns_server.port, timeout=2.0)


# -- SMTP servers running policies, and clients that take any address -----------------

@pytest.fixture
def serve():
    """`serve(*middleware, **options)`: a server on 127.0.0.1 running the
    policies, XCLIENT allowed (so a client may be any address), stopped
    after the test."""
    running = []

    def start(*middleware, **options):
        options.setdefault('name', 'mx.test')
        options.setdefault('disable_reverse_lookup', True)
        options.setdefault('log_level', LogLevels.WARN)
        options.setdefault('use_xclient', True)
        server = SmtpServer(**options)
        for fn in middleware:
            server.use(fn)
        server.use(accept_data)
        running.append(ServerThread(server).start())
        return server

    yield start
    for runner in running:
        runner.stop(timeout=2)


def accept_data(ctx, next):
    next()
    if ctx.command_name == 'DATA' and ctx.session.envelope.data_stream is not None:
        ctx.session.envelope.data_stream.read()


def connect(server, ip, helo='mail.example.test', login=None) -> smtplib.SMTP:
    """An SMTP client that the server takes for `ip` (XCLIENT)."""
    client = smtplib.SMTP(*server.address, timeout=10)
    client.ehlo('proxy.test')
    addr = f'IPV6:{ip}' if ':' in ip else ip
    attrs = f'ADDR={addr} NAME=[UNAVAILABLE] HELO={helo}'
    if login:
        attrs += f' LOGIN={login}'
    code, _ = client.docmd('XCLIENT', attrs)
    assert code == 220
    client.ehlo_resp = None
    client.ehlo(helo)
    return client


def rcpt(server, ip, sender, recipient, **kw):
    """The reply to RCPT TO:<recipient> of a client at `ip`, in a session of its own."""
    client = connect(server, ip, **kw)
    try:
        code, _ = client.mail(sender)
        assert code == 250
        return client.rcpt(recipient)
    finally:
        client.close()
