"""Blocking calls (fsync, password hashing) run off the hub."""
from __future__ import annotations

import gevent


def offload(fn, *args):
    """`fn(*args)` in a worker thread of the hub's thread pool, so one slow
    disk flush or hash does not stall every other session of the process;
    called where no hub can run (no gevent loop), it runs here."""
    try:
        hub = gevent.get_hub()
    except Exception:   # pragma: no cover - no hub can be made here
        return fn(*args)
    return hub.threadpool.apply(fn, args)
