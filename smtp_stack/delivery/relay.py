"""Relay delivery: hand each message to an upstream SMTP or LMTP server.

The relay follows the client's transaction command by command, so the
client hears the upstream's verdict at the step it belongs to:

    client MAIL  -> (connect, EHLO/LHLO, STARTTLS, AUTH) XFORWARD, MAIL upstream
    client RCPT  -> RCPT upstream; a refusal reaches the client as is
    client DATA  -> DATA upstream; the body is streamed through as it
                    arrives; the final dot is sent only when the whole body
                    arrived and is acceptable, else the upstream connection
                    is closed without it and the upstream discards the message
    BODY=BINARYMIME -> the same with BDAT chunks upstream (RFC 3030: binary
                    cannot travel in DATA), ended by BDAT 0 LAST; the
                    upstream must offer CHUNKING and BINARYMIME, else 555
    RSET, EHLO   -> RSET upstream

A 250 reaches the client only after the upstream accepted the message; an
upstream that cannot be reached gives 451 (RFC 5321 4.2.5: the client keeps
the message and retries). The upstream's own 4xx/5xx replies are passed
back, except 421, which is ours to say (it would mean *we* close): it becomes
451.

The protocol client is `smtplib.SMTP`, but its socket comes from
`gevent.socket` (and TLS from `gevent.ssl`): smtplib only calls
`_get_socket()` and the socket's methods, so it cooperates with the hub
whether or not the process is monkey-patched.

XFORWARD (Postfix XFORWARD_README) tells the upstream who the original
client was; it is sent before each MAIL when the upstream offers it,
because Postfix forgets the attributes after each transaction.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from gevent import socket as gsocket
from gevent import ssl as gssl

from ..errors import ClientDisconnected, SmtpError
from ..framing import DotStuffer
from ..options import MAX_COMMAND_LINE
from ..replies import Reply
from ..xtext import encode_xtext
from .base import (CHUNK, Inspect, is_success, log, message_body, message_head, reply_from,
                   untouched, wants_delivery)

if TYPE_CHECKING:
    from _socket import _Address as SocketAddress     # typeshed's, as smtplib's stub uses

    from ..addresses import Address
    from ..middleware import Context, Next
    from ..session import Session

UNAVAILABLE = Reply(451, 'Error: upstream server unavailable, try again later', '4.4.1')
UPSTREAM_LOST = Reply(451, 'Error: upstream connection lost, try again later', '4.4.2')
UPSTREAM_CONFIG = Reply(451, 'Error: upstream refused this relay, try again later', '4.7.0')
NEEDS_SMTPUTF8 = Reply(553, 'Error: upstream server does not support SMTPUTF8', '5.6.7')
# A binary body cannot travel in DATA (RFC 3030 3): only to an upstream with BDAT.
NO_BINARYMIME = Reply(555, 'Error: upstream server does not support BINARYMIME', '5.5.4')


class UpstreamError(Exception):
    """The upstream cannot be used; `reply` is what the client gets."""

    def __init__(self, reply: Reply, detail: str = ''):
        super().__init__(detail or reply.message)
        self.reply = reply


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

    def connect(self, host: str = 'localhost', port: int = 0,
                source_address: SocketAddress | None = None) -> tuple[int, bytes]:
        self._host = host       # smtplib's starttls() checks the certificate against it
        return super().connect(host, port, source_address)

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


class RelayDelivery:
    """Middleware forwarding each accepted message to `host:port`.

    `lmtp`: the upstream speaks LMTP (LHLO, one reply per recipient after
    the dot); `host` may then be a Unix socket path. `starttls=True`
    requires STARTTLS (451 when the upstream does not offer it); `secure`
    is implicit TLS. `tls_verify` checks the upstream certificate (against
    `ca_file` or the system store). `username`/`password` log in to the
    upstream. `xforward` sends XFORWARD when offered. `helo` is the name we
    greet with (default: the server's `name`). `timeout` bounds each
    command; `data_timeout` the wait for the verdict after the final dot
    (RFC 5321 4.5.3.2.6 suggests 10 minutes). `inspect(ctx, chunk)` sees
    each piece of the body and may raise SmtpError to refuse the message.
    """

    def __init__(self, host: str, port: int | None = None, *, lmtp: bool = False,
                 starttls: bool = False, secure: bool = False, tls_verify: bool = True,
                 ca_file: str | None = None, username: str | None = None,
                 password: str | None = None, xforward: bool = True,
                 helo: str | None = None, timeout: float = 60.0,
                 data_timeout: float = 600.0, inspect: Inspect | None = None,
                 source_address: tuple[str, int] | None = None):
        if not host:
            raise ValueError('relay needs a host')
        if (username is None) != (password is None):
            raise ValueError('relay username and password go together')
        self.host = host
        self.port = port if port is not None else (24 if lmtp else 25)
        self.lmtp = lmtp
        self.starttls = starttls
        self.secure = secure
        self.username = username
        self.password = password
        self.xforward = xforward
        self.helo = helo
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.inspect = inspect
        self.source_address = source_address
        self.tls_context = client_tls_context(tls_verify, ca_file) if (starttls or secure) else None
        self._links: weakref.WeakKeyDictionary[Session, Upstream] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f'RelayDelivery({self.host!r}, {self.port})'

    def describe(self) -> str:
        return describe_upstream(self.host, self.port, self.lmtp)

    # -- middleware ------------------------------------------------------
    def __call__(self, ctx: Context, next: Next) -> None:
        handler = _HANDLERS.get(ctx.command_name)
        if handler is None:
            return next()
        return handler(self, ctx, next)

    def _on_mail(self, ctx: Context, next: Next) -> None:
        next()
        envelope = ctx.session.envelope
        sender = envelope.mail_from
        if not is_success(ctx.reply) or sender is None or sender is not ctx.address:
            return
        try:
            self._start_transaction(ctx, sender)
        except UpstreamError as exc:
            # Refused: "a rejected MAIL leaves no trace in the envelope".
            envelope.mail_from = None
            ctx.send(exc.reply)

    def _on_rcpt(self, ctx: Context, next: Next) -> None:
        next()
        envelope = ctx.session.envelope
        if not is_success(ctx.reply) or not envelope.rcpt_to \
                or envelope.rcpt_to[-1] is not ctx.address:
            return
        recipient = envelope.rcpt_to[-1]
        link = self._links.get(ctx.session)
        try:
            if link is None or not link.in_transaction:
                raise UpstreamError(UPSTREAM_LOST)
            reply = self._ask(link, f'RCPT TO:<{recipient.address}>'
                              f'{self._rcpt_params(link, recipient)}')
        except UpstreamError as exc:
            envelope.rcpt_to.pop()
            self._drop(ctx.session)
            ctx.send(exc.reply)
            return
        if reply.code >= 300:
            envelope.rcpt_to.pop()
            ctx.send(reply)

    def _on_data(self, ctx: Context, next: Next) -> None:
        next()
        session = ctx.session
        stream = ctx.data_stream
        if stream is None or not stream.started:
            return      # refused before 354: the client's transaction goes on
        if not wants_delivery(ctx) or not untouched(ctx):
            return self._reset(session)
        link = self._links.get(session)
        if link is None or not link.in_transaction:
            ctx.send(UPSTREAM_LOST)
            return
        if not link.binary:
            try:
                reply = self._ask(link, 'DATA')
            except UpstreamError as exc:
                self._drop(session)
                ctx.send(exc.reply)
                return
            if reply.code != 354:
                ctx.send(reply)
                return self._reset(session)
        envelope = session.envelope
        head = message_head(ctx, return_path=False)
        try:
            if link.binary:
                refused = link.send_chunks(head, message_body(ctx, self.inspect))
                if refused is not None:     # the rest of the body is drained by the server
                    self._drop(session)
                    ctx.send(refused)
                    return
            else:
                link.send_body(head, message_body(ctx, self.inspect))
        except SmtpError as err:        # inspect() refused the content, or MessageRefused
            self._drop(session)
            ctx.send(err.reply)
            return
        except ClientDisconnected:
            self._drop(session)
            raise
        except (OSError, smtplib.SMTPException) as exc:
            log.warning('[%s] upstream failed during DATA: %s', session.id, exc)
            self._drop(session)
            ctx.send(UPSTREAM_LOST)
            return
        except BaseException:
            self._drop(session)
            raise
        if not stream.acceptable or not is_success(ctx.reply):
            # Too big, bare line ends, or refused by a filter: the upstream
            # never sees the final dot, so it discards what it got.
            self._drop(session)
            return
        count = len(envelope.rcpt_to) if self.lmtp else 1
        try:
            replies = link.finish(count, self.data_timeout)
        except (OSError, smtplib.SMTPException) as exc:
            # The upstream may or may not have taken it: a retry may duplicate
            # the message, a 250 could lose it. RFC 5321 6.1 prefers the first.
            log.warning('[%s] upstream lost after the final dot: %s', session.id, exc)
            self._drop(session)
            ctx.send(UPSTREAM_LOST)
            return
        ctx.send(self._verdict(ctx, replies))

    def _on_reset(self, ctx: Context, next: Next) -> None:
        next()
        self._reset(ctx.session)

    def _on_quit(self, ctx: Context, next: Next) -> None:
        next()
        self.session_closed(ctx.session)

    def session_closed(self, session: Session) -> None:
        """Close the session's upstream connection (QUIT, then close).

        Use it as the server's `on_close` hook (the `smtp-stack` command
        does): a client that disconnects without QUIT in the middle of a
        transaction would otherwise keep its upstream connection open until
        the session object is garbage-collected.
        """
        link = self._links.pop(session, None)
        if link is None:
            return
        if link.sock is not None and not link.in_transaction:
            try:
                link.sock.settimeout(5)
                link.quit()
            except (OSError, smtplib.SMTPException):
                pass
        link.abort()

    # -- the upstream connection ---------------------------------------------
    def _start_transaction(self, ctx: Context, address: Address) -> None:
        session = ctx.session
        link = self._links.get(session)
        fresh = link is None
        for _ in range(2):
            if link is None:
                link = self._connect(session, ctx.server.options.name)
                fresh = True
            elif link.in_transaction:
                self._ask(link, 'RSET')
                link.in_transaction = False
            try:
                if 'SMTPUTF8' in address.args and not link.has_extn('smtputf8'):
                    raise UpstreamError(NEEDS_SMTPUTF8)
                link.binary = str(address.args.get('BODY', '')).upper() == 'BINARYMIME'
                if link.binary and not (link.has_extn('chunking')
                                        and link.has_extn('binarymime')):
                    raise UpstreamError(NO_BINARYMIME)
                if self.xforward and link.has_extn('xforward'):
                    for line in xforward_lines(session, link.esmtp_features['xforward']):
                        self._ask(link, line)       # refusal: go on without
                reply = self._ask(link, f'MAIL FROM:<{address.address}>'
                                  f'{self._mail_params(link, address)}')
            except UpstreamError as exc:
                if fresh or exc.reply in (NEEDS_SMTPUTF8, NO_BINARYMIME):
                    raise
                # A kept connection the upstream closed meanwhile: once more.
                self._drop(session)
                link = None
                continue
            if reply.code >= 300:
                raise UpstreamError(reply)
            link.in_transaction = True
            return

    def _connect(self, session: Session, our_name: str) -> Upstream:
        link = Upstream(lmtp=self.lmtp, timeout=self.timeout,
                        local_hostname=self.helo or our_name,
                        tls_context=self.tls_context, secure=self.secure,
                        source_address=self.source_address)
        where = self.describe()
        try:
            code, text = link.connect(self.host, self.port)
            if code != 220:
                raise UpstreamError(UNAVAILABLE, f'{where} greeted with {code}')
            code, text = link.ehlo()
            if code != 250 and not self.lmtp:
                code, text = link.helo()
            if code != 250:
                raise UpstreamError(UNAVAILABLE, f'{where} refused our greeting: {code}')
            if self.starttls:
                if not link.has_extn('starttls'):
                    raise UpstreamError(UPSTREAM_CONFIG, f'{where} offers no STARTTLS')
                link.starttls(context=self.tls_context)
                link.ehlo()
            if self.username is not None and self.password is not None:
                link.login(self.username, self.password)
        except UpstreamError as exc:
            log.warning('[%s] %s', session.id, exc)
            link.abort()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            log.error('[%s] %s refused our login: %s %s', session.id, where,
                      exc.smtp_code, exc.smtp_error)
            link.abort()
            raise UpstreamError(UPSTREAM_CONFIG) from None
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            log.warning('[%s] %s unreachable: %s', session.id, where, exc or type(exc).__name__)
            link.abort()
            raise UpstreamError(UNAVAILABLE) from None
        self._links[session] = link
        # A client that vanishes without QUIT: session_closed() (the on_close
        # hook) closes the link; failing that, the garbage collector does.
        weakref.finalize(session, link.abort)
        return link

    def _ask(self, link: Upstream, line: str) -> Reply:
        try:
            code, text = link.command(line)
        except (OSError, smtplib.SMTPException) as exc:
            raise UpstreamError(UPSTREAM_LOST, f'{self.describe()}: {exc}') from None
        return reply_from(code, text) if code != 354 else Reply(354, text, None)

    def _reset(self, session: Session) -> None:
        link = self._links.get(session)
        if link is None or not link.in_transaction:
            return
        try:
            self._ask(link, 'RSET')
            link.in_transaction = False
        except UpstreamError:
            self._drop(session)

    def _drop(self, session: Session) -> None:
        link = self._links.pop(session, None)
        if link is not None:
            link.abort()

    # -- parameters and verdicts ---------------------------------------------
    @staticmethod
    def _mail_params(link: Upstream, address: Address) -> str:
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

    @staticmethod
    def _rcpt_params(link: Upstream, address: Address) -> str:
        if not link.has_extn('dsn'):
            return ''
        return ''.join(f' {key}={value}' for key, value in address.args.items()
                       if key in ('NOTIFY', 'ORCPT'))

    def _verdict(self, ctx: Context, replies: list[Reply]) -> Reply | list[Reply]:
        """The upstream's replies as the client's: one per recipient for an
        LMTP client, else one. An LMTP upstream that accepted only some
        recipients cannot be told to an SMTP client: it gets the first
        temporary failure (so it retries) or else the first permanent one (so
        the sender hears of it); the recipients that did get the message may
        then get it twice, which is better than a silent loss."""
        recipients = len(ctx.session.envelope.rcpt_to)
        if len(replies) == 1 and recipients > 1:
            replies = replies * recipients
        if ctx.server.options.lmtp:
            return replies
        failed = [r for r in replies if r.code >= 400]
        if not failed:
            return replies[0]
        if len(failed) < len(replies):
            log.warning('[%s] upstream accepted %d of %d recipients; telling the client %s',
                        ctx.session.id, len(replies) - len(failed), len(replies),
                        failed[0].code)
        temporary = [r for r in failed if r.code < 500]
        return (temporary or failed)[0]


_HANDLERS: dict[str, Callable[[RelayDelivery, Context, Next], None]] = {
    'MAIL': RelayDelivery._on_mail,
    'RCPT': RelayDelivery._on_rcpt,
    'DATA': RelayDelivery._on_data,
    'BDAT': RelayDelivery._on_data,
    'RSET': RelayDelivery._on_reset,
    'HELO': RelayDelivery._on_reset,
    'EHLO': RelayDelivery._on_reset,
    'LHLO': RelayDelivery._on_reset,
    'STARTTLS': RelayDelivery._on_reset,
    'XCLIENT': RelayDelivery._on_reset,
    'QUIT': RelayDelivery._on_quit,
}


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
