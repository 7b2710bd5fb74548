"""The session loop: one greenlet per connection, one command at a time.

`run()` opens the session (PROXY, TLS, on_connect, the greeting), then
reads a command, runs it through the middleware chain, writes its one
final reply, and again, until QUIT, a limit or the client ends it. The
commands themselves are in the table (commands.py) and their handlers in
one module per concern; the socket is the transport's.
"""
from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from gevent import socket as gsocket

from .. import replies as R
from ..addresses import parse_path
from ..errors import ClientDisconnected, SmtpError
from ..events import ENGINE, LIMIT, MIDDLEWARE, began, queue_id, refused_by, stamp
from ..logs import emit
from ..framing import TOO_LONG, Line
from ..limits import SessionCounters
from ..middleware import Context, name_of
from ..options import MAX_AUTH_LINE, MAX_COMMAND_LINE
from ..proxy import ProxyError
from ..replies import Reply, format_reply, wire_bytes
from ..sasl import mask_auth_command
from ..session import Session
# The handler modules register their commands; this order is HELP's order.
from . import greeting, envelope, body, security, forwarding, basic  # noqa: I001
from .body import finish_data
from .commands import COMMANDS, GREETING, JUNK, enabled, gate
from .exceptions import HookFailed, SessionShutdown
from .security import before_auth_reply, upgrade
from .transport import ClientTimeout, Transport

if TYPE_CHECKING:
    from ..addresses import Address
    from ..events import Events
    from ..middleware import SessionEvent
    from ..options import LogBackend, Options
    from ..server import SmtpServer
    from ..session import Envelope
    from ..sockets import PlainSocket

HANDLER_MODULES = (greeting, envelope, body, security, forwarding, basic)

# The replies of the limits an admin configures: refused `by` LIMIT in the log.
LIMIT_REPLIES = frozenset({R.TOO_MANY_RECIPIENTS, R.MESSAGE_TOO_BIG, R.TOO_MANY_CONNECTIONS,
                           R.TOO_MANY_ERRORS, R.TOO_MANY_MESSAGES, R.TOO_MANY_AUTH_FAILURES,
                           R.AUTH_BLOCKED})

# The verbs the command summary counts: the table's, lower-case, as Postfix
# writes them ('unknown' for anything else: a client's words are no key).
VERBS = {name: name.lower() for name in COMMANDS}

# An AUTH command may carry an initial response of MAX_AUTH_LINE octets.
MAX_AUTH_COMMAND = MAX_AUTH_LINE + len('AUTH CRAM-MD5 ')
REVERSE_LOOKUP_TIMEOUT = 1.5    # seconds; a slow resolver must not stall the greeting


class Engine:
    """One connection: its session state, counters and the command loop.

    `host` is the server, seen through a narrow interface: `options`,
    `chain(ctx)`, `lifecycle` (its components' session_opened and
    session_closed), `log_backend`, `events` (who hears of each fact:
    events.Events), `emit(event, exc)`, `secure_context`, `sweeper`,
    `stopping`, `auth_failures`, `claim_client_ip(ip)` and
    `release_client_ip(ip)`.

    `commands` counts the commands per verb ('ehlo': 1; 'unknown' for what
    is none), `failed` those refused: the summary of the disconnect event.
    """

    options: Options

    def __init__(self, host: SmtpServer, sock: PlainSocket, peer: object,
                 local: object = None) -> None:
        self.host = host
        options = self.options = host.options
        self.transport = Transport(sock, options.socket_timeout, host.sweeper)
        self._queue = self.transport.write
        self._lines = self.transport.lines
        self._pipelined = 0
        self.closing = False
        self.waiting_idle = False   # blocked reading a command, no transaction open
        # RFC 2034 4: once the extension is offered, codes go on every reply
        # but the greeting and the HELO/EHLO reply, whether or not EHLO was used.
        self.enhanced = options.enabled('ENHANCEDSTATUSCODES')
        self.counters = SessionCounters(options.max_errors, options.max_auth_failures,
                                        options.max_messages, options.max_junk_commands)
        self.upgrade_pending = False   # STARTTLS answered; handshake after the reply
        self.auth_method: str | None = None    # mechanism of the AUTH command in progress
        self.auth_username: str | None = None  # who that AUTH said it is, once it said
        local = _split_address(local or sock.getsockname())
        remote = _split_address(peer)
        self.session = Session(local[0], local[1], remote[0], remote[1], lmtp=options.lmtp)
        self.peer_ip = remote[0]    # who is really talking to us (after PROXY, never XCLIENT)
        self.claimed_ip: str | None = None     # counted against max_connections_per_ip
        self.greenlet = gevent.getcurrent()
        self._log_min: int = options.log_level
        self._backend: LogBackend = host.log_backend    # a RecordLog for a Logger (logs.py)
        self.events: Events = host.events
        self.connected = False      # told the events (so the disconnect is told too)
        self.commands: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    # -- logging ---------------------------------------------------------
    def log(self, level: int, message: str, *args: object) -> None:
        """A line of this session: '<session id>: message', the id also as
        the field `session`; costs one comparison when off. (The facts a
        mail admin greps for are events: self.events.)"""
        if level >= self._log_min:
            sid = self.session.id
            emit(self._backend, level, '%s: ' + message, (sid, *args), {'session': sid})

    # -- the loop --------------------------------------------------------
    def run(self) -> None:
        session = self.session
        host = self.host
        try:
            try:
                opened = host.lifecycle.opened     # () unless a component wants it
                if opened:
                    self._tell(opened)
                self._open()
                while not self.closing:
                    self.handle(self._read_command())
                    if host.stopping and not self.closing and session.envelope.mail_from is None:
                        self.write(R.SHUTTING_DOWN)
                        self.closing = True
            except ClientTimeout:
                self.log(20, 'Idle timeout, closing')
                self.write(R.TIMEOUT)
            except SessionShutdown:
                self.transport.drop_output()
                self.write(R.SHUTTING_DOWN)
            self.transport.flush()
        except (ClientDisconnected, OSError) as exc:
            self.log(10, 'Connection lost: %s', exc or type(exc).__name__)
        except Exception as exc:   # a bug of ours must cost one session, not the server
            self.log(40, 'Unexpected error: %r', exc)
            host.emit('error', exc)
        finally:
            self.abort()
            session.envelope.discard()      # a spool must not outlive a vanished client
            if self.claimed_ip is not None:
                host.release_client_ip(self.claimed_ip)
            if self.connected:
                try:
                    self.events.disconnected(session, self.commands, self.failed)
                except Exception as exc:    # an observer's bug: the cleanup goes on
                    self.log(40, 'the events observer failed on disconnected: %r', exc)
            closed = host.lifecycle.closed
            if closed:
                self._tell(closed)
            if self.options.on_close is not None:
                try:
                    self.options.on_close(session)
                except Exception as exc:
                    self.log(40, 'on_close hook failed: %r', exc)

    def _tell(self, hooks: tuple[SessionEvent, ...]) -> None:
        """Tell the components that this session opened or closed. One that
        fails is logged and reported; the session and the others go on."""
        for hook in hooks:
            try:
                hook(self.session)
            except (Exception, gevent.Timeout) as exc:
                self.log(40, '%s failed: %r', name_of(hook), exc)
                self.host.emit('error', exc)
            except SessionShutdown:     # stop() ran out of patience with this hook
                self.log(30, '%s interrupted: the server is stopping', name_of(hook))

    def abort(self) -> None:
        """Close the socket now (the server's last resort at stop())."""
        self.transport.close()

    def _open(self) -> None:
        """Everything before the greeting. The connect event comes once the
        client is known (after a PROXY header and the reverse lookup); one
        refused by max_connections_per_ip is a refusal only."""
        opts = self.options
        if opts.use_proxy.allows(self.peer_ip):
            self._read_proxy_header()
        if not self.host.claim_client_ip(self.peer_ip):
            reply = R.TOO_MANY_CONNECTIONS      # as max_connections' refusal words it
            self._wire(format_reply(reply.code, reply.message, reply.enhanced, True))
            self.events.refused(self.session, 'CONNECT', reply, LIMIT, None, None)
            self.closing = True
            return
        self.claimed_ip = self.peer_ip
        self._lookup_client_hostname()
        self.connected = True
        self.events.connected(self.session)
        if opts.secure:
            self.start_tls()
        try:
            self.hook('on_connect', self.session)
        except SmtpError as err:
            return self._refuse_session(err.reply, refused_by(err) or 'on_connect')
        except HookFailed:
            return self._refuse_session(R.HOOK_FAILED, 'on_connect')
        if opts.greeting_delay and self.transport.client_talks_first(opts.greeting_delay):
            self.session.pre_greeting_data = True
            self.log(20, 'Client talked before the greeting')
            if opts.reject_early_talkers:
                return self._refuse_session(R.EARLY_TALKER, ENGINE)
        self.write(self.banner())

    def banner(self, extra: bool = True) -> Reply:
        """The 220 greeting (also XCLIENT's reply, without the `banner` text:
        the session starts over)."""
        opts = self.options
        protocol = 'LMTP' if opts.lmtp else 'ESMTP'
        banner = f' {opts.banner}' if opts.banner and extra else ''
        return Reply(220, f'{opts.name} {protocol}{banner}', False)

    def _refuse_session(self, reply: Reply, by: str) -> None:
        self.write(reply)
        self.events.refused(self.session, 'CONNECT', reply, by, None, None)
        self.closing = True

    def _lookup_client_hostname(self) -> None:
        ip = self.session.remote_address
        if self.options.disable_reverse_lookup or not ip:
            return
        try:
            with gevent.Timeout(REVERSE_LOOKUP_TIMEOUT):
                name = gsocket.gethostbyaddr(ip)[0]
        except (gevent.Timeout, OSError, UnicodeError):
            return
        if name:
            self.session.client_hostname = name

    def _read_proxy_header(self) -> None:
        """The PROXY header a trusted proxy must send; anything malformed,
        oversized or late closes the connection."""
        try:
            header = self.transport.read_proxy_header(self.options.upgrade_timeout)
        except ProxyError as exc:
            self.log(30, 'Bad PROXY header from %s: %s', self.peer_ip, exc)
            raise ClientDisconnected('bad PROXY header') from None
        except ClientTimeout:
            self.log(30, 'No complete PROXY header from %s in time', self.peer_ip)
            raise ClientDisconnected('PROXY header timeout') from None
        session = self.session
        session.proxy = header
        endpoints = header.tcp_endpoints()
        if endpoints is not None and not self.options.ignored_hosts.allows(self.peer_ip):
            (session.remote_address, session.remote_port,
             session.local_address, session.local_port) = endpoints
            session.client_hostname = f'[{endpoints[0]}]'
            self.peer_ip = endpoints[0]
        self.log(20, 'PROXY v%d %s: client %s:%s', header.version, header.command,
                 session.remote_address, session.remote_port)

    def start_tls(self) -> None:
        """The TLS handshake within upgrade_timeout; a failed or slow one
        ends only this connection."""
        session = self.session
        try:
            session.tls = self.transport.start_tls(self.host.secure_context['*'],
                                                   self.options.upgrade_timeout)
        except ClientDisconnected as exc:
            self.events.tls(session, str(exc) or type(exc).__name__)
            raise
        session.secure = True
        self.events.tls(session, None)

    # -- reading and writing ----------------------------------------------
    def _read_command(self) -> Line:
        line = self._lines.next_line(MAX_AUTH_COMMAND)
        if line is not None:        # pipelined: already received
            self._pipelined += 1
            if not self._pipelined & 63:
                gevent.sleep(0)     # a flood of pipelined commands must not starve others
            return line
        transport = self.transport
        # Flush before marking the session idle: stop() may interrupt an
        # idle session, and must never interrupt it inside a write.
        transport.flush()
        self.waiting_idle = self.session.envelope.mail_from is None
        try:
            if self.waiting_idle and self.host.stopping:
                raise SessionShutdown()
            return transport.receive_line(MAX_AUTH_COMMAND)
        finally:
            self.waiting_idle = False

    def write(self, reply: Reply) -> None:
        """Queue a reply; it goes out with the next flush (pipelining)."""
        wire = wire_bytes(reply, self.enhanced)
        self._queue(wire)
        if self._log_min <= 10:
            self._log_wire(wire)

    def _wire(self, data: bytes) -> None:
        """Queue bytes made elsewhere (a refusal before the greeting)."""
        self._queue(data)
        if self._log_min <= 10:
            self._log_wire(data)

    def _log_wire(self, data: bytes) -> None:
        """DEBUG: each line of a reply as it goes out ('S: 250-PIPELINING')."""
        for line in data.decode('utf-8', 'replace').split('\r\n')[:-1]:
            self.log(10, 'S: %s', line)

    def send_now(self, reply: Reply) -> None:
        """Intermediate replies (354, 334) go out at once."""
        self.write(reply)
        self.transport.flush()

    # -- one command -------------------------------------------------------
    def handle(self, line: Line) -> None:
        """One command line: check it, run the chain, write the one final reply."""
        if line is TOO_LONG:
            return self._fault(R.LINE_TOO_LONG)
        if (len(line) > MAX_COMMAND_LINE or b'\r' in line
                or b'\x00' in line or self._lines.last_bare):
            reply = _line_fault(line, self._lines.last_bare,
                                self.options.bare_newline == 'reject')
            if reply is not None:
                return self._fault(reply)
        try:
            text = line.decode('utf-8')
        except UnicodeDecodeError:
            return self._fault(R.BAD_ENCODING)
        if self._log_min <= 10:
            self.log(10, 'C: %s', mask_auth_command(text))
        ctx = Context(text, self.session, self.host, self)
        name = ctx.command_name
        verb = VERBS.get(name, 'unknown')
        counts = self.commands
        counts[verb] = counts.get(verb, 0) + 1
        if name in ('MAIL', 'RCPT'):
            if name == 'MAIL' and self.session.envelope.mail_from is None:
                began(self.session.envelope, monotonic())   # the transaction's time
            self._parse_address(ctx)
        try:
            self.host.chain(ctx)
        except BaseException as exc:    # SmtpError is the normal path, the rest are faults
            self._chain_raised(ctx, exc)
        stream = ctx.data_stream
        if stream is not None:
            finish_data(self, ctx, stream)
        elif name == 'AUTH':
            self._auth_done(ctx)
        else:
            if ctx.reply is None:
                ctx.reply = R.NO_REPLY_SET
            if ctx.address is not None and name in ('MAIL', 'RCPT'):
                _forget_if_refused(self.session.envelope, ctx, ctx.reply)
            self.final(ctx.reply, ctx)
        if ctx.close_requested:
            self.closing = True
        if self.upgrade_pending:
            self.upgrade_pending = False
            if not self.closing and getattr(ctx.reply, 'code', 0) == 220:
                upgrade(self)

    def _fault(self, reply: Reply) -> None:
        """A line refused before it is a command (too long, bare CR/LF, NUL,
        not UTF-8): counted as an unknown command."""
        self.commands['unknown'] = self.commands.get('unknown', 0) + 1
        self.final(reply)

    def _auth_done(self, ctx: Context) -> None:
        """AUTH's reply, and its outcome told (a 535 is told by `final`)."""
        reply = ctx.reply
        if reply is None:
            reply = ctx.reply = R.AUTH_FAILED if self.options.no_auth_reply else R.NO_REPLY_SET
        before_auth_reply(self, reply)
        if not isinstance(reply, list) and reply.code == 235:
            self.events.authenticated(self.session, self.auth_method or '')
        self.final(reply, ctx)
        self.auth_method = self.auth_username = None

    def _chain_raised(self, ctx: Context, exc: BaseException) -> None:
        """What the middleware chain raised becomes the reply; who raised
        it is on an SmtpError (events.stamp: the middleware level it left)."""
        if isinstance(exc, SmtpError):      # MessageRefused too: not a failure
            ctx.reply = reply = exc.reply
            ctx.refusal = (reply, refused_by(exc) or MIDDLEWARE)
        elif isinstance(exc, (ClientDisconnected, SessionShutdown, gevent.GreenletExit)):
            raise exc
        elif isinstance(exc, (Exception, gevent.Timeout)):
            self.log(40, 'Middleware failed on %s: %r', ctx.command_name, exc)
            self.host.emit('error', exc)
            ctx.reply = R.LOCAL_ERROR
        else:                               # sys.exit() in user code costs one session
            self.log(50, 'Middleware raised %r on %s: closing the session',
                     exc, ctx.command_name)
            self.host.emit('error', exc)
            ctx.reply = R.HOOK_FAILED
            ctx.close_requested = True

    def final(self, reply: Reply | list[Reply], ctx: Context | None = None,
              recipient: Address | None = None) -> None:
        """Write the one final reply of a command (of one `recipient`'s, after
        an LMTP DATA), tell a refusal and count errors."""
        if isinstance(reply, list):     # LMTP-style list outside DATA: first only
            reply = reply[0] if reply else R.NO_REPLY_SET
        wire = wire_bytes(reply, self.enhanced)
        self._queue(wire)
        if self._log_min <= 10:
            self._log_wire(wire)
        code = reply.code
        if code >= 400:
            self._refused(reply, ctx, recipient)
        counters = self.counters
        if (code >= 400 or counters.junk_excess) and counters.counts_as_error(code):
            self._count_error(reply, ctx)

    def _refused(self, reply: Reply, ctx: Context | None, recipient: Address | None) -> None:
        """Tell the refusal of a command (an AUTH's 535: a failed login), and
        count it for the summary (an LMTP DATA once: finish_data)."""
        verb = ctx.command_name if ctx is not None else 'UNKNOWN'
        if verb not in COMMANDS:
            verb = 'UNKNOWN'
        if recipient is None:
            key = VERBS.get(verb, 'unknown')
            self.failed[key] = self.failed.get(key, 0) + 1
        session = self.session
        if verb == 'AUTH' and reply.code == 535:     # RFC 4954 6: wrong credentials
            self.events.auth_failed(session, self.auth_method or '', self.auth_username, reply)
            return
        address = recipient
        if address is None and ctx is not None and verb in ('MAIL', 'RCPT'):
            address = ctx.address
        self.events.refused(session, verb, reply, _refuser(reply, ctx), address,
                            queue_id(session) if verb in ('DATA', 'BDAT') else None)

    def _count_error(self, reply: Reply, ctx: Context | None) -> None:
        auth_failure = ctx is not None and ctx.command_name == 'AUTH' and reply.code == 535
        if auth_failure:
            failures = self.host.auth_failures
            if failures is not None and failures.add(self.peer_ip):
                self.log(30, 'AUTH from %s blocked for now: %d failures within %g s',
                         self.peer_ip, failures.limit, failures.window)
        reached = self.counters.error(auth_failure)
        closing = R.TOO_MANY_AUTH_FAILURES if reached == 'auth' else \
            R.TOO_MANY_ERRORS if reached == 'errors' and not self.closing else None
        if closing is not None:
            self.write(closing)
            self.closing = True
            verb = ctx.command_name if ctx is not None else 'UNKNOWN'
            self.events.refused(self.session, verb if verb in COMMANDS else 'UNKNOWN',
                                closing, LIMIT, None, None)

    def _parse_address(self, ctx: Context) -> None:
        """MAIL/RCPT are parsed before middleware runs (ctx.address)."""
        command = ctx.command
        rest = command[5:] if len(command) > 4 and command[4] == ' ' else ''
        try:
            ctx.address = parse_path(rest, 'FROM' if ctx.command_name == 'MAIL' else 'TO',
                                     self.options.lenient_addresses)
        except SmtpError as err:
            ctx.parse_error = err

    def hook(self, name: str, *args: object) -> Any:
        """Call a hook: SmtpError is its reply; anything else is HookFailed."""
        fn = getattr(self.options, name)
        if fn is None:
            return None
        try:
            return fn(*args)
        except SmtpError as err:
            stamp(err, name)        # who refused, in the log: the hook
            raise
        except ClientDisconnected:
            raise
        except Exception as exc:
            self.log(40, '%s hook failed: %r', name, exc)
            self.host.emit('error', exc)
            raise HookFailed(name) from exc


def _line_fault(line: bytes, bare: bool, reject_bare: bool) -> Reply | None:
    """The reply a command line gets before it is even parsed, or None
    (a line over the limit: Engine.handle)."""
    if len(line) > MAX_COMMAND_LINE and line[:5].upper() != b'AUTH ':
        return R.LINE_TOO_LONG
    if (bare and reject_bare) or b'\r' in line:
        return R.BARE_NEWLINE_COMMAND
    if b'\x00' in line:
        return R.NUL_IN_COMMAND
    return None


def _forget_if_refused(transaction: Envelope, ctx: Context,
                       reply: Reply | list[Reply]) -> None:
    """A MAIL/RCPT that middleware refused after next() (`reply`) leaves no trace."""
    if isinstance(reply, list) or reply.code < 400:
        return
    if ctx.command_name == 'MAIL' and transaction.mail_from is ctx.address:
        transaction.mail_from = None
    elif transaction.rcpt_to and transaction.rcpt_to[-1] is ctx.address:
        transaction.rcpt_to.pop()


def limit_or_engine(reply: Reply) -> str:
    """Who refused, for a reply of the server's own: LIMIT for a configured
    limit's reply, else ENGINE (sequence, syntax)."""
    return LIMIT if type(reply.message) is str and reply in LIMIT_REPLIES else ENGINE


def _refuser(reply: Reply, ctx: Context | None) -> str:
    """Who set this refusal: recorded with it (ctx.refusal) by the built-in
    handler, the chain or a delivery; else a middleware's ctx.send()."""
    if ctx is None:
        return limit_or_engine(reply)
    refusal = ctx.refusal
    if refusal is not None:
        recorded = refusal[0]
        if recorded is reply or (isinstance(recorded, list)      # LMTP: one per recipient
                                 and any(each is reply for each in recorded)):
            return refusal[1]
    return MIDDLEWARE


def session_for(sock: Any, peer: object, local: object, lmtp: bool) -> Session:
    """The Session of a connection that is refused before it has an engine
    (max_connections): its id and addresses, for the log."""
    here = _split_address(local or sock.getsockname())
    there = _split_address(peer)
    return Session(here[0], here[1], there[0], there[1], lmtp=lmtp)


def _split_address(address: object) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        if host.startswith('::ffff:') and '.' in host:
            host = host[7:]     # IPv4-mapped peers are IPv4 clients
        return host, address[1]
    return (address or '', 0) if isinstance(address, str) else ('', 0)


def builtin(ctx: Context) -> None:
    """The innermost middleware of every chain: the built-in handler of the
    command, run for the session the context belongs to."""
    engine = ctx._engine
    name = ctx.command_name
    entry = COMMANDS.get(name)
    try:
        if entry is None:
            raise SmtpError(R.BAD_SYNTAX if not name else R.UNRECOGNIZED)
        options = engine.options
        if name in options.disabled_commands or (
                entry.extension is not None and not enabled(entry, options)):
            raise SmtpError(R.NOT_IMPLEMENTED)
        flags = entry.flags
        if flags:
            if flags & (JUNK | GREETING):
                engine.counters.command(bool(flags & GREETING), bool(engine.session.user))
            gate(entry, engine, ctx)
        entry.handler(engine, ctx)
    except SmtpError as err:
        ctx.reply = reply = err.reply
        ctx.refusal = (reply, refused_by(err) or limit_or_engine(reply))
    except HookFailed as failed:
        ctx.reply = R.HOOK_FAILED
        ctx.refusal = (R.HOOK_FAILED, str(failed) or ENGINE)
        ctx.close()
