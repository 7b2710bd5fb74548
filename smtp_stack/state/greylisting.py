"""One greylist decision (RFC 6647) as one store operation, `Store.greylist`.

The policy (policies/greylist.py) used to ask a store three to six times
per recipient; a store now decides in one step, atomically: Redis in one
Lua script (one round trip: redis_store.py), SQLite in one transaction,
the memory store in one call without a switch. The steps, written once
here and mirrored by the Lua script:

    client passed `auto_allow` times already     -> pass
    triplet passed before                         -> pass, its `expire` renewed
    first sight (the `waiting` key added)         -> wait `delay`
    seen less than `delay` ago                    -> wait the rest
    seen `delay` ago or more                      -> pass: `passed` set for
                                                     `expire`, `waiting` dropped,
                                                     the client's passes + 1

A store object of the user's without `greylist` gets these steps over its
own get/set/add/incr/delete (`decide`), as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .protocols import Value


class GreyKeys(NamedTuple):
    """The store keys of one decision."""
    client: str         # passes of the client network (auto-allow)
    passed: str         # the triplet passed: renewed on use
    waiting: str        # the triplet's first sight, while it waits


@dataclass(frozen=True)
class GreyRule:
    """The greylist's parameters, in seconds (`auto_allow` 0: never)."""
    delay: float
    retry_window: float
    expire: float
    auto_allow: int


class BasicOps(Protocol):
    def get(self, key: str) -> Value | None: ...
    def set(self, key: str, value: Value, ttl: float | None = None) -> None: ...
    def add(self, key: str, value: Value, ttl: float | None = None) -> bool: ...
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...
    def delete(self, key: str) -> None: ...


def decide(ops: BasicOps, keys: GreyKeys, now: float, rule: GreyRule) -> float | None:
    """None: the triplet passes; else the seconds it still has to wait.
    Atomic only if `ops` is (a transaction, or no switch meanwhile)."""
    if rule.auto_allow:
        passes = ops.get(keys.client)
        if passes is not None and int(passes) >= rule.auto_allow:
            return None
    if ops.get(keys.passed) is not None:
        ops.set(keys.passed, int(now), rule.expire)
        return None
    if ops.add(keys.waiting, repr(now), rule.delay + rule.retry_window):
        return rule.delay
    first = ops.get(keys.waiting)
    waited = now - float(first) if first is not None else 0.0
    if first is None or waited < rule.delay:
        return rule.delay - waited
    ops.set(keys.passed, int(now), rule.expire)
    ops.delete(keys.waiting)
    if rule.auto_allow:
        ops.incr(keys.client, 1, rule.expire)
    return None
