"""The Redis store writes a command with one socket send, and the rest of
it, when the socket's buffer took only part, with sendall (issue 25)."""
from __future__ import annotations

import uuid

from smtp_stack.state import store

from policy_services import redis_server  # noqa: F401 (fixture)


def test_a_command_larger_than_the_socket_buffer_goes_out_whole(redis_server):  # noqa: F811
    shared = store(redis_server.url)
    shared.prefix = f'test:{uuid.uuid4().hex}:'
    value = ''.join(f'{i:07d}' for i in range(3 * 2**20 // 7 * 4))     # about 12 MiB
    try:
        shared.set('big', value)
        assert shared.get('big') == value
        shared.set('small', 'after')        # the connection still speaks in step
        assert shared.get('small') == 'after'
    finally:
        shared.close()
