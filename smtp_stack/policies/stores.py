"""Where policies keep state: `store('memory:')`, `store('sqlite:///PATH')`,
`store('redis://HOST:PORT/DB')`.

The stores live in the core now (`smtp_stack.state`: the server's `store`
option needs them too); these are the same objects under the names the
policies have always had, so `policies.stores.Store` and friends keep
working.
"""
from __future__ import annotations

from ..state.backend import Offloaded, member_id, redacted
from ..state.memory import MemoryStore
from ..state.protocols import OPERATIONS, Store, StoreError, Value, is_store
from ..state.urls import URLS, as_store, store

__all__ = ['Store', 'StoreError', 'Value', 'OPERATIONS', 'is_store', 'store', 'as_store', 'URLS',
           'MemoryStore', 'Offloaded', 'member_id', 'redacted']
