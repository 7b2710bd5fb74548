"""The server's per-client limits kept in a store: moved to
`smtp_stack.state.shared_limits` (the same classes; the core imports them
from there)."""
from __future__ import annotations

from ..state.shared_limits import CONNECTION_TTL, SharedConnections, SharedFailures

__all__ = ['SharedConnections', 'SharedFailures', 'CONNECTION_TTL']
