"""MAIL and RCPT: the envelope, its addresses and ESMTP parameters."""
from __future__ import annotations

from .. import replies as R
from ..addresses import (Address, check_auth_param, check_body, check_envid, check_flag,
                         check_notify, check_orcpt, check_ret, check_size)
from ..errors import SmtpError
from .commands import COMMANDS, GREETED, IN_MAIL, command, enabled


@command('MAIL', 'MAIL FROM:<address> [parameters]', GREETED)
def mail(engine, ctx):
    session = engine.session
    options = engine.options
    if session.envelope.mail_from is not None:
        raise SmtpError(*R.NESTED_MAIL)
    if not options.auth_optional and not session.user:
        raise SmtpError(*R.AUTH_REQUIRED)
    if engine.counters.messages_exhausted:
        ctx.close()
        raise SmtpError(*R.TOO_MANY_MESSAGES)
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
def rcpt(engine, ctx):
    session = engine.session
    envelope = session.envelope
    address = ctx.address
    if type(address) is not Address:
        address = parsed_address(ctx)
    if len(envelope.rcpt_to) >= engine.options.max_recipients:
        raise SmtpError(*R.TOO_MANY_RECIPIENTS)
    if address.args or not address.address.isascii():
        check_rcpt_params(engine, address)
    if engine.options.on_rcpt_to is not None:
        engine.hook('on_rcpt_to', session, address)
    envelope.rcpt_to.append(address)
    ctx.reply = R.RECIPIENT_OK


def parsed_address(ctx) -> Address:
    """ctx.address, or the reply for why there is none (or it was replaced)."""
    if ctx.address is None and ctx.parse_error is not None:
        raise ctx.parse_error
    if not isinstance(ctx.address, Address):
        raise SmtpError(501, 'Error: bad address syntax', '5.5.4')
    return ctx.address


def _unsupported(key: str) -> SmtpError:
    return SmtpError(555, f'Error: unsupported parameter {key}', '5.5.4')


def check_mail_params(engine, address: Address) -> None:
    options = engine.options
    args = address.args
    if args and engine.session.greeting == 'HELO':
        raise SmtpError(*R.NO_PARAMS_AFTER_HELO)
    for key, value in args.items():
        if key == 'SIZE' and options.enabled('SIZE'):
            declared = check_size(value)        # 501 when malformed
            if options.size and declared > options.size:
                raise SmtpError(*R.MESSAGE_TOO_BIG)
        elif key == 'BODY' and options.enabled('8BITMIME'):
            args[key] = check_body(value, body_types(options))
        elif key == 'SMTPUTF8' and options.enabled('SMTPUTF8'):
            check_flag(key, value)
        elif key == 'RET' and options.enabled('DSN'):
            args[key] = check_ret(value)
        elif key == 'ENVID' and options.enabled('DSN'):
            check_envid(value)
        elif key == 'AUTH' and options.enabled('AUTH'):
            check_auth_param(value)
        elif key == 'REQUIRETLS' and options.enabled('REQUIRETLS'):
            check_flag(key, value)
            if not engine.session.secure:     # RFC 8689 section 4.1
                raise SmtpError(*R.REQUIRETLS_NEEDS_TLS)
        else:
            raise _unsupported(key)
    if not address.address.isascii() and 'SMTPUTF8' not in args:
        raise SmtpError(*R.NEED_SMTPUTF8)


def body_types(options) -> frozenset:
    if enabled(COMMANDS['BDAT'], options) and options.enabled('BINARYMIME'):
        return frozenset(('7BIT', '8BITMIME', 'BINARYMIME'))
    return frozenset(('7BIT', '8BITMIME'))


def check_rcpt_params(engine, address: Address) -> None:
    options = engine.options
    args = address.args
    if args and engine.session.greeting == 'HELO':
        raise SmtpError(*R.NO_PARAMS_AFTER_HELO)
    for key, value in args.items():
        if key == 'NOTIFY' and options.enabled('DSN'):
            args[key] = check_notify(value)
        elif key == 'ORCPT' and options.enabled('DSN'):
            check_orcpt(value)
        else:
            raise _unsupported(key)
    if not address.address.isascii() and 'SMTPUTF8' not in engine.session.envelope.mail_from.args:
        raise SmtpError(*R.NEED_SMTPUTF8)
