"""XCLIENT and XFORWARD (Postfix XCLIENT_README, XFORWARD_README): a
trusted proxy or filter tells who the original client was."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import replies as R
from .. import sasl
from ..errors import SmtpError
from ..forwarding import parse_xclient, parse_xforward
from .commands import command

if TYPE_CHECKING:
    from ..middleware import Context
    from ..options import TrustList
    from ..session import Session
    from .engine import Engine


def _check_trusted(engine: Engine, trusted: TrustList) -> None:
    if not trusted.allows(engine.peer_ip):
        raise SmtpError(R.NOT_AUTHORIZED)
    if engine.session.envelope.mail_from is not None:
        raise SmtpError(R.FORWARDING_IN_TRANSACTION)


@command('XCLIENT', 'XCLIENT attribute=value ...')
def xclient(engine: Engine, ctx: Context) -> None:
    """Take over the original client's identity, then the session starts
    over (Session.start_over) with this HELO= and this LOGIN=."""
    _check_trusted(engine, engine.options.use_xclient)
    attrs = parse_xclient(ctx.command_args)
    session = engine.session
    before = _identity(session)
    try:
        _take_over(engine, attrs)
    except BaseException:   # on_auth refused LOGIN=: the command did nothing
        _restore(session, before)
        raise
    session.start_over(keep_login=True, helo=attrs.get('HELO'))
    engine.log(20, 'XCLIENT: client is now %s [%s]:%s', session.client_hostname,
               session.remote_address, session.remote_port)
    ctx.reply = engine.banner(extra=False)     # a new greeting, as Postfix answers


# What XCLIENT changes before its transition, kept to undo a refused one.
_IDENTITY = ('remote_address', 'remote_port', 'client_hostname', 'local_address',
             'local_port', 'xclient', 'auth', 'user')


def _identity(session: Session) -> tuple[Any, ...]:
    return tuple(dict(getattr(session, name)) if name == 'xclient' else getattr(session, name)
                 for name in _IDENTITY)


def _restore(session: Session, values: tuple[Any, ...]) -> None:
    for name, value in zip(_IDENTITY, values, strict=True):
        setattr(session, name, value)


def _take_over(engine: Engine, attrs: dict[str, str | None]) -> None:
    """The attributes into the session, then LOGIN= (on_auth sees the new
    client's address)."""
    session = engine.session
    if 'ADDR' in attrs:
        session.remote_address = attrs['ADDR']
        session.client_hostname = f'[{attrs["ADDR"]}]' if attrs['ADDR'] else '[unknown]'
    if 'PORT' in attrs:
        session.remote_port = int(attrs['PORT']) if attrs['PORT'] else 0
    name = attrs.get('NAME')
    if name:
        session.client_hostname = name
    if 'DESTADDR' in attrs:
        session.local_address = attrs['DESTADDR']
    if 'DESTPORT' in attrs:
        session.local_port = int(attrs['DESTPORT']) if attrs['DESTPORT'] else 0
    session.xclient.update(attrs)
    _log_in(engine, attrs.get('LOGIN'))


def _log_in(engine: Engine, login: str | None) -> None:
    """LOGIN=: the proxy's word replaces the login; on_auth says who that
    is (no user while it decides). Without LOGIN=, or [UNAVAILABLE], no
    login: the one there was is the proxy's own, not the new client's
    (Postfix resets SASL so: smtpd.c, xclient_cmd)."""
    session = engine.session
    session.auth = session.user = None
    if login:
        session.auth = sasl.AuthInfo('XCLIENT', login)
        session.user = engine.hook('on_auth', session) or None


@command('XFORWARD', 'XFORWARD attribute=value ...')
def xforward(engine: Engine, ctx: Context) -> None:
    """Record the original client for this message (reset after it)."""
    _check_trusted(engine, engine.options.use_xforward)
    engine.session.xforward.update(parse_xforward(ctx.command_args))
    ctx.reply = R.OK
