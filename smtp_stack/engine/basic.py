"""RSET, NOOP, QUIT, VRFY, EXPN, HELP: the commands that move no mail."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import replies as R
from ..errors import SmtpError
from ..replies import Reply
from .commands import COMMANDS, JUNK, NO_ARGS, UNLISTED, command, offered

if TYPE_CHECKING:
    from ..middleware import Context
    from .engine import Engine


@command('RSET', 'RSET', NO_ARGS | JUNK)
def rset(engine: Engine, ctx: Context) -> None:
    engine.session.end_transaction()
    ctx.reply = R.FLUSHED


@command('NOOP', 'NOOP [string]', JUNK)
def noop(engine: Engine, ctx: Context) -> None:
    ctx.reply = R.OK


@command('QUIT', 'QUIT')
def quit(engine: Engine, ctx: Context) -> None:
    ctx.reply = Reply(221, f'{engine.options.name} closing connection', '2.0.0')
    ctx.close()


@command('VRFY', 'VRFY <address>', JUNK)
def vrfy(engine: Engine, ctx: Context) -> None:
    """252: never says whether a user exists (RFC 5321 3.5.3 allows it)."""
    if not ctx.command_args:
        raise COMMANDS['VRFY'].syntax_error
    ctx.reply = R.CANNOT_VRFY


@command('EXPN', 'EXPN <list>', JUNK | UNLISTED)
def expn(engine: Engine, ctx: Context) -> None:
    raise SmtpError(R.NOT_IMPLEMENTED)


@command('HELP', 'HELP [command]', JUNK)
def help(engine: Engine, ctx: Context) -> None:
    """The commands this server offers, or one command's syntax, from the table."""
    options = engine.options
    if ctx.command_args:
        name = ctx.command_args[0].upper()
        entry = COMMANDS.get(name)
        if entry is None or not offered(entry, options):
            raise SmtpError(504, f'Error: no help for {name[:20]}', '5.5.4')
        ctx.send(214, f'Syntax: {entry.syntax}', '2.0.0')
        return
    names = ' '.join(name for name, entry in COMMANDS.items() if offered(entry, options))
    ctx.send(214, f'Supported commands: {names}', '2.0.0')
