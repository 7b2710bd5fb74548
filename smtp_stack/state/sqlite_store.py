"""`sqlite:///PATH`: state for the processes of one machine, kept across restarts.

WAL mode lets readers and one writer work at once; every operation that
reads and then writes runs in `BEGIN IMMEDIATE`, which takes the write lock
first, so two workers doing `hit` on one key cannot both see room for one
more (the count is exact). `busy_timeout` makes a worker wait for the lock
instead of failing; a file locked for longer than that (another process
holding a transaction) opens the store's circuit breaker (backend.py), so
it costs one wait per period, not one per queued call. Calls run in one
native thread per hub and process (sqlite3 is a blocking C library),
never in the hub.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from gevent.threadpool import ThreadPool

from ..offload import run_in
from .backend import Offloaded, member_id
from .greylisting import GreyKeys, GreyRule, decide
from .protocols import Value

T = TypeVar('T')

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS events (key TEXT, at REAL, member TEXT, expires REAL);
CREATE INDEX IF NOT EXISTS events_key ON events (key, at);
"""
SWEEP_EVERY = 500       # operations between purges of expired rows
# `PRAGMA user_version` of the file: the schema above is 1. A file of a
# later version (a newer smtp_stack changed its tables) is refused rather
# than written with rows it does not expect; one of version 0 (before the
# number was written, or new) gets this one.
SCHEMA_VERSION = 1


class SqliteStore(Offloaded):

    threads = 1         # one connection, one thread: SQLite serialises writers anyway

    def __init__(self, path: str, clock: Callable[[], float] = time.time,
                 busy_timeout: float = 5.0):
        super().__init__()
        self.path = os.path.abspath(path)
        self.url = f'sqlite:///{self.path}'
        self._clock = clock
        self._busy = busy_timeout
        self.timeout = busy_timeout         # a call waits this long for a lock, at most
        self._ops = 0
        self._conns: dict[ThreadPool, sqlite3.Connection] = {}     # one per pool (its thread)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ValueError(f'{self.url}: directory {directory} does not exist')

    def __repr__(self) -> str:
        return f'<SqliteStore {self.path}>'

    def _reset_after_fork(self) -> None:
        self._conns = {}

    def _conn(self, pool: ThreadPool) -> sqlite3.Connection:
        """The connection of this pool's one thread (a sqlite3 connection
        must not run two transactions from two threads)."""
        db = self._conns.get(pool)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None,
                                 check_same_thread=False)
            try:
                version = db.execute('PRAGMA user_version').fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f'{self.url} was written by a newer smtp_stack (schema version '
                        f'{version}; this one knows {SCHEMA_VERSION})')
                db.execute('PRAGMA journal_mode=WAL')
                db.execute('PRAGMA synchronous=NORMAL')
                db.executescript(SCHEMA)
                if version < SCHEMA_VERSION:
                    db.execute(f'PRAGMA user_version = {SCHEMA_VERSION}')
            except BaseException:
                db.close()
                raise
            self._conns[pool] = db
        return db

    def _tx(self, body: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run body(db, now) in a write transaction, in the store's thread."""
        def job(pool: ThreadPool) -> T:
            db = self._conn(pool)
            now = self._clock()
            db.execute('BEGIN IMMEDIATE')
            try:
                result = body(db, now)
                self._ops += 1
                if self._ops % SWEEP_EVERY == 0:
                    db.execute('DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?', (now,))
                    db.execute('DELETE FROM events WHERE expires <= ?', (now,))
                db.execute('COMMIT')
                return result
            except BaseException:
                db.execute('ROLLBACK')
                raise
        return self._run(job)

    def get(self, key: str) -> Value | None:
        return self._tx(lambda db, now: _InTransaction(db, now).get(key))

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        self._tx(lambda db, now: _InTransaction(db, now).set(key, value, ttl))

    def add(self, key: str, value: Value, ttl: float | None = None) -> bool:
        return self._tx(lambda db, now: _InTransaction(db, now).add(key, value, ttl))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return self._tx(lambda db, now: _InTransaction(db, now).incr(key, amount, ttl))

    def delete(self, key: str) -> None:
        self._tx(lambda db, now: _InTransaction(db, now).delete(key))

    def greylist(self, keys: GreyKeys, now: float, rule: GreyRule) -> float | None:
        """The steps in one transaction: one hand-off to the store's thread."""
        return self._tx(lambda db, clock_now: decide(_InTransaction(db, clock_now), keys, now,
                                                     rule))

    def hit(self, key: str, window: float, limit: int, now: float | None = None) -> int | None:
        def body(db: sqlite3.Connection, clock_now: float) -> int | None:
            at = clock_now if now is None else now
            db.execute('DELETE FROM events WHERE key = ? AND at <= ?', (key, at - window))
            count: int
            (count,) = db.execute('SELECT COUNT(*) FROM events WHERE key = ?', (key,)).fetchone()
            if count >= limit:
                return None
            db.execute('INSERT INTO events (key, at, member, expires) VALUES (?, ?, ?, ?)',
                       (key, at, member_id(), at + window))
            return count + 1
        return self._tx(body)

    def close(self) -> None:
        if not self._forked:
            conns, self._conns = list(self._conns.items()), {}
            for pool, db in conns:
                try:
                    run_in(pool, db.close)
                except Exception:
                    pass
        super().close()


class _InTransaction:
    """The key-value operations on a connection inside a transaction, at
    the store's time `now` (TTLs count from it)."""

    def __init__(self, db: sqlite3.Connection, now: float):
        self.db = db
        self.now = now

    def get(self, key: str) -> Value | None:
        row = self.db.execute('SELECT value FROM kv WHERE key = ? AND '
                              '(expires IS NULL OR expires > ?)', (key, self.now)).fetchone()
        if row is None:
            return None
        value: str = row[0]
        return value

    def set(self, key: str, value: Value, ttl: float | None = None) -> None:
        self.db.execute('INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)',
                        (key, str(value), None if ttl is None else self.now + ttl))

    def add(self, key: str, value: Value, ttl: float | None = None) -> bool:
        self.db.execute('DELETE FROM kv WHERE key = ? AND expires IS NOT NULL AND expires <= ?',
                        (key, self.now))
        cur = self.db.execute('INSERT OR IGNORE INTO kv (key, value, expires) VALUES (?, ?, ?)',
                              (key, str(value), None if ttl is None else self.now + ttl))
        return cur.rowcount == 1

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        row = self.db.execute('SELECT value, expires FROM kv WHERE key = ? AND '
                              '(expires IS NULL OR expires > ?)', (key, self.now)).fetchone()
        value = int(row[0] if row else 0) + amount
        expires = self.now + ttl if ttl is not None else (row[1] if row else None)
        self.db.execute('INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)',
                        (key, str(value), expires))
        return value

    def delete(self, key: str) -> None:
        self.db.execute('DELETE FROM kv WHERE key = ?', (key,))
        self.db.execute('DELETE FROM events WHERE key = ?', (key,))
