"""`milter('inet:127.0.0.1:11332', default_action='tempfail', ...)`: call an
external milter (rspamd, OpenDKIM, OpenDMARC, clamav-milter ...) during
each SMTP session, as Postfix's `smtpd_milters` does, and apply its
replies and modifications to what the deliveries store or relay.

One MTA-side connection per SMTP session (milter/client.py), opened at
the session's first HELO/EHLO (lazily: a client that only connects costs
the milter nothing) and closed with SMFIC_QUIT when the session ends
(the component's `session_closed`, however it ends). The events follow
the server's own decisions, as Postfix calls its milters after its own
restrictions: each command is asked after `next()` accepted it.

    the client's command   the milter gets                 its refusal is given
    HELO, EHLO, LHLO       CONNECT (first time), HELO      to every later command (a 421
                                                           at once: Postfix's smtpd.c)
    MAIL                   MAIL <path> ARGS                to MAIL (no sender kept)
    RCPT                   RCPT <path> ARGS                to that RCPT alone
    DATA, BDAT             DATA (before 354)               to DATA, without 354
     ... its body          header fields, EOH, body        after the body
                           chunks from the spool, EOB
    RSET, a new MAIL,      ABORT (a transaction the milter
    STARTTLS, HELO         saw that did not end with EOB)
    XCLIENT                QUIT; a new CONNECT at the next HELO
    AUTH, VRFY, ETRN       nothing                         the session's refusal, if any
    the session ends       QUIT

Macros go before each event as Postfix emulates Sendmail's (milter/
mta_macros.py). Replies, as Postfix gives them ([milter8] milter8_event):
REJECT is `550 5.7.1 Command rejected`, TEMPFAIL `451 4.7.1 Service
unavailable - try again later`, REPLYCODE the milter's own reply, SHUTDOWN
421 and the connection closed, DISCARD (at MAIL, RCPT or the end of the
message) `envelope.drop()`, ACCEPT: no more events for the message (at
CONNECT or HELO: for the session). A refusal at CONNECT or HELO, like a
failure below, answers every later command of the session.

Several milters in a row (the `policies:` list, Postfix's smtpd_milters)
are asked in their order at each command. At the end of the message they
are asked in that order too, each seeing the message as the ones before
it changed it (their added fields on top, their deleted fields gone);
the first refusal ends it, and the milters after it are not asked.

The milter down, silent past a timeout, or answering nonsense: its
connection is closed and `default_action` applies to the rest of the
session, as Postfix's `milter_default_action`: 'tempfail' (the default:
`451 4.7.1 Service unavailable - try again later`), 'reject' (`550 5.5.0
Service unavailable`), 'accept' (the session goes on without the milter),
'quarantine' (as 'accept', and each message of the rest of the session is
held: `envelope.quarantine()`, as Postfix's smtpd sets its HOLD flag for a
milter's "H" default reply, [milter8] milter8_def_reply).
Failures go through the circuit breaker of the milter's name (state/
breaker.py: after a slow failure the next sessions fail at once for a few
seconds, so an outage costs one timeout per period) and are logged once
per period (common.warnings).
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from ..errors import SmtpError
from ..logs import emit
from ..params import SECONDS, STRING, Kind, Reader
from ..replies import Reply
from ..state.breaker import Breaker, Ticket, breaker
from .common import warnings

if TYPE_CHECKING:
    from ..addresses import Address
    from ..middleware import Context, Next
    from ..milter.client import Answer, MilterClient
    from ..session import Session

__all__ = ['Milter', 'DEFAULT_ACTIONS', 'UNAVAILABLE', 'REJECTED_DEFAULT']

DefaultAction = Literal['tempfail', 'accept', 'reject', 'quarantine']
# One step of a command: Milter._on_mail(policy, ctx) ...
Step: TypeAlias = 'Callable[[Milter, Context], None]'
DEFAULT_ACTIONS = ('tempfail', 'accept', 'reject', 'quarantine')
# [milter8] milter8_comm_error: what Postfix answers after a milter failed.
UNAVAILABLE = Reply(451, 'Service unavailable - try again later', '4.7.1')
REJECTED_DEFAULT = Reply(550, 'Service unavailable', '5.5.0')
_ROW = 'milters_row'         # ctx attribute: the milters a command went through, in order
_DONE = 'milters_done'       # ctx attribute: each one's refusal (None: none) after next()
REPLACED_IN_MEMORY = 1 << 20        # a replaced body beyond this goes to a temporary file


def _default_action(value: Any, reader: Reader) -> str:
    if value not in DEFAULT_ACTIONS:
        raise ValueError
    return str(value)


def _macros(value: Any, reader: Reader) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError
    return value


DEFAULT_ACTION = Kind('tempfail, accept, reject or quarantine', _default_action)
MACROS = Kind('a mapping {stage: macro names}', _macros)


@dataclass
class _Link:
    """One session's side of one milter."""
    client: MilterClient | None = None
    ticket: Ticket | None = None
    denied: Reply | None = None     # the reply of every later command (Postfix's def_reply)
    off: bool = False               # ACCEPT at CONNECT/HELO, or failed with 'accept'
    hold: str | None = None         # failed with 'quarantine': each later message is held
    closing: bool = False           # SHUTDOWN: the session is closed
    in_transaction: bool = False    # MAIL was sent, and neither EOB nor ABORT since
    accepted: bool = False          # ACCEPT/DISCARD for this message: no more events for it
    data_asked: bool = False        # SMFIC_DATA went for the message being received
    warn: list[str] = field(default_factory=list)


class Milter:
    """Ask the milter at `address` at each step of each SMTP session; the
    factory `policies.milter` and the YAML entry `milter:`."""

    def __init__(self, address: Annotated[str, STRING],
                 name: Annotated[str | None, STRING] = None,
                 connect_timeout: Annotated[float, SECONDS] = 30.0,
                 command_timeout: Annotated[float, SECONDS] = 30.0,
                 content_timeout: Annotated[float, SECONDS] = 300.0,
                 default_action: Annotated[DefaultAction, DEFAULT_ACTION] = 'tempfail',
                 macros: Annotated[Mapping[str, str | Iterable[str]] | None, MACROS] = None):
        from ..milter.client import parse_address
        from ..milter.mta_macros import stage_lists
        parse_address(address)
        for what, value in (('connect_timeout', connect_timeout),
                            ('command_timeout', command_timeout),
                            ('content_timeout', content_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f'milter: {what} must be a positive number of seconds')
        if default_action not in DEFAULT_ACTIONS:
            raise ValueError(f"milter: default_action must be 'tempfail', 'accept', "
                             f"'reject' or 'quarantine', not {default_action!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f'milter: name must be a non-empty string, not {name!r}')
        if macros is not None and not isinstance(macros, Mapping):
            raise ValueError('milter: macros must be a mapping {stage: macro names}')
        try:
            self.lists = stage_lists(macros)
        except ValueError as exc:
            raise ValueError(f'milter: {exc}') from None
        self.address = address
        self.name = name or address
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.content_timeout = float(content_timeout)
        self.default_action: DefaultAction = default_action
        self.where = f'milter {self.name}'
        self.breaker: Breaker = breaker(self.where, slow=min(self.connect_timeout,
                                                              self.command_timeout) / 2)
        self._links: dict[Session, _Link] = {}

    def __repr__(self) -> str:
        return (f'milter({self.address!r}, name={self.name!r}, '
                f'default_action={self.default_action!r})')

    def describe(self) -> str:
        return f'{self.where} ({self.address}, default_action={self.default_action})'

    # -- the session's link -----------------------------------------------------------

    def session_closed(self, session: Session) -> None:
        """SMFIC_QUIT and close, however the session ended."""
        link = self._links.pop(session, None)
        if link is not None and link.client is not None:
            link.client.quit()

    def _link(self, session: Session) -> _Link:
        link = self._links.get(session)
        if link is None:
            link = self._links[session] = _Link()
        return link

    def _failed(self, link: _Link, ctx: Context, exc: Exception, began: float) -> Reply | None:
        """A failure: the connection goes, `default_action` from now on."""
        from ..milter.client import MilterFailed
        reason = exc.reason if isinstance(exc, MilterFailed) else str(exc)
        slow = isinstance(exc, MilterFailed) and exc.slow
        if link.client is not None:
            link.client.close()
            link.client = None
        cost = max(time.monotonic() - began, self.breaker.slow if slow else 0.0)
        if link.ticket is not None:
            self.breaker.failed(link.ticket, cost, reason)
        reply = self._default_reply()
        consequence = f'{self.default_action}' + (
            f': {reply.code} {reply.enhanced}' if reply is not None else '')
        warnings.failed(self.where, '%s: %s', self.where, reason, consequence=consequence)
        if reply is None:
            link.off = True
            if self.default_action == 'quarantine':
                link.hold = f'{self.where} unavailable: {reason}'
        else:
            link.denied = reply
        return reply

    def _default_reply(self) -> Reply | None:
        return {'tempfail': UNAVAILABLE, 'reject': REJECTED_DEFAULT,
                'accept': None, 'quarantine': None}[self.default_action]

    def _connect(self, link: _Link, ctx: Context) -> None:
        """Connect, negotiate and send CONNECT; MilterFailed on failure."""
        from ..milter import protocol as P
        from ..milter.client import MilterClient, MilterFailed
        from ..milter.mta_macros import values
        ticket = self.breaker.admit()
        if ticket is None:
            raise MilterFailed(self.breaker.refusal())
        link.ticket = ticket
        client = link.client = MilterClient(
            self.address, connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout, content_timeout=self.content_timeout)
        negotiated = client.open()
        if negotiated.macros:
            from ..milter.mta_macros import asked
            self._asked = asked(negotiated.macros)
        self.breaker.succeeded(ticket)
        warnings.ok(self.where)
        session = ctx.session
        self._macros(link, ctx, P.CONNECT)
        facts = values(session, ctx.server.options.name)
        client_address = facts.get('{client_addr}', '')
        family = P.FAMILY_INET6 if ':' in client_address else (
            P.FAMILY_INET if client_address else P.FAMILY_UNKNOWN)
        name = facts.get('{client_name}', 'unknown')
        if family == P.FAMILY_UNKNOWN:
            answer = client.event(P.CONNECT, name, family)
        else:
            answer = client.event(P.CONNECT, name, family, int(session.remote_port or 0),
                                  client_address)
        self._connection_answer(link, ctx, answer)

    _asked: dict[str, tuple[str, ...]] | None = None

    def _macros(self, link: _Link, ctx: Context, event: str,
                address: Address | None = None) -> None:
        from ..milter.mta_macros import values
        assert link.client is not None
        names = (self._asked or self.lists).get(event) or ()
        if not names:
            return
        facts = values(ctx.session, ctx.server.options.name, address)
        link.client.macros(event, [(n, facts[n]) for n in names if n in facts])

    def _connection_answer(self, link: _Link, ctx: Context, answer: Answer) -> None:
        """CONNECT's and HELO's answer: a refusal holds for the whole session."""
        if answer.action == 'accept':
            link.off = True
            self._quit(link)
        elif answer.reply is not None:
            link.denied = answer.reply
            if answer.action == 'shutdown':
                link.closing = True
            self._quit(link)
        elif answer.action == 'discard':
            self._note(ctx, 30, 'DISCARD at CONNECT or HELO is not allowed: ignored')

    def _quit(self, link: _Link) -> None:
        if link.client is not None:
            link.client.quit()
            link.client = None

    def _note(self, ctx: Context, level: int, msg: str, *args: object) -> None:
        """A line about this session on the server's log ('<session id>: milter X: ...')."""
        server = ctx.server
        if level >= server.options.log_level:
            sid = ctx.session.id
            emit(server.log_backend, level, '%s: %s: ' + msg, (sid, self.where, *args),
                 {'session': sid})

    def _refuse(self, link: _Link, ctx: Context, reply: Reply) -> None:
        if link.closing or reply.code == 421:
            ctx.close()
        raise SmtpError(reply)

    def _guarded(self, link: _Link, ctx: Context, step: Any, *args: Any,
                 **kwargs: Any) -> Answer | None:
        """`step(*args)`, with a failure turned into the default action:
        None when the milter has nothing to say (off, or failed with 'accept')."""
        from ..milter.client import MilterFailed
        from ..milter.protocol import ProtocolError
        began = time.monotonic()
        try:
            return step(*args, **kwargs)
        except (MilterFailed, ProtocolError, ValueError) as exc:
            reply = self._failed(link, ctx, exc, began)
            if reply is not None:
                self._refuse(link, ctx, reply)
            return None

    def _ready(self, link: _Link, ctx: Context) -> bool:
        """Whether the milter is to be asked: its refusal for the session
        (raised), off, or connected now."""
        if link.denied is not None:
            self._refuse(link, ctx, link.denied)
        if link.off:
            return False
        if link.client is None:
            self._guarded(link, ctx, self._connect, link, ctx)
            if link.denied is not None:
                self._refuse(link, ctx, link.denied)
        return not link.off and link.client is not None

    def _abort(self, link: _Link, ctx: Context) -> None:
        """SMFIC_ABORT for a transaction the milter saw; a failure refuses
        nothing now (RSET, HELO succeed), the default action comes next."""
        from ..milter.client import MilterFailed
        if link.in_transaction and link.client is not None:
            began = time.monotonic()
            try:
                link.client.abort()
            except MilterFailed as exc:
                self._failed(link, ctx, exc, began)
        link.in_transaction = False
        link.accepted = False

    # -- the middleware ---------------------------------------------------------------

    def __call__(self, ctx: Context, next: Next) -> None:
        """Each command's step, before `next()` (refusals the server's own
        handler must not see) and after it. The milters of one server are
        asked in registration order: after `next()` the innermost, which
        returns first, asks them all in their order for the command (`_ROW`),
        and each raises its own refusal as its level unwinds."""
        step = _STEPS.get(ctx.command_name)
        if step is None:
            next()
            return
        before, after = step
        if before is not None:
            before(self, ctx)
        row: list[Milter] = vars(ctx).setdefault(_ROW, [])
        row.append(self)
        next()
        if after is None:
            return
        done: dict[Milter, SmtpError | None] = vars(ctx).setdefault(_DONE, {})
        if self not in done:
            for milter in row:
                if milter in done:
                    continue
                try:
                    after(milter, ctx)
                except SmtpError as err:
                    done[milter] = err
                    break
                done[milter] = None
        refusal = done.get(self)
        if refusal is not None:
            raise refusal

    def _on_helo(self, ctx: Context) -> None:
        """CONNECT (the first time) and HELO. A refusal of either is not
        given to HELO but to every later command, unless it is a 421
        (Postfix smtpd.c, "Sendmail compatibility")."""
        from ..milter import protocol as P
        if not _success(ctx.reply):
            return
        link = self._link(ctx.session)
        self._abort(link, ctx)
        if link.denied is not None or link.off:
            return
        try:
            if not self._ready(link, ctx):
                return
            answer = self._guarded(link, ctx, self._ask, link, ctx, P.HELO,
                                   ctx.session.helo or '')
        except SmtpError as err:
            if err.code == 421:
                raise
            return
        if answer is not None:
            self._connection_answer(link, ctx, answer)
            if link.denied is not None and link.denied.code == 421:
                self._refuse(link, ctx, link.denied)

    def _denied(self, ctx: Context) -> None:
        """AUTH, VRFY, ETRN, STARTTLS: the session's refusal, when there is one."""
        link = self._links.get(ctx.session)
        if link is not None and link.denied is not None:
            self._refuse(link, ctx, link.denied)

    def _ask(self, link: _Link, ctx: Context, event: str, *fields: Any,
             address: Address | None = None, content: bool = False) -> Answer:
        self._macros(link, ctx, event, address)
        assert link.client is not None
        return link.client.event(event, *fields, content=content)

    def _on_mail(self, ctx: Context) -> None:
        from ..milter import protocol as P
        envelope = ctx.session.envelope
        sender = envelope.mail_from
        if not _success(ctx.reply) or sender is None or sender is not ctx.address:
            return
        link = self._link(ctx.session)
        self._abort(link, ctx)
        try:
            if not self._ready(link, ctx):
                return
            link.in_transaction = True
            answer = self._guarded(link, ctx, self._ask, link, ctx, P.MAIL,
                                   [f'<{sender.address}>', *_args(sender)])
        except SmtpError:
            envelope.mail_from = None       # a refused MAIL leaves no trace
            raise
        if answer is not None:
            self._transaction_answer(link, ctx, answer, lambda: setattr(envelope, 'mail_from',
                                                                        None))

    def _transaction_answer(self, link: _Link, ctx: Context, answer: Answer,
                            undo: Any) -> None:
        if answer.action == 'accept':
            link.accepted = True
        elif answer.action == 'discard':
            link.accepted = True
            ctx.session.envelope.drop(f'discarded by {self.where}')
        elif answer.reply is not None:
            if answer.action == 'shutdown':
                link.closing = True
                link.denied = answer.reply
            undo()
            self._refuse(link, ctx, answer.reply)

    def _on_rcpt(self, ctx: Context) -> None:
        from ..milter import protocol as P
        envelope = ctx.session.envelope
        if not _success(ctx.reply) or not envelope.rcpt_to \
                or envelope.rcpt_to[-1] is not ctx.address:
            return
        recipient = envelope.rcpt_to[-1]
        link = self._link(ctx.session)
        if link.accepted:
            return
        try:
            if not self._ready(link, ctx) or not link.in_transaction:
                return
            answer = self._guarded(link, ctx, self._ask, link, ctx, P.RCPT,
                                   [f'<{recipient.address}>', *_args(recipient)],
                                   address=recipient)
        except SmtpError:
            envelope.rcpt_to.pop()
            raise
        if answer is not None:
            self._transaction_answer(link, ctx, answer, envelope.rcpt_to.pop)

    def _before_data(self, ctx: Context) -> None:
        """SMFIC_DATA, before 354: a refusal keeps the body from coming."""
        from ..milter import protocol as P
        envelope = ctx.session.envelope
        link = self._link(ctx.session)
        link.data_asked = False
        if not link.in_transaction or link.accepted or not envelope.rcpt_to \
                or envelope.data_stream is not None:
            return
        if self._ready(link, ctx) and link.in_transaction:
            answer = self._guarded(link, ctx, self._ask, link, ctx, P.DATA)
            if answer is not None:
                self._transaction_answer(link, ctx, answer, lambda: None)
            link.data_asked = link.client is not None and not link.accepted

    def _on_data(self, ctx: Context) -> None:
        """After the chain inside read the body: the message, and the verdict.
        With 'quarantine' as the default action, a milter that failed holds
        the message (also when it failed on this very message)."""
        link = self._links.get(ctx.session)
        if link is None or not _body_accepted(ctx):
            return
        if link.data_asked:
            link.data_asked = False
            self._message(link, ctx)
        if link.hold is not None and ctx.session.envelope.quarantined is None:
            ctx.session.envelope.quarantine(link.hold)

    def _message(self, link: _Link, ctx: Context) -> None:
        """The message to the milter, from the spool, and its verdict applied
        (SmtpError for a refusal)."""
        from ..milter import protocol as P
        from ..milter.mta_message import SentFields, apply
        envelope = ctx.session.envelope
        if link.client is None or link.accepted:
            return
        client = link.client
        ended = False
        sent = SentFields(envelope)
        leading_space = bool(client.negotiated.protocol & P.HDR_LEADSPC)
        replaced: tempfile.SpooledTemporaryFile[bytes] | None = None

        def body_sink(chunk: bytes) -> None:
            nonlocal replaced
            if replaced is None:
                replaced = tempfile.SpooledTemporaryFile(REPLACED_IN_MEMORY)
            replaced.write(chunk)

        def talk() -> Answer:
            try:
                for name, value in sent.fields():
                    if client.wants(P.HEADER):
                        # [milter8] milter8_header: Sendmail eats one space after the colon.
                        shown = value if leading_space or value[:1] != ' ' else value[1:]
                        answer = client.event(P.HEADER, name, shown, content=True)
                        if answer.action not in ('continue', 'skip'):
                            return answer
                answer = self._ask(link, ctx, P.EOH, content=True)
                if answer.action not in ('continue', 'skip'):
                    return answer
                for chunk in sent.body():
                    if not client.wants(P.BODY) or client.skipping == P.BODY:
                        break
                    answer = client.event(P.BODY, chunk, content=True)
                    if answer.action not in ('continue', 'skip'):
                        return answer
            finally:
                sent.close()
            self._macros(link, ctx, P.EOB)
            nonlocal ended
            ended = True
            return client.end_of_message(body_sink)

        answer = self._guarded(link, ctx, talk)
        if ended:                   # the milter's transaction ended with the message
            link.in_transaction = False
            link.accepted = False
        if answer is None:
            return
        link.warn.clear()
        if answer.action in ('continue', 'accept', 'discard'):
            apply(answer.changes, envelope, sent, self.where, link.warn,
                  '' if leading_space else ' ')
            if replaced is not None:
                replaced.seek(0)
                envelope.replace_body(replaced)         # type: ignore[arg-type]
            for line in link.warn:
                self._note(ctx, 30, '%s', line)
        if answer.action == 'discard':
            envelope.drop(f'discarded by {self.where}')
        elif answer.action == 'accept' and not ended:
            link.accepted = True    # no more events for this message
        if answer.reply is None:
            return
        if answer.action == 'shutdown':
            link.closing = True
            link.denied = answer.reply
        self._refuse(link, ctx, answer.reply)

    def _on_reset(self, ctx: Context) -> None:
        """RSET, STARTTLS: the transaction the milter saw ends (ABORT)."""
        link = self._links.get(ctx.session)
        if link is not None:
            self._abort(link, ctx)

    def _on_xclient(self, ctx: Context) -> None:
        """A new client: the milter hears of it with a new CONNECT (QUIT first)."""
        link = self._links.pop(ctx.session, None)
        if link is not None and _success(ctx.reply):
            self._quit(link)
        elif link is not None:
            self._links[ctx.session] = link


def _success(reply: Reply | list[Reply] | None) -> bool:
    if isinstance(reply, list):
        return bool(reply) and all(r.code < 400 for r in reply)
    return reply is not None and reply.code < 400


def _body_accepted(ctx: Context) -> bool:
    stream = ctx.data_stream
    return stream is not None and stream.started and _success(ctx.reply)


def _args(address: Address) -> list[str]:
    """The ESMTP parameters of MAIL or RCPT as the client gave them."""
    return [key if value is True else f'{key}={value}' for key, value in address.args.items()]


# The command -> (before next(), after next()).
_STEPS: dict[str, tuple[Step | None, Step | None]] = {
    'HELO': (None, Milter._on_helo), 'EHLO': (None, Milter._on_helo),
    'LHLO': (None, Milter._on_helo),
    'MAIL': (None, Milter._on_mail), 'RCPT': (None, Milter._on_rcpt),
    'DATA': (Milter._before_data, Milter._on_data),
    'BDAT': (Milter._before_data, Milter._on_data),
    'RSET': (None, Milter._on_reset), 'STARTTLS': (Milter._denied, Milter._on_reset),
    'AUTH': (Milter._denied, None), 'VRFY': (Milter._denied, None),
    'ETRN': (Milter._denied, None), 'XCLIENT': (None, Milter._on_xclient),
}
