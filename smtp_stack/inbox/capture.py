"""The SMTP side of the inbox: every accepted message goes into the store.

It is a `CallableDelivery`, so it gets what every built-in delivery
guarantees (docs/delivery.md): only whole, acceptable messages, after the
final dot, a 4xx if the store fails. It stores exactly the bytes it is
handed: the headers this server adds (the added headers, then Received;
CallableDelivery writes no Return-Path), then the message as sent, less
the fields middleware recorded with `envelope.remove_header` (forged
Authentication-Results, with the `authenticate` policy): CallableDelivery
has taken them out already.

The function is called in the session's greenlet (`threaded=False`) and
hands the message to threads of its own (`offload.Lanes`, STORE_THREADS
per hub), where the body is read, parsed and written: a hand-off through
a C queue costs a few µs where the hub's thread pool spends tens, and
the SQLite work never runs on the hub. The call returns, and the client
gets its 250, once the transaction holding the message has committed
(store.py: the messages of several sessions share one commit).
"""
from __future__ import annotations

import threading
from typing import IO, TYPE_CHECKING

from ..delivery import CallableDelivery
from ..offload import Lanes

if TYPE_CHECKING:
    from ..session import Envelope, Session
    from .store import Store

STORE_THREADS = 4
_LANES = Lanes(STORE_THREADS)


class Capture:
    """`fn(session, envelope, body)` for CallableDelivery, plus counters."""

    def __init__(self, store: Store, stats: dict[str, int] | None = None):
        self.store = store
        self.stats = stats if stats is not None else {'accepted': 0, 'accepted_size': 0,
                                                      'rejected': 0}
        self._lock = threading.Lock()

    def __call__(self, session: Session, envelope: Envelope, body: IO[bytes]) -> None:
        sender = envelope.mail_from.address if envelope.mail_from is not None else ''
        _LANES.call(self.keep, body, [a.address for a in envelope.rcpt_to],
                    _username(session), sender)
        return None

    def keep(self, body: IO[bytes], rcpt: list[str], username: str | None,
             sender: str) -> None:
        """In a store thread: the message into the store, counted."""
        raw = body.read()
        self.store.add(raw, rcpt, username=username, mail_from=sender)
        with self._lock:
            self.stats['accepted'] += 1
            self.stats['accepted_size'] += len(raw)

    def delivery(self) -> CallableDelivery:
        return CallableDelivery(self, threaded=False)


def _username(session: Session) -> str | None:
    """Who authenticated, if anyone (Mailpit shows it as `Username`)."""
    user = getattr(session, 'user', None)
    if isinstance(user, dict):
        return user.get('name') or user.get('username')
    return str(user) if user else None
