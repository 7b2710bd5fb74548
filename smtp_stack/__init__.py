"""smtp_stack: a programmable SMTP/LMTP server on gevent.

Public names: SmtpServer, SmtpError, LogLevels, Address, Reply,
ClientDisconnected. See SPEC.md / docs/ for the contract.
"""
from .addresses import Address
from .errors import ClientDisconnected, SmtpError
from .options import LogLevels
from .replies import Reply
from .server import SmtpServer

__all__ = ['SmtpServer', 'SmtpError', 'LogLevels', 'Address', 'Reply',
           'ClientDisconnected']
__version__ = '0.1.0'
