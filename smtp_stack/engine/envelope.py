"""MAIL and RCPT: the envelope, its addresses and ESMTP parameters."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from .. import replies as R
from ..addresses import (Address, ParamValue, check_auth_param, check_body, check_envid,
                         check_flag, check_notify, check_orcpt, check_ret, check_size)
from ..errors import SmtpError
from .commands import COMMANDS, GREETED, IN_MAIL, command, enabled

if TYPE_CHECKING:
    from ..middleware import Context
    from ..options import Options
    from .engine import Engine

# A parameter's check: (engine, keyword, value) -> the value kept; SmtpError
# when refused.
ParamCheck: TypeAlias = 'Callable[[Engine, str, ParamValue], ParamValue]'
# keyword -> (the EHLO extension that offers it, its check)
ParamTable: TypeAlias = 'dict[str, tuple[str, ParamCheck]]'


@command('MAIL', 'MAIL FROM:<address> [parameters]', GREETED)
def mail(engine: Engine, ctx: Context) -> None:
    session = engine.session
    options = engine.options
    if session.envelope.mail_from is not None:
        raise SmtpError(R.NESTED_MAIL)
    if not options.auth_optional and not session.user:
        raise SmtpError(R.AUTH_REQUIRED)
    if engine.counters.messages_exhausted:
        ctx.close()
        raise SmtpError(R.TOO_MANY_MESSAGES)
    address = ctx.address
    if type(address) is not Address:
        address = parsed_address(ctx)
    if address.args or not address.address.isascii():
        check_mail_params(engine, address)
    if options.on_mail_from is not None:
        engine.hook('on_mail_from', session, address)
    session.envelope.mail_from = address
    ctx.reply = R.SENDER_OK


@command('RCPT', 'RCPT TO:<address> [parameters]', GREETED | IN_MAIL)
def rcpt(engine: Engine, ctx: Context) -> None:
    session = engine.session
    envelope = session.envelope
    address = ctx.address
    if type(address) is not Address:
        address = parsed_address(ctx)
    if len(envelope.rcpt_to) >= engine.options.max_recipients:
        raise SmtpError(R.TOO_MANY_RECIPIENTS)
    if address.args or not address.address.isascii():
        check_rcpt_params(engine, address)
    if engine.options.on_rcpt_to is not None:
        engine.hook('on_rcpt_to', session, address)
    envelope.rcpt_to.append(address)
    ctx.reply = R.RECIPIENT_OK


def parsed_address(ctx: Context) -> Address:
    """ctx.address, or the reply for why there is none (or it was replaced)."""
    if ctx.address is None and ctx.parse_error is not None:
        raise ctx.parse_error
    if not isinstance(ctx.address, Address):
        raise SmtpError(501, 'Error: bad address syntax', '5.5.4')
    return ctx.address


def _unsupported(key: str) -> SmtpError:
    return SmtpError(555, f'Error: unsupported parameter {key}', '5.5.4')


def check_mail_params(engine: Engine, address: Address) -> None:
    check_params(engine, address, MAIL_PARAMETERS)
    if not address.address.isascii() and 'SMTPUTF8' not in address.args:
        raise SmtpError(R.NEED_SMTPUTF8)


def check_params(engine: Engine, address: Address, table: ParamTable) -> None:
    """Each parameter by its row of `table` (keyword -> the extension that
    offers it, and its check, which returns the value kept); 555 for one
    not offered (RFC 5321 4.1.1.11), and any at all after HELO."""
    options = engine.options
    args = address.args
    if args and engine.session.greeting == 'HELO':
        raise SmtpError(R.NO_PARAMS_AFTER_HELO)
    for key, value in args.items():
        row = table.get(key)
        if row is None or not options.enabled(row[0]):
            raise _unsupported(key)
        args[key] = row[1](engine, key, value)


def _size(engine: Engine, key: str, value: ParamValue) -> ParamValue:
    declared = check_size(value)        # 501 when malformed
    if engine.options.size and declared > engine.options.size:
        raise SmtpError(R.MESSAGE_TOO_BIG)
    return value


def _requiretls(engine: Engine, key: str, value: ParamValue) -> ParamValue:
    check_flag(key, value)
    if not engine.session.secure:     # RFC 8689 section 4.1
        raise SmtpError(R.REQUIRETLS_NEEDS_TLS)
    return value


MAIL_PARAMETERS: ParamTable = {
    'SIZE': ('SIZE', _size),
    'BODY': ('8BITMIME', lambda engine, key, value: check_body(value, body_types(engine.options))),
    'SMTPUTF8': ('SMTPUTF8', lambda engine, key, value: check_flag(key, value)),
    'RET': ('DSN', lambda engine, key, value: check_ret(value)),
    'ENVID': ('DSN', lambda engine, key, value: check_envid(value)),
    'AUTH': ('AUTH', lambda engine, key, value: check_auth_param(value)),
    'REQUIRETLS': ('REQUIRETLS', _requiretls),
}
RCPT_PARAMETERS: ParamTable = {
    'NOTIFY': ('DSN', lambda engine, key, value: check_notify(value)),
    'ORCPT': ('DSN', lambda engine, key, value: check_orcpt(value)),
}


def body_types(options: Options) -> frozenset[str]:
    if enabled(COMMANDS['BDAT'], options) and options.enabled('BINARYMIME'):
        return frozenset(('7BIT', '8BITMIME', 'BINARYMIME'))
    return frozenset(('7BIT', '8BITMIME'))


def check_rcpt_params(engine: Engine, address: Address) -> None:
    check_params(engine, address, RCPT_PARAMETERS)
    if not address.address.isascii():
        mail_from = engine.session.envelope.mail_from
        if mail_from is None or 'SMTPUTF8' not in mail_from.args:
            raise SmtpError(R.NEED_SMTPUTF8)
