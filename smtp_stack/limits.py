"""Counting what clients did across their connections (no sockets here).

`RecentFailures` backs `max_auth_failures_per_ip`: a client that reconnects
after each `max_auth_failures` (which counts per connection) would otherwise
guess passwords without end, as Postfix's `smtpd_client_auth_rate_limit`
and Dovecot's auth penalty also guard against.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class RecentFailures:
    """How many failures each key (a client address) had in the last
    `window` seconds; `blocked(key)` once it reached `limit`. A
    `state.FailureCounter` kept in this process (`state.SharedFailures`
    is the one kept in a store, across workers and machines).

    Memory stays bounded: a key keeps at most `limit` timestamps, and at
    most `max_keys` keys are kept: beyond that, those whose last failure is
    oldest are forgotten first (an attacker spreading over many addresses
    can make us forget, never grow).
    """

    def __init__(self, limit: int, window: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        # key -> failure times, oldest first; keys in the order of their last failure
        self._times: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._times)

    def blocked(self, key: str) -> bool:
        times = self._times.get(key)
        if times is None:
            return False
        recent = self._recent(times, self._clock())
        if not recent:
            del self._times[key]
            return False
        self._times[key] = recent
        return len(recent) >= self.limit

    def add(self, key: str) -> bool:
        """Count one failure now; True when this one reached the limit."""
        now = self._clock()
        times = self._recent(self._times.pop(key, ()), now)
        reached = len(times) == self.limit - 1
        times.append(now)
        del times[:-self.limit]
        self._times[key] = times        # last in order: the latest failure
        while len(self._times) > self.max_keys:      # the stalest first, O(1) each
            del self._times[next(iter(self._times))]
        return reached

    def _recent(self, times: Iterable[float], now: float) -> list[float]:
        since = now - self.window
        return [t for t in times if t > since]


class SessionCounters:
    """What one connection did, against the limits it may reach: errors
    (`max_errors`), failed AUTHs (`max_auth_failures`), accepted messages
    (`max_messages`) and commands that move no mail (`max_junk_commands`,
    as Postfix's smtpd_junk_command_limit). The engine asks; this decides."""

    __slots__ = ('max_errors', 'max_auth_failures', 'max_messages', 'max_junk',
                 'errors', 'auth_failures', 'messages', 'junk', 'greetings', 'junk_excess')

    def __init__(self, max_errors: int, max_auth_failures: int, max_messages: int,
                 max_junk: int) -> None:
        self.max_errors = max_errors
        self.max_auth_failures = max_auth_failures
        self.max_messages = max_messages
        self.max_junk = max_junk
        self.errors = self.auth_failures = self.messages = 0
        self.junk = 0                   # junk commands since the last accepted message
        self.greetings = 0
        self.junk_excess = False        # the current command is junk beyond the limit

    def command(self, greeting: bool, authenticated: bool) -> None:
        """A junk command (or a greeting after the first) arrived: beyond
        the limit it counts as an error too, so max_errors ends the session.
        A logged-in client is never limited."""
        if greeting:
            self.greetings += 1
            if self.greetings == 1:
                return
        if authenticated or not self.max_junk:
            return
        self.junk += 1
        if self.junk > self.max_junk:
            self.junk_excess = True

    def counts_as_error(self, code: int) -> bool:
        """A 4xx/5xx reply, or any reply to junk beyond the limit."""
        if code >= 400 or self.junk_excess:
            self.junk_excess = False
            return True
        return False

    def error(self, auth_failure: bool = False) -> str | None:
        """Count an error; 'auth' or 'errors' when a limit is reached now."""
        self.errors += 1
        if auth_failure:
            self.auth_failures += 1
            if self.auth_failures >= self.max_auth_failures:
                return 'auth'
        if self.max_errors and self.errors >= self.max_errors:
            return 'errors'
        return None

    def accepted(self) -> None:
        self.messages += 1
        self.junk = 0

    @property
    def messages_exhausted(self) -> bool:
        return bool(self.max_messages) and self.messages >= self.max_messages
