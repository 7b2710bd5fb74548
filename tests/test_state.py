"""smtp_stack.state: the contracts (Store, FailureCounter) and the names the
policies have always had for them; the core's stores need no extra but
redis-py's."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from clirunner import env_with_package
from smtp_stack import state
from smtp_stack.limits import RecentFailures
from smtp_stack.state import FailureCounter, SharedFailures, store
from test_typing import run_mypy

WAIT = 60.0     # a fresh interpreter importing gevent


def test_the_policies_names_are_the_states_objects():
    from smtp_stack import policies
    from smtp_stack.policies import common, redis_store, shared_limits, sqlite_store, stores
    assert policies.store is stores.store is state.store
    assert policies.StoreError is stores.StoreError is state.StoreError
    assert stores.Store is state.Store and stores.as_store is state.as_store
    assert stores.is_store is state.is_store and stores.MemoryStore is state.MemoryStore
    assert sqlite_store.SqliteStore is state.sqlite_store.SqliteStore
    assert redis_store.RedisStore is state.redis_store.RedisStore
    assert shared_limits.SharedFailures is state.SharedFailures
    assert shared_limits.SharedConnections is state.SharedConnections
    assert common.warnings is state.fail_open.warnings      # one warning per outage, not two


def counters(limit: int, window: float):
    return [RecentFailures(limit, window), SharedFailures(store('memory:'), limit, window)]


@pytest.mark.parametrize('index', [0, 1], ids=['RecentFailures', 'SharedFailures'])
def test_both_failure_counters_count_alike(index):
    counter = counters(3, 60)[index]
    assert isinstance(counter, FailureCounter)
    assert [counter.add('192.0.2.1') for _ in range(4)] == [False, False, True, False]
    assert counter.blocked('192.0.2.1') and not counter.blocked('192.0.2.2')


def test_the_counters_and_stores_meet_their_protocols_for_mypy(tmp_path):
    output = run_mypy(tmp_path, {'counters.py': '''\
        from smtp_stack.limits import RecentFailures
        from smtp_stack.state import FailureCounter, SharedFailures, Store, store
        from smtp_stack.state.memory import MemoryStore
        from smtp_stack.state.sqlite_store import SqliteStore

        per_process: FailureCounter = RecentFailures(3, 60.0)
        shared: FailureCounter = SharedFailures(store('memory:'), 3, 60.0)
        stores: list[Store] = [MemoryStore(), SqliteStore('state.db')]
        not_a_counter: FailureCounter = MemoryStore()   # flagged
    '''})
    errors = [line for line in output.splitlines() if ': error: ' in line]
    assert len(errors) == 1 and errors[0].startswith('counters.py:9: error: Incompatible types'), \
        output


def python_without(package: str, code: str, cwd) -> list[str]:
    program = f'import sys\nsys.modules[{package!r}] = None\n{textwrap.dedent(code)}'
    done = subprocess.run([sys.executable, '-c', program], cwd=str(cwd), env=env_with_package(),
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize('package', ['dns', 'redis'])
def test_memory_and_sqlite_stores_need_no_extra(tmp_path, package):
    printed = python_without(package, '''
        from smtp_stack import state
        for url in ('memory:', 'sqlite:///state.db'):
            shared = state.store(url)
            print(shared.incr('n'), shared.hit('w', 60, 5))
            shared.close()
    ''', tmp_path)
    assert printed == ['1 1', '1 1']


def test_a_redis_store_without_redis_names_the_extra(tmp_path):
    printed = python_without('redis', '''
        from smtp_stack import state
        try:
            state.store('redis://127.0.0.1:6379/0')
        except ImportError as exc:
            print(type(exc).__name__, exc, sep=': ')
    ''', tmp_path)
    assert printed == ["MissingExtra: a redis:// store needs the 'policies' extra: "
                       "pip install 'smtp_stack[policies]' (redis is not installed)"]


def test_the_sqlite_store_writes_its_schema_version_and_refuses_a_newer_one(tmp_path):
    import sqlite3

    from smtp_stack.state import StoreError
    from smtp_stack.state.sqlite_store import SCHEMA_VERSION, SqliteStore
    path = tmp_path / 'state.db'
    store = SqliteStore(str(path))
    store.set('k', 'v')
    with sqlite3.connect(path) as db:
        assert db.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 1
        db.execute(f'PRAGMA user_version = {SCHEMA_VERSION + 1}')
    store.close()
    newer = SqliteStore(str(path))
    with pytest.raises(StoreError, match='written by a newer smtp_stack'):
        newer.get('k')
    newer.close()
