"""The inbox file's connections and transactions (SQLite, WAL), and its change log.

Why SQLite from the stdlib: one file that survives restarts, is shared by
processes (the `smtp-stack inbox` command and a gunicorn mount of the web
side may be different processes), and needs no server. WAL mode lets
readers go on while one writer commits; `BEGIN IMMEDIATE` takes the write
lock up front, so two writers queue on `busy_timeout` instead of failing
on a lock upgrade (a deferred transaction that finds the database changed
gets SQLITE_BUSY at once, without the busy handler).

Threads: every connection belongs to one thread (`threading.local`); all
of this is blocking, so gevent code calls the store through
`smtp_stack.offload.offload()`, never on the hub.

Changes are seen by others in two ways, both written by the transaction
that makes them: the `changes` counter in `meta` (it moves only when rows
did, so a no-op write wakes nobody), and the `events` table, where a
write records the websocket events Mailpit sends for it (`delete`,
`update`, `truncate`, `prune`) with the mailbox each belongs to, so that
a web side in another process sends them too. The log keeps the last `EVENTS_KEPT`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from .schema import migrate

BUSY_TIMEOUT_MS = 10_000
EVENTS_KEPT = 1000


class Transaction:
    """`with database.write() as tx:` -- tx.db is the connection; tx.event()
    records a websocket event of a mailbox, written only if the transaction
    changed rows."""

    def __init__(self, database: Database, write: bool):
        self.database = database
        self.db = database.connection()
        self.write = write
        self.events: list[tuple[str, Any, str]] = []
        self.before = 0

    def __enter__(self) -> Transaction:
        self.db.execute('BEGIN IMMEDIATE' if self.write else 'BEGIN')
        self.before = self.db.total_changes
        return self

    def event(self, kind: str, data: Any = None, mailbox: str = '') -> None:
        self.events.append((kind, data, mailbox))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if kind is not None:
            self.db.execute('ROLLBACK')
            return False
        changed = self.write and self.db.total_changes > self.before
        if changed:
            if self.events:
                self.db.executemany('INSERT INTO events (type, data, mailbox) VALUES (?, ?, ?)',
                                    [(k, json.dumps(d), m) for k, d, m in self.events])
                self.db.execute('DELETE FROM events WHERE seq <= last_insert_rowid() - ?',
                                (EVENTS_KEPT,))
            self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'changes'")
        self.db.execute('COMMIT')
        if changed:
            self.database.changed()
        return False


class Database:
    """One inbox file: a connection per thread, transactions, change listeners."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._local = threading.local()
        self._listeners: list[Callable[[], object]] = []    # called after each change
        migrate(self.connection())     # schema.py: versioned; a newer file is refused

    def connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, 'db', None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None, check_same_thread=False)
            _wal(db)
            # durable at checkpoints; WAL keeps it consistent
            db.execute('PRAGMA synchronous = NORMAL')
            db.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
            self._local.db = db
        return db

    def write(self) -> Transaction:
        return Transaction(self, True)

    def read(self) -> Transaction:
        return Transaction(self, False)

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        db: sqlite3.Connection | None = getattr(self._local, 'db', None)
        if db is not None:
            db.close()
            self._local.db = None

    def on_change(self, fn: Callable[[], object]) -> None:
        self._listeners.append(fn)

    def changed(self) -> None:
        for fn in list(self._listeners):
            fn()

    def events_since(self, seq: int, limit: int = EVENTS_KEPT
                     ) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, mailbox, {"Type", "Data"}) of the events logged after `seq`, oldest first."""
        rows = self.connection().execute(
            'SELECT seq, mailbox, type, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?',
            (seq, limit)).fetchall()
        return [(s, mailbox, {'Type': kind, 'Data': json.loads(data)})
                for s, mailbox, kind, data in rows]

    def file_size(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + '-wal')
                   if os.path.exists(p))


def _wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode. Connections opening a new file at once
    race for that change, and the loser may get SQLITE_BUSY at once, without
    the busy handler's wait (SQLite's pragma journal_mode takes an exclusive
    lock it does not wait for): so it asks again, up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute('PRAGMA journal_mode = WAL')
            return
        except sqlite3.OperationalError as exc:
            if 'locked' not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
