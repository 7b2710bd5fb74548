"""The relay's SMTP/LMTP client: `Upstream`, and what it says upstream.

The protocol client is `smtplib.SMTP`, but its socket comes from
`gevent.socket` (and TLS from `gevent.ssl`): smtplib only calls
`_get_socket()` and the socket's methods, so it cooperates with the hub
whether or not the process is monkey-patched. On top of smtplib: LHLO for
LMTP, Unix sockets, the body streamed dot-stuffed (RFC 5321 4.5.2) or in
BDAT chunks (RFC 3030), and the end of the message read as one reply per
recipient for LMTP (RFC 2033 4.2).

XFORWARD (Postfix XFORWARD_README) tells the upstream who the original
client was; the relay sends it before each MAIL when the upstream offers
it, because Postfix forgets the attributes after each transaction.

An upstream that is down costs one connect timeout per period, not one
per message: `connect()` passes the upstream's circuit breaker
(state/breaker.py, one per host and port). Once a connection attempt
failed after half its timeout or more (no answer: a host that drops SYNs,
a server that accepts and never greets), every connect fails at once with
`UpstreamDown` (an OSError, as a refused connection) for a few seconds,
then one probe tries again. A refused connection costs nothing and opens
nothing.

The relay middleware that drives this client is in relay.py; the inbox's
"release" (inbox/release.py) uses the client alone.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from gevent import socket as gsocket
from gevent import ssl as gssl

from ..framing import DotStuffer
from ..options import MAX_COMMAND_LINE
from ..replies import Reply
from ..state.breaker import Breaker, breaker
from ..xtext import encode_xtext
from .base import CHUNK, reply_from

if TYPE_CHECKING:
    from _socket import _Address as SocketAddress     # typeshed's, as smtplib's stub uses

    from ..addresses import Address
    from ..session import Session


class UpstreamDown(ConnectionError):
    """Not even tried: the upstream's breaker is open (it did not answer lately)."""


def upstream_breaker(host: str, port: int, timeout: float) -> Breaker:
    """The breaker of `host:port` (a socket path alone), shared by every relay to it."""
    where = host if host.startswith('/') else f'{host}:{port}'
    return breaker(f'upstream {where}', slow=timeout / 2)


class Upstream(smtplib.SMTP):
    """smtplib speaking over gevent sockets; LHLO instead of EHLO for LMTP."""

    def __init__(self, *, lmtp: bool, timeout: float, local_hostname: str,
                 tls_context: ssl.SSLContext | None, secure: bool,
                 source_address: tuple[str, int] | None = None):
        # local_hostname is given: smtplib would otherwise call getfqdn().
        super().__init__(local_hostname=local_hostname, timeout=timeout,
                         source_address=source_address)
        if lmtp:
            self.ehlo_msg = 'lhlo'
        if secure and tls_context is None:
            raise ValueError('implicit TLS (secure=True) needs a tls_context')
        self._tls_context = tls_context
        self._secure = secure
        self.in_transaction = False
        self.binary = False         # this transaction's body goes in BDAT chunks
        # What this transaction told the upstream: the sender and the
        # recipients it took, each (address, parameters); the relay compares
        # it with the envelope at DATA (a milter may have changed it since).
        self.sent: tuple[Any, list[Any]] | None = None

    def connect(self, host: str = 'localhost', port: int = 0,
                source_address: SocketAddress | None = None) -> tuple[int, bytes]:
        """Connect and read the greeting, through the upstream's breaker."""
        self._host = host       # smtplib's starttls() checks the certificate against it
        guard = upstream_breaker(host, port, self.timeout)
        ticket = guard.admit()
        if ticket is None:
            raise UpstreamDown(f'{guard.name}: {guard.refusal()}')
        began = time.monotonic()
        try:
            greeting = super().connect(host, port, source_address)
        except (OSError, smtplib.SMTPException) as exc:
            guard.failed(ticket, time.monotonic() - began, str(exc) or type(exc).__name__)
            raise
        guard.succeeded(ticket)
        return greeting

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket
        if host.startswith('/'):       # a Unix socket, as Dovecot's LMTP
            sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(host)
            except OSError:
                sock.close()
                raise
        else:
            sock = gsocket.create_connection((host, port), timeout, self.source_address)
        if self._secure and self._tls_context is not None:
            sock = self._tls_context.wrap_socket(sock, server_hostname=host)
        return sock

    def command(self, line: str) -> tuple[int, str]:
        """Send one command line, return (code, text)."""
        self.send(line.encode('utf-8') + b'\r\n')
        code, text = self.getreply()
        return code, text.decode('utf-8', 'replace')

    def _connected(self) -> socket.socket:
        """smtplib's socket, which is None only before connect() and after
        close(): then the error smtplib's own send() raises."""
        sock = self.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected('please run connect() first')
        return sock

    def send_body(self, head: bytes, pieces: Iterable[bytes]) -> None:
        """Stream the message, dot-stuffed (RFC 5321 4.5.2), without the final dot."""
        sock = self._connected()
        out = bytearray()
        stuffer = DotStuffer()
        for data in _chain(head, pieces):
            out += stuffer(data)
            if len(out) >= CHUNK:
                sock.sendall(out)
                out.clear()
        out += stuffer.end()
        if out:
            sock.sendall(out)

    def send_chunks(self, head: bytes, pieces: Iterable[bytes]) -> Reply | None:
        """Stream the message as BDAT chunks (RFC 3030), without the LAST
        one. A chunk the upstream refuses ends it: its reply is returned."""
        sock = self._connected()
        out = bytearray()
        for data in _chain(head, pieces):
            out += data
            if len(out) >= CHUNK:
                refused = self._chunk(sock, out)
                if refused is not None:
                    return refused
                out.clear()
        return self._chunk(sock, out) if out else None

    def _chunk(self, sock: socket.socket, data: bytearray) -> Reply | None:
        sock.sendall(b'BDAT %d\r\n' % len(data) + data)    # one write: no Nagle wait
        code, text = self.getreply()
        return None if code == 250 else reply_from(code, text.decode('utf-8', 'replace'))

    def finish(self, count: int, timeout: float) -> list[Reply]:
        """End the message (the final dot, or BDAT 0 LAST) and read `count`
        replies (LMTP: one per recipient)."""
        sock = self._connected()
        sock.sendall(b'BDAT 0 LAST\r\n' if self.binary else b'.\r\n')
        sock.settimeout(timeout)
        replies = []
        for _ in range(count):
            code, text = self.getreply()
            replies.append(reply_from(code, text.decode('utf-8', 'replace')))
        sock.settimeout(self.timeout)
        self.in_transaction = False
        return replies

    def abort(self) -> None:
        """Drop the connection at once: mid-DATA, no final dot is ever sent."""
        self.in_transaction = False
        try:
            self.close()
        except OSError:
            pass


def describe_upstream(host: str, port: int | None = None, lmtp: bool = False) -> str:
    """'relay to SMTP host:port' (a socket path stands alone); the default
    port is LMTP's 24 or SMTP's 25."""
    if port is None:
        port = 24 if lmtp else 25
    where = host if host.startswith('/') else f'{host}:{port}'
    return f'relay to {"LMTP" if lmtp else "SMTP"} {where}'


def _chain(head: bytes, pieces: Iterable[bytes]) -> Iterator[bytes]:
    yield head
    yield from pieces


def client_tls_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A gevent TLS client context (gevent.ssl.create_default_context would
    return a stdlib one, whose sockets block the hub)."""
    ctx: ssl.SSLContext = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = gssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    return ctx


def mail_params(link: Upstream, address: Address) -> str:
    """The client's MAIL parameters the upstream understands."""
    out = []
    for key, value in address.args.items():
        if key == 'SIZE' and link.has_extn('size'):
            out.append(f'SIZE={value}')
        elif key == 'BODY' and value == '8BITMIME' and link.has_extn('8bitmime'):
            out.append('BODY=8BITMIME')
        elif key == 'BODY' and value == 'BINARYMIME' and link.binary:
            out.append('BODY=BINARYMIME')
        elif key == 'SMTPUTF8' and link.has_extn('smtputf8'):
            out.append('SMTPUTF8')
        elif key in ('RET', 'ENVID') and link.has_extn('dsn'):
            out.append(f'{key}={value}')
    return ''.join(' ' + p for p in out)


def rcpt_params(link: Upstream, address: Address) -> str:
    """The client's RCPT parameters the upstream understands (DSN's, RFC 3461)."""
    if not link.has_extn('dsn'):
        return ''
    return ''.join(f' {key}={value}' for key, value in address.args.items()
                   if key in ('NOTIFY', 'ORCPT'))


def xforward_lines(session: Session, offered: str) -> list[str]:
    """XFORWARD commands for what the upstream offers, each under 512 octets.

    Values from the session's own XFORWARD (we are a filter in a chain) win
    over what we saw of the client; NAME is [UNAVAILABLE] without a reverse
    name, as Postfix sends it.
    """
    wanted = {name.upper() for name in offered.split()}
    ip = session.remote_address or ''
    hostname = session.client_hostname or ''
    values = {
        'NAME': hostname if hostname and not hostname.startswith('[') else '[UNAVAILABLE]',
        'ADDR': (f'IPV6:{ip}' if ':' in ip else ip) or '[UNAVAILABLE]',
        'PORT': str(session.remote_port) if session.remote_port else '[UNAVAILABLE]',
        'PROTO': 'ESMTP' if session.greeting in ('EHLO', 'LHLO') else 'SMTP',
        'HELO': session.helo or '[UNAVAILABLE]',
        'IDENT': session.id,
        'SOURCE': 'REMOTE',
    }
    for name, value in (session.xforward or {}).items():
        if name.upper() in values:
            values[name.upper()] = value if value is not None else '[UNAVAILABLE]'
    lines: list[str] = []
    current = 'XFORWARD'
    for name, value in values.items():
        if name not in wanted:
            continue
        item = f' {name}={_xtext(str(value))}'
        if len(current) + len(item) > MAX_COMMAND_LINE and current != 'XFORWARD':
            lines.append(current)
            current = 'XFORWARD'
        current += item
    if current != 'XFORWARD':
        lines.append(current)
    return lines


def _xtext(value: str, limit: int = 255) -> str:
    """xtext, cut to `limit` characters as sent (XFORWARD_README), never
    inside an escape or a UTF-8 sequence."""
    out, length = [], 0
    for ch in value:
        encoded = encode_xtext(ch)
        if length + len(encoded) > limit:
            break
        out.append(encoded)
        length += len(encoded)
    return ''.join(out)
