"""The exceptions user code sees."""
from __future__ import annotations

from .replies import Reply, default_enhanced, validate_code


class SmtpError(Exception):
    """Raise to answer the current command with this reply.

    `SmtpError(550, 'No such user')` or `SmtpError(*replies.NEED_MAIL)`. The
    enhanced status code is derived from the reply code when not given.
    """

    def __init__(self, code: int, message='', enhanced: str | None = None):
        self.code = validate_code(code)
        self.message = message
        self.enhanced = default_enhanced(code) if enhanced is None else enhanced
        super().__init__(code, message)

    @property
    def reply(self) -> Reply:
        return Reply(self.code, self.message, self.enhanced)

    def __str__(self):
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
