"""smtp_stack: a programmable SMTP/LMTP server on gevent.

Public names: SmtpServer, SmtpError, MessageRefused, LogLevels, Address,
Reply, ClientDisconnected; and the types middleware is written against:
Context, Next, Middleware, Session, Envelope; and `stages`/`stages_of`,
the stages a middleware declares it needs (a MilterServer asks for those)

    def audit(ctx: Context, next: Next) -> None: ...

docs/api.md is the reference.
"""
from typing import TYPE_CHECKING, Any

from .addresses import Address
from .errors import ClientDisconnected, MessageRefused, SmtpError
from .middleware import Context, Middleware, Next, stages, stages_of
from .options import LogLevels
from .replies import Reply
from .session import Envelope, Session

__all__ = ['SmtpServer', 'SmtpError', 'MessageRefused', 'LogLevels', 'Address', 'Reply',
           'ClientDisconnected', 'Context', 'Next', 'Middleware', 'Session', 'Envelope',
           'stages', 'stages_of']
__version__ = '0.1.0'

if TYPE_CHECKING:
    from .server import SmtpServer


def __getattr__(name: str) -> Any:
    """SmtpServer is imported when first asked for (PEP 562): the inbox's
    store process and other users of a part of the package do without the
    server, its TLS and the cryptography package (10 MB and a tenth of a
    second less for them)."""
    if name == 'SmtpServer':
        from .server import SmtpServer
        return SmtpServer
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted({*globals(), 'SmtpServer'})
