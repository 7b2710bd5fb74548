"""The innermost middleware of a MilterServer's chain: what the built-in
SMTP handler does for each command, for a transaction the MTA runs.

The MTA has already checked the protocol (sequence, syntax, its own
limits), so these handlers keep only what user code relies on: the hooks,
the envelope's contents, `max_recipients`, and `data_stream` for DATA.
A command's reply is data (`ctx.reply`), as in engine.builtin; the
connection turns it into a milter reply.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import replies as R
from ..errors import SmtpError
from ..events import ENGINE, refused_by
from ..engine.exceptions import HookFailed
from ..replies import Reply
from .content import open_stream

if TYPE_CHECKING:
    from ..addresses import Address
    from ..middleware import Context
    from .connection import MilterConnection

Handler = Callable[['MilterConnection', 'Context'], None]


def greet(conn: MilterConnection, ctx: Context) -> None:
    """SMFIC_HELO: the MTA does not say whether the client sent HELO or
    EHLO; a client that reached a milter with ESMTP arguments used EHLO,
    and the session takes EHLO (transmission_type ESMTP)."""
    ctx.session.greet('EHLO', ctx.command_args[0] if ctx.command_args else '')
    ctx.reply = R.OK


def mail(conn: MilterConnection, ctx: Context) -> None:
    address = _address(ctx)
    conn.hook('on_mail_from', ctx.session, address)
    ctx.session.envelope.mail_from = address
    ctx.reply = R.SENDER_OK


def rcpt(conn: MilterConnection, ctx: Context) -> None:
    address = _address(ctx)
    envelope = ctx.session.envelope
    if len(envelope.rcpt_to) >= conn.options.max_recipients:
        raise SmtpError(R.TOO_MANY_RECIPIENTS)
    conn.hook('on_rcpt_to', ctx.session, address)
    envelope.rcpt_to.append(address)
    ctx.reply = R.RECIPIENT_OK


def data(conn: MilterConnection, ctx: Context) -> None:
    """The body streams from the MTA's content packets (message.py); the
    stream is opened here and read by the chain, as after SMTP's 354."""
    stream = open_stream(conn)
    ctx.session.envelope.data_stream = ctx.data_stream = stream
    conn.hook('on_data', ctx.session)
    ctx.reply = R.QUEUED


def reset(conn: MilterConnection, ctx: Context) -> None:
    """SMFIC_ABORT: the MTA abandoned the transaction (RSET, a refusal)."""
    ctx.session.end_transaction()
    ctx.reply = R.OK


def quit_(conn: MilterConnection, ctx: Context) -> None:
    ctx.reply = BYE


BYE = Reply(221, 'Bye', '2.0.0')

HANDLERS: dict[str, Handler] = {'EHLO': greet, 'MAIL': mail, 'RCPT': rcpt, 'DATA': data,
                                'RSET': reset, 'QUIT': quit_}


def _address(ctx: Context) -> Address:
    if ctx.address is None:
        if ctx.parse_error is not None:
            raise ctx.parse_error
        raise SmtpError(501, 'Error: bad address syntax', '5.5.4')
    return ctx.address


def builtin(ctx: Context) -> None:
    """The handler of ctx's command, for the connection it belongs to."""
    conn: MilterConnection = ctx._engine    # type: ignore[assignment]
    try:
        HANDLERS[ctx.command_name](conn, ctx)
    except SmtpError as err:
        ctx.reply = reply = err.reply
        ctx.refusal = (reply, refused_by(err) or ENGINE)
    except HookFailed as failed:
        ctx.reply = R.HOOK_FAILED
        ctx.refusal = (R.HOOK_FAILED, str(failed) or ENGINE)
        ctx.close()
