"""`redis://HOST:PORT/DB`: moved to `smtp_stack.state.redis_store` (the
same class; importing it needs redis-py, the `policies` extra)."""
from __future__ import annotations

from ..state.redis_store import HIT, INCR, SSL_FILES, VERIFIED, RedisStore

__all__ = ['RedisStore', 'SSL_FILES', 'VERIFIED', 'HIT', 'INCR']
