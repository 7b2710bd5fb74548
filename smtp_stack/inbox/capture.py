"""The SMTP side of the inbox: every accepted message goes into the store.

It is a `CallableDelivery`, so it gets what every built-in delivery
guarantees (docs/delivery.md): only whole, acceptable messages, after the
final dot, a 4xx if the store fails. The function runs in the hub's thread
pool (`threaded=True`), so the SQLite write never blocks the hub. It stores
exactly the bytes it is handed: the headers this server adds (the added
headers, then Received; CallableDelivery writes no Return-Path), then the
message as sent, less the fields middleware recorded with
`envelope.remove_header` (forged Authentication-Results, with the
`authenticate` policy): CallableDelivery has taken them out already.
"""
from __future__ import annotations

import threading
from typing import IO, TYPE_CHECKING

from ..delivery import CallableDelivery

if TYPE_CHECKING:
    from ..session import Envelope, Session
    from .store import Store


class Capture:
    """`fn(session, envelope, body)` for CallableDelivery, plus counters."""

    def __init__(self, store: Store, stats: dict[str, int] | None = None):
        self.store = store
        self.stats = stats if stats is not None else {'accepted': 0, 'accepted_size': 0,
                                                      'rejected': 0}
        self._lock = threading.Lock()

    def __call__(self, session: Session, envelope: Envelope, body: IO[bytes]) -> None:
        raw = body.read()
        sender = envelope.mail_from.address if envelope.mail_from is not None else ''
        self.store.add(raw, [a.address for a in envelope.rcpt_to],
                       username=_username(session), mail_from=sender)
        with self._lock:
            self.stats['accepted'] += 1
            self.stats['accepted_size'] += len(raw)
        return None

    def delivery(self) -> CallableDelivery:
        return CallableDelivery(self, threaded=True)


def _username(session: Session) -> str | None:
    """Who authenticated, if anyone (Mailpit shows it as `Username`)."""
    user = getattr(session, 'user', None)
    if isinstance(user, dict):
        return user.get('name') or user.get('username')
    return str(user) if user else None
