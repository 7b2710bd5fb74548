"""STARTTLS (RFC 3207) and AUTH (RFC 4954)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import replies as R
from .. import sasl
from ..errors import SmtpError
from ..framing import TOO_LONG
from ..options import MAX_AUTH_LINE
from ..replies import Reply
from .commands import COMMANDS, NO_ARGS, command

if TYPE_CHECKING:
    from ..middleware import Context
    from .engine import Engine


@command('STARTTLS', 'STARTTLS', NO_ARGS)
def starttls(engine: Engine, ctx: Context) -> None:
    if engine.session.secure:
        raise SmtpError(R.TLS_ALREADY_ACTIVE)
    engine.upgrade_pending = True       # the handshake follows the 220 (upgrade)
    ctx.reply = R.READY_FOR_TLS


def upgrade(engine: Engine) -> None:
    """Handshake after the 220, then forget everything said in plaintext
    (RFC 3207 4.2: the session starts over, Session.start_over; and
    pipelined plaintext after STARTTLS is never executed)."""
    transport = engine.transport
    transport.flush()
    dropped = transport.discard_buffered()
    if dropped:
        engine.log(30, 'Discarded %d bytes sent after STARTTLS before the handshake', dropped)
    engine.start_tls()
    engine.session.start_over(keep_login=False)


@command('AUTH', 'AUTH mechanism [initial-response]')
def auth(engine: Engine, ctx: Context) -> None:
    """One command for middleware, however many lines the SASL exchange takes."""
    session = engine.session
    options = engine.options
    if session.greeting is None or session.greeting == 'HELO':
        raise SmtpError(R.AUTH_NEEDS_EHLO)
    if session.user:
        raise SmtpError(R.ALREADY_AUTHENTICATED)
    if session.envelope.mail_from is not None:
        raise SmtpError(R.AUTH_IN_TRANSACTION)
    if not session.secure and not options.allow_insecure_auth:
        raise SmtpError(R.ENCRYPTION_REQUIRED)
    args = ctx.command_args
    if not args or len(args) > 2:
        raise COMMANDS['AUTH'].syntax_error
    mechanism = args[0].upper()
    if mechanism not in options.auth_methods:
        raise SmtpError(R.AUTH_UNKNOWN_MECHANISM)
    failures = engine.host.auth_failures
    if failures is not None and failures.blocked(engine.peer_ip):
        raise SmtpError(R.AUTH_BLOCKED)
    engine.auth_method = mechanism
    exchange = sasl.start(mechanism, args[1] if len(args) > 1 else None,
                          hostname=options.name)
    while exchange.challenge is not None:
        engine.send_now(Reply(334, exchange.challenge, False))
        exchange.respond(_read_auth_line(engine))
    session.auth = exchange.result
    if exchange.result is not None:     # for the log of a failed login
        engine.auth_username = exchange.result.username
    user = engine.hook('on_auth', session)
    if user:
        session.user = user
    if options.no_auth_reply:
        return      # middleware decides (535 when nobody does)
    ctx.reply = R.AUTH_OK if user else R.AUTH_FAILED


def _read_auth_line(engine: Engine) -> str:
    line = engine.transport.read_line(MAX_AUTH_LINE)
    if line is TOO_LONG:
        raise SmtpError(R.AUTH_LINE_TOO_LONG)
    try:
        return line.decode('ascii')
    except UnicodeDecodeError:
        raise SmtpError(R.AUTH_UNDECODABLE) from None


def before_auth_reply(engine: Engine, reply: Reply | list[Reply]) -> None:
    """A failed XOAUTH2 gets the JSON error challenge first, and the
    client's (empty) answer is read before the 535, as Gmail does."""
    if (engine.auth_method == 'XOAUTH2' and not isinstance(reply, list)
            and reply.code == 535):
        engine.send_now(Reply(334, sasl.xoauth2_error_challenge(), False))
        engine.transport.read_line(MAX_AUTH_LINE)
