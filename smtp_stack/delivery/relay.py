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

A milter (policies.milter: CHGFROM, ADDRCPT, DELRCPT) or any middleware
may change the envelope's sender and recipients after MAIL and RCPT went
upstream. At DATA, once the chain inside has judged the message, the relay
compares the envelope with what it sent, and if it changed, sends it again
(RSET, XFORWARD, MAIL, each RCPT) before DATA. All or nothing: if the
upstream refuses one of the recipients now, the message is not sent and
the client gets that refusal (a temporary one first), since it was told
250 for every recipient; so no recipient is dropped unseen, and a 250
still only follows the upstream's. A message left with no recipient is
dropped as a discarded one. An envelope nobody changed costs nothing more.

A message a middleware dropped (`envelope.drop`) gets its 250 and the
upstream an RSET; a replaced body (`envelope.replace_body`) is what the
upstream gets after the header section. A quarantined one
(`envelope.quarantine`) is never relayed: with a `quarantine` Maildir it
is held there (the upstream gets RSET, the client 250), else the client
gets 451 4.7.1 and keeps it (docs/delivery.md says why).

A 250 reaches the client only after the upstream accepted the message; an
upstream that cannot be reached gives 451 (RFC 5321 4.2.5: the client keeps
the message and retries). The upstream's own 4xx/5xx replies are passed
back, except 421, which is ours to say (it would mean *we* close): it becomes
451.

The upstream connection is an `Upstream` (upstream.py: smtplib over gevent
sockets); this module is the middleware that drives it, one per session.
"""
from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from ..errors import ClientDisconnected, SmtpError
from ..events import DELIVERY, refused_by, reply_text, status_of
from ..params import BOOL, EXISTING_FILE, PORT, SECONDS, STRING, Kind, Reader
from ..replies import Reply
from .base import (Inspect, delivered, discard_dropped, is_success, message_body,
                   message_head, note, refuse, reply_from, untouched, wants_delivery)
from .maildir import MaildirDelivery
from .upstream import (Upstream, client_tls_context, describe_upstream, mail_params,
                       rcpt_params, xforward_lines)

if TYPE_CHECKING:
    from ..addresses import Address
    from ..middleware import Context, Next
    from ..session import Envelope, Session

# Re-exported: the inbox's release and older imports name them here.
__all__ = ['RelayDelivery', 'Upstream', 'UpstreamError', 'client_tls_context',
           'describe_upstream', 'xforward_lines']

UNAVAILABLE = Reply(451, 'Error: upstream server unavailable, try again later', '4.4.1')
UPSTREAM_LOST = Reply(451, 'Error: upstream connection lost, try again later', '4.4.2')
UPSTREAM_CONFIG = Reply(451, 'Error: upstream refused this relay, try again later', '4.7.0')
NEEDS_SMTPUTF8 = Reply(553, 'Error: upstream server does not support SMTPUTF8', '5.6.7')
# A binary body cannot travel in DATA (RFC 3030 3): only to an upstream with BDAT.
NO_BINARYMIME = Reply(555, 'Error: upstream server does not support BINARYMIME', '5.5.4')
# RFC 3463 4.7.1 "delivery not authorized": held for review, and we have
# nowhere to hold it; the client keeps the message and retries.
NOT_RELAYED = Reply(451, 'Error: message held for review, not relayed', '4.7.1')


def _host(value: Any, reader: Reader) -> str:
    if not isinstance(value, str):
        raise ValueError('must be a string')
    if not value:
        raise ValueError('is required')
    return value


HOST = Kind('a host name (or a socket path, for LMTP)', _host)
CA_FILE = EXISTING_FILE.named('ca')     # `ca:` in YAML, as under tls:


class UpstreamError(Exception):
    """The upstream cannot be used; `reply` is what the client gets."""

    def __init__(self, reply: Reply, detail: str = ''):
        super().__init__(detail or reply.message)
        self.reply = reply


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
    `quarantine` is a Maildir where quarantined messages are held (else
    they get 451 4.7.1).

    The parameters annotated with a kind are the keys of the YAML section
    `deliver: {relay: {...}}` (params.py; `ca_file` is `ca:` there).
    """

    def __init__(self, host: Annotated[str, HOST], port: Annotated[int | None, PORT] = None, *,
                 lmtp: Annotated[bool, BOOL] = False, starttls: Annotated[bool, BOOL] = False,
                 secure: Annotated[bool, BOOL] = False, tls_verify: Annotated[bool, BOOL] = True,
                 ca_file: Annotated[str | None, CA_FILE] = None,
                 username: Annotated[str | None, STRING] = None,
                 password: Annotated[str | None, STRING] = None,
                 xforward: Annotated[bool, BOOL] = True, helo: Annotated[str | None, STRING] = None,
                 timeout: Annotated[float, SECONDS] = 60.0,
                 data_timeout: Annotated[float, SECONDS] = 600.0,
                 inspect: Inspect | None = None, source_address: tuple[str, int] | None = None,
                 quarantine: str | None = None):
        if not host:
            raise ValueError('relay: host is required')
        if (username is None) != (password is None):
            raise ValueError('relay: username and password go together')
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
        # The quarantined messages' Maildir: that one, not a folder of it.
        self.quarantine = None if quarantine is None else \
            MaildirDelivery(quarantine, quarantine=quarantine)
        self.tls_context = client_tls_context(tls_verify, ca_file) if (starttls or secure) else None
        # Where its lines say the mail went: 'mx.example:25', or the socket path.
        self.where = host if host.startswith('/') else (
            f'[{host}]:{self.port}' if ':' in host else f'{host}:{self.port}')
        # One upstream link per session, until the session ends (session_closed).
        self._links: dict[Session, Upstream] = {}

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
            refuse(ctx, exc.reply)

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
                              f'{rcpt_params(link, recipient)}')
        except UpstreamError as exc:
            envelope.rcpt_to.pop()
            self._drop(ctx.session)
            refuse(ctx, exc.reply)
            return
        if reply.code >= 300:
            envelope.rcpt_to.pop()
            refuse(ctx, reply)      # the upstream's words
        elif link.sent is not None:
            link.sent[1].append(_key(recipient))

    def _on_data(self, ctx: Context, next: Next) -> None:
        next()
        session = ctx.session
        stream = ctx.data_stream
        if stream is None or not stream.started:
            return      # refused before 354: the client's transaction goes on
        if not wants_delivery(ctx) or not untouched(ctx) or discard_dropped(ctx, self.where):
            return self._reset(session)
        if session.envelope.quarantined is not None:
            self._reset(session)
            return self._hold(ctx)
        link = self._links.get(session)
        if link is None or not link.in_transaction:
            refuse(ctx, UPSTREAM_LOST, self.where, 'no upstream transaction')
            return
        if _sent_as(session.envelope) != link.sent:
            # A milter (or middleware) changed the sender or the recipients
            # after they went upstream: the transaction again, as it is now.
            if not session.envelope.rcpt_to:
                session.envelope.drop('every recipient was removed')
                discard_dropped(ctx, self.where)
                return self._reset(session)
            try:
                link, refused = self._redo(ctx)
            except UpstreamError as exc:
                self._drop(session)
                refuse(ctx, exc.reply, self.where, str(exc))
                return
            if refused is not None:
                refuse(ctx, refused, self.where)
                return self._reset(session)
        if not link.binary:
            try:
                reply = self._ask(link, 'DATA')
            except UpstreamError as exc:
                self._drop(session)
                refuse(ctx, exc.reply, self.where, str(exc))
                return
            if reply.code != 354:
                refuse(ctx, reply, self.where)
                return self._reset(session)
        envelope = session.envelope
        head = message_head(ctx, return_path=False)
        try:
            if link.binary:
                refused = link.send_chunks(head, message_body(ctx, self.inspect, top_fields=False))
                if refused is not None:     # the rest of the body is drained by the server
                    self._drop(session)
                    refuse(ctx, refused, self.where)
                    return
            else:
                link.send_body(head, message_body(ctx, self.inspect, top_fields=False))
        except SmtpError as err:        # inspect() refused the content, or MessageRefused
            self._drop(session)
            refuse(ctx, err.reply, by=refused_by(err) or DELIVERY)
            return
        except ClientDisconnected:
            self._drop(session)
            raise
        except (OSError, smtplib.SMTPException) as exc:
            self._drop(session)
            refuse(ctx, UPSTREAM_LOST, self.where, f'upstream failed during DATA: {exc}')
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
            self._drop(session)
            refuse(ctx, UPSTREAM_LOST, self.where, f'upstream lost after the final dot: {exc}')
            return
        ctx.send(self._verdict(ctx, replies))

    def _redo(self, ctx: Context) -> tuple[Upstream, Reply | None]:
        """RSET, MAIL and RCPT upstream for the envelope as it is now, on
        the session's link (a new one if the upstream had closed it). All
        or nothing: a recipient the upstream refuses ends it, and its
        reply (the first temporary one, else the first permanent one) is
        the client's, since the client was told 250 for every recipient
        and cannot be told of one alone now; None when all were taken."""
        envelope = ctx.session.envelope
        assert envelope.mail_from is not None
        note(ctx, 20, 'the envelope changed after MAIL and RCPT went upstream: '
                      'sending them again (from=<%s>, %d recipients)',
             envelope.mail_from.address, len(envelope.rcpt_to))
        self._start_transaction(ctx, envelope.mail_from)
        link = self._links[ctx.session]
        refusals = []
        for recipient in envelope.rcpt_to:
            reply = self._ask(link, f'RCPT TO:<{recipient.address}>'
                              f'{rcpt_params(link, recipient)}')
            if reply.code >= 300:
                refusals.append(reply)
                note(ctx, 30, 'upstream refused <%s>: %s', recipient.address, reply_text(reply))
            elif link.sent is not None:
                link.sent[1].append(_key(recipient))
        if not refusals:
            return link, None
        return link, next((r for r in refusals if r.code < 500), refusals[0])

    def _hold(self, ctx: Context) -> None:
        """A quarantined message: into the `quarantine` Maildir (its own
        delivery line, status `quarantined`), or 451 4.7.1 without one."""
        if self.quarantine is None:
            refuse(ctx, NOT_RELAYED, self.where,
                   f'quarantined, not relayed: {ctx.session.envelope.quarantined}')
            return
        self.quarantine(ctx, _nothing_inside)

    def _on_reset(self, ctx: Context, next: Next) -> None:
        next()
        self._reset(ctx.session)

    def _on_quit(self, ctx: Context, next: Next) -> None:
        next()
        self.session_closed(ctx.session)

    def session_closed(self, session: Session) -> None:
        """Close the session's upstream connection (QUIT, then close).

        The server calls it when a session ends, however it ends (the
        component contract, middleware.Component): a client that vanishes
        in the middle of a transaction leaves no upstream connection open.
        Calling it again, or for a session without a link, does nothing.
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
                link = self._connect(ctx)
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
                                  f'{mail_params(link, address)}')
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
            link.sent = (_key(address), [])
            return

    def _connect(self, ctx: Context) -> Upstream:
        session = ctx.session
        link = Upstream(lmtp=self.lmtp, timeout=self.timeout,
                        local_hostname=self.helo or ctx.server.options.name,
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
            note(ctx, 30, '%s', exc)
            link.abort()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            note(ctx, 40, '%s refused our login: %s %s', where, exc.smtp_code, exc.smtp_error)
            link.abort()
            raise UpstreamError(UPSTREAM_CONFIG) from None
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            note(ctx, 30, '%s unreachable: %s', where, exc or type(exc).__name__)
            link.abort()
            raise UpstreamError(UNAVAILABLE) from None
        self._links[session] = link
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

    # -- verdicts ---------------------------------------------------------------
    def _verdict(self, ctx: Context, replies: list[Reply]) -> Reply | list[Reply]:
        """The upstream's replies as the client's: one per recipient for an
        LMTP client, else one. An LMTP upstream that accepted only some
        recipients cannot be told to an SMTP client: it gets the first
        temporary failure (so it retries) or else the first permanent one (so
        the sender hears of it); the recipients that did get the message may
        then get it twice, which is better than a silent loss."""
        recipients = ctx.session.envelope.rcpt_to
        if len(replies) == 1:       # an SMTP upstream: one verdict for all
            delivered(ctx, status_of(replies[0]), self.where, reply_text(replies[0]))
            replies = replies * len(recipients)
        else:
            for reply, recipient in zip(replies, recipients, strict=False):
                delivered(ctx, status_of(reply), self.where, reply_text(reply), [recipient])
        failed = [r for r in replies if r.code >= 400]
        if ctx.server.options.lmtp:
            if failed:
                ctx.refusal = (replies, DELIVERY)
            return replies
        if not failed:
            return replies[0]
        if len(failed) < len(replies):
            note(ctx, 30, 'upstream accepted %d of %d recipients; telling the client %s',
                 len(replies) - len(failed), len(replies), failed[0].code)
        temporary = [r for r in failed if r.code < 500]
        chosen = (temporary or failed)[0]
        ctx.refusal = (chosen, DELIVERY)
        return chosen


# What went upstream: the sender and the recipients, each as (address, parameters).
SentKey: TypeAlias = tuple[str, tuple[tuple[str, Any], ...]]


def _key(address: Address) -> SentKey:
    return address.address, tuple(sorted(address.args.items()))


def _sent_as(envelope: Envelope) -> tuple[SentKey, list[SentKey]] | None:
    """The envelope as the upstream would have been told it."""
    if envelope.mail_from is None:
        return None
    return _key(envelope.mail_from), [_key(r) for r in envelope.rcpt_to]


def _nothing_inside() -> None:
    """The `next` of the quarantine Maildir: the relay ran the chain already."""


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
