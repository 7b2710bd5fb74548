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
                 'parse_error', '_engine', '__dict__')

    def __init__(self, command: str, session, server, engine=None):
        self.command = command
        name, _, rest = command.partition(' ')
        # ASCII only: 'QU\u0131T'.upper() is 'QUIT', and must not become one.
        self.command_name = name.upper() if name.isascii() else name
        self.command_args = rest.split()
        self.address = None
        self.session = session
        self.server = server
        self.reply = None
        self.close_requested = False
        self.data_stream = None     # set by DATA/BDAT, drained after the chain
        self.parse_error = None     # why MAIL/RCPT's address did not parse
        self._engine = engine       # the session running this command (for engine.builtin)

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
    """One callable `dispatch(ctx)` running middlewares outermost-first.

    The chain is built once, as one function per level; a command then costs
    one call and one small `next` closure per middleware.
    """
    dispatch = innermost
    for fn in reversed(tuple(middlewares)):
        dispatch = _level(fn, dispatch)
    return dispatch


def _level(fn, inner):
    """The dispatcher of one level: `fn(ctx, next)` where next runs `inner`."""
    def dispatch(ctx):
        called = False

        def next_():
            nonlocal called
            if called:
                raise RuntimeError('next() called twice by one middleware')
            called = True
            inner(ctx)

        fn(ctx, next_)
    return dispatch
