"""One MTA connection to a MilterServer: one greenlet, one blocking loop.

The MTA (Postfix's smtpd or cleanup, Sendmail) opens the connection, offers
its options (SMFIC_OPTNEG), then sends one event per SMTP step of each
client session, each preceded by the macros of that step. Each event runs
the server's middleware chain as the SMTP command it stands for, and the
command's one final reply becomes the milter's reply:

    event (SMFIC_*)        command      reply the MTA gets
    CONNECT                (on_connect) CONTINUE, or REPLYCODE (refused);
                                        none without on_connect (SMFIP_NR_CONN)
    HELO                   EHLO name    CONTINUE, REPLYCODE
    MAIL, RCPT             MAIL, RCPT   CONTINUE, REPLYCODE (for that recipient)
    DATA, or the first     DATA         (reply to the DATA event only when
    header field                        refused; else at the end of the body)
    HEADER, EOH, BODY      -            the body of data_stream, unanswered
                                        where the MTA allows it (SMFIP_NR_*);
                                        SKIP to a body chunk nobody reads
    BODYEOB                the DATA     the modifications, then CONTINUE,
                           decision     REPLYCODE or DISCARD
    ABORT                  RSET         none (the protocol has none)
    QUIT                   QUIT         none; the connection ends
    QUIT_NC                QUIT         none; a new CONNECT follows

Only the steps the chain needs are asked for (steps.py); without
SMFIC_CONNECT, the session opens at the first event, from the client
macros asked for there. `ctx.close()` becomes SMFIR_SHUTDOWN (the MTA says 421 and hangs up; a 421
reply of one's own goes as it is). A malformed packet, an oversize one, an
unknown command or an MTA that vanishes ends the connection with one log
line; the session's cleanup (spool, components, on_close) always runs.
"""
from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent

from .. import replies as R
from ..addresses import parse_path
from ..engine.exceptions import HookFailed
from ..errors import ClientDisconnected, SmtpError
from ..events import MIDDLEWARE, began, refused_by, stamp
from ..events import queue_id as transaction_id
from ..middleware import STAGES, Context, name_of
from ..session import Session
from . import facts as F
from . import message as M
from . import protocol as P
from . import steps as S
from .content import run_message
from .protocol import Packet, ProtocolError
from .transport import TRACE, Socket, Transport, unanswered
from .verdicts import CONTINUE_PACKET, command_args, final, ok, reply_packet

if TYPE_CHECKING:
    from ..middleware import SessionEvent
    from ..replies import Reply
    from .server import MilterServer


class MilterConnection(Transport):
    """The loop of one MTA connection (`run`): its events, each run
    through the chain as the command it stands for, and the session's
    lifecycle. The socket is Transport's; the message is content.py's."""

    version = 0
    actions = 0                         # the actions the MTA allows (SMFIF_*)
    leading_space = False
    connect_skipped = False             # no SMFIC_CONNECT: the session opens lazily
    sees_all = True                     # a middleware declared nothing: RSET, QUIT too
    facts: F.MilterFacts | None = None
    message_reader: M.MessageReader | None = None
    sender: M.Sent | None = None        # MAIL as the MTA sent it, for the changes
    closing = False
    # No event ran the chain since the transaction was last ended: an ABORT
    # then has nothing to reset (Postfix sends two after each message).
    fresh = False

    # Per session, made when it opens (_open): the commands run and refused,
    # for the disconnect line.
    commands: dict[str, int]
    failed: dict[str, int]

    def __init__(self, server: MilterServer, sock: Socket, peer: str) -> None:
        super().__init__(server, sock, peer)
        self._pending: dict[str, str] = {}   # macros received before the session
        self.recipients: list[M.Sent] = []

    def take_macros(self, packet: Packet) -> None:
        """SMFIC_MACRO: the macros of the event that follows (Postfix and
        Sendmail send them just before it), taken in at once."""
        self.hold_macros(packet)
        self._take_held()

    def hold_macros(self, packet: Packet) -> None:
        """SMFIC_MACRO, checked now and taken in at the next event (_dispatch):
        an MTA sends a packet per stage, skipped ones too, and one decoding
        of them all costs less than one each. (The reader holds most of
        them itself: protocol.PacketReader's `held`.)"""
        self._held.append(F.held_form(packet.data))

    def _take_held(self) -> None:
        macros = F.read_pairs(self._held)
        self._held.clear()
        session, facts = self.session, self.facts
        if session is None or facts is None:
            if self._pending:
                self._pending.update(macros)
            else:
                self._pending = macros      # read_pairs' own dict: nobody else holds it
            return
        self._apply(session, facts, macros)

    def _apply(self, session: Session, facts: F.MilterFacts, macros: dict[str, str]) -> None:
        for change in F.apply(session, facts, macros):
            if change == F.TLS_SEEN:
                self.server.events.tls(session, None)
            else:
                self._logged_in(session)

    # -- the loop ------------------------------------------------------------
    def run(self) -> None:
        try:
            try:
                read, receive = self.read_packet, self.receive
                ready, held = self.reader.ready, self._held
                traced = self._log_min <= TRACE
                self._negotiate(read())
                while not self.closing:
                    if self._pushback is not None or traced:
                        packet = read()
                    elif ready:                     # read_packet's work, the usual case
                        packet = ready.popleft()
                    else:
                        receive()
                        continue
                    if packet.command == P.MACRO:   # after an event in the same read
                        self.owed = None
                        held.append(F.held_form(packet.data))   # ProtocolError if malformed
                    else:
                        self._dispatch(packet)
            except ProtocolError as exc:
                self.log(30, 'milter protocol error from %s, closing: %s', self.peer, exc.reason)
            except ClientDisconnected as exc:
                in_message = self.message_reader is not None
                self.log(30 if in_message else 20, 'MTA connection from %s ended%s: %s',
                         self.peer, ' mid-message' if in_message else '', exc)
            except gevent.GreenletExit:
                self.log(20, 'MTA connection from %s closed: the server is stopping', self.peer)
        except Exception as exc:   # a bug of ours costs one connection, not the server
            self.log(40, 'Unexpected error on the MTA connection from %s: %r', self.peer, exc)
            self.server.emit('error', exc)
        finally:
            self.stop_progress()
            self._end_session()
            self.close_socket()

    def _negotiate(self, packet: Packet) -> None:
        """SMFIC_OPTNEG: the steps the chain needs (steps.py), the actions
        it may take, the macros it wants."""
        server = self.server
        known = server.negotiations.get(packet.data) if packet.command == P.OPTNEG else None
        if known is None:       # the same MTA makes the same offer: answered once
            offer = P.read_negotiation(packet)
            plan = S.plan(server.needs, self.options, bool(offer.protocol & P.SKIP_OK))
            answer = S.negotiate(offer, plan, F.WANTED_MACROS)
            known = (answer, P.negotiation_reply(answer), unanswered(answer.protocol))
            if len(server.negotiations) < 16:
                server.negotiations[packet.data] = known
        answer, reply, silent = known
        self.version, self.actions = answer.version, answer.actions
        self.agree(answer.protocol, silent)
        self.leading_space = bool(self.flags & P.HDR_LEADSPC)
        self.connect_skipped = bool(self.flags & P.NOCONNECT)
        self.sees_all = server.needs == STAGES
        self.answer(reply)
        if self._log_min <= 10:
            self.log(10, 'milter protocol %d with %s: actions 0x%x, flags 0x%x', self.version,
                     self.peer, self.actions, self.flags)

    def _dispatch(self, packet: Packet) -> None:
        if self._held:
            self._take_held()
        command = packet.command
        self.owed = None if command in self._silent else command
        handler = _EVENTS.get(command)
        if handler is None:
            P.read_command(packet)      # ProtocolError: an unknown command
            raise ProtocolError(f'{P.name_of(command)} outside a message')
        if self.session is None and command not in _SESSIONLESS:
            if command != P.CONNECT:
                if not self.connect_skipped:
                    raise ProtocolError(f'{P.name_of(command)} before SMFIC_CONNECT')
                self._open(*_client_of(self._pending))
        handler(self, packet)

    # -- the events ------------------------------------------------------------
    def _on_optneg(self, packet: Packet) -> None:
        self._end_session()
        self._negotiate(packet)

    def _on_connect(self, packet: Packet) -> None:
        hostname, family, port, address = P.read_command(packet)
        assert isinstance(hostname, str) and isinstance(family, str)
        self._end_session()
        ip = address if isinstance(address, str) else ''
        if family == P.FAMILY_INET6 and ip[:5].upper() == 'IPV6:':
            ip = ip[5:]
        session = self._open(ip, port if isinstance(port, int) else 0, hostname)
        reply, by = R.OK, ''
        try:
            self.hook('on_connect', session)
        except SmtpError as err:
            reply, by = err.reply, refused_by(err) or 'on_connect'
        except HookFailed:
            reply, by = R.HOOK_FAILED, 'on_connect'
        if reply.code >= 400:
            self.server.events.refused(session, 'CONNECT', reply, by, None, None)
            self._reply(reply, close=reply is R.HOOK_FAILED)
        else:
            self._reply(reply)

    def _open(self, ip: str, port: int | str, hostname: str) -> Session:
        """The session of an SMTP client: at SMFIC_CONNECT, or at the first
        event when the chain asked for none (from {client_addr} and the
        other client macros: the MTA sends them with the skipped CONNECT)."""
        if isinstance(port, str):
            port = int(port) if port.isdigit() else 0
        session = Session('', 0, ip, port)
        if hostname and hostname != 'unknown' and not hostname.startswith('['):
            session.client_hostname = hostname
        facts = F.MilterFacts(self.peer)
        facts.version = self.version
        session.milter = facts       # type: ignore[attr-defined]
        self.session, self.facts = session, facts
        self.commands, self.failed = {}, {}
        self._reset_transaction()
        self.fresh = False          # what components did at session_opened is reset as before
        pending = self._pending
        if pending:
            self._pending = {}
        opened = self.server.lifecycle.opened
        if opened:
            self._tell(opened)
        self.server.events.connected(session)
        if pending:
            self._apply(session, facts, pending)
        return session

    def _on_helo(self, packet: Packet) -> None:
        (name,) = P.read_command(packet)
        assert isinstance(name, str)
        self._finish(self.run_command(f'EHLO {name}'))

    def _on_mail(self, packet: Packet) -> None:
        (strings,) = P.read_command(packet)
        assert isinstance(strings, list)
        session = self.open_session()
        if session.envelope.mail_from is not None:    # a new message without ABORT
            facts = self.facts
            queue_id = facts.queue_id if facts is not None else None
            self.end_transaction()
            if facts is not None:       # its `i` macro came just before this MAIL
                facts.queue_id = queue_id
        if not strings:
            raise ProtocolError('SMFIC_MAIL without a sender')
        began(session.envelope, monotonic())
        ctx = self.run_command('MAIL FROM:' + command_args(strings), 'FROM')
        if ok(ctx) and ctx.address is not None:
            self.sender = (strings[0], ctx.address)
        self._forget_if_refused(ctx)
        self._finish(ctx)

    def _on_rcpt(self, packet: Packet) -> None:
        (strings,) = P.read_command(packet)
        assert isinstance(strings, list)
        if not strings:
            raise ProtocolError('SMFIC_RCPT without a recipient')
        ctx = self.run_command('RCPT TO:' + command_args(strings), 'TO')
        if ok(ctx) and ctx.address is not None:
            self.recipients.append((strings[0], ctx.address))
        self._forget_if_refused(ctx)
        self._finish(ctx)

    def _on_data(self, packet: Packet) -> None:
        P.read_command(packet)
        run_message(self, None)

    def _on_content(self, packet: Packet) -> None:
        """A header field, the end of the header or of the body without
        SMFIC_DATA before it (protocol 2 and 3, or a step not asked for):
        the message starts here; the reader takes the packet, and owes its reply."""
        self.owed = None
        run_message(self, packet)

    def _on_abort(self, packet: Packet) -> None:
        if packet.data:
            _not_empty(packet)
        if self.session is None:
            return
        if self.sees_all:
            self.tell('RSET')
        facts = self.facts
        if not self.fresh or (facts is not None and facts.queue_id is not None):
            self.end_transaction()

    def _on_quit(self, packet: Packet) -> None:
        if packet.data:
            _not_empty(packet)
        if self.session is not None and self.sees_all:
            self.tell('QUIT')
        if packet.command == P.QUIT:
            self.closing = True
        else:                           # QUIT_NC: this connection serves another session
            self._end_session()

    def _on_unknown(self, packet: Packet) -> None:
        P.read_command(packet)
        if self.owed is not None:
            self.answer(CONTINUE_PACKET)

    # -- commands through the chain ------------------------------------------------
    def run_command(self, text: str, path: str | None = None) -> Context:
        session = self.open_session()
        self.fresh = False
        ctx = Context(text, session, self.server, self)     # type: ignore[arg-type]
        verb = ctx.command_name.lower()
        commands = self.commands
        commands[verb] = commands.get(verb, 0) + 1
        if path is not None:
            try:
                ctx.address = parse_path(text[5:], path, self.options.lenient_addresses)
            except SmtpError as err:
                ctx.parse_error = err
        try:
            self.server.chain(ctx)
        except BaseException as exc:    # SmtpError is the normal path; the rest are faults
            self._chain_raised(ctx, exc)
        return ctx

    def tell(self, command: str) -> None:
        """RSET or QUIT, which nobody answers: through the chain when a
        middleware declared nothing (it sees every command, as in SMTP);
        middleware that declared their stages keep per-message state on
        the envelope, which each transaction renews."""
        if self.sees_all:
            self.run_command(command)

    def _chain_raised(self, ctx: Context, exc: BaseException) -> None:
        if isinstance(exc, SmtpError):
            ctx.reply = reply = exc.reply
            ctx.refusal = (reply, refused_by(exc) or MIDDLEWARE)
        elif isinstance(exc, (ClientDisconnected, ProtocolError, gevent.GreenletExit)):
            raise exc
        elif isinstance(exc, (Exception, gevent.Timeout)):
            self.log(40, 'Middleware failed on %s: %r', ctx.command_name, exc)
            self.server.emit('error', exc)
            ctx.reply = R.LOCAL_ERROR
        else:
            self.log(50, 'Middleware raised %r on %s: closing the session',
                     exc, ctx.command_name)
            self.server.emit('error', exc)
            ctx.reply = R.HOOK_FAILED
            ctx.close_requested = True

    def _finish(self, ctx: Context) -> None:
        """The reply of a command the MTA waits for, and its refusal told."""
        reply = final(ctx)
        if reply.code >= 400:
            self.refused(ctx, reply)
        self._reply(reply, ctx.close_requested)
        if ctx.close_requested:
            self.closing = True

    def _reply(self, reply: Reply, close: bool = False) -> None:
        if self.owed is not None:
            self.answer(reply_packet(reply, close))

    def refused(self, ctx: Context, reply: Reply) -> None:
        session = self.open_session()
        verb = ctx.command_name
        key = verb.lower()
        self.failed[key] = self.failed.get(key, 0) + 1
        refusal = ctx.refusal
        by = refusal[1] if refusal is not None and refusal[0] is reply else MIDDLEWARE
        address = ctx.address if verb in ('MAIL', 'RCPT') else None
        queue = self.queue_id(session) if verb == 'DATA' else self._mta_queue_id()
        self.server.events.refused(session, verb, reply, by, address, queue)

    def _forget_if_refused(self, ctx: Context) -> None:
        """A MAIL/RCPT refused after next() leaves no trace (as in SMTP)."""
        if ok(ctx):
            return
        envelope = self.open_session().envelope
        if ctx.command_name == 'MAIL' and envelope.mail_from is ctx.address:
            envelope.mail_from = None
        elif envelope.rcpt_to and envelope.rcpt_to[-1] is ctx.address:
            envelope.rcpt_to.pop()

    def hook(self, name: str, *args: object) -> Any:
        """Call a hook: SmtpError is its reply; anything else is HookFailed."""
        fn = getattr(self.options, name)
        if fn is None:
            return None
        try:
            return fn(*args)
        except SmtpError as err:
            stamp(err, name)
            raise
        except ClientDisconnected:
            raise
        except Exception as exc:
            self.log(40, '%s hook failed: %r', name, exc)
            self.server.emit('error', exc)
            raise HookFailed(name) from exc

    def _logged_in(self, session: Session) -> None:
        """The MTA authenticated the client ({auth_authen}): on_auth says
        who the user is (a falsy answer: nobody), else the login name."""
        auth = session.auth
        assert auth is not None
        if self.options.on_auth is not None:
            try:
                session.user = self.options.on_auth(session) or None
            except Exception as exc:
                self.log(40, 'on_auth hook failed: %r', exc)
                self.server.emit('error', exc)
                session.user = None
        else:
            session.user = auth.username
        if session.user:
            self.server.events.authenticated(session, auth.method)

    # -- the session and the transaction -----------------------------------------
    def open_session(self) -> Session:
        session = self.session
        if session is None:
            raise ProtocolError('an event before SMFIC_CONNECT')
        return session

    def queue_id(self, session: Session) -> str:
        return self._mta_queue_id() or transaction_id(session)

    def _mta_queue_id(self) -> str | None:
        return self.facts.queue_id if self.facts is not None else None

    def _reset_transaction(self) -> None:
        self.sender = None
        if self.recipients:
            self.recipients = []
        if self.facts is not None:
            self.facts.queue_id = None

    def end_transaction(self) -> None:
        if self.session is not None:
            self.session.end_transaction()
        self._reset_transaction()
        self.fresh = True

    def _end_session(self) -> None:
        """The session's cleanup, however it ended: the spool, the events,
        the components, on_close (as the SMTP engine's `finally`)."""
        session, self.session = self.session, None
        if session is None:
            return
        self.message_reader = None
        session.envelope.discard()
        server = self.server
        try:
            server.events.disconnected(session, self.commands, self.failed)
        except Exception as exc:
            self.log(40, 'the events observer failed on disconnected: %r', exc)
        closed = server.lifecycle.closed
        if closed:
            self._tell(closed, session)
        if self.options.on_close is not None:
            try:
                self.options.on_close(session)
            except Exception as exc:
                self.log(40, 'on_close hook failed: %r', exc)
        self.facts = None

    def _tell(self, hooks: tuple[SessionEvent, ...], session: Session | None = None) -> None:
        for hook in hooks:
            try:
                hook(session or self.open_session())
            except (Exception, gevent.Timeout) as exc:
                self.log(40, '%s failed: %r', name_of(hook), exc)
                self.server.emit('error', exc)


def _not_empty(packet: Packet) -> None:
    """ABORT, QUIT, QUIT_NC carry nothing ([pmilter]): one with data is malformed."""
    raise ProtocolError(f'{P.name_of(packet.command)}: {len(packet.data)} bytes after '
                        'the last field')


def _client_of(macros: dict[str, str]) -> tuple[str, str, str]:
    """(address, port, name) of the client from the macros of a skipped
    CONNECT: {client_addr}, {client_port}, {client_name} (asked for with
    SMFIR_SETSYMLIST), else `_`, 'name [address]' (Postfix's default
    milter_connect_macros; MILTER_README), as an MTA without macro lists has it."""
    address, name = macros.get('client_addr', ''), macros.get('client_name', '')
    if not address:
        head, _, rest = macros.get('_', '').rpartition(' [')
        if rest.endswith(']'):
            address, name = rest[:-1], name or head
    if address[:5].upper() == 'IPV6:':
        address = address[5:]
    return address, macros.get('client_port', ''), name


_EVENTS = {
    P.MACRO: MilterConnection.take_macros, P.OPTNEG: MilterConnection._on_optneg,
    P.CONNECT: MilterConnection._on_connect, P.HELO: MilterConnection._on_helo,
    P.MAIL: MilterConnection._on_mail, P.RCPT: MilterConnection._on_rcpt,
    P.DATA: MilterConnection._on_data, P.HEADER: MilterConnection._on_content,
    P.EOH: MilterConnection._on_content, P.BODY: MilterConnection._on_content,
    P.EOB: MilterConnection._on_content, P.ABORT: MilterConnection._on_abort,
    P.QUIT: MilterConnection._on_quit, P.QUIT_NC: MilterConnection._on_quit,
    P.UNKNOWN: MilterConnection._on_unknown,
}
# Events that may come outside a session: before CONNECT, or after QUIT_NC.
_SESSIONLESS = frozenset({P.MACRO, P.OPTNEG, P.QUIT, P.QUIT_NC, P.ABORT})
