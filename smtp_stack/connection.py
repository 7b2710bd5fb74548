"""The session loop: one greenlet per connection owns the socket and the state.

Reading this file top to bottom: the loop (`run`), reading and writing, how
one command passes through the middleware chain and gets exactly one final
reply (`_handle`), then every command's built-in handling, each in one
method registered in COMMANDS with its HELP syntax.
"""
from __future__ import annotations

import socket
import ssl
import time

import gevent
from gevent import socket as gsocket

from . import replies as R
from . import sasl
from .addresses import (Address, check_auth_param, check_body, check_envid,
                        check_flag, check_notify, check_orcpt, check_ret,
                        check_size, parse_path)
from .errors import ClientDisconnected, SmtpError
from .forwarding import (parse_xclient, parse_xforward, xclient_capability,
                         xforward_capability)
from .framing import TOO_LONG, DataDecoder, TextChecks
from .framing import LineBuffer
from .middleware import Context
from .options import MAX_AUTH_LINE, MAX_COMMAND_LINE
from .proxy import ProxyError, parse_proxy_header
from .replies import Reply, format_reply, wire_bytes
from .session import Session
from .sockets import TlsSocket
from .stream import DataStream
from .tls import tls_info

RECV_SIZE = 65536       # reads of a message body
LINE_RECV_SIZE = 4096   # reads of command lines: a smaller buffer to allocate and shrink
MAX_PENDING_OUTPUT = 65536   # replies held before a flush, however much is pipelined
# An AUTH command may carry an initial response of MAX_AUTH_LINE octets.
MAX_AUTH_COMMAND = MAX_AUTH_LINE + len('AUTH CRAM-MD5 ')
REVERSE_LOOKUP_TIMEOUT = 1.5    # seconds; a slow resolver must not stall the greeting


class ClientTimeout(ClientDisconnected):
    """The client sent nothing within `socket_timeout`."""


class SessionShutdown(BaseException):
    """Thrown into a session greenlet by `SmtpServer.stop()`.

    A BaseException, like GreenletExit, so that user code catching
    `Exception` around a stream read cannot swallow the shutdown.
    """


class HookFailed(Exception):
    """A hook raised something other than SmtpError: 421 and close."""


COMMANDS: dict = {}


def command(name: str, syntax: str):
    """Register the built-in handler of `name`, with its HELP text."""
    def register(method):
        COMMANDS[name] = (method, syntax)
        return method
    return register


class Connection:

    def __init__(self, server, sock, peer, local=None):
        self.server = server
        self.options = server.options
        self.sock = sock
        self.lines = LineBuffer()
        self._out: list = []
        self._out_bytes = 0
        self._recvs = 0
        self._client_turn = False   # a reply just went out: the client speaks next
        self._pipelined = 0
        self.closing = False
        self.waiting_idle = False   # blocked reading a command, no transaction open
        # RFC 2034 4: once the extension is offered, codes go on every reply
        # but the greeting and the HELO/EHLO reply, whether or not EHLO was used.
        self.enhanced = self.options.enabled('ENHANCEDSTATUSCODES')
        self.errors = 0
        self.auth_failures = 0
        self.messages = 0               # accepted in this connection (max_messages)
        self.junk = 0                   # junk commands since the last accepted message
        self.greetings = 0
        self.junk_excess = False        # the current command is junk beyond the limit
        self.upgrade_pending = False   # STARTTLS answered; handshake after the reply
        self.auth_method = None        # mechanism of the AUTH command in progress
        local = _split_address(local or sock.getsockname())
        remote = _split_address(peer)
        self.session = Session(local[0], local[1], remote[0], remote[1],
                               lmtp=self.options.lmtp)
        self.peer_ip = remote[0]    # who is really talking to us (after PROXY, never XCLIENT)
        self.claimed_ip = None      # counted against max_connections_per_ip
        self.greenlet = gevent.getcurrent()
        self._log_min = self.options.log_level
        self._disabled = self.options.disabled_commands
        self._sweeper = server._sweeper     # the time limits of long waits
        self._backend = server._log_backend     # a RecordLog for a Logger (options.py)

    # -- logging ---------------------------------------------------------
    def log(self, level: int, message: str, *args) -> None:
        """Every line carries the session id; costs one comparison when off."""
        if level >= self._log_min:
            self._backend.log(level, '[%s] ' + message, self.session.id, *args)

    # -- the loop --------------------------------------------------------
    def run(self) -> None:
        session = self.session
        self.log(20, 'Connection from %s:%s', session.remote_address, session.remote_port)
        try:
            try:
                self._open()
                while not self.closing:
                    self._handle(self._read_command())
                    if self.server.stopping and not self.closing and session.envelope.mail_from is None:
                        self._write(R.SHUTTING_DOWN)
                        self.closing = True
            except ClientTimeout:
                self.log(20, 'Idle timeout, closing')
                self._write(R.TIMEOUT)
            except SessionShutdown:
                self._out.clear()
                self._write(R.SHUTTING_DOWN)
            self._flush()
        except (ClientDisconnected, OSError) as exc:
            self.log(10, 'Connection lost: %s', exc or type(exc).__name__)
        except Exception as exc:   # a bug of ours must cost one session, not the server
            self.log(40, 'Unexpected error: %r', exc)
            self.server._emit('error', exc)
        finally:
            self._close_socket()
            session.envelope.discard()      # a spool must not outlive a vanished client
            if self.claimed_ip is not None:
                self.server.release_client_ip(self.claimed_ip)
            self.log(20, 'Connection closed')
            if self.options.on_close is not None:
                try:
                    self.options.on_close(session)
                except Exception as exc:
                    self.log(40, 'on_close hook failed: %r', exc)

    def _open(self) -> None:
        """Everything before the greeting."""
        # The socket's own timeout bounds a write that has to wait (a client
        # that stops reading); reads have their deadlines (recv_within).
        self.sock.settimeout(self.options.socket_timeout)
        if self.options.use_proxy.allows(self.peer_ip):
            self._read_proxy_header()
        if not self.server.claim_client_ip(self.peer_ip):
            reply = R.TOO_MANY_CONNECTIONS      # as max_connections' refusal words it
            self._out.append(format_reply(reply.code, reply.message, reply.enhanced, True))
            self.closing = True
            return
        self.claimed_ip = self.peer_ip
        if self.options.secure:
            self._handshake()
        self._lookup_client_hostname()
        try:
            self._hook('on_connect', self.session)
        except SmtpError as err:
            self._write(err.reply)
            self.closing = True
            return
        except HookFailed:
            self._write(R.HOOK_FAILED)
            self.closing = True
            return
        if self.options.greeting_delay and self._client_talks_first():
            self.session.pre_greeting_data = True
            self.log(20, 'Client talked before the greeting')
            if self.options.reject_early_talkers:
                self._write(R.EARLY_TALKER)
                self.closing = True
                return
        protocol = 'LMTP' if self.options.lmtp else 'ESMTP'
        banner = f' {self.options.banner}' if self.options.banner else ''
        self._write(Reply(220, f'{self.options.name} {protocol}{banner}', False))

    def _client_talks_first(self) -> bool:
        """Wait greeting_delay for bytes a well-behaved client never sends
        before the 220 (what it sent is kept and served normally)."""
        try:
            self.lines.feed(self._recv(time.monotonic() + self.options.greeting_delay))
        except ClientTimeout:
            return False
        return True

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
        """Read exactly the PROXY header (v1 or v2) a trusted proxy must send.

        Bytes are peeked and only the header's own are consumed, so what
        follows (SMTP, or a TLS ClientHello for `secure`) stays in the
        socket. Anything malformed, oversized or late closes the connection.
        """
        header_bytes = b''
        try:
            with gevent.Timeout(self.options.upgrade_timeout, ClientTimeout('PROXY header timeout')):
                self.sock.settimeout(self.options.upgrade_timeout)
                while True:
                    peeked = self.sock.recv(PROXY_PEEK, socket.MSG_PEEK)
                    if not peeked:
                        raise ClientDisconnected('closed before the PROXY header')
                    parsed = parse_proxy_header(header_bytes + peeked)
                    if parsed is None:      # all of it belongs to the header
                        header_bytes += _recv_exactly(self.sock, len(peeked))
                        continue
                    header, used = parsed
                    _recv_exactly(self.sock, used - len(header_bytes))
                    break
        except ProxyError as exc:
            self.log(30, 'Bad PROXY header from %s: %s', self.peer_ip, exc)
            raise ClientDisconnected('bad PROXY header') from None
        except ClientTimeout:
            self.log(30, 'No complete PROXY header from %s in time', self.peer_ip)
            raise ClientDisconnected('PROXY header timeout') from None
        self.sock.settimeout(self.options.socket_timeout)
        session = self.session
        session.proxy = header
        if (header.command == 'PROXY' and header.family in ('TCP4', 'TCP6')
                and not self.options.ignored_hosts.allows(self.peer_ip)):
            session.remote_address, session.remote_port = header.source_address, header.source_port
            session.local_address, session.local_port = header.dest_address, header.dest_port
            session.client_hostname = f'[{header.source_address}]'
            self.peer_ip = header.source_address
        self.log(20, 'PROXY v%d %s: client %s:%s', header.version, header.command,
                 session.remote_address, session.remote_port)

    def _handshake(self) -> None:
        """TLS server handshake within upgrade_timeout (a deadline).

        A failed or slow handshake ends only this connection.
        """
        raw = self.sock
        # Nagle would hold a reply back while earlier bytes wait for the
        # client's delayed ACK (40 ms); after a handshake that risk is real.
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        timeout = self.options.upgrade_timeout
        raw.settimeout(timeout)     # for writes that have to wait
        try:
            tls_sock = TlsSocket(raw, self.server.secure_context['*'])
            self.sock = tls_sock
            tls_sock.do_handshake(timeout, self._sweeper)
        except socket.timeout:
            raise ClientDisconnected('TLS handshake timed out') from None
        except (ssl.SSLError, ValueError) as exc:
            raise ClientDisconnected(f'TLS handshake failed: {exc}') from None
        raw.settimeout(self.options.socket_timeout)
        session = self.session
        session.secure = True
        session.tls = tls_info(tls_sock.sslobj)
        self.log(20, 'TLS established: %s %s', session.tls['version'], session.tls['cipher'])

    def _close_socket(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- reading and writing ----------------------------------------------
    def _recv(self, deadline: float, size: int = RECV_SIZE) -> bytes:
        """Flush pending replies, then wait for bytes until `deadline`."""
        if self._out:
            self._flush()
        # Right after a reply the client has not answered yet: wait for it
        # first (see sockets.py). Past the deadline, bytes already waiting
        # are still taken (the client may only have been held back by us);
        # nothing more is awaited.
        wait_first, self._client_turn = self._client_turn, False
        timeout = max(deadline - time.monotonic(), 0.001)
        self._recvs += 1
        if not self._recvs & 15 and not wait_first:
            gevent.sleep(0)     # fairness: a recv that never blocks never yields
        try:
            data = self.sock.recv_within(size, timeout, wait_first, self._sweeper)
        except socket.timeout:
            raise ClientTimeout('timeout') from None
        except OSError as exc:      # reset, broken pipe...: the documented exception
            raise ClientDisconnected(f'connection lost: {exc}') from None
        if not data:
            raise ClientDisconnected('client closed the connection')
        return data

    def _read_line(self, max_length: int, deadline: float | None = None):
        """The next line (bytes, or TOO_LONG); the whole line must arrive
        within socket_timeout (a deadline, not an idle timer)."""
        line = self.lines.next_line(max_length)
        if line is not None:
            return line
        return self._receive_line(max_length, deadline)

    def _receive_line(self, max_length: int, deadline: float | None = None):
        """_read_line once the buffer holds no complete line."""
        if deadline is None:
            deadline = time.monotonic() + self.options.socket_timeout
        lines = self.lines
        while True:
            lines.feed(self._recv(deadline, LINE_RECV_SIZE))
            line = lines.next_line(max_length)
            if line is not None:
                return line

    def _read_command(self):
        line = self.lines.next_line(MAX_AUTH_COMMAND)
        if line is not None:
            self._pipelined += 1
            if not self._pipelined & 63:
                gevent.sleep(0)     # a flood of pipelined commands must not starve others
            return line
        # Flush before marking the session idle: stop() may interrupt an
        # idle session, and must never interrupt it inside a write.
        self._flush()
        self.waiting_idle = self.session.envelope.mail_from is None
        try:
            if self.waiting_idle and self.server.stopping:
                raise SessionShutdown()
            return self._receive_line(MAX_AUTH_COMMAND)
        finally:
            self.waiting_idle = False

    def _write(self, reply: Reply) -> None:
        """Queue a reply; it goes out with the next flush (pipelining)."""
        data = wire_bytes(reply, self.enhanced)
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > MAX_PENDING_OUTPUT:
            # A client pipelining without reading holds little; and a session
            # whose socket never blocks must still let the others run.
            self._flush()
            gevent.sleep(0)
        if self._log_min <= 10:
            self.log(10, 'S: %s %s', reply.code, reply.message)

    def _flush(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b''.join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self.sock.sendall(data)
            self._client_turn = True

    def send_now(self, reply: Reply) -> None:
        """Intermediate replies (354, 334) go out at once."""
        self._write(reply)
        self._flush()

    # -- one command -------------------------------------------------------
    def _handle(self, line) -> None:
        if line is TOO_LONG or (len(line) > MAX_COMMAND_LINE
                                and line[:5].upper() != b'AUTH '):
            return self._final(R.LINE_TOO_LONG)
        if self.lines.last_bare and self.options.bare_newline == 'reject':
            return self._final(R.BARE_NEWLINE_COMMAND)
        if b'\r' in line:
            return self._final(R.BARE_NEWLINE_COMMAND)
        if b'\x00' in line:
            return self._final(R.NUL_IN_COMMAND)
        try:
            text = line.decode('utf-8')
        except UnicodeDecodeError:
            return self._final(R.BAD_ENCODING)
        if self._log_min <= 10:
            self.log(10, 'C: %s', self._loggable(text))
        ctx = Context(text, self.session, self.server, self)
        if ctx.command_name in ('MAIL', 'RCPT'):
            self._parse_address(ctx)
        try:
            (self.server._dispatch_fn or self.server._dispatch)(ctx)
        except SmtpError as err:
            ctx.reply = err.reply
        except (ClientDisconnected, SessionShutdown, gevent.GreenletExit):
            raise
        except (Exception, gevent.Timeout) as exc:
            self.log(40, 'Middleware failed on %s: %r', ctx.command_name, exc)
            self.server._emit('error', exc)
            ctx.reply = R.LOCAL_ERROR
        except BaseException as exc:    # sys.exit() in user code costs one session
            self.log(50, 'Middleware raised %r on %s: closing the session',
                     exc, ctx.command_name)
            self.server._emit('error', exc)
            ctx.reply = R.HOOK_FAILED
            ctx.close_requested = True
        if ctx.data_stream is not None:
            self._finish_data(ctx)
        else:
            if ctx.reply is None:
                no_auth = ctx.command_name == 'AUTH' and self.options.no_auth_reply
                ctx.reply = R.AUTH_FAILED if no_auth else R.NO_REPLY_SET
            if ctx.command_name == 'AUTH':
                self._before_auth_reply(ctx)
                self.auth_method = None
            elif ctx.command_name in ('MAIL', 'RCPT') and ctx.address is not None:
                self._forget_if_refused(ctx)
            self._final(ctx.reply, ctx)
        if ctx.close_requested:
            self.closing = True
        if self.upgrade_pending:
            self.upgrade_pending = False
            if not self.closing and getattr(ctx.reply, 'code', 0) == 220:
                self._upgrade()

    def _forget_if_refused(self, ctx) -> None:
        """A MAIL/RCPT that middleware refused after next() leaves no trace."""
        reply = ctx.reply
        if isinstance(reply, list) or reply.code < 400:
            return
        envelope = self.session.envelope
        if ctx.command_name == 'MAIL' and envelope.mail_from is ctx.address:
            envelope.mail_from = None
        elif envelope.rcpt_to and envelope.rcpt_to[-1] is ctx.address:
            envelope.rcpt_to.pop()

    def _final(self, reply, ctx=None) -> None:
        """Write the one final reply of a command and count errors."""
        if isinstance(reply, list):     # LMTP-style list outside DATA: first only
            reply = reply[0] if reply else R.NO_REPLY_SET
        self._write(reply)
        if reply.code >= 400 or self.junk_excess:
            self.junk_excess = False
            self._count_error(reply, ctx)

    def _count_error(self, reply, ctx) -> None:
        self.errors += 1
        if ctx is not None and ctx.command_name == 'AUTH' and reply.code == 535:
            self.auth_failures += 1
            failures = self.server.auth_failures
            if failures is not None and failures.add(self.peer_ip):
                self.log(30, 'AUTH from %s blocked for now: %d failures within %g s',
                         self.peer_ip, failures.limit, failures.window)
            if self.auth_failures >= self.options.max_auth_failures:
                self._write(R.TOO_MANY_AUTH_FAILURES)
                self.closing = True
                return
        if self.options.max_errors and self.errors >= self.options.max_errors and not self.closing:
            self._write(R.TOO_MANY_ERRORS)
            self.closing = True

    def _loggable(self, text: str) -> str:
        if text[:4].upper() == 'AUTH':
            parts = text.split(' ', 2)
            return ' '.join(parts[:2]) + (' <hidden>' if len(parts) > 2 else '')
        return text

    def _parse_address(self, ctx: Context) -> None:
        """MAIL/RCPT are parsed before middleware runs (SPEC: ctx.address)."""
        command = ctx.command
        rest = command[5:] if len(command) > 4 and command[4] == ' ' else ''
        try:
            ctx.address = parse_path(rest, 'FROM' if ctx.command_name == 'MAIL' else 'TO',
                                     self.options.lenient_addresses)
        except SmtpError as err:
            ctx.parse_error = err

    def _hook(self, name: str, *args):
        fn = getattr(self.options, name)
        if fn is None:
            return None
        try:
            return fn(*args)
        except SmtpError:
            raise
        except ClientDisconnected:
            raise
        except Exception as exc:
            self.log(40, '%s hook failed: %r', name, exc)
            self.server._emit('error', exc)
            raise HookFailed(name) from exc

    # -- the innermost middleware ----------------------------------------
    def builtin(self, ctx: Context) -> None:
        """The built-in command handler (the end of the middleware chain)."""
        name = ctx.command_name
        entry = COMMANDS.get(name)
        try:
            if entry is None:
                raise SmtpError(*(R.BAD_SYNTAX if not name else R.UNRECOGNIZED))
            if name in self._disabled or name == 'BDAT' and not self._command_enabled(name):
                raise SmtpError(*R.NOT_IMPLEMENTED)
            if name in COUNTED_COMMANDS:
                self._count_junk(name)
            entry[0](self, ctx)
        except SmtpError as err:
            ctx.reply = err.reply
        except HookFailed:
            ctx.reply = R.HOOK_FAILED
            ctx.close()

    def _count_junk(self, name: str) -> None:
        """Commands that move no mail, from a client that has not logged in
        (Postfix smtpd_junk_command_limit): beyond max_junk_commands each one
        also counts as an error, so max_errors ends the session."""
        if name in ('HELO', 'EHLO', 'LHLO'):
            self.greetings += 1
            if self.greetings == 1:
                return
        elif name not in JUNK_COMMANDS:
            return
        limit = self.options.max_junk_commands
        if self.session.user or not limit:
            return
        self.junk += 1
        if self.junk > limit:
            self.junk_excess = True

    def _command_enabled(self, name: str) -> bool:
        """Disabling an extension disables its command too (CHUNKING: BDAT)."""
        opts = self.options
        if name == 'BDAT':
            return opts.enabled('BDAT') and opts.enabled('CHUNKING')
        return opts.enabled(name)

    def _require_greeting(self) -> None:
        if self.session.greeting is None:
            raise SmtpError(*(R.NEED_LHLO if self.options.lmtp else R.NEED_HELO))

    # -- HELO, EHLO, LHLO ---------------------------------------------------
    @command('HELO', 'HELO hostname')
    def smtp_helo(self, ctx):
        self._greet(ctx, 'HELO')

    @command('EHLO', 'EHLO hostname')
    def smtp_ehlo(self, ctx):
        self._greet(ctx, 'EHLO')

    @command('LHLO', 'LHLO hostname')
    def smtp_lhlo(self, ctx):
        self._greet(ctx, 'LHLO')

    def _greet(self, ctx, kind: str) -> None:
        if self.options.lmtp != (kind == 'LHLO'):
            raise SmtpError(*R.UNRECOGNIZED)
        if not ctx.command_args:
            raise SmtpError(501, f'Syntax: {kind} hostname', '5.5.4')
        session = self.session
        session.reset_envelope()
        # After XCLIENT HELO=..., the original client's name stays (Postfix).
        session.helo = session.xclient.get('HELO') or ctx.command_args[0]
        session.greeting = kind
        hello = f'{self.options.name} Nice to meet you, {session.client_hostname}'
        if kind == 'HELO':
            ctx.reply = Reply(250, hello, False)
            return
        ctx.reply = Reply(250, [hello] + self.extensions(), False)

    def extensions(self) -> list:
        """The EHLO keywords this session may use, minus disabled ones."""
        opts = self.options
        state = (self.session.secure, self._auth_allowed(),
                 opts.enabled('XCLIENT') and opts.use_xclient.allows(self.peer_ip),
                 opts.enabled('XFORWARD') and opts.use_xforward.allows(self.peer_ip))
        # The options are fixed once the server is made, so the list depends
        # only on this state: made once per server and state.
        known = self.server._ehlo_keywords
        keywords = known.get(state)
        if keywords is None:
            keywords = known[state] = self._keywords(*state)
        return list(keywords)

    def _keywords(self, secure: bool, auth: bool, xclient: bool, xforward: bool) -> tuple:
        opts = self.options
        offered = ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']
        keywords = [k for k in offered if opts.enabled(k)]
        if opts.enabled('SIZE'):
            keywords.append(f'SIZE {opts.size}' if opts.size else 'SIZE')
        if opts.enabled('DSN'):
            keywords.append('DSN')
        if self._command_enabled('BDAT'):
            keywords.append('CHUNKING')
            if opts.enabled('BINARYMIME'):
                keywords.append('BINARYMIME')
        if opts.enabled('REQUIRETLS') and secure:
            keywords.append('REQUIRETLS')
        if opts.enabled('STARTTLS') and not secure:
            keywords.append('STARTTLS')
        if auth:
            keywords.append('AUTH ' + ' '.join(opts.auth_methods))
        if xclient:
            keywords.append(xclient_capability())
        if xforward:
            keywords.append(xforward_capability())
        if opts.enabled('HELP'):
            keywords.append('HELP')
        return tuple(keywords)

    # -- MAIL, RCPT ---------------------------------------------------------
    @command('MAIL', 'MAIL FROM:<address> [parameters]')
    def smtp_mail(self, ctx):
        session = self.session
        opts = self.options
        if session.greeting is None:
            self._require_greeting()
        if session.envelope.mail_from is not None:
            raise SmtpError(*R.NESTED_MAIL)
        if not opts.auth_optional and not session.user:
            raise SmtpError(*R.AUTH_REQUIRED)
        if opts.max_messages and self.messages >= opts.max_messages:
            ctx.close()
            raise SmtpError(*R.TOO_MANY_MESSAGES)
        address = ctx.address
        if type(address) is not Address:
            address = self._parsed_address(ctx)
        if address.args or not address.address.isascii():
            self._check_mail_params(address)
        if opts.on_mail_from is not None:
            self._hook('on_mail_from', session, address)
        session.envelope.mail_from = address
        ctx.reply = R.SENDER_OK

    @command('RCPT', 'RCPT TO:<address> [parameters]')
    def smtp_rcpt(self, ctx):
        session = self.session
        if session.greeting is None:
            self._require_greeting()
        envelope = session.envelope
        if envelope.mail_from is None:
            raise SmtpError(*R.NEED_MAIL)
        address = ctx.address
        if type(address) is not Address:
            address = self._parsed_address(ctx)
        if len(envelope.rcpt_to) >= self.options.max_recipients:
            raise SmtpError(*R.TOO_MANY_RECIPIENTS)
        if address.args or not address.address.isascii():
            self._check_rcpt_params(address)
        if self.options.on_rcpt_to is not None:
            self._hook('on_rcpt_to', session, address)
        envelope.rcpt_to.append(address)
        ctx.reply = R.RECIPIENT_OK

    def _parsed_address(self, ctx) -> Address:
        """ctx.address, or the reply for why there is none (or it was replaced)."""
        if ctx.address is None and ctx.parse_error is not None:
            raise ctx.parse_error
        if not isinstance(ctx.address, Address):
            raise SmtpError(501, 'Error: bad address syntax', '5.5.4')
        return ctx.address

    def _check_mail_params(self, address: Address) -> None:
        opts = self.options
        args = address.args
        if args and self.session.greeting == 'HELO':
            raise SmtpError(*R.NO_PARAMS_AFTER_HELO)
        for key, value in args.items():
            if key == 'SIZE' and opts.enabled('SIZE'):
                declared = check_size(value)        # 501 when malformed
                if opts.size and declared > opts.size:
                    raise SmtpError(*R.MESSAGE_TOO_BIG)
            elif key == 'BODY' and opts.enabled('8BITMIME'):
                args[key] = check_body(value, self.body_types())
            elif key == 'SMTPUTF8' and opts.enabled('SMTPUTF8'):
                check_flag(key, value)
            elif key == 'RET' and opts.enabled('DSN'):
                args[key] = check_ret(value)
            elif key == 'ENVID' and opts.enabled('DSN'):
                check_envid(value)
            elif key == 'AUTH' and opts.enabled('AUTH'):
                check_auth_param(value)
            elif key == 'REQUIRETLS' and opts.enabled('REQUIRETLS'):
                check_flag(key, value)
                if not self.session.secure:     # RFC 8689 section 4.1
                    raise SmtpError(*R.REQUIRETLS_NEEDS_TLS)
            else:
                raise SmtpError(555, f'Error: unsupported parameter {key}', '5.5.4')
        if not address.address.isascii() and 'SMTPUTF8' not in args:
            raise SmtpError(*R.NEED_SMTPUTF8)

    def body_types(self) -> frozenset:
        if self._command_enabled('BDAT') and self.options.enabled('BINARYMIME'):
            return frozenset(('7BIT', '8BITMIME', 'BINARYMIME'))
        return frozenset(('7BIT', '8BITMIME'))

    def _check_rcpt_params(self, address: Address) -> None:
        opts = self.options
        args = address.args
        if args and self.session.greeting == 'HELO':
            raise SmtpError(*R.NO_PARAMS_AFTER_HELO)
        for key, value in args.items():
            if key == 'NOTIFY' and opts.enabled('DSN'):
                args[key] = check_notify(value)
            elif key == 'ORCPT' and opts.enabled('DSN'):
                check_orcpt(value)
            else:
                raise SmtpError(555, f'Error: unsupported parameter {key}', '5.5.4')
        if not address.address.isascii() and 'SMTPUTF8' not in self.session.envelope.mail_from.args:
            raise SmtpError(*R.NEED_SMTPUTF8)

    # -- DATA -------------------------------------------------------------
    @command('DATA', 'DATA')
    def smtp_data(self, ctx):
        if ctx.command_args:
            raise SmtpError(501, 'Syntax: DATA', '5.5.4')
        session = self.session
        if session.greeting is None:
            self._require_greeting()
        envelope = session.envelope
        if envelope.mail_from is None:
            raise SmtpError(*R.NEED_MAIL)
        if not envelope.rcpt_to:
            raise SmtpError(*(R.NO_RECIPIENTS_LMTP if self.options.lmtp else R.NO_RECIPIENTS))
        if envelope.mail_from.args.get('BODY') == 'BINARYMIME':
            raise SmtpError(*R.BINARYMIME_NEEDS_BDAT)
        stream = self._open_data_stream()
        envelope.data_stream = ctx.data_stream = stream
        # on_data runs before 354; if it reads the stream, 354 goes out first.
        if self.options.on_data is not None:
            self._hook('on_data', session)
        stream.start()
        ctx.reply = R.QUEUED

    def _data_deadline(self, started: float, received: int) -> float:
        """When the body must have arrived so far: socket_timeout plus what
        min_data_rate allows for the bytes received (a deadline, so a client
        dripping one byte at a time is cut, as Postfix's smtpd_min_data_rate)."""
        rate = self.options.min_data_rate
        if not rate:
            return time.monotonic() + self.options.socket_timeout
        return started + self.options.socket_timeout + received / rate

    def _open_data_stream(self) -> DataStream:
        opts = self.options
        decoder = DataDecoder(normalize=opts.bare_newline == 'normalize')
        checks = TextChecks(False, max_line_length=opts.max_line_length) \
            if opts.max_line_length else None
        lines = self.lines
        progress = [0.0, 0]     # started, bytes received

        def pull():
            if decoder.done:
                return None
            data = lines.take()
            if not data:
                data = self._recv(self._data_deadline(*progress))
            progress[1] += len(data)
            body, rest = decoder.feed(data)
            if rest is not None:
                lines.unread(rest)
            return checks.feed(body) if checks is not None else body

        def start():
            self.send_now(R.START_INPUT)
            progress[0] = time.monotonic()

        return DataStream(pull, opts.size, decoder=decoder, checks=checks, on_first_read=start)

    # -- BDAT (RFC 3030 CHUNKING) --------------------------------------------
    @command('BDAT', 'BDAT size [LAST]')
    def smtp_bdat(self, ctx):
        """The first chunk of a message: middleware sees one BDAT command per
        message, like DATA. Its stream reads the following BDAT chunks by
        itself, answering each non-LAST one with an intermediate 250; the
        reply set by the chain is the LAST chunk's reply."""
        size, last = _bdat_arguments(ctx.command_args)
        envelope = self.session.envelope
        try:
            self._require_greeting()
            if envelope.mail_from is None:
                raise SmtpError(*R.NEED_MAIL)
            if not envelope.rcpt_to:
                raise SmtpError(*(R.NO_RECIPIENTS_LMTP if self.options.lmtp else R.NO_RECIPIENTS))
            stream = self._open_bdat_stream(size, last)
            envelope.data_stream = ctx.data_stream = stream
            self._hook('on_data', self.session)
        except (SmtpError, HookFailed):
            if ctx.data_stream is None:
                # RFC 3030 2: the chunk is read (and dropped) whatever the reply.
                self._skip_bytes(size)
            raise
        ctx.reply = R.QUEUED

    def _open_bdat_stream(self, size: int, last: bool) -> DataStream:
        opts = self.options
        started = time.monotonic()
        state = {'remaining': size, 'last': last, 'received': 0, 'done': False,
                 'started': started}
        lines = self.lines
        stream = None
        # RFC 3030: only BINARYMIME content may hold bare CR/LF; text bodies
        # sent with BDAT get the same checks as DATA.
        binary = self.session.envelope.mail_from.args.get('BODY') == 'BINARYMIME'
        checks = None if binary else TextChecks(
            True, opts.bare_newline == 'normalize', opts.max_line_length)

        def pull():
            while not state['remaining']:
                if state['last'] or stream.aborted:
                    if checks is not None and not state['done']:
                        state['done'] = True
                        return checks.finish()
                    return None
                self._write(R.MESSAGE_TOO_BIG if stream.size_exceeded else
                            Reply(250, f'{state["received"]} octets received', '2.0.0'))
                if not self._next_bdat_chunk(state):
                    stream.aborted = True
                    return None
            data = lines.take()
            if not data:
                data = self._recv(self._data_deadline(started, state['received']))
            wanted = state['remaining']
            if len(data) > wanted:
                lines.unread(data[wanted:])
                data = data[:wanted]
            state['remaining'] -= len(data)
            state['received'] += len(data)
            return checks.feed(data) if checks is not None else data

        stream = DataStream(pull, opts.size, decoder=checks, checks=checks)
        return stream

    def _next_bdat_chunk(self, state) -> bool:
        """Read the command after a non-LAST chunk: the next BDAT, or else
        the message is abandoned and that command is handled normally."""
        # The chunk lines count against the body's deadline too: a client
        # sending one-byte chunks is as slow as one dripping DATA.
        line = self._read_line(MAX_COMMAND_LINE,
                               self._data_deadline(state['started'], state['received']))
        if line is TOO_LONG:
            self._final(R.LINE_TOO_LONG)
            self.log(20, 'BDAT sequence abandoned by the client')
            return False
        if line[:5].upper() in (b'BDAT ', b'BDAT'):
            try:
                state['remaining'], state['last'] = _bdat_arguments(
                    line.decode('ascii').split()[1:])
                return True
            except (SmtpError, UnicodeDecodeError):
                pass
        self.lines.unread(line + b'\r\n')
        self.log(20, 'BDAT sequence abandoned by the client')
        return False

    def _skip_bytes(self, count: int) -> None:
        deadline = time.monotonic() + self.options.socket_timeout
        while count > 0:
            data = self.lines.take() or self._recv(deadline)
            if len(data) > count:
                self.lines.unread(data[count:])
            count -= min(count, len(data))

    def _finish_data(self, ctx) -> None:
        """After the chain of DATA/BDAT: drain, decide, reply, reset."""
        stream = ctx.data_stream
        session = self.session
        recipients = session.envelope.rcpt_to
        if not stream.started:
            # Refused before 354 (on_data or middleware): nothing was sent.
            return self._final(ctx.reply or R.NO_REPLY_SET, ctx)
        stream.drain()
        reply = ctx.reply or R.NO_REPLY_SET
        if stream.aborted:
            session.reset_envelope()    # the chunks were answered; no final reply
            return
        if stream.refused is not None:
            # The readers were told (MessageRefused); whatever middleware set,
            # the client gets the same reply.
            reply = stream.refused.reply
        session.reset_envelope()
        if self.options.lmtp:
            self._lmtp_replies(reply, len(recipients), ctx)
        else:
            self._final(reply, ctx)
        if (any(r.code < 300 for r in reply) if isinstance(reply, list)
                else reply.code < 300):
            self.messages += 1
            self.junk = 0
            self.log(20, 'Message accepted: %d bytes, %d recipient(s)',
                     stream.bytes_read, len(recipients))

    def _lmtp_replies(self, reply, count: int, ctx) -> None:
        """RFC 2033 4.2: one reply per accepted recipient, in RCPT order."""
        if isinstance(reply, list):
            replies = list(reply[:count])
            if len(reply) != count:
                self.log(30, 'LMTP: %d replies set for %d recipients', len(reply), count)
            replies += [R.NO_REPLY_SET] * (count - len(replies))
        else:
            replies = [reply] * count
        for one in replies:
            self._final(one, ctx)

    # -- STARTTLS (RFC 3207) ------------------------------------------------
    @command('STARTTLS', 'STARTTLS')
    def smtp_starttls(self, ctx):
        if ctx.command_args:
            raise SmtpError(501, 'Syntax: STARTTLS', '5.5.4')
        if self.session.secure:
            raise SmtpError(*R.TLS_ALREADY_ACTIVE)
        self.upgrade_pending = True
        ctx.reply = R.READY_FOR_TLS

    def _upgrade(self) -> None:
        """Handshake after the 220, then forget everything said in plaintext."""
        self._flush()
        dropped = self.lines.discard()      # never execute pipelined plaintext
        if dropped:
            self.log(30, 'Discarded %d bytes sent after STARTTLS before the handshake', dropped)
        self._handshake()
        session = self.session
        session.reset_envelope()
        session.helo = session.greeting = None
        session.auth = session.user = None

    # -- AUTH (RFC 4954) -------------------------------------------------------
    def _auth_allowed(self) -> bool:
        opts = self.options
        return (opts.enabled('AUTH') and not self.session.user
                and (self.session.secure or opts.allow_insecure_auth))

    @command('AUTH', 'AUTH mechanism [initial-response]')
    def smtp_auth(self, ctx):
        session = self.session
        opts = self.options
        if session.greeting is None or session.greeting == 'HELO':
            raise SmtpError(*R.AUTH_NEEDS_EHLO)
        if session.user:
            raise SmtpError(*R.ALREADY_AUTHENTICATED)
        if session.envelope.mail_from is not None:
            raise SmtpError(*R.AUTH_IN_TRANSACTION)
        if not session.secure and not opts.allow_insecure_auth:
            raise SmtpError(*R.ENCRYPTION_REQUIRED)
        args = ctx.command_args
        if not args or len(args) > 2:
            raise SmtpError(501, 'Syntax: AUTH mechanism [initial-response]', '5.5.4')
        mechanism = args[0].upper()
        if mechanism not in opts.auth_methods:
            raise SmtpError(*R.AUTH_UNKNOWN_MECHANISM)
        failures = self.server.auth_failures
        if failures is not None and failures.blocked(self.peer_ip):
            raise SmtpError(*R.AUTH_BLOCKED)
        self.auth_method = mechanism
        exchange = sasl.start(mechanism, args[1] if len(args) > 1 else None,
                              hostname=opts.name)
        while exchange.challenge is not None:
            self.send_now(Reply(334, exchange.challenge, False))
            exchange.respond(self._read_auth_line())
        session.auth = exchange.result
        user = self._hook('on_auth', session)
        if user:
            session.user = user
        if opts.no_auth_reply:
            return      # middleware decides (SPEC: 535 when nobody does)
        ctx.reply = R.AUTH_OK if user else R.AUTH_FAILED

    def _read_auth_line(self) -> str:
        line = self._read_line(MAX_AUTH_LINE)
        if line is TOO_LONG:
            raise SmtpError(500, 'Error: authentication response too long', '5.5.6')
        try:
            return line.decode('ascii')
        except UnicodeDecodeError:
            raise SmtpError(501, 'Error: cannot decode response', '5.5.2') from None

    def _before_auth_reply(self, ctx) -> None:
        """A failed XOAUTH2 gets the JSON error challenge first, and the
        client's (empty) answer is read before the 535, as Gmail does."""
        reply = ctx.reply
        if (self.auth_method == 'XOAUTH2' and not isinstance(reply, list)
                and reply.code == 535):
            self.send_now(Reply(334, sasl.xoauth2_error_challenge(), False))
            self._read_line(MAX_AUTH_LINE)

    # -- XCLIENT and XFORWARD (Postfix XCLIENT_README, XFORWARD_README) -----
    def _check_forwarding(self, trusted) -> None:
        if not trusted.allows(self.peer_ip):
            raise SmtpError(*R.NOT_AUTHORIZED)
        if self.session.envelope.mail_from is not None:
            raise SmtpError(*R.FORWARDING_IN_TRANSACTION)

    @command('XCLIENT', 'XCLIENT attribute=value ...')
    def smtp_xclient(self, ctx):
        """Take over the original client's identity; the session starts over."""
        self._check_forwarding(self.options.use_xclient)
        attrs = parse_xclient(ctx.command_args)
        session = self.session
        if 'LOGIN' in attrs:
            session.user = None
            if attrs['LOGIN']:
                session.auth = sasl.AuthInfo('XCLIENT', attrs['LOGIN'])
                user = self._hook('on_auth', session)
                session.user = user or None
        if 'ADDR' in attrs:
            session.remote_address = attrs['ADDR']
            session.client_hostname = f'[{attrs["ADDR"]}]' if attrs['ADDR'] else '[unknown]'
        if 'PORT' in attrs:
            session.remote_port = int(attrs['PORT']) if attrs['PORT'] else 0
        if attrs.get('NAME'):
            session.client_hostname = attrs['NAME']
        if 'DESTADDR' in attrs:
            session.local_address = attrs['DESTADDR']
        if 'DESTPORT' in attrs:
            session.local_port = int(attrs['DESTPORT']) if attrs['DESTPORT'] else 0
        session.xclient.update(attrs)
        session.reset_envelope()
        session.greeting = None
        session.helo = attrs.get('HELO')
        self.log(20, 'XCLIENT: client is now %s [%s]:%s', session.client_hostname,
                 session.remote_address, session.remote_port)
        protocol = 'LMTP' if self.options.lmtp else 'ESMTP'
        ctx.reply = Reply(220, f'{self.options.name} {protocol}', False)

    @command('XFORWARD', 'XFORWARD attribute=value ...')
    def smtp_xforward(self, ctx):
        """Record the original client for this message (reset after it)."""
        self._check_forwarding(self.options.use_xforward)
        self.session.xforward.update(parse_xforward(ctx.command_args))
        ctx.reply = R.OK

    # -- the rest ------------------------------------------------------------
    @command('RSET', 'RSET')
    def smtp_rset(self, ctx):
        if ctx.command_args:
            raise SmtpError(501, 'Syntax: RSET', '5.5.4')
        self.session.reset_envelope()
        ctx.reply = R.FLUSHED

    @command('NOOP', 'NOOP [string]')
    def smtp_noop(self, ctx):
        ctx.reply = R.OK

    @command('QUIT', 'QUIT')
    def smtp_quit(self, ctx):
        ctx.reply = Reply(221, f'{self.options.name} closing connection', '2.0.0')
        ctx.close()

    @command('VRFY', 'VRFY <address>')
    def smtp_vrfy(self, ctx):
        if not ctx.command_args:
            raise SmtpError(501, 'Syntax: VRFY <address>', '5.5.4')
        ctx.reply = R.CANNOT_VRFY

    @command('EXPN', 'EXPN <list>')
    def smtp_expn(self, ctx):
        raise SmtpError(*R.NOT_IMPLEMENTED)

    @command('HELP', 'HELP [command]')
    def smtp_help(self, ctx):
        if ctx.command_args:
            name = ctx.command_args[0].upper()
            entry = COMMANDS.get(name)
            if entry is None or not self._offered(name):
                raise SmtpError(504, f'Error: no help for {name[:20]}', '5.5.4')
            ctx.send(214, f'Syntax: {entry[1]}', '2.0.0')
            return
        names = ' '.join(name for name in COMMANDS if self._offered(name))
        ctx.send(214, f'Supported commands: {names}', '2.0.0')

    def _offered(self, name: str) -> bool:
        if not self._command_enabled(name):
            return False
        if name in ('HELO', 'EHLO'):
            return not self.options.lmtp
        if name == 'LHLO':
            return self.options.lmtp
        return name != 'EXPN'


PROXY_PEEK = 4096
JUNK_COMMANDS = frozenset({'NOOP', 'RSET', 'VRFY', 'EXPN', 'HELP'})
COUNTED_COMMANDS = JUNK_COMMANDS | {'HELO', 'EHLO', 'LHLO'}     # by _count_junk


def _bdat_arguments(args) -> tuple[int, bool]:
    """'BDAT <size> [LAST]' arguments -> (size, last)."""
    if not 1 <= len(args) <= 2 or not (args[0].isascii() and args[0].isdigit()) \
            or len(args[0]) > 18 or (len(args) == 2 and args[1].upper() != 'LAST'):
        raise SmtpError(501, 'Syntax: BDAT size [LAST]', '5.5.4')
    return int(args[0]), len(args) == 2


def _recv_exactly(sock, count: int) -> bytes:
    parts = []
    while count > 0:
        data = sock.recv(count)
        if not data:
            raise ClientDisconnected('closed inside the PROXY header')
        parts.append(data)
        count -= len(data)
    return b''.join(parts)


def _split_address(address) -> tuple:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        if host.startswith('::ffff:') and '.' in host:
            host = host[7:]     # IPv4-mapped peers are IPv4 clients
        return host, address[1]
    return (address or '', 0) if isinstance(address, str) else ('', 0)
