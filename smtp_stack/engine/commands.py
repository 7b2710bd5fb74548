"""The command table: each verb, its handler, its HELP syntax and its flags.

As Postfix's `smtpd_cmd_table`: what a command needs before it may run (a
greeting, an open transaction, no arguments, an extension) is declared
once here and checked by `gate()`, generically, before the handler runs.
A handler is a plain function `fn(engine, ctx)` in the module of its
concern (greeting, envelope, body, security, forwarding, basic).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from .. import replies as R
from ..errors import SmtpError

if TYPE_CHECKING:
    from ..middleware import Context
    from ..options import Options
    from .engine import Engine

# A command's handler: sets ctx.reply, or raises SmtpError.
Handler: TypeAlias = 'Callable[[Engine, Context], None]'

# Flags (bits, so that the gate costs one test per flag on the hot path).
NO_ARGS = 1         # takes no argument: 501 with its syntax otherwise
GREETED = 2         # needs HELO/EHLO (LHLO) first: 503
IN_MAIL = 4         # needs MAIL first: 503
WITH_RCPT = 8       # needs an accepted RCPT: 554 (503 in LMTP, RFC 2033 4.2)
JUNK = 16           # moves no mail: counted against max_junk_commands
GREETING = 32       # HELO/EHLO/LHLO: counted too, after the first one
SMTP_ONLY = 64      # not offered by an LMTP server (HELO, EHLO)
LMTP_ONLY = 128     # only offered by an LMTP server (LHLO)
UNLISTED = 256      # left out of HELP's list (EXPN: never implemented)


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    syntax: str
    flags: int = 0
    extension: str | None = None    # the EHLO keyword it belongs to (BDAT: CHUNKING)

    @property
    def syntax_error(self) -> SmtpError:
        return SmtpError(501, f'Syntax: {self.syntax}', '5.5.4')


COMMANDS: dict[str, Command] = {}


def command(name: str, syntax: str, flags: int = 0,
            extension: str | None = None) -> Callable[[Handler], Handler]:
    """Register the handler of `name`: `@command('RSET', 'RSET', NO_ARGS)`."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, fn, syntax, flags, extension)
        return fn
    return register


def gate(entry: Command, engine: Engine, ctx: Context, flags: int | None = None) -> None:
    """What a command needs before it runs, in the order the replies take
    precedence (syntax, then greeting, then transaction). BDAT asks with
    its own `flags` after its arguments: a refused chunk must still be read."""
    if flags is None:
        flags = entry.flags
    if flags & NO_ARGS and ctx.command_args:
        raise entry.syntax_error
    session = engine.session
    if flags & GREETED and session.greeting is None:
        raise SmtpError(R.NEED_LHLO if engine.options.lmtp else R.NEED_HELO)
    if flags & IN_MAIL and session.envelope.mail_from is None:
        raise SmtpError(R.NEED_MAIL)
    if flags & WITH_RCPT and not session.envelope.rcpt_to:
        raise SmtpError(R.NO_RECIPIENTS_LMTP if engine.options.lmtp else R.NO_RECIPIENTS)


def enabled(entry: Command, options: Options) -> bool:
    """Not disabled, nor is its extension (disabling CHUNKING disables BDAT)."""
    if not options.enabled(entry.name):
        return False
    return entry.extension is None or options.enabled(entry.extension)


def offered(entry: Command, options: Options) -> bool:
    """Listed by HELP for this server."""
    if not enabled(entry, options) or entry.flags & UNLISTED:
        return False
    if entry.flags & SMTP_ONLY:
        return not options.lmtp
    if entry.flags & LMTP_ONLY:
        return options.lmtp
    return True
