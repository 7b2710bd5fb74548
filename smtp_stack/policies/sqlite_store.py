"""`sqlite:///PATH`: moved to `smtp_stack.state.sqlite_store` (the same class)."""
from __future__ import annotations

from ..state.sqlite_store import SCHEMA, SWEEP_EVERY, SqliteStore

__all__ = ['SqliteStore', 'SCHEMA', 'SWEEP_EVERY']
