"""A command's outcome as the MTA takes it: the final reply of the chain
(`final`) and the milter packet it becomes (`reply_packet`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import replies as R
from . import protocol as P
from .message import CONTINUE_PACKET

if TYPE_CHECKING:
    from ..middleware import Context
    from ..replies import Reply

SHUTDOWN_PACKET = P.reply(P.SHUTDOWN)
DISCARD_PACKET = P.reply(P.DISCARD)


def final(ctx: Context) -> Reply:
    """The one final reply of a command (the first of a list)."""
    reply = ctx.reply
    if isinstance(reply, list):
        reply = reply[0] if reply else None
    if reply is None:
        reply = ctx.reply = R.NO_REPLY_SET
    return reply


def ok(ctx: Context) -> bool:
    return final(ctx).code < 400 and not ctx.close_requested


def reply_packet(reply: Reply, close: bool = False) -> bytes:
    """CONTINUE for a 2xx/3xx; SMFIR_REPLYCODE with the SMTP text for a
    refusal; SMFIR_SHUTDOWN when the session must end (the MTA says 421
    and hangs up; a 421 of one's own goes as it is)."""
    if close and reply.code != 421:
        return SHUTDOWN_PACKET
    if reply.code < 400:
        return CONTINUE_PACKET
    lines = [reply.message] if isinstance(reply.message, str) else list(reply.message)
    lines = [part for line in lines for part in str(line).splitlines() or ['']]
    enhanced = reply.enhanced
    if enhanced is None:
        enhanced = R.default_enhanced(reply.code)
    return P.reply(P.REPLYCODE, P.reply_text(reply.code, lines, enhanced or None))


def command_args(strings: list[str]) -> str:
    """SMFIC_MAIL/RCPT's strings as the SMTP command's argument: Postfix
    and Sendmail send the path in angle brackets; a test driver
    (miltertest) may not."""
    path = strings[0]
    if not path.startswith('<'):
        path = f'<{path}>'
    return ' '.join((path, *strings[1:]))
