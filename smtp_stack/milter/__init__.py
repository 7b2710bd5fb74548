"""smtp_stack as a milter: the same middleware, inside Postfix or Sendmail.

    protocol.py    the packets, constants and layouts (no sockets; shared
                   with the MTA side, which calls milters)
    facts.py       macros -> session fields
    message.py     content packets -> data_stream; end-of-message changes
    handlers.py    the innermost middleware (hooks, envelope, DATA)
    steps.py       the steps asked of the MTA, from the declared stages
    transport.py   the socket: packets in, replies out, SMFIR_PROGRESS
    connection.py  one MTA connection: the loop, events -> commands -> replies
    content.py     the message, from DATA to its verdict
    verdicts.py    a command's reply as a milter packet
    server.py      MilterServer: options, listening, lifecycle
    config.py, command.py   `smtp-stack milter --config FILE`
"""
from __future__ import annotations

from .server import MilterOptions, MilterServer, parse_listen

__all__ = ['MilterServer', 'MilterOptions', 'parse_listen']
