"""The SMTP rules of Mailpit's flags that the server's own options do not
cover: which recipients are taken, and STARTTLS before any mail.

`RecipientRule` is `--smtp-allowed-recipients REGEX`: a recipient the
expression does not find (searched, as Mailpit's Go `MatchString`) gets
Mailpit's `550 5.1.0 Requested action not taken: mailbox unavailable`,
counted as SMTPRejected in /api/v1/info and logged. With
`--smtp-ignore-rejected-recipients` it gets `250` instead and is left
out of what is stored: the message is kept for the allowed recipients
alone (no Bcc names the others), and dropped, still with a 250, when
none was allowed, as Mailpit does. The recipient stays in the envelope
so that DATA goes on as Mailpit's does (a transaction with no recipient
would get 503); `ignored(envelope)` tells the capture which to leave out.

`RequireStarttls` is `--smtp-require-starttls`: MAIL, RCPT, DATA and
AUTH before STARTTLS get `530 5.7.0 Must issue a STARTTLS command first`
(RFC 3207 4, Mailpit's words). Not BDAT: its chunk follows the command
at once and only the engine's own BDAT handler skips it (RFC 3030 2), so
a BDAT before STARTTLS is left to the engine's "need MAIL" (MAIL was
refused already).

The allowlist looks at a recipient after the server's own checks of the
RCPT (its order in the transaction, its syntax and parameters, the
recipients limit), as Mailpit's does: a RCPT that fails those is not
counted or logged as refused by the allowlist.
"""
from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from .. import logs
from ..errors import SmtpError

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..session import Envelope

log = logs.get('smtp_stack.inbox')

_IGNORED = 'inbox_ignored_recipients'   # the envelope's attribute: addresses taken, not kept


def ignored(envelope: Envelope) -> frozenset[str]:
    """The envelope's recipients taken with 250 but not to be stored."""
    return frozenset(getattr(envelope, _IGNORED, ()))


class RecipientRule:
    """`--smtp-allowed-recipients` (and `--smtp-ignore-rejected-recipients`)."""

    def __init__(self, pattern: str, ignore_rejected: bool = False,
                 stats: dict[str, int] | None = None):
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f'--smtp-allowed-recipients: {exc}') from None
        self.ignore_rejected = ignore_rejected
        self.stats = stats if stats is not None else {'rejected': 0}
        self._lock = threading.Lock()

    def __call__(self, ctx: Context, next: Next) -> None:
        address = ctx.address
        next()          # the RCPT's own checks; the recipient into the envelope
        if ctx.command_name != 'RCPT' or address is None or \
                self.pattern.search(address.address) is not None:
            return
        session = ctx.session
        envelope = session.envelope
        if envelope.last_to is not address:     # refused for another reason
            return
        sender = envelope.mail_from
        with self._lock:
            self.stats['rejected'] = self.stats.get('rejected', 0) + 1
        log.warning('%s: recipient <%s> not allowed (--smtp-allowed-recipients)%s',
                    session.id, address.address,
                    ', taken and not stored' if self.ignore_rejected else '',
                    event='inbox_recipient_refused', session=session.id,
                    recipient=address.address, sender=sender.address if sender else '',
                    ignored=self.ignore_rejected)
        if not self.ignore_rejected:
            # refused after the handler took it: the engine takes it out again
            raise SmtpError(550, 'Requested action not taken: mailbox unavailable', '5.1.0')
        setattr(envelope, _IGNORED, ignored(envelope) | {address.address})

    def describe(self) -> str:
        return f'inbox allowed recipients ({self.pattern.pattern})'


class RequireStarttls:
    """`--smtp-require-starttls`: no mail, and no AUTH, before STARTTLS."""

    COMMANDS = frozenset({'MAIL', 'RCPT', 'DATA', 'AUTH'})

    def __call__(self, ctx: Context, next: Next) -> None:
        if ctx.command_name in self.COMMANDS and not ctx.session.secure:
            raise SmtpError(530, 'Must issue a STARTTLS command first', '5.7.0')
        next()

    def describe(self) -> str:
        return 'inbox STARTTLS required'
