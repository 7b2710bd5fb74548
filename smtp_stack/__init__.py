"""smtp_stack: a programmable SMTP/LMTP server on gevent.

Public names: SmtpServer, SmtpError, MessageRefused, LogLevels, Address,
Reply, ClientDisconnected. docs/api.md is the reference.
"""
from .addresses import Address
from .errors import ClientDisconnected, MessageRefused, SmtpError
from .options import LogLevels
from .replies import Reply
from .server import SmtpServer

__all__ = ['SmtpServer', 'SmtpError', 'MessageRefused', 'LogLevels', 'Address', 'Reply',
           'ClientDisconnected']
__version__ = '0.1.0'
