"""What a check does when what it looks up in (a store, DNS) is down, and
how that is said: once per cause and period, not once per message.

`on_store_error` (a server option, and a parameter of each policy that
overrides it) chooses: 'accept' skips the check (mail keeps flowing: the
default, as before), 'tempfail' answers `451 4.3.5` (`STORE_UNAVAILABLE`)
so that the client keeps the message and retries, and a greylist or a
rate limit never silently stops working. Either way the outage is one log
line, a reminder per `period` while it lasts, and one more line when it
works again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import SmtpError
from ..replies import Reply

if TYPE_CHECKING:
    from ..options import OnStoreError

# The policies' logger: where these lines have always gone (the server's
# shared limits included), so logging configurations keep finding them.
log = logging.getLogger('smtp_stack.policies')

REMIND_EVERY = 60.0     # seconds between two lines about one cause that keeps failing

# RFC 3463 4.3.5 "System incorrectly configured": what Postfix answers
# when its policy service cannot be reached ("451 4.3.5 Server
# configuration problem"). 451: RFC 5321 4.2.5, the client retries.
STORE_UNAVAILABLE = Reply(451, 'Temporary lookup failure, try again later', '4.3.5')


class WarnOnce:
    """Log a failure the first time it happens, again every `period`
    seconds while it goes on (with how many calls failed meanwhile), and
    once more when the cause recovered (`ok(cause)`): a Redis outage is a
    line or two, not one per RCPT.

    `failures[cause]` counts every failure since the process started
    (metrics read it)."""

    def __init__(self, logger: logging.Logger = log, period: float = REMIND_EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.period = period
        self.clock = clock
        self.failures: Counter[str] = Counter()
        self._said: dict[str, tuple[float, int]] = {}    # cause -> (when said, failures then)
        self._lock = threading.Lock()

    def failed(self, cause: str, message: str, *args: object,
               consequence: str = 'failing open') -> None:
        now = self.clock()
        with self._lock:
            self.failures[cause] += 1
            said = self._said.get(cause)
            if said is not None and now - said[0] < self.period:
                return
            self._said[cause] = (now, self.failures[cause])
        if said is None:
            self.logger.warning(f'{message} ({consequence})', *args)
        else:
            self.logger.warning(f'{message} ({consequence}; still failing: %d times in %.0f s)',
                                *args, self.failures[cause] - said[1], now - said[0])

    def ok(self, cause: str) -> None:
        if cause in self._said:
            with self._lock:
                if self._said.pop(cause, None) is None:
                    return
            self.logger.warning('%s: working again', cause)


# One for the process: the policies and the server's shared limits.
warnings = WarnOnce()


def check_mode(value: object, where: str) -> OnStoreError | None:
    """An `on_store_error` parameter: 'accept', 'tempfail' or None (the server's)."""
    if value is None or value == 'accept':
        return None if value is None else 'accept'
    if value == 'tempfail':
        return 'tempfail'
    raise ValueError(f"{where}: on_store_error must be 'accept' or 'tempfail'")


def store_failed(mode: OnStoreError, cause: str, message: str, *args: object) -> None:
    """Say so (once per cause and period); with 'tempfail' refuse the
    command with 451 4.3.5, with 'accept' return (the caller skips its check)."""
    if mode == 'tempfail':
        warnings.failed(cause, message, *args, consequence='tempfail: 451 4.3.5')
        raise SmtpError(STORE_UNAVAILABLE)
    warnings.failed(cause, message, *args)
