"""Failing open, said once: a store or a DNS server that is down skips
its check (mail keeps flowing), and the outage is one log line, not one
per message; its recovery is one more."""
from __future__ import annotations

import logging
import threading

# The policies' logger: where these lines have always gone (the server's
# shared limits included), so logging configurations keep finding them.
log = logging.getLogger('smtp_stack.policies')


class WarnOnce:
    """Log a failure the first time it happens, and again only after the
    cause recovered (`ok(cause)`) — a Redis outage is one line, not one per
    RCPT; its recovery is one more."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def failed(self, cause: str, message: str, *args: object) -> None:
        with self._lock:
            if cause in self._down:
                return
            self._down.add(cause)
        self.logger.warning(message + ' (failing open)', *args)

    def ok(self, cause: str) -> None:
        if cause in self._down:
            with self._lock:
                self._down.discard(cause)
            self.logger.warning('%s: working again', cause)


# One for the process: the policies and the server's shared limits.
warnings = WarnOnce()
