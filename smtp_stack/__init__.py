"""smtp_stack: a programmable SMTP/LMTP server on gevent.

Public names: SmtpServer, SmtpError, MessageRefused, LogLevels, Address,
Reply, ClientDisconnected; and the types middleware is written against:
Context, Next, Middleware, Session, Envelope; and `stages`/`stages_of`,
the stages a middleware declares it needs (a MilterServer asks for those)

    def audit(ctx: Context, next: Next) -> None: ...

docs/api.md is the reference.
"""
from .addresses import Address
from .errors import ClientDisconnected, MessageRefused, SmtpError
from .middleware import Context, Middleware, Next, stages, stages_of
from .options import LogLevels
from .replies import Reply
from .server import SmtpServer
from .session import Envelope, Session

__all__ = ['SmtpServer', 'SmtpError', 'MessageRefused', 'LogLevels', 'Address', 'Reply',
           'ClientDisconnected', 'Context', 'Next', 'Middleware', 'Session', 'Envelope',
           'stages', 'stages_of']
__version__ = '0.1.0'
