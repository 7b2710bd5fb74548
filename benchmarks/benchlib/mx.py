"""The world of the MX scenarios (`mx`, `mx-conn`): what an inbound MX's
policy stack talks to, made private to one run.

- a redis-server on a free loopback port, no persistence: the greylist and
  rate-limit state of every server (emptied before each measurement, so
  every server starts from the same state and primes it the same way);
- a dnsmasq on a free loopback port, authoritative for the names the
  checks ask (`zone_config`): the DNSBL zone (only RFC 5782's test entry
  127.0.0.2 listed), and the sending domain's SPF, DKIM key and DMARC
  records; every other name is refused, so nothing leaves the machine;
- a 2048-bit RSA test key made for the run, whose public half dnsmasq
  serves, and one message signed with it by dkimpy before the run
  (`signed_message`): every session sends those same bytes; the envelope
  (client address, sender, recipient) varies as the client's plan says.

Both daemons run in sessions of their own, are recorded in procs.LIVE and
are stopped by their pid (procs.stop_group) when the run ends. The key,
the message and the dnsmasq configuration live in a temporary directory
that is removed with them: nothing of it is kept or committed.
"""

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from email.utils import formatdate

from . import procs

LOCAL_DOMAIN = 'bench.example'          # the domain the MX receives for
SIGNING_DOMAIN = 'sender.example'       # the sender's: SPF, DKIM d=, DMARC
SELECTOR = 'bench'
HELO_NAME = f'mail.{SIGNING_DOMAIN}'
DNSBL_ZONE = f'bl.{LOCAL_DOMAIN}'
# RFC 2544's benchmarking block: public for every server's checks (Haraka's
# skip private, documentation and loopback addresses), routed nowhere.
CLIENT_NETWORK = '198.18.0.0/15'
# Listed in the DNSBL: never one of the client's plan (those end in .7);
# the client tries one message as it, so a DNSBL check that is off shows.
LISTED_CLIENT = '198.19.255.200'
MESSAGE_SIZE = 4096
# The answers' TTL: a real zone's records live minutes to hours, and an MX
# asks a local caching resolver; a server that caches answers may use them.
RECORD_TTL = 300
SIGNED_HEADERS = (b'from', b'to', b'subject', b'date', b'message-id', b'mime-version',
                  b'content-type')


def txt_strings(value: str, limit: int = 255) -> list:
    """A TXT value as the character-strings of one record (RFC 1035 3.3.14:
    at most 255 octets each; a DKIM key record is longer)."""
    return [value[i:i + limit] for i in range(0, len(value), limit)] or ['']


def dkim_key_record(public_der: bytes) -> str:
    """The TXT value publishing an RSA public key (RFC 6376 3.6.1)."""
    return 'v=DKIM1; k=rsa; p=' + base64.b64encode(public_der).decode('ascii')


def reversed_name(ipv4: str) -> str:
    """1.2.3.4 -> 4.3.2.1, the DNSBL query's labels (RFC 5782 2.1)."""
    return '.'.join(reversed(ipv4.split('.')))


def zone_records(public_der: bytes) -> dict:
    """{name: TXT value} the checks ask for: SPF of the MAIL FROM domain and
    of the HELO name (RFC 7208 2.3), the DKIM key, the DMARC policy."""
    spf = f'v=spf1 ip4:{CLIENT_NETWORK} -all'
    return {
        SIGNING_DOMAIN: spf,
        HELO_NAME: spf,
        f'{SELECTOR}._domainkey.{SIGNING_DOMAIN}': dkim_key_record(public_der),
        f'_dmarc.{SIGNING_DOMAIN}': 'v=DMARC1; p=reject',
    }


def zone_config(public_der: bytes, ttl: int = RECORD_TTL) -> str:
    """dnsmasq's configuration: answer only from this file (no upstream, no
    /etc/hosts), authoritative for the two domains (other names in them are
    NXDOMAIN), and list 127.0.0.2 in the DNSBL as RFC 5782 5 asks (Haraka's
    dns-list tests each zone with it and disables a zone that fails), and
    LISTED_CLIENT."""
    lines = ['no-resolv', 'no-hosts', f'local-ttl={ttl}',
             f'local=/{SIGNING_DOMAIN}/', f'local=/{LOCAL_DOMAIN}/',
             f'host-record=2.0.0.127.{DNSBL_ZONE},127.0.0.2',
             f'txt-record=2.0.0.127.{DNSBL_ZONE},"RFC 5782 test entry"',
             f'host-record={reversed_name(LISTED_CLIENT)}.{DNSBL_ZONE},127.0.0.2',
             f'txt-record={reversed_name(LISTED_CLIENT)}.{DNSBL_ZONE},"listed for the benchmark"']
    for name, value in zone_records(public_der).items():
        lines.append(f'txt-record={name},' + ','.join(f'"{s}"' for s in txt_strings(value)))
    return '\n'.join(lines) + '\n'


def make_key() -> tuple:
    """A fresh RSA-2048 test key: (private PEM, public DER)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def unsigned_message(body_size: int, date: str | None = None) -> bytes:
    """A plain-text message with `body_size` bytes of 76-column lines."""
    head = (f'From: Bench News <news@{SIGNING_DOMAIN}>\r\n'
            f'To: <user@{LOCAL_DOMAIN}>\r\n'
            'Subject: The weekly benchmark letter\r\n'
            f'Date: {date or formatdate(usegmt=True)}\r\n'
            f'Message-ID: <weekly.1@{SIGNING_DOMAIN}>\r\n'
            'MIME-Version: 1.0\r\n'
            'Content-Type: text/plain; charset=utf-8\r\n\r\n').encode()
    line = b'The quick brown fox jumps over the lazy dog, and the dog minds it not. 0123\r\n'
    body = (line * (body_size // len(line) + 1))[:max(body_size - 2, 0)] + b'\r\n'
    return head + body


def signed_message(private_pem: bytes, size: int = MESSAGE_SIZE) -> bytes:
    """`unsigned_message` signed by dkimpy (rsa-sha256, relaxed/relaxed, as
    the large senders sign) with its body sized so that the whole signed
    message is `size` bytes."""
    import dkim
    date = formatdate(usegmt=True)

    def sign(message):
        return dkim.sign(message, SELECTOR.encode(), SIGNING_DOMAIN.encode(), private_pem,
                         canonicalize=(b'relaxed', b'relaxed'),
                         include_headers=list(SIGNED_HEADERS)) + message
    overhead = len(sign(unsigned_message(2, date))) - 2
    return sign(unsigned_message(max(size - overhead, 2), date))


def program_path(name: str) -> str:
    """A daemon's path: /usr/sbin (dnsmasq's place) may be off a user's PATH."""
    return shutil.which(name) or next(
        (p for p in (f'/usr/sbin/{name}', f'/usr/bin/{name}') if os.access(p, os.X_OK)), name)


class MxWorld:
    """redis-server and dnsmasq for one run, the key and the signed message.

    `env` is what the servers and the client are given: the Redis and DNS
    addresses, the message file. Use as a context manager."""

    def __init__(self, root: str | None = None):
        self.dir = tempfile.mkdtemp(prefix='bench-mx-', dir=root)
        self.redis_port = procs.free_port()
        self.dns_port = procs.free_port_udp_tcp()
        self.redis = self.dnsmasq = None
        self.logs = []
        self.env = {}

    def __enter__(self):
        try:
            private, public = make_key()
            message_path = os.path.join(self.dir, 'message.eml')
            with open(message_path, 'wb') as f:
                f.write(signed_message(private))
            conf = os.path.join(self.dir, 'dnsmasq.conf')
            with open(conf, 'w') as f:
                f.write(zone_config(public))
            self.redis = self._spawn('redis', [
                program_path('redis-server'), '--port', str(self.redis_port),
                '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', self.dir])
            self.dnsmasq = self._spawn('dnsmasq', [
                program_path('dnsmasq'), '--keep-in-foreground', f'--conf-file={conf}',
                f'--port={self.dns_port}', '--listen-address=127.0.0.1', '--bind-interfaces',
                '--pid-file=', '--log-facility=-'] + (['--user=nobody'] if os.geteuid() == 0
                                                       else []))
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.env = {'redis': f'127.0.0.1:{self.redis_port}',
                    'dns': f'127.0.0.1:{self.dns_port}',
                    'message': message_path}
        return self

    def _spawn(self, name: str, cmd: list) -> subprocess.Popen:
        log = open(os.path.join(self.dir, f'{name}.log'), 'wb')
        self.logs.append(log)
        return procs.spawn(cmd, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc, name in ((self.redis, 'redis-server'), (self.dnsmasq, 'dnsmasq')):
                if proc.poll() is not None:
                    log = os.path.join(self.dir, f'{name.split("-")[0]}.log')
                    raise RuntimeError(f'{name} exited with code {proc.returncode}: '
                                       + procs.tail(log, 2))
            try:
                self.redis_command(b'PING')
                if dns_answers(self.dns_port, f'{SELECTOR}._domainkey.{SIGNING_DOMAIN}'):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f'redis-server or dnsmasq not ready after {timeout:.0f} s')
            time.sleep(0.05)

    def redis_command(self, *words: bytes) -> bytes:
        """One command in RESP; returns the first line of the reply."""
        packed = b'*%d\r\n' % len(words) + b''.join(b'$%d\r\n%s\r\n' % (len(w), w)
                                                     for w in words)
        with socket.create_connection(('127.0.0.1', self.redis_port), timeout=5) as s:
            s.sendall(packed)
            reply = b''
            while not reply.endswith(b'\r\n'):
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError('redis closed the connection')
                reply += chunk
        if reply.startswith(b'-'):
            raise OSError(f'redis: {reply.strip().decode(errors="replace")}')
        return reply.strip()

    def reset(self) -> None:
        """Empty every Redis database: each measurement starts unprimed."""
        self.redis_command(b'FLUSHALL')

    def helpers_cpu(self) -> float:
        """CPU seconds redis-server and dnsmasq used so far (the work a
        server makes them do is part of its cost)."""
        return sum(procs.group_cpu_seconds(p.pid) for p in (self.redis, self.dnsmasq) if p)

    def versions(self) -> str:
        out = []
        for cmd in ([program_path('redis-server'), '--version'],
                    [program_path('dnsmasq'), '--version']):
            try:
                first = subprocess.run(cmd, capture_output=True, text=True,
                                       timeout=20).stdout.splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                continue
            out.append(' '.join(first.split()[:3]))
        return ', '.join(out)

    def __exit__(self, *exc):
        for proc in (self.dnsmasq, self.redis):
            if proc is not None:
                procs.stop_group(proc, grace=3.0)
        for log in self.logs:
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def dns_answers(port: int, name: str, timeout: float = 1.0) -> bool:
    """Whether the DNS server on 127.0.0.1:`port` answers a TXT query for
    `name` with at least one record (a hand-made query: the harness needs
    no DNS library)."""
    query = (b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00'
             + b''.join(bytes([len(label)]) + label.encode() for label in name.split('.'))
             + b'\x00\x00\x10\x00\x01')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, ('127.0.0.1', port))
        try:
            reply = s.recv(4096)
        except TimeoutError:
            return False
    return (len(reply) >= 12 and reply[:2] == b'\x12\x34' and reply[3] & 0x0F == 0
            and int.from_bytes(reply[6:8], 'big') > 0)
