"""The Redis store keeps at most `max_idle` idle connections per hub: a
burst of concurrent calls opens what it needs, and what is past the bound
is closed when its call is done (against a real redis-server)."""
from __future__ import annotations

import time

import gevent
import pytest
import redis

from smtp_stack.state import store
from smtp_stack.state.redis_store import RedisStore
from smtp_stack.state.redis_wire import MAX_IDLE

from policy_services import redis_server, wait_for  # noqa: F401 (fixtures)

BURST = 40


def connected(admin) -> int:
    return int(admin.info('clients')['connected_clients'])


@pytest.mark.parametrize('query, bound', [('', MAX_IDLE), ('?max_idle=3', 3), ('?max_idle=0', 0)])
def test_a_burst_leaves_at_most_max_idle_connections(redis_server, query, bound):  # noqa: F811
    shared = store(redis_server.url + query)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        before = connected(admin)
        # Writes wait server-side until the burst is all in flight, so every
        # call holds a connection at once (on loopback a reply can otherwise
        # come before the next greenlet runs, and the calls go one by one).
        admin.execute_command('CLIENT', 'PAUSE', 10_000, 'WRITE')
        try:
            burst = [gevent.spawn(shared.set, f'pool:{i}', i, 60) for i in range(BURST)]
            deadline = time.monotonic() + 10
            while connected(admin) - before <= bound and time.monotonic() < deadline:
                gevent.sleep(0.01)      # the burst's greenlets connect meanwhile
            most = connected(admin) - before
        finally:
            admin.execute_command('CLIENT', 'UNPAUSE')
        gevent.joinall(burst, timeout=30, raise_error=True)
        assert most > bound             # the burst did open more than the bound
        assert len(shared._conns._idle_here()) == bound
        assert wait_for(lambda: connected(admin) - before == bound, timeout=10), \
            connected(admin) - before
        assert [shared.get(f'pool:{i}') for i in range(3)] == ['0', '1', '2']
    finally:
        admin.close()
        shared.close()


def test_max_idle_is_checked_and_not_given_to_redis_py(redis_server):  # noqa: F811
    with pytest.raises(ValueError, match='max_idle'):
        store(redis_server.url + '?max_idle=-1')
    with pytest.raises(ValueError, match='max_idle'):
        store(redis_server.url + '?max_idle=many')
    assert RedisStore(redis_server.url, max_idle=2).max_idle == 2
    kept = store(redis_server.url + '?max_idle=5&socket_keepalive=true')
    try:
        assert kept.max_idle == 5
        kept.set('pool:kept', 1)
        assert kept.get('pool:kept') == '1'
    finally:
        kept.close()
