"""Blocking calls (fsync, password hashing) run off the hub."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import gevent

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    Args = TypeVarTuple('Args')

Result = TypeVar('Result')


def offload(fn: Callable[[Unpack[Args]], Result], *args: Unpack[Args]) -> Result:
    """`fn(*args)` in a worker thread of the hub's thread pool, so one slow
    disk flush or hash does not stall every other session of the process;
    called where no hub can run (no gevent loop), it runs here."""
    try:
        hub = gevent.get_hub()
    except Exception:   # pragma: no cover - no hub can be made here
        return fn(*args)
    result: Result = hub.threadpool.apply(fn, args)     # gevent is untyped: Any
    return result
