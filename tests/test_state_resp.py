"""state/resp.py: commands written and replies read as Redis writes them
(RESP2 and RESP3), a reply cut anywhere being "need more bytes"; and the
store's calls reading real redis-server replies through it."""
from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import NoScriptError, ResponseError

from smtp_stack.state import resp, store

from policy_services import redis_server  # noqa: F401 (fixture)

REPLIES = [
    (b':42\r\n', 42), (b':-1\r\n', -1), (b'$5\r\nhello\r\n', 'hello'), (b'$0\r\n\r\n', ''),
    (b'$-1\r\n', None), (b'_\r\n', None), (b'+OK\r\n', 'OK'), (b'*-1\r\n', None),
    (b'*2\r\n:1\r\n$1\r\nx\r\n', [1, 'x']), (b'*0\r\n', []), (b',1.5\r\n', 1.5),
    (b'#t\r\n', True), (b'#f\r\n', False), (b'=8\r\ntxt:abcd\r\n', 'abcd'),
    ('$5\r\nJos\u00e9\r\n'.encode(), 'Jos\u00e9'), (b'$4\r\na\r\nb\r\n', 'a\r\nb'),
]


@pytest.mark.parametrize('data, value', REPLIES)
def test_each_kind_of_reply(data, value):
    assert resp.reply(data) == (value, len(data))
    for cut in range(len(data)):
        assert resp.reply(data[:cut]) is None, cut
    assert resp.reply(b'xx' + data + b':1\r\n', 2) == (value, len(data) + 2)


def test_error_replies_are_redis_pys_exceptions():
    found, _ = resp.reply(b'-NOSCRIPT No matching script. Please use EVAL.\r\n')
    assert isinstance(found, NoScriptError)
    found, _ = resp.reply(b'-WRONGTYPE Operation against a key holding the wrong kind\r\n')
    assert type(found) is ResponseError and str(found).startswith('WRONGTYPE')


def test_a_kind_not_read_here_is_a_protocol_error():
    with pytest.raises(resp.ProtocolError):
        resp.reply(b'>2\r\n$7\r\nmessage\r\n$1\r\nx\r\n')       # a push message


@given(st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20),
                          st.integers(-10**12, 10**12)), min_size=1, max_size=8))
def test_a_command_is_an_array_of_bulk_strings(args):
    data = resp.command(tuple(args))
    expected = [a if isinstance(a, bytes) else str(a).encode('utf-8', 'surrogateescape')
                for a in args]
    pos = data.index(b'\r\n') + 2
    assert data[:pos] == b'*%d\r\n' % len(args)
    for item in expected:
        assert data[pos:].startswith(b'$%d\r\n%s\r\n' % (len(item), item))
        pos += len(b'$%d\r\n%s\r\n' % (len(item), item))
    assert pos == len(data)


def test_the_store_reads_real_replies(redis_server):  # noqa: F811
    """Every kind our commands and scripts get, from a redis-server."""
    shared = store(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        assert shared.get('resp:none') is None                   # null
        shared.set('resp:text', 'Jos\u00e9', 60)                  # +OK
        assert shared.get('resp:text') == 'Jos\u00e9'            # bulk string
        assert shared.add('resp:text', 'x', 60) is False         # null (SET NX)
        assert shared.incr('resp:count', 5, 60) == 5             # integer (a script)
        assert shared.hit('resp:window', 60, 1) == 1
        assert shared.hit('resp:window', 60, 1) is None          # -1
        admin.lpush(f'{shared.prefix}resp:list', 'x')
        with pytest.raises(Exception, match='WRONGTYPE'):
            shared.get('resp:list')                              # an error reply
        assert shared.get('resp:text') == 'Jos\u00e9'            # the connection still good
        assert shared._conns.execute('PING') == 'PONG'
        assert isinstance(shared._conns.execute('TIME'), list)   # an array
    finally:
        admin.close()
        shared.close()
