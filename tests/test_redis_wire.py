"""The Redis store speaks redis-py's protocol over gevent sockets, in the
greenlet that calls it (state/redis_wire.py): no native thread in an
unpatched process, scripts by SHA1 with the text sent again after a
SCRIPT FLUSH, connections of a worker's own after a fork."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import uuid

import redis

from clirunner import env_with_package
from smtp_stack.state import store

from policy_services import redis_server, redis_unix_server, wait_for  # noqa: F401 (fixtures)

WAIT = 60.0     # a fresh interpreter importing gevent

NO_THREADS = '''
import os, sys
import gevent
from smtp_stack.state import store
shared = store(sys.argv[1])
def calls():
    for i in range(50):
        shared.set('wire:%d' % i, i, 60)
        assert shared.get('wire:%d' % i) == str(i)
        assert shared.hit('wire:window', 60, 1000) == i + 1
gevent.spawn(calls).get(timeout=20)
shared.delete('wire:window')
print(len(os.listdir('/proc/self/task')))   # native threads, gevent's pools' too
'''


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          timeout=WAIT, env=env_with_package())
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_calls_start_no_native_thread_in_an_unpatched_process(redis_server):  # noqa: F811
    """Before, each call went to a pool thread of the store's and back."""
    assert run_python(NO_THREADS, redis_server.url) == '1'


def test_calls_start_no_native_thread_on_a_socket_file(redis_unix_server):  # noqa: F811
    assert run_python(NO_THREADS, redis_unix_server.url) == '1'


def test_scripts_go_by_sha_and_are_sent_again_after_a_script_flush(redis_server):  # noqa: F811
    shared = store(redis_server.url)
    key = f'wire:{uuid.uuid4().hex}'
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.script_flush()
        assert shared.hit(key, 60, 10) == 1          # NOSCRIPT, then EVAL: loaded
        assert admin.script_exists(shared._hit.sha) == [True]
        assert shared.hit(key, 60, 10) == 2          # by its SHA1
        admin.script_flush()                          # as after a restart of Redis
        assert shared.hit(key, 60, 10) == 3
    finally:
        admin.delete(f'{shared.prefix}{key}')
        admin.close()
        shared.close()


def test_a_forked_worker_makes_connections_of_its_own(redis_server):  # noqa: F811
    shared = store(redis_server.url)
    parent_id = shared._command('CLIENT', 'ID')
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: one call, its answer through the pipe
        try:
            os.write(write, str(shared._command('CLIENT', 'ID')).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, 'rb') as pipe:
            child_id = int(pipe.read() or b'0')
        os.waitpid(pid, 0)
        assert child_id not in (0, parent_id)
        assert shared._command('CLIENT', 'ID') == parent_id     # the parent's is intact
    finally:
        shared.close()


def test_a_plain_thread_that_ends_leaves_no_connection_open(redis_server):  # noqa: F811
    """Connections are kept per native thread: a thread of a threaded WSGI
    server that used the store takes its connection with it."""
    shared = store(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)

    def connected() -> int:
        return int(admin.info('clients')['connected_clients'])
    try:
        before = connected()
        threads = [threading.Thread(target=shared.get, args=('wire:plain',)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)
        gc.collect()
        assert wait_for(lambda: connected() == before, timeout=10), connected()
    finally:
        admin.close()
        shared.close()
