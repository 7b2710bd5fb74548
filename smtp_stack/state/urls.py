"""A store from its URL: `store('memory:')`, `store('sqlite:///PATH')`,
`store('redis://HOST:PORT/DB')` (also `rediss://` over TLS and
`unix:///PATH` on a socket file: redis_store.py).

Each backend imports its library when its URL is first asked for: sqlite3
is the standard library's; redis-py is the `policies` extra's, and a Redis
URL without it raises MissingExtra naming the extra.
"""
from __future__ import annotations

from ..extras import needs_extra
from .backend import redacted
from .memory import MemoryStore
from .protocols import Store, is_store

URLS = 'memory:, sqlite:///PATH, redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH'


def store(url: str = 'memory:') -> Store:
    """A store for `url`: memory: | sqlite:///PATH | redis://HOST:PORT/DB |
    rediss://HOST:PORT/DB?ssl_ca_certs=/PATH/ca.pem | unix:///PATH?db=DB."""
    if not isinstance(url, str):
        raise ValueError(f'store must be a URL: {URLS}')
    if url in ('memory:', 'memory://', 'memory'):
        return MemoryStore()
    if url.startswith('sqlite:///'):
        path = url[len('sqlite:///'):]    # sqlite:///relative, sqlite:////absolute (SQLAlchemy's)
        if not path:
            raise ValueError('sqlite:///PATH needs a file name')
        from .sqlite_store import SqliteStore
        return SqliteStore(path)
    if url.startswith(('redis://', 'rediss://', 'unix://')):
        with needs_extra('policies', f'a {url.partition(":")[0]}:// store'):
            from .redis_store import RedisStore
        return RedisStore(url)
    raise ValueError(f'store: unknown URL {redacted(url)!r} ({URLS})')


def as_store(value: str | Store | None) -> Store:
    """A `store=` parameter (a policy's, the server's): None (a memory
    store of its own), a URL or a store object."""
    if value is None:
        return MemoryStore()
    if isinstance(value, str):
        return store(value)
    if not is_store(value):
        raise ValueError('store must be a URL or a store object (see policies.store)')
    return value
