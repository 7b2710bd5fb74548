"""`--max-age`: messages older than a duration are deleted, as Mailpit's option.

The value is Mailpit's: a whole number of hours or days (`12h`, `7d`).
The check runs every `interval` seconds (a minute by default) in a
greenlet of the inbox's hub; the delete itself runs in the hub's thread
pool (`offload`), so the SQLite write never stalls SMTP or the web side.
What it deletes is one `prune` event on the websocket, as the pruning by
`--max-messages` is. A failing check (a locked or vanished file) is
logged once, at WARNING, until a check succeeds again.
"""
from __future__ import annotations

import re
import time

import gevent

from .. import logs
from ..offload import offload
from .store import Store

log = logs.get('smtp_stack.inbox')

INTERVAL = 60.0
_AGE = re.compile(r'(\d+)([hd])\Z')


def parse_max_age(text: str) -> float:
    """'12h' -> 43200.0, '7d' -> 604800.0; ValueError with Mailpit's wording otherwise."""
    match = _AGE.match(text.strip())
    if match is None or int(match[1]) < 1:
        raise ValueError(f'max-age must be either <int>h for hours or <int>d for days: {text}')
    return int(match[1]) * (3600.0 if match[2] == 'h' else 86400.0)


class AgePruner:
    """Deletes what is older than `max_age` seconds, every `interval` seconds."""

    def __init__(self, store: Store, max_age: float, interval: float = INTERVAL):
        if max_age <= 0 or interval <= 0:
            raise ValueError('max_age and interval must be positive')
        self.store = store
        self.max_age = max_age
        self.interval = interval
        self.pruned = 0
        self._failing = False
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None

    def prune_now(self) -> int:
        """One check, off the hub: how many messages it deleted."""
        try:
            count = offload(self.store.prune_older, time.time() - self.max_age)
        except Exception as exc:    # noqa: BLE001 - logged once per failure period
            if not self._failing:
                log.warning('inbox: --max-age pruning failed: %s', exc)
            self._failing = True
            return 0
        if self._failing:
            log.info('inbox: --max-age pruning works again')
        self._failing = False
        self.pruned += count
        return count

    def _run(self) -> None:
        while True:
            self.prune_now()
            gevent.sleep(self.interval)
