"""The session engine: one greenlet per connection runs `Engine.run()`.

    transport.py   the only code that touches the socket
    engine.py      the loop, the one-final-reply rule, errors and hooks
    commands.py    the command table: verb -> handler, syntax, flags; the gate
    greeting.py    HELO, EHLO, LHLO and the EHLO keywords
    envelope.py    MAIL, RCPT and their parameters
    body.py        DATA, BDAT, the body stream and its final reply (LMTP too)
    security.py    STARTTLS, AUTH
    forwarding.py  XCLIENT, XFORWARD
    basic.py       RSET, NOOP, QUIT, VRFY, EXPN, HELP
"""
from .commands import COMMANDS, Command
from .engine import Engine
from .exceptions import HookFailed, SessionShutdown
from .transport import ClientTimeout, Transport

__all__ = ['Engine', 'COMMANDS', 'Command', 'SessionShutdown', 'HookFailed',
           'ClientTimeout', 'Transport']
