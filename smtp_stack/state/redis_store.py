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

Each operation is one Redis command or one Lua script (called by its
SHA1, `EVALSHA`), so it is atomic on the server whatever number of clients
race, and one round trip; a greylist decision is one script too. Keys
carry their TTL, so Redis itself forgets stale triplets and windows. The
sliding window is a sorted set of event times per key (exact, unlike a
fixed-window counter). redis-py speaks the protocol over gevent sockets
(redis_wire.py), in the greenlet that asks, whether or not gevent patched
the process: no thread hand-off. A short socket timeout bounds one call,
the store's circuit breaker (backend.py) makes a stalled Redis cost one
timeout per period rather than one per call, and a connection that failed
is replaced by a fresh one once Redis is back. At most 16 idle connections
are kept per hub (redis_wire.MAX_IDLE; the URL's own parameter
`max_idle=N` says otherwise, 0 for none): the calls of a burst beyond that
open connections that close when their call is done.
"""
from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis

from .backend import Guarded, member_id, redacted
from .greylisting import GreyKeys, GreyRule
from .protocols import StoreError, Value
from .redis_wire import MAX_IDLE, Connections, Script

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
# greylisting.decide, step for step. KEYS: client, passed, waiting; ARGV: now (as
# stored while waiting), now (as stored once passed), delay, waiting TTL in ms,
# expire in ms, auto_allow. Returns nil to pass, else the seconds left (a string:
# Redis would cut a Lua number to an integer).
GREYLIST = """
local now, delay, auto = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[6])
if auto > 0 then
  local passes = redis.call('GET', KEYS[1])
  if passes and tonumber(passes) >= auto then return nil end
end
if redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
  return nil
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[4]) then return ARGV[3] end
local first = redis.call('GET', KEYS[3])
local waited = 0
if first then waited = now - tonumber(first) end
if not first or waited < delay then return tostring(delay - waited) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
redis.call('DEL', KEYS[3])
if auto > 0 then
  redis.call('INCRBY', KEYS[1], 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return nil
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _checked_options(url: str) -> dict[str, Any]:
    """The options redis-py's `ConnectionPool.from_url(url, ...)` needs
    beyond the timeouts, after checking the URL as far as can be done without connecting."""
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
    return dict(decode_responses=True, **(VERIFIED if tls and not unverified else {}))


def _max_idle(url: str) -> tuple[str, int]:
    """The URL without our own parameter `max_idle` (redis-py would refuse
    it), and its value (MAX_IDLE without it)."""
    base, _, text = url.partition('?')
    query = urllib.parse.parse_qsl(text, keep_blank_values=True)
    found = [value for name, value in query if name == 'max_idle']
    if not found:
        return url, MAX_IDLE
    try:
        max_idle = int(found[-1])
    except ValueError:
        max_idle = -1
    if max_idle < 0:
        raise ValueError(f'store: max_idle must be a whole number, 0 or more: {found[-1]!r}')
    rest = urllib.parse.urlencode([(name, value) for name, value in query if name != 'max_idle'],
                                  safe='/*')
    return base + ('?' + rest if rest else ''), max_idle      # as written, not re-encoded


class RedisStore(Guarded):
    """`max_idle`: idle connections kept per hub (the URL's `max_idle=`
    parameter, else MAX_IDLE)."""

    def __init__(self, url: str, timeout: float = 1.0, prefix: str = 'smtp_stack:',
                 max_idle: int | None = None):
        self.url = redacted(url)
        self.prefix = prefix
        self.timeout = timeout
        url, in_url = _max_idle(url)
        self.max_idle = in_url if max_idle is None else max_idle
        options = _checked_options(url)
        try:        # the connection object, not yet connected: unknown parameters fail here
            self._conns: Connections | None = Connections(url, options, lambda: self.timeout,
                                                          self.max_idle)
            self._conns.check()
        except (TypeError, ValueError, redis.RedisError) as exc:
            raise ValueError(f'store: {redacted(url)}: {exc}') from None
        self._hit = Script(HIT)
        self._incr = Script(INCR)
        self._greylist = Script(GREYLIST)
        self._kept_grey_args: tuple[GreyRule, tuple[str, int, int, int]] | None = None

    def __repr__(self) -> str:
        return f'<RedisStore {self.url}>'

    @property
    def _timeout(self) -> float:
        """The socket timeout (its older name)."""
        return self.timeout

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self.timeout = value

    def _live(self) -> Connections:
        conns = self._conns
        if conns is None:
            raise StoreError(f'{self.url}: closed')
        return conns

    def _command(self, *args: Any) -> Any:
        """One command's reply (strings decoded), through the breaker."""
        return self._guarded(self._live().execute, *args)

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        conns = self._conns         # _live's test, a frame less per decision
        if conns is None:
            raise StoreError(f'{self.url}: closed')
        return self._guarded(script.call, conns, keys, args)

    def get(self, key: str) -> Value | None:
        value: str | None = self._command('GET', self.prefix + key)
        return value

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        expiry = () if ttl is None else ('PX', _ms(ttl))
        self._command('SET', self.prefix + key, str(value), *expiry)

    def add(self, key: str, value: Value, ttl: float | None = None) -> bool:
        expiry = () if ttl is None else ('PX', _ms(ttl))
        return self._command('SET', self.prefix + key, str(value), 'NX', *expiry) is not None

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        ms = 0 if ttl is None else _ms(ttl)
        return int(self._script(self._incr, [self.prefix + key], [amount, ms]))

    def delete(self, key: str) -> None:
        self._command('DEL', self.prefix + key)

    def hit(self, key: str, window: float, limit: int, now: float | None = None) -> int | None:
        at = time.time() if now is None else now
        result = int(self._script(self._hit, [self.prefix + key],
                                  [repr(at), repr(float(window)), limit, member_id()]))
        return None if result < 0 else result

    def greylist(self, keys: GreyKeys, now: float, rule: GreyRule) -> float | None:
        prefix = self.prefix
        left = self._script(self._greylist,
                            [prefix + keys[0], prefix + keys[1], prefix + keys[2]],
                            [repr(now), int(now), *self._grey_args(rule)])
        return None if left is None else float(left)

    def _grey_args(self, rule: GreyRule) -> tuple[str, int, int, int]:
        """The script's arguments that come from the rule: made again only
        for another rule object (a Greylist keeps one while its parameters
        stay as they are)."""
        kept = self._kept_grey_args
        if kept is None or kept[0] is not rule:
            kept = self._kept_grey_args = (rule, (
                repr(float(rule.delay)), _ms(rule.delay + rule.retry_window), _ms(rule.expire),
                rule.auto_allow))
        return kept[1]

    def close(self) -> None:
        conns, self._conns = self._conns, None
        if conns is not None:
            conns.close()
