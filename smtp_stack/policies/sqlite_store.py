"""`sqlite:///PATH`: state for the processes of one machine, kept across restarts.

WAL mode lets readers and one writer work at once; every operation that
reads and then writes runs in `BEGIN IMMEDIATE`, which takes the write lock
first, so two workers doing `hit` on one key cannot both see room for one
more (the count is exact). `busy_timeout` makes a worker wait for the lock
instead of failing. Calls run in one native thread per process (sqlite3 is
a blocking C library), never in the hub.
"""
from __future__ import annotations

import os
import sqlite3
import time

from .stores import Offloaded, member_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS events (key TEXT, at REAL, member TEXT, expires REAL);
CREATE INDEX IF NOT EXISTS events_key ON events (key, at);
"""
SWEEP_EVERY = 500       # operations between purges of expired rows


class SqliteStore(Offloaded):

    threads = 1         # one connection, one thread: SQLite serialises writers anyway

    def __init__(self, path: str, clock=time.time, busy_timeout: float = 5.0):
        super().__init__()
        self.path = os.path.abspath(path)
        self.url = f'sqlite:///{self.path}'
        self._clock = clock
        self._busy = busy_timeout
        self._ops = 0
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ValueError(f'{self.url}: directory {directory} does not exist')

    def __repr__(self):
        return f'<SqliteStore {self.path}>'

    def _conn(self, state):
        """The connection of this hub's thread (one each: a sqlite3
        connection must not run two transactions from two threads)."""
        if state.conn is None:
            db = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None,
                                 check_same_thread=False)
            db.execute('PRAGMA journal_mode=WAL')
            db.execute('PRAGMA synchronous=NORMAL')
            db.executescript(SCHEMA)
            state.conn = db
        return state.conn

    def _tx(self, body):
        """Run body(db, now) in a write transaction, in the store's thread."""
        def job(state):
            db = self._conn(state)
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

    def get(self, key):
        def body(db, now):
            row = db.execute('SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)',
                             (key, now)).fetchone()
            return None if row is None else row[0]
        return self._tx(body)

    def set(self, key, value, ttl=None) -> None:
        self._tx(lambda db, now: db.execute(
            'INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)',
            (key, str(value), None if ttl is None else now + ttl)))

    def add(self, key, value, ttl=None) -> bool:
        def body(db, now):
            db.execute('DELETE FROM kv WHERE key = ? AND expires IS NOT NULL AND expires <= ?',
                       (key, now))
            cur = db.execute('INSERT OR IGNORE INTO kv (key, value, expires) VALUES (?, ?, ?)',
                             (key, str(value), None if ttl is None else now + ttl))
            return cur.rowcount == 1
        return self._tx(body)

    def incr(self, key, amount=1, ttl=None) -> int:
        def body(db, now):
            row = db.execute('SELECT value, expires FROM kv WHERE key = ? AND '
                             '(expires IS NULL OR expires > ?)', (key, now)).fetchone()
            value = int(row[0] if row else 0) + amount
            expires = now + ttl if ttl is not None else (row[1] if row else None)
            db.execute('INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)',
                       (key, str(value), expires))
            return value
        return self._tx(body)

    def delete(self, key) -> None:
        def body(db, now):
            db.execute('DELETE FROM kv WHERE key = ?', (key,))
            db.execute('DELETE FROM events WHERE key = ?', (key,))
        self._tx(body)

    def hit(self, key, window, limit, now=None):
        def body(db, clock_now):
            at = clock_now if now is None else now
            db.execute('DELETE FROM events WHERE key = ? AND at <= ?', (key, at - window))
            (count,) = db.execute('SELECT COUNT(*) FROM events WHERE key = ?', (key,)).fetchone()
            if count >= limit:
                return None
            db.execute('INSERT INTO events (key, at, member, expires) VALUES (?, ?, ?, ?)',
                       (key, at, member_id(), at + window))
            return count + 1
        return self._tx(body)

    def close(self) -> None:
        if self._pid == os.getpid():
            for state in list(self._per_hub.values()):
                if state.conn is not None:
                    try:
                        state.pool.apply(state.conn.close)
                    except Exception:
                        pass
        super().close()
