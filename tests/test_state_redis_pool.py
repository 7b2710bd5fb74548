"""The Redis store keeps at most `max_idle` idle connections per hub: a
burst of concurrent calls opens what it needs, and what is past the bound
is closed when its call is done (against a real redis-server)."""
from __future__ import annotations

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
        most = [0]
        # Writes wait server-side for a moment, so that every call of the
        # burst holds its connection at once: on loopback a reply can come
        # before the next greenlet runs, and the calls then go one by one.
        admin.execute_command('CLIENT', 'PAUSE', 200, 'WRITE')

        def call(i):
            shared.set(f'pool:{i}', i, 60)
            most[0] = max(most[0], connected(admin) - before)
        gevent.joinall([gevent.spawn(call, i) for i in range(BURST)], timeout=30,
                       raise_error=True)
        assert most[0] > bound          # the burst did open more than the bound
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
