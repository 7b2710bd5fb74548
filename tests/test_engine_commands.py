"""The command table and its gate, without a socket (engine/commands.py)."""
from __future__ import annotations

import pytest

from smtp_stack import SmtpError
from smtp_stack.engine import COMMANDS
from smtp_stack.engine.commands import (GREETED, IN_MAIL, NO_ARGS, WITH_RCPT, enabled, gate,
                                        offered)
from smtp_stack.middleware import Context
from smtp_stack.options import Options
from smtp_stack.session import Session


class FakeEngine:
    """What gate() reads of an engine: its session and options."""

    def __init__(self, lmtp=False, **options):
        self.options = Options(lmtp=lmtp, **options)
        self.session = Session('127.0.0.1', 25, '127.0.0.1', 4000, lmtp=lmtp)


def run_gate(line, engine):
    ctx = Context(line, engine.session, None)
    entry = COMMANDS[ctx.command_name]
    try:
        gate(entry, engine, ctx)
    except SmtpError as err:
        return err.code, err.enhanced, err.message
    return None


def test_every_command_has_a_handler_and_a_syntax():
    assert list(COMMANDS) == ['HELO', 'EHLO', 'LHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT',
                              'STARTTLS', 'AUTH', 'XCLIENT', 'XFORWARD', 'RSET', 'NOOP',
                              'QUIT', 'VRFY', 'EXPN', 'HELP']
    for name, entry in COMMANDS.items():
        assert callable(entry.handler) and entry.syntax.split()[0] == name


@pytest.mark.parametrize('line, state, lmtp, expected', [
    ('DATA x', 'mail+rcpt', False, (501, '5.5.4', 'Syntax: DATA')),
    ('RSET now', 'none', False, (501, '5.5.4', 'Syntax: RSET')),
    ('STARTTLS x', 'greeted', False, (501, '5.5.4', 'Syntax: STARTTLS')),
    ('MAIL FROM:<a@b>', 'none', False, (503, '5.5.1', 'Error: send HELO/EHLO first')),
    ('MAIL FROM:<a@b>', 'none', True, (503, '5.5.1', 'Error: send LHLO first')),
    ('RCPT TO:<a@b>', 'none', False, (503, '5.5.1', 'Error: send HELO/EHLO first')),
    ('RCPT TO:<a@b>', 'greeted', False, (503, '5.5.1', 'Error: need MAIL command')),
    ('DATA', 'greeted', False, (503, '5.5.1', 'Error: need MAIL command')),
    ('DATA', 'mail', False, (554, '5.5.1', 'Error: no valid recipients')),
    ('DATA', 'mail', True, (503, '5.5.1', 'Error: no valid recipients')),   # RFC 2033 4.2
    ('DATA', 'mail+rcpt', False, None),
    ('RCPT TO:<a@b>', 'mail', False, None),
    ('MAIL FROM:<a@b>', 'greeted', False, None),
    ('NOOP anything', 'none', False, None),
    ('QUIT', 'none', False, None),
])
def test_gate(line, state, lmtp, expected):
    engine = FakeEngine(lmtp=lmtp)
    session = engine.session
    if state != 'none':
        session.greeting = 'LHLO' if lmtp else 'EHLO'
    if 'mail' in state:
        session.envelope.mail_from = object()
    if 'rcpt' in state:
        session.envelope.rcpt_to.append(object())
    assert run_gate(line, engine) == expected


def test_flags_are_declared_in_the_table():
    assert COMMANDS['DATA'].flags & (NO_ARGS | GREETED | IN_MAIL | WITH_RCPT) == \
        NO_ARGS | GREETED | IN_MAIL | WITH_RCPT
    assert COMMANDS['RCPT'].flags & (GREETED | IN_MAIL) == GREETED | IN_MAIL
    assert COMMANDS['BDAT'].extension == 'CHUNKING'


@pytest.mark.parametrize('options, name, is_enabled, is_offered', [
    ({}, 'BDAT', True, True),
    ({'disabled_commands': ['CHUNKING']}, 'BDAT', False, False),
    ({'disabled_commands': ['BDAT']}, 'BDAT', False, False),
    ({}, 'EXPN', True, False),           # answered 502, never listed
    ({}, 'LHLO', True, False),           # SMTP server: LHLO is not offered
    ({'lmtp': True}, 'LHLO', True, True),
    ({'lmtp': True}, 'EHLO', True, False),
    ({'disabled_commands': ['VRFY']}, 'VRFY', False, False),
])
def test_enabled_and_offered(options, name, is_enabled, is_offered):
    opts = Options(**options)
    assert enabled(COMMANDS[name], opts) is is_enabled
    assert offered(COMMANDS[name], opts) is is_offered
