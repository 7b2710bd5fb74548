"""What happens to an accepted message: Maildir, relay, or a Python function.

Each delivery is a middleware `fn(ctx, next)`: `server.use(MaildirDelivery('mail'))`.
Register it before (outside of) middleware that may refuse a message after
`next()` on DATA, so it sees their verdict; it must be the first to read the
body. See docs/delivery.md.
"""
from .base import address_literal, received_header, return_path_header
from .callable import CallableDelivery, load_callable
from .maildir import MaildirDelivery, ensure_maildir
from .relay import RelayDelivery

__all__ = ['MaildirDelivery', 'RelayDelivery', 'CallableDelivery', 'load_callable',
           'ensure_maildir', 'received_header', 'return_path_header', 'address_literal']
