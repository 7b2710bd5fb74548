"""What a session raises to itself."""
from __future__ import annotations


class SessionShutdown(BaseException):
    """Thrown into a session greenlet by `SmtpServer.stop()`.

    A BaseException, like GreenletExit, so that user code catching
    `Exception` around a stream read cannot swallow the shutdown.
    """


class HookFailed(Exception):
    """A hook raised something other than SmtpError: 421 and close."""
