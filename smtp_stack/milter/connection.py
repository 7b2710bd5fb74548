"""One MTA connection to a MilterServer: one greenlet, one blocking loop.

The MTA (Postfix's smtpd or cleanup, Sendmail) opens the connection, offers
its options (SMFIC_OPTNEG), then sends one event per SMTP step of each
client session, each preceded by the macros of that step. Each event runs
the server's middleware chain as the SMTP command it stands for, and the
command's one final reply becomes the milter's reply:

    event (SMFIC_*)        command      reply the MTA gets
    CONNECT                (on_connect) CONTINUE, or REPLYCODE (refused)
    HELO                   EHLO name    CONTINUE, REPLYCODE
    MAIL, RCPT             MAIL, RCPT   CONTINUE, REPLYCODE (for that recipient)
    DATA, or the first     DATA         (reply to the DATA event only when
    header field                        refused; else at the end of the body)
    HEADER, EOH, BODY      -            the body of data_stream, unanswered
                                        where the MTA allows it (SMFIP_NR_*)
    BODYEOB                the DATA     the modifications, then CONTINUE,
                           decision     REPLYCODE or DISCARD
    ABORT                  RSET         none (the protocol has none)
    QUIT                   QUIT         none; the connection ends
    QUIT_NC                QUIT         none; a new CONNECT follows

`ctx.close()` becomes SMFIR_SHUTDOWN (the MTA says 421 and hangs up; a 421
reply of one's own goes as it is). A malformed packet, an oversize one, an
unknown command or an MTA that vanishes ends the connection with one log
line; the session's cleanup (spool, components, on_close) always runs.
"""
from __future__ import annotations

import socket
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from gevent.lock import Semaphore

from .. import replies as R
from ..addresses import parse_path
from ..engine.exceptions import HookFailed
from ..errors import ClientDisconnected, SmtpError
from ..events import ENGINE, LIMIT, MIDDLEWARE, began, refused_by, stamp
from ..events import queue_id as transaction_id
from ..logs import emit
from ..middleware import Context, name_of
from ..session import Session
from ..stream import DataStream
from . import facts as F
from . import message as M
from . import protocol as P
from .protocol import Packet, ProtocolError

if TYPE_CHECKING:
    from ..middleware import SessionEvent
    from ..options import Options
    from ..replies import Reply
    from .server import MilterServer

# What a MilterServer asks of the MTA: every step of a transaction but the
# commands the MTA does not know; a reply only where the chain may refuse.
# The header fields, the end of the header and the body chunks go
# unanswered (SMFIP_NR_*, v6): the DATA decision waits for the end of the body.
STEPS = (P.CONNECT, P.HELO, P.MAIL, P.RCPT, P.DATA, P.HEADER, P.EOH, P.BODY)
ANSWERED = (P.CONNECT, P.HELO, P.MAIL, P.RCPT, P.DATA)
ACTIONS = (P.ADDHDRS | P.CHGHDRS | P.CHGBODY | P.ADD_RCPT | P.ADD_RCPT_PAR | P.DEL_RCPT
           | P.CHANGE_FROM | P.QUARANTINE_ACTION)
RECV_SIZE = 65536 + 1024        # a body chunk and its header in one recv()
TRACE = 5                       # LogLevels.TRACE: every packet, both ways


class MilterConnection:
    """The loop of one MTA connection (`run`), and the Channel that
    message.MessageReader reads the content packets through."""

    def __init__(self, server: MilterServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.options: Options = server.options
        self.sock = sock
        self.peer = peer
        self.reader = P.PacketReader(server.max_packet)
        self.owed: str | None = None        # the event the MTA waits for a reply to
        self.version = 0
        self.flags = 0                      # the protocol flags agreed (SMFIP_*)
        self.actions = 0                    # the actions the MTA allows (SMFIF_*)
        self.leading_space = False
        self.session: Session | None = None
        self.facts: F.MilterFacts | None = None
        self._pending: dict[str, str] = {}   # macros received before CONNECT
        self._message: M.MessageReader | None = None
        self._pushback: Packet | None = None
        self._sender: M.Sent | None = None
        self._recipients: list[M.Sent] = []
        self._write = Semaphore()           # the reply and SMFIR_PROGRESS never interleave
        self._ticker: Any = None            # the greenlet sending SMFIR_PROGRESS
        self.closing = False
        self.commands: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.greenlet = gevent.getcurrent()
        self._log_min = self.options.log_level

    # -- the log -----------------------------------------------------------
    def log(self, level: int, message: str, *args: object) -> None:
        if level >= self._log_min:
            sid = self.session.id if self.session is not None else f'milter[{self.peer}]'
            emit(self.server.log_backend, level, '%s: ' + message, (sid, *args),
                 {'session': sid})

    # -- the Channel (message.py) --------------------------------------------
    def read_packet(self) -> Packet:
        """The next packet; ClientDisconnected when the MTA is gone or
        silent past socket_timeout, ProtocolError for a malformed one."""
        pushed, self._pushback = self._pushback, None
        if pushed is not None:
            return pushed
        reader = self.reader
        while True:
            packet = reader.next_packet()
            if packet is not None:
                if self._log_min <= TRACE:
                    self.log(TRACE, 'MTA: %s %r', P.name_of(packet.command), packet.data[:100])
                return packet
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                raise ClientDisconnected(
                    f'the MTA sent nothing for {self.options.socket_timeout:g} s') from None
            except OSError as exc:
                raise ClientDisconnected(str(exc) or type(exc).__name__) from None
            if not data:
                where = ' mid-packet' if reader.pending else ''
                raise ClientDisconnected(f'the MTA closed the connection{where}')
            reader.feed(data)

    def answer(self, data: bytes) -> None:
        """Send a reply (with the modifications before it, in `data`)."""
        self.owed = None
        if self._log_min <= TRACE:
            self.log(TRACE, 'milter: %r', data[:200])
        with self._write:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise ClientDisconnected(str(exc) or type(exc).__name__) from None

    def expects(self, command: str) -> bool:
        return P.expects_reply(command, self.flags)

    def take_macros(self, packet: Packet) -> None:
        """SMFIC_MACRO: the macros of the event that follows (Postfix and
        Sendmail send them just before it), taken in at once."""
        _, macros = P.read_macros(packet)
        session, facts = self.session, self.facts
        if session is None or facts is None:
            self._pending.update(macros)
            return
        for change in F.apply(session, facts, macros):
            if change == F.TLS_SEEN:
                self.server.events.tls(session, None)
            else:
                self._logged_in(session)

    # -- the loop ------------------------------------------------------------
    def run(self) -> None:
        try:
            try:
                self._negotiate(self.read_packet())
                while not self.closing:
                    self._dispatch(self.read_packet())
            except ProtocolError as exc:
                self.log(30, 'milter protocol error from %s, closing: %s', self.peer, exc.reason)
            except ClientDisconnected as exc:
                in_message = self._message is not None
                self.log(30 if in_message else 20, 'MTA connection from %s ended%s: %s',
                         self.peer, ' mid-message' if in_message else '', exc)
            except gevent.GreenletExit:
                self.log(20, 'MTA connection from %s closed: the server is stopping', self.peer)
        except Exception as exc:   # a bug of ours costs one connection, not the server
            self.log(40, 'Unexpected error on the MTA connection from %s: %r', self.peer, exc)
            self.server.emit('error', exc)
        finally:
            self._stop_progress()
            self._end_session()
            try:
                self.sock.close()
            except OSError:
                pass

    def _negotiate(self, packet: Packet) -> None:
        offer = P.read_negotiation(packet)
        answer = P.answer_negotiation(offer, actions=ACTIONS, steps=STEPS, answered=ANSWERED,
                                      macros=F.WANTED_MACROS)
        self.version, self.actions, self.flags = answer.version, answer.actions, answer.protocol
        self.leading_space = bool(self.flags & P.HDR_LEADSPC)
        self.answer(P.negotiation_reply(answer))
        self.log(10, 'milter protocol %d with %s: actions 0x%x, flags 0x%x', self.version,
                 self.peer, self.actions, self.flags)

    def _dispatch(self, packet: Packet) -> None:
        command = packet.command
        self.owed = command if self.expects(command) else None
        handler = _EVENTS.get(command)
        if handler is None:
            P.read_command(packet)      # ProtocolError: an unknown command
            raise ProtocolError(f'{P.name_of(command)} outside a message')
        if command != P.CONNECT and command not in _SESSIONLESS and self.session is None:
            raise ProtocolError(f'{P.name_of(command)} before SMFIC_CONNECT')
        handler(self, packet)

    # -- the events ------------------------------------------------------------
    def _on_macro(self, packet: Packet) -> None:
        self.take_macros(packet)

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
        session = Session('', 0, ip, port if isinstance(port, int) else 0)
        if hostname and hostname != 'unknown' and not hostname.startswith('['):
            session.client_hostname = hostname
        facts = F.MilterFacts(self.peer)
        facts.version = self.version
        session.milter = facts       # type: ignore[attr-defined]
        self.session, self.facts = session, facts
        self._reset_transaction()
        pending, self._pending = self._pending, {}
        self._tell(self.server.lifecycle.opened)
        self.server.events.connected(session)
        if pending:
            for change in F.apply(session, facts, pending):
                if change == F.TLS_SEEN:
                    self.server.events.tls(session, None)
                else:
                    self._logged_in(session)
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

    def _on_helo(self, packet: Packet) -> None:
        (name,) = P.read_command(packet)
        assert isinstance(name, str)
        self._finish(self._run(f'EHLO {name}'))

    def _on_mail(self, packet: Packet) -> None:
        (strings,) = P.read_command(packet)
        assert isinstance(strings, list)
        session = self._session()
        if session.envelope.mail_from is not None:    # a new message without ABORT
            facts = self.facts
            queue_id = facts.queue_id if facts is not None else None
            self._end_transaction()
            if facts is not None:       # its `i` macro came just before this MAIL
                facts.queue_id = queue_id
        if not strings:
            raise ProtocolError('SMFIC_MAIL without a sender')
        began(session.envelope, monotonic())
        ctx = self._run('MAIL FROM:' + _command_args(strings), 'FROM')
        if _ok(ctx) and ctx.address is not None:
            self._sender = (strings[0], ctx.address)
        self._forget_if_refused(ctx)
        self._finish(ctx)

    def _on_rcpt(self, packet: Packet) -> None:
        (strings,) = P.read_command(packet)
        assert isinstance(strings, list)
        if not strings:
            raise ProtocolError('SMFIC_RCPT without a recipient')
        ctx = self._run('RCPT TO:' + _command_args(strings), 'TO')
        if _ok(ctx) and ctx.address is not None:
            self._recipients.append((strings[0], ctx.address))
        self._forget_if_refused(ctx)
        self._finish(ctx)

    def _on_data(self, packet: Packet) -> None:
        P.read_command(packet)
        self._body(None)

    def _on_content(self, packet: Packet) -> None:
        """A header field, the end of the header or of the body without
        SMFIC_DATA before it (protocol 2 and 3, or a step skipped): the
        message starts here; the reader takes the packet, and owes its reply."""
        self.owed = None
        self._body(packet)

    def _on_abort(self, packet: Packet) -> None:
        P.read_command(packet)
        if self.session is None:
            return
        self._run('RSET')
        self._end_transaction()

    def _on_quit(self, packet: Packet) -> None:
        P.read_command(packet)
        if self.session is not None:
            self._run('QUIT')
        if packet.command == P.QUIT:
            self.closing = True
        else:                           # QUIT_NC: this connection serves another session
            self._end_session()

    def _on_unknown(self, packet: Packet) -> None:
        P.read_command(packet)
        self._answer_if_owed(M.CONTINUE_PACKET)

    # -- the message ---------------------------------------------------------
    def open_stream(self) -> DataStream:
        """data_stream over the content packets (handlers.data)."""
        reader = self._message
        assert reader is not None, 'DATA outside a message'
        stream: DataStream

        def pull() -> bytes | None:
            piece = reader.pull()
            if reader.ended and self._ticker is None:
                self._start_progress()
            if piece is None and reader.aborted:
                stream.aborted = True   # never a clean end: MessageRefused (abandoned)
            return piece

        stream = DataStream(pull, self.options.size)
        return stream

    def _body(self, first: Packet | None) -> None:
        session = self._session()
        reader = self._message = M.MessageReader(self, first, self.leading_space,
                                                 self.server.header_budget)
        try:
            ctx = self._run('DATA')
            reply = _final(ctx)
            stream = ctx.data_stream
            if reply.code < 400 and not ctx.close_requested:
                if stream is None:      # answered without next(): the body still comes
                    while reader.pull() is not None:
                        pass
                else:
                    stream.drain()
                    if stream.refused is not None:
                        reply = stream.refused.reply
                        ctx.refusal = (reply, LIMIT if stream.size_exceeded else ENGINE)
            if reader.aborted:
                self._abandoned(reader)
                return
            if reply.code >= 400 or ctx.close_requested:
                if not reader.answer_when_asked(self._reply_packet(reply, ctx.close_requested)):
                    self._abandoned(reader)
                    return
                self._refused(ctx, reply)
            else:
                self._stop_progress()
                self.answer(self._end_of_message(session, reader) + M.CONTINUE_PACKET
                            if session.envelope.dropped is None else P.reply(P.DISCARD))
                self._accepted(session, stream)
            if ctx.close_requested:
                self.closing = True
        except BaseException:
            self._stop_progress()
            raise       # self._message stays set: run() tells that it ended mid-message
        self._stop_progress()
        self._message = None
        self._end_transaction()

    def _end_of_message(self, session: Session, reader: M.MessageReader) -> bytes:
        """The modification requests middleware made on the envelope."""
        warn: list[str] = []
        packets = b''.join(M.changes(session.envelope, reader.headers, self._sender,
                                     self._recipients, self.actions, self.leading_space, warn))
        if reader.overflow and session.envelope.removed_headers:
            warn.append('remove a header field past the first '
                        f'{self.server.header_budget} bytes of the header')
        for what in warn:
            self.log(30, 'the MTA does not allow a milter to %s: not done', what)
        return packets

    def _abandoned(self, reader: M.MessageReader) -> None:
        """The MTA abandoned the message (ABORT, QUIT, another transaction):
        no reply; the command that ended it is handled next."""
        self._stop_progress()
        self._message = None
        self._end_transaction()
        if reader.quit:
            self.closing = True
            self._run('QUIT')
        elif reader.pushback is not None:
            self._pushback = reader.pushback
        else:
            self._run('RSET')

    def _accepted(self, session: Session, stream: DataStream | None) -> None:
        size = stream.bytes_read if stream is not None else 0
        self.server.events.accepted(session, session.envelope, self._queue_id(session), size)
        if session.envelope.dropped is not None:
            self.log(20, '%s: dropped (SMFIR_DISCARD): %s', self._queue_id(session),
                     session.envelope.dropped or 'no reason given')

    # -- SMFIR_PROGRESS while the chain works after the end of the body ----------
    def _start_progress(self) -> None:
        interval = self.server.progress_interval
        if interval:
            self._ticker = gevent.spawn_later(interval, self._progress, interval)

    def _progress(self, interval: float) -> None:
        """SMFIR_PROGRESS every `interval` s: the MTA restarts its timeout
        (Postfix milter_content_timeout, Sendmail's T=E:) while the chain works."""
        packet = P.reply(P.PROGRESS)
        try:
            while True:
                with self._write:
                    self.sock.sendall(packet)
                gevent.sleep(interval)
        except OSError:
            pass        # the loop finds out the MTA is gone

    def _stop_progress(self) -> None:
        """End the ticker before the verdict goes out. Killed while this
        side holds the write lock, it cannot be inside a write: no half
        packet, and no PROGRESS after the final reply."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            with self._write:
                ticker.kill(block=True, timeout=1.0)

    # -- commands through the chain ------------------------------------------------
    def _run(self, text: str, path: str | None = None) -> Context:
        session = self._session()
        ctx = Context(text, session, self.server, self)     # type: ignore[arg-type]
        verb = ctx.command_name.lower()
        self.commands[verb] = self.commands.get(verb, 0) + 1
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
        reply = _final(ctx)
        if reply.code >= 400:
            self._refused(ctx, reply)
        self._reply(reply, ctx.close_requested)
        if ctx.close_requested:
            self.closing = True

    def _reply(self, reply: Reply, close: bool = False) -> None:
        self._answer_if_owed(self._reply_packet(reply, close))

    def _answer_if_owed(self, data: bytes) -> None:
        if self.owed is not None:
            self.answer(data)

    @staticmethod
    def _reply_packet(reply: Reply, close: bool = False) -> bytes:
        if close and reply.code != 421:
            return P.reply(P.SHUTDOWN)
        if reply.code < 400:
            return M.CONTINUE_PACKET
        lines = [reply.message] if isinstance(reply.message, str) else list(reply.message)
        lines = [part for line in lines for part in str(line).splitlines() or ['']]
        enhanced = reply.enhanced
        if enhanced is None:
            enhanced = R.default_enhanced(reply.code)
        return P.reply(P.REPLYCODE, P.reply_text(reply.code, lines, enhanced or None))

    def _refused(self, ctx: Context, reply: Reply) -> None:
        session = self._session()
        verb = ctx.command_name
        key = verb.lower()
        self.failed[key] = self.failed.get(key, 0) + 1
        refusal = ctx.refusal
        by = refusal[1] if refusal is not None and refusal[0] is reply else MIDDLEWARE
        address = ctx.address if verb in ('MAIL', 'RCPT') else None
        queue = self._queue_id(session) if verb == 'DATA' else self._mta_queue_id()
        self.server.events.refused(session, verb, reply, by, address, queue)

    def _forget_if_refused(self, ctx: Context) -> None:
        """A MAIL/RCPT refused after next() leaves no trace (as in SMTP)."""
        if _ok(ctx):
            return
        envelope = self._session().envelope
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
    def _session(self) -> Session:
        session = self.session
        if session is None:
            raise ProtocolError('an event before SMFIC_CONNECT')
        return session

    def _queue_id(self, session: Session) -> str:
        return self._mta_queue_id() or transaction_id(session)

    def _mta_queue_id(self) -> str | None:
        return self.facts.queue_id if self.facts is not None else None

    def _reset_transaction(self) -> None:
        self._sender = None
        self._recipients = []
        if self.facts is not None:
            self.facts.queue_id = None

    def _end_transaction(self) -> None:
        if self.session is not None:
            self.session.end_transaction()
        self._reset_transaction()

    def _end_session(self) -> None:
        """The session's cleanup, however it ended: the spool, the events,
        the components, on_close (as the SMTP engine's `finally`)."""
        session, self.session = self.session, None
        if session is None:
            return
        self._message = None
        session.envelope.discard()
        server = self.server
        try:
            server.events.disconnected(session, self.commands, self.failed)
        except Exception as exc:
            self.log(40, 'the events observer failed on disconnected: %r', exc)
        self.commands, self.failed = {}, {}
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
                hook(session or self._session())
            except (Exception, gevent.Timeout) as exc:
                self.log(40, '%s failed: %r', name_of(hook), exc)
                self.server.emit('error', exc)


def _command_args(strings: list[str]) -> str:
    """SMFIC_MAIL/RCPT's strings as the SMTP command's argument: Postfix
    and Sendmail send the path in angle brackets; a test driver
    (miltertest) may not."""
    path = strings[0]
    if not path.startswith('<'):
        path = f'<{path}>'
    return ' '.join((path, *strings[1:]))


def _final(ctx: Context) -> Reply:
    reply = ctx.reply
    if isinstance(reply, list):
        reply = reply[0] if reply else None
    if reply is None:
        reply = ctx.reply = R.NO_REPLY_SET
    return reply


def _ok(ctx: Context) -> bool:
    return _final(ctx).code < 400 and not ctx.close_requested


_EVENTS = {
    P.MACRO: MilterConnection._on_macro, P.OPTNEG: MilterConnection._on_optneg,
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
