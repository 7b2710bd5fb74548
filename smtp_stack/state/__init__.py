"""Where state shared by sessions, workers and machines lives: stores and
failure counters, in the core (the `store` option of the server needs
them; the policies build on them).

    from smtp_stack import state
    shared = state.store('redis://127.0.0.1:6379/0')   # or sqlite:///PATH, memory:

Every store offers the same few operations, each atomic on its own
(protocols.py has the contract, `Store`), so several processes (`workers`)
or machines sharing a store count exactly; a greylist decision is one
operation too (greylisting.py: one Redis round trip). None of them blocks
the gevent hub: SQLite calls run in native threads of the store's own
(backend.Offloaded says why threads of its own), Redis calls in the
calling greenlet over gevent sockets (redis_wire.py), so a slow disk or a
stalled Redis delays only the session that asked. A
backend failure raises `StoreError`; the policies and the server's shared
limits catch it and fail open or answer 451 4.3.5 (`on_store_error`),
warning once per cause and period (fail_open.py). Each store URL has a
circuit breaker (breaker.py; the resolver and the relay's upstream have
theirs too), so a stalled store costs one timeout per period.

| module | holds |
|---|---|
| `protocols.py` | `Store`, `FailureCounter` (typing.Protocol), `StoreError`, `Value`, `is_store` |
| `urls.py` | `store(url)`, `as_store(value)` |
| `memory.py`, `sqlite_store.py`, `redis_store.py` | the backends (each imports its library) |
| `redis_wire.py` | redis-py's connections on gevent sockets, kept per hub (`MAX_IDLE`); `Script` |
| `resp.py` | RESP: commands written, replies read (pure; "need more bytes" is None) |
| `greylisting.py` | one greylist decision: `GreyKeys`, `GreyRule`, the steps (`decide`) |
| `backend.py` | `Guarded` (the breaker), `Offloaded` (in threads), `member_id`, `redacted` |
| `shared_limits.py` | `SharedConnections`, `SharedFailures`: the server's per-IP limits |
| `fail_open.py` | `WarnOnce`: a line per cause and period; `STORE_UNAVAILABLE` (451 4.3.5) |
| `breaker.py` | `Breaker` per dependency, `breakers()` and `listeners` for metrics |

`smtp_stack.policies.store`, `policies.StoreError` and
`policies.stores.Store` are these same objects.
"""
from __future__ import annotations

from .memory import MemoryStore
from .protocols import FailureCounter, Store, StoreError, Value, is_store
from .shared_limits import SharedConnections, SharedFailures
from .urls import URLS, as_store, store

__all__ = ['Store', 'FailureCounter', 'StoreError', 'Value', 'is_store', 'store', 'as_store',
           'URLS', 'MemoryStore', 'SharedConnections', 'SharedFailures']
