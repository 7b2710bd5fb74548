"""`redis://HOST:PORT/DB`: state shared by every machine behind a load balancer.

The URL is redis-py's: `redis://[[USER]:PASSWORD@]HOST:PORT/DB`, `rediss://`
the same over TLS, `unix:///PATH/redis.sock?db=DB` on a socket file; query
parameters are redis-py's connection options. Over TLS the server's
certificate is verified, host name included (redis-py before 6 did not
check the name by default; we ask for it), against the system's CA store
and the file `ssl_ca_certs=/PATH/ca.pem` when given, unless the URL says
`ssl_cert_reqs=none`; `ssl_certfile` and `ssl_keyfile` present a client
certificate (Redis' `tls-auth-clients`).
The URL is checked at construction, so a mistyped parameter or a missing
file is a ValueError then, not a store that fails open for ever.

Each operation is one Redis command or one Lua script, so it is atomic on
the server whatever number of clients race; keys carry their TTL, so Redis
itself forgets stale triplets and windows. The sliding window is a sorted
set of event times per key (exact, unlike a fixed-window counter). The
redis-py client blocks on its socket: in a process that gevent did not
monkey-patch its calls run in a small pool of native threads, in a patched
one they run in the greenlet (its sockets are gevent's then); a short
socket timeout bounds one call, the store's circuit breaker (backend.py)
makes a stalled Redis cost one timeout per period rather than one per
call, and the client reconnects by itself once Redis is back.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis
from gevent.threadpool import ThreadPool

from .backend import Offloaded, member_id, redacted
from .protocols import StoreError, Value

SSL_FILES = ('ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', 'ssl_ca_path')
# Verification on whatever redis-py's defaults (the URL may still say otherwise).
VERIFIED = {'ssl_cert_reqs': 'required', 'ssl_check_hostname': True}

# KEYS[1]; ARGV: now, window, limit, member. Returns the new count, or -1.
HIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then return -1 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return count + 1
"""
# KEYS[1]; ARGV: amount, ttl in ms (0: keep the key's TTL).
INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


def _checked_options(url: str) -> dict[str, Any]:
    """The options `redis.Redis.from_url(url, ...)` needs beyond the
    timeouts, after checking the URL as far as can be done without connecting."""
    parse_url: Callable[[str], dict[str, Any]] = redis.connection.parse_url   # unannotated
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ValueError(f'store: {exc}') from None
    tls = url.startswith('rediss://')
    if url.startswith('unix://') and not parsed.get('path'):
        raise ValueError('store: unix:///PATH needs the path of the socket file')
    for name in SSL_FILES:
        if name in parsed and not tls:
            raise ValueError(f'store: {name} needs a rediss:// URL')
        if name in parsed and not os.path.exists(parsed[name]):
            raise ValueError(f'store: {name}: no such file: {parsed[name]}')
    unverified = str(parsed.get('ssl_cert_reqs', '')).lower() == 'none'
    options: dict[str, Any] = dict(decode_responses=True, retry_on_timeout=False,
                                   **(VERIFIED if tls and not unverified else {}))
    pool = redis.ConnectionPool.from_url(url, **options)
    try:        # the connection object, not yet connected: unknown parameters fail here
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError, redis.RedisError) as exc:
        raise ValueError(f'store: {redacted(url)}: {exc}') from None
    return options


class RedisStore(Offloaded):

    def __init__(self, url: str, timeout: float = 1.0, prefix: str = 'smtp_stack:'):
        super().__init__()
        self.url = redacted(url)
        self._raw_url = url
        self.prefix = prefix
        self._client: redis.Redis | None = None
        self.timeout = timeout
        self._options = _checked_options(url)

    def __repr__(self) -> str:
        return f'<RedisStore {self.url}>'

    @property
    def _timeout(self) -> float:
        """The socket timeout (its older name)."""
        return self.timeout

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self.timeout = value

    def _reset_after_fork(self) -> None:
        self._client = None

    cooperative_when_patched = True

    def _pool(self) -> ThreadPool:
        pool = super()._pool()
        if self._client is None:     # made here, in the hub's thread: no I/O, one for all threads
            self._connect()
        return pool

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is None:      # closed meanwhile
            raise StoreError(f'{self.url}: closed')
        return client

    def _connect(self) -> None:
        client = redis.Redis.from_url(self._raw_url, socket_timeout=self.timeout,
                                      socket_connect_timeout=self.timeout, **self._options)
        self._hit = client.register_script(HIT)
        self._incr = client.register_script(INCR)
        self._client = client

    def _call(self, fn: Callable[[redis.Redis], Any]) -> Any:
        """redis-py's reply (strings: the client decodes them)."""
        return self._run(lambda pool: fn(self._redis()))

    def get(self, key: str) -> Value | None:
        value: str | None = self._call(lambda r: r.get(self.prefix + key))
        return value

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        ms = None if ttl is None else max(1, int(ttl * 1000))
        self._call(lambda r: r.set(self.prefix + key, str(value), px=ms))

    def add(self, key: str, value: Value, ttl: float | None = None) -> bool:
        ms = None if ttl is None else max(1, int(ttl * 1000))
        return bool(self._call(lambda r: r.set(self.prefix + key, str(value), nx=True, px=ms)))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        ms = 0 if ttl is None else max(1, int(ttl * 1000))
        return int(self._call(lambda r: self._incr(keys=[self.prefix + key], args=[amount, ms])))

    def delete(self, key: str) -> None:
        self._call(lambda r: r.delete(self.prefix + key))

    def hit(self, key: str, window: float, limit: int, now: float | None = None) -> int | None:
        at = time.time() if now is None else now
        result = int(self._call(lambda r: self._hit(
            keys=[self.prefix + key], args=[repr(at), repr(float(window)), limit, member_id()])))
        return None if result < 0 else result

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        super().close()
