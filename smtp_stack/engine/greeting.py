"""HELO, EHLO, LHLO: the greeting, and the extensions EHLO offers."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, TypeAlias

from .. import replies as R
from ..errors import SmtpError
from ..forwarding import xclient_capability, xforward_capability
from ..options import Options
from ..replies import Reply
from .commands import COMMANDS, GREETING, LMTP_ONLY, SMTP_ONLY, command, enabled

if TYPE_CHECKING:
    from ..middleware import Context
    from ..session import Greeting
    from .engine import Engine

# What the EHLO keywords depend on besides the options: (secure, AUTH
# offered, XCLIENT offered, XFORWARD offered).
_State: TypeAlias = tuple[bool, bool, bool, bool]
_keyword_cache: weakref.WeakKeyDictionary[Options, dict[_State, tuple[str, ...]]] = \
    weakref.WeakKeyDictionary()


@command('HELO', 'HELO hostname', GREETING | SMTP_ONLY)
def helo(engine: Engine, ctx: Context) -> None:
    greet(engine, ctx, 'HELO')


@command('EHLO', 'EHLO hostname', GREETING | SMTP_ONLY)
def ehlo(engine: Engine, ctx: Context) -> None:
    greet(engine, ctx, 'EHLO')


@command('LHLO', 'LHLO hostname', GREETING | LMTP_ONLY)
def lhlo(engine: Engine, ctx: Context) -> None:
    greet(engine, ctx, 'LHLO')


def greet(engine: Engine, ctx: Context, kind: Greeting) -> None:
    """A greeting ends the transaction (Session.greet, RFC 5321 4.1.4).
    HELO in LMTP, LHLO in SMTP: unknown commands."""
    options = engine.options
    if options.lmtp != (kind == 'LHLO'):
        raise SmtpError(R.UNRECOGNIZED)
    if not ctx.command_args:
        raise COMMANDS[kind].syntax_error
    session = engine.session
    session.greet(kind, ctx.command_args[0])
    hello = f'{options.name} Nice to meet you, {session.client_hostname}'
    if kind == 'HELO':
        ctx.reply = Reply(250, hello, False)
        return
    ctx.reply = Reply(250, [hello] + extensions(engine), False)


def auth_offered(engine: Engine) -> bool:
    options = engine.options
    session = engine.session
    return (options.enabled('AUTH') and not session.user
            and (session.secure or options.allow_insecure_auth))


def extensions(engine: Engine) -> list[str]:
    """The EHLO keywords this session may use, minus disabled ones."""
    options = engine.options
    state: _State = (engine.session.secure, auth_offered(engine),
             options.enabled('XCLIENT') and options.use_xclient.allows(engine.peer_ip),
             options.enabled('XFORWARD') and options.use_xforward.allows(engine.peer_ip))
    # The options are fixed once the server is made, so the list depends
    # only on this state: made once per options and state.
    known = _keyword_cache.get(options)
    if known is None:
        known = _keyword_cache[options] = {}
    keywords = known.get(state)
    if keywords is None:
        keywords = known[state] = keywords_for(options, *state)
    return list(keywords)


def keywords_for(options: Options, secure: bool, auth: bool, xclient: bool,
                 xforward: bool) -> tuple[str, ...]:
    offered = ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']
    keywords = [k for k in offered if options.enabled(k)]
    if options.enabled('SIZE'):
        keywords.append(f'SIZE {options.size}' if options.size else 'SIZE')
    if options.enabled('DSN'):
        keywords.append('DSN')
    if enabled(COMMANDS['BDAT'], options):
        keywords.append('CHUNKING')
        if options.enabled('BINARYMIME'):
            keywords.append('BINARYMIME')
    if options.enabled('REQUIRETLS') and secure:
        keywords.append('REQUIRETLS')
    if options.enabled('STARTTLS') and not secure:
        keywords.append('STARTTLS')
    if auth:
        keywords.append('AUTH ' + ' '.join(options.auth_methods))
    if xclient:
        keywords.append(xclient_capability())
    if xforward:
        keywords.append(xforward_capability())
    if options.enabled('HELP'):
        keywords.append('HELP')
    return tuple(keywords)
