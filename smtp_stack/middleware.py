"""Koa-style middleware: `fn(ctx, next)` around the built-in command handler."""
from __future__ import annotations

from .replies import Reply, validate_code


class Context:
    """One command as middleware sees it.

    The final reply is data: `send()` sets it (the last call wins) and the
    session writes it once the whole chain has returned.
    """

    __slots__ = ('command', 'command_name', 'command_args', 'address',
                 'session', 'server', 'reply', 'close_requested', 'data_stream',
                 'parse_error', '_conn', '__dict__')

    def __init__(self, command: str, session, server, conn=None):
        self.command = command
        name, _, rest = command.partition(' ')
        self.command_name = name.upper()
        self.command_args = rest.split()
        self.address = None
        self.session = session
        self.server = server
        self.reply = None
        self.close_requested = False
        self.data_stream = None     # set by DATA/BDAT, drained after the chain
        self.parse_error = None     # why MAIL/RCPT's address did not parse
        self._conn = conn

    def send(self, code, message='', enhanced=None) -> None:
        """Set the final reply: `send(250, 'OK')`, `send(reply)`, or for LMTP
        after DATA a list `[(code, message), ...]`, one per recipient."""
        if isinstance(code, Reply):
            self.reply = _as_reply(code)
        elif isinstance(code, tuple) and code and isinstance(code[0], int):
            self.reply = _as_reply(code)
        elif isinstance(code, (list, tuple)):
            self.reply = [_as_reply(item) for item in code]
        else:
            self.reply = Reply(validate_code(code), message, enhanced)

    def close(self) -> None:
        """Close the connection after the final reply."""
        self.close_requested = True

    def __repr__(self):
        return f'<Context {self.command_name} reply={self.reply!r}>'


def _as_reply(item) -> Reply:
    if isinstance(item, Reply):
        validate_code(item.code)
        return item
    code, message, *rest = item
    return Reply(validate_code(code), message, rest[0] if rest else None)


def compose(middlewares, innermost):
    """One callable `dispatch(ctx)` running middlewares outermost-first."""
    chain = tuple(middlewares)
    count = len(chain)
    if not count:
        return innermost

    def dispatch(ctx):
        def step(index):
            if index == count:
                return innermost(ctx)
            called = False

            def next_():
                nonlocal called
                if called:
                    raise RuntimeError('next() called twice by one middleware')
                called = True
                step(index + 1)

            chain[index](ctx, next_)

        step(0)

    return dispatch
