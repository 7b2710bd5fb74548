"""`rate_limit(messages=None, recipients=None, per=3600, key='client')`.

Counts in a sliding window of `per` seconds: `messages` at MAIL FROM,
`recipients` at each RCPT TO, keyed by the client address ('client'), the
authenticated user ('user'; unauthenticated sessions fall back to the
client address) or the envelope sender ('sender'). The window is a set of
event times in the store (see stores.py), so N workers or machines on one
Redis or SQLite store share one exact count, as Postfix's anvil does for
one machine. Over the limit: 450 4.7.1, and nothing is recorded — a client
that waits gets its room back as old events leave the window.

A store that fails lets the command through (`on_store_error='accept'`,
the default) or answers `451 4.3.5` ('tempfail'), at MAIL for `messages`
and at RCPT for `recipients`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from ..errors import SmtpError
from ..params import DURATION, INTEGER, STRING
from ..replies import Reply
from .common import check_mode, client_text, mode_of, positive, store_failed, warnings
from .config import ON_STORE_ERROR, STORE
from .stores import Store, StoreError, as_store

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..options import OnStoreError
    from ..session import Session

KEYS = ('client', 'user', 'sender')
TOO_MANY_MESSAGES = Reply(450, 'Too many messages, slow down', '4.7.1')
TOO_MANY_RECIPIENTS = Reply(450, 'Too many recipients, slow down', '4.7.1')


class RateLimit:
    """Messages and/or recipients per `per` seconds, per client, user or
    sender; the factory `policies.rate_limit`, and the YAML entry `rate_limit:`."""
    stages = frozenset({'MAIL', 'RCPT'})   # the milter steps it needs (middleware.stages)

    def __init__(self, messages: Annotated[int | None, INTEGER] = None,
                 recipients: Annotated[int | None, INTEGER] = None,
                 per: Annotated[float, DURATION] = 3600, key: Annotated[str, STRING] = 'client',
                 store: Annotated[str | Store | None, STORE] = None,
                 now: Callable[[], float] | None = None,
                 on_store_error: Annotated[OnStoreError | None, ON_STORE_ERROR] = None):
        if messages is None and recipients is None:
            raise ValueError('rate_limit: give messages, recipients or both')
        self.messages = None if messages is None \
            else positive(messages, 'rate_limit: messages', True)
        self.recipients = None if recipients is None \
            else positive(recipients, 'rate_limit: recipients', True)
        self.per = positive(per, 'rate_limit: per')
        if key not in KEYS:
            raise ValueError(f'rate_limit: key must be one of {", ".join(KEYS)}')
        self.key = key
        self.store = as_store(store)
        self._now = now     # tests: a clock; None: the store's own time
        self.on_store_error = check_mode(on_store_error, 'rate_limit')
        self._cause = f'rate_limit store {self.store.url}'     # of the store's warnings
        # The store keys' beginnings, made once: 'rate:msg:3600:' (as the
        # keys have always been written, so that windows survive an upgrade).
        self._key_starts = {what: f'rate:{what}:{self.per}:' for what in ('msg', 'rcpt')}

    def subject(self, session: Session) -> str:
        """Who is counted: 'client:192.0.2.1', 'user:alice', 'sender:a@b'."""
        if self.key == 'user' and session.user:
            user = session.user
            name = getattr(session.auth, 'username', None) if session.auth else None
            return f'user:{name or getattr(user, "name", None) or user}'
        if self.key == 'sender' and session.envelope.mail_from is not None:
            return f'sender:{session.envelope.mail_from.address.lower()}'
        return 'client:' + client_text(session)

    def _hit(self, ctx: Context, what: str, limit: int, subject: str) -> bool:
        """Whether one more is within the limit (True, failing open, when
        the store is down; with 'tempfail' SmtpError 451 4.3.5)."""
        now = self._now() if self._now else None
        try:
            count = self.store.hit(self._key_starts[what] + subject, self.per, limit, now)
            warnings.ok(self._cause)
        except StoreError as exc:
            store_failed(mode_of(self.on_store_error, ctx), self._cause, 'rate_limit: %s', exc)
            return True
        return count is not None

    def __call__(self, ctx: Context, next: Next) -> None:
        name = ctx.command_name
        if name == 'MAIL' and self.messages and ctx.address is not None and self.key != 'sender':
            if not self._hit(ctx, 'msg', self.messages, self.subject(ctx.session)):
                raise SmtpError(TOO_MANY_MESSAGES)
        elif name == 'RCPT' and ctx.address is not None and (
                self.recipients or (self.key == 'sender' and self.messages)):
            subject = self.subject(ctx.session)
            if self.key == 'sender' and self.messages:
                # the sender is known only after MAIL: its message counts at its
                # first RCPT (once per policy, even if that RCPT is refused later)
                counted = ctx.session.envelope.__dict__.setdefault('_rate_counted', set())
                if id(self) not in counted:
                    if not self._hit(ctx, 'msg', self.messages, subject):
                        raise SmtpError(TOO_MANY_MESSAGES)
                    counted.add(id(self))
            if self.recipients and not self._hit(ctx, 'rcpt', self.recipients, subject):
                raise SmtpError(TOO_MANY_RECIPIENTS)
        next()

