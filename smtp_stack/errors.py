"""The exceptions user code sees."""
from __future__ import annotations

from typing import overload

from .replies import Enhanced, Message, Reply, default_enhanced, validate_code


class SmtpError(Exception):
    """Raise to answer the current command with this reply.

    `SmtpError(550, 'No such user')`, or a predeclared reply:
    `SmtpError(replies.NEED_MAIL)`. The enhanced status code is derived
    from the reply code when not given.
    """

    code: int
    message: Message
    enhanced: Enhanced

    @overload
    def __init__(self, code: Reply, /) -> None: ...

    @overload
    def __init__(self, code: int, message: Message = '', enhanced: Enhanced = None) -> None: ...

    def __init__(self, code: int | Reply, message: Message = '',
                 enhanced: Enhanced = None) -> None:
        if isinstance(code, Reply):
            code, message, enhanced = code
        self.code = validate_code(code)
        self.message = message
        self.enhanced = default_enhanced(code) if enhanced is None else enhanced
        super().__init__(code, message)

    @property
    def reply(self) -> Reply:
        return Reply(self.code, self.message, self.enhanced)

    def __str__(self) -> str:
        text = self.message if isinstance(self.message, str) else ' / '.join(self.message)
        return f'{self.code} {self.enhanced or ""} {text}'.replace('  ', ' ')


class MessageRefused(SmtpError):
    """The server refuses this message whatever middleware says: over `size`,
    bare CR/LF, a line over `max_line_length`, a BDAT transfer abandoned.

    Raised by every read of `data_stream` (and by `envelope.spool()`) from
    the moment the server knows, at the latest where the reader would see
    the end of the body, and again on each later read; `reply` is what the
    client gets. Code that reads the body to its end and lets exceptions
    propagate can therefore never keep a message the client was refused.
    """


class ClientDisconnected(ConnectionError):
    """The client went away (or stalled past the timeout) while a reader waited.

    Raised by `data_stream.read()` when the connection drops mid-DATA: the
    message is incomplete and the server will not accept it.
    """
