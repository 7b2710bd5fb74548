"""The contracts of shared state, each a `typing.Protocol` (no base class
to inherit): what a store must do, and what a failure counter must do.

A store's operations, each atomic on its own, so several processes
(`workers`) or machines sharing a store count exactly:

    get(key) / set(key, value, ttl) / delete(key)
    add(key, value, ttl) -> bool       set only if absent (first sight of a triplet)
    incr(key, amount=1, ttl=None) -> int
    hit(key, window, limit, now) -> int | None
        a sliding window: record one event at `now` and return how many are
        in (now - window, now] if that is at most `limit`; None (and nothing
        recorded) if it would pass `limit`.
    greylist(keys, now, rule) -> float | None
        one RFC 6647 decision (greylisting.py): None to pass, else the
        seconds the triplet still has to wait.

A backend failure raises `StoreError`; the policies and the server's shared
limits catch it and fail open, or answer 451 4.3.5 (`on_store_error`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeGuard, runtime_checkable

if TYPE_CHECKING:
    from .greylisting import GreyKeys, GreyRule


class StoreError(Exception):
    """The store could not be reached or refused the operation."""


# What a store keeps: Redis and SQLite give strings back, the memory store
# the value as it was set.
Value: TypeAlias = str | int | float

OPERATIONS = ('get', 'set', 'add', 'incr', 'hit', 'delete')


class Store(Protocol):
    """What the policies and the server's shared limits ask of a store: the
    operations of the module doc, each atomic, raising StoreError when the
    backend fails. `store(url)` makes one; an object of your own with
    these methods may be given as `store=` too. `ttl` and `window` are in
    seconds; a key without a ttl does not expire."""

    @property
    def url(self) -> str:
        """Where the state lives, for logs (without a password)."""

    def get(self, key: str) -> Value | None: ...
    def set(self, key: str, value: Value, ttl: float | None = None) -> None: ...
    # Set only if absent: True when this call set it.
    def add(self, key: str, value: Value, ttl: float | None = None) -> bool: ...
    # The new value; `ttl` None keeps the key's expiry.
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...
    def delete(self, key: str) -> None: ...
    # One event at `now` (default: the store's clock) in a sliding window:
    # the count in (now - window, now], or None (nothing recorded) over `limit`.
    def hit(self, key: str, window: float, limit: int,
            now: float | None = None) -> int | None: ...
    # One greylist decision in one step: None passes, else the seconds left.
    def greylist(self, keys: GreyKeys, now: float, rule: GreyRule) -> float | None: ...
    def close(self) -> None: ...


def is_store(value: object) -> TypeGuard[Store]:
    """Whether `value` has the operations of a store."""
    return all(hasattr(value, op) for op in OPERATIONS)


@runtime_checkable
class FailureCounter(Protocol):
    """Failures per key (a client address) over a sliding window, for
    `max_auth_failures_per_ip`: `limits.RecentFailures` counts in this
    process, `SharedFailures` in a store (across workers and machines);
    the server holds whichever its options call for and asks only this."""

    @property
    def limit(self) -> int:
        """Failures within the window that block the key."""
        ...

    @property
    def window(self) -> float:
        """The window, in seconds."""
        ...

    def blocked(self, key: str) -> bool:
        """Whether `key` reached the limit within the window (a counter
        that cannot tell may raise SmtpError: its refusal, 454 4.3.5)."""
        ...

    def add(self, key: str) -> bool:
        """Count one failure now; True when this one reached the limit."""
        ...

