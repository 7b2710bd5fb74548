"""The inbox file's connections and transactions (SQLite, WAL), and its change log.

Why SQLite from the stdlib: one file that survives restarts, is shared by
processes (the `smtp-stack inbox` command and a gunicorn mount of the web
side may be different processes), and needs no server. WAL mode lets
readers go on while one writer commits; `BEGIN IMMEDIATE` takes the write
lock up front, so two writers queue on `busy_timeout` instead of failing
on a lock upgrade (a deferred transaction that finds the database changed
gets SQLITE_BUSY at once, without the busy handler).

Writers queue on a lock of their own before `BEGIN IMMEDIATE`
(`Database.writing`, a `WritersLock`): SQLite's busy handler polls,
sleeping 1, 2, 5, 10 ... ms between tries, so writers that met on
SQLite's lock slept while it was free; on a thread lock and a record
lock the next one runs within a millisecond of its release, whichever
process it is in (the inbox's store process and its web side write the
same file). Only a writer that does not take the lock (an older
smtp_stack) meets the busy handler.
`GroupCommit` adds the messages that several threads bring at once in
one transaction (group commit): each caller returns once the commit that
holds its rows is done, so what the SMTP side answers 250 for is in the
file, as before, and the commit's cost is shared.

Checkpoints (the WAL copied back into the file, with its fsyncs) run
aside: SQLite's automatic one runs inside the commit that crosses 1,000
pages, holding the write lock while it syncs (half the wall time of a
write on the benchmark machine). Here every CHECKPOINT_EVERY commits a
short-lived thread runs a PASSIVE checkpoint on a connection of its own,
which writers do not wait for; the automatic one stays as a safety net
at AUTOCHECKPOINT_PAGES. Durability is the same: commits are not synced
(synchronous=NORMAL), checkpoints are.

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

import collections
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from .schema import migrate

log = logging.getLogger('smtp_stack.inbox')

BUSY_TIMEOUT_MS = 10_000
EVENTS_KEPT = 1000
CHECKPOINT_EVERY = 200          # commits between two checkpoints run aside
AUTOCHECKPOINT_PAGES = 20_000   # SQLite's own, in the committing thread: a safety net

Item = TypeVar('Item')
Result = TypeVar('Result')


class Transaction:
    """`with database.write() as tx:` -- tx.db is the connection; tx.event()
    records a websocket event of a mailbox, written only if the transaction
    changed rows. A write holds `database.writing` from before BEGIN
    IMMEDIATE to after COMMIT (unless the caller holds it: `locked`)."""

    def __init__(self, database: Database, write: bool, locked: bool = False):
        self.database = database
        self.db = database.connection()
        self.write = write
        self.lock = database.writing if write and not locked else None
        self.events: list[tuple[str, Any, str]] = []
        self.before = 0
        self.changed = False        # after the commit: whether rows changed

    def __enter__(self) -> Transaction:
        if self.lock is not None:
            self.lock.acquire()
        try:
            self.db.execute('BEGIN IMMEDIATE' if self.write else 'BEGIN')
        except BaseException:
            self._unlock()
            raise
        self.before = self.db.total_changes
        return self

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def event(self, kind: str, data: Any = None, mailbox: str = '') -> None:
        self.events.append((kind, data, mailbox))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        try:
            if kind is not None:
                self.db.execute('ROLLBACK')
                return False
            changed = self.write and self.db.total_changes > self.before
            try:
                if changed:
                    self._log_events()
                self.db.execute('COMMIT')
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute('ROLLBACK')
                raise
        finally:
            self._unlock()
        self.changed = changed
        if changed and self.lock is not None:   # else the caller holding the lock tells
            self.database.changed()
        if changed:
            self.database.committed()
        return False

    def _log_events(self) -> None:
        if self.events:
            self.db.executemany('INSERT INTO events (type, data, mailbox) VALUES (?, ?, ?)',
                                [(k, json.dumps(d), m) for k, d, m in self.events])
            self.db.execute('DELETE FROM events WHERE seq <= last_insert_rowid() - ?',
                            (EVENTS_KEPT,))
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'changes'")


class Database:
    """One inbox file: a connection per thread, transactions, change listeners."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._local = threading.local()
        self._listeners: list[Callable[[], object]] = []    # called after each change
        self.writing = WritersLock(self.path + '-lock')    # every writer queues here first
        self.checkpoint_every = CHECKPOINT_EVERY
        self.checkpoints = 0                # run aside so far
        self._commits = 0                   # since the last one was started
        self._checkpointing = threading.Lock()     # held by the thread running one
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
            db.execute('PRAGMA temp_store = MEMORY')     # the tag rules' one-row index
            db.execute(f'PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}')
            self._local.db = db
        return db

    def write(self, locked: bool = False) -> Transaction:
        """A write transaction; `locked`: the caller holds `writing` already."""
        return Transaction(self, True, locked)

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

    def committed(self) -> None:
        """After a commit that changed rows: every `checkpoint_every`, a
        checkpoint in a thread of its own (unless one still runs)."""
        self._commits += 1
        if self._commits >= self.checkpoint_every and self._checkpointing.acquire(blocking=False):
            self._commits = 0
            threading.Thread(target=self._checkpoint, name='smtp_stack-inbox-checkpoint',
                             daemon=True).start()

    def _checkpoint(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None, check_same_thread=False)
            try:
                db.execute('PRAGMA wal_checkpoint(PASSIVE)')
                self.checkpoints += 1
            finally:
                db.close()
        except sqlite3.Error as exc:    # the next one tries again; SQLite's own is the net
            log.warning('inbox: checkpoint of %s failed: %s', self.path, exc)
        finally:
            self._checkpointing.release()

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


class WritersLock:
    """Taken by every writer before BEGIN IMMEDIATE: a thread lock (one per
    file in the process, whatever Database object writes), then a POSIX
    record lock (lockf) of a file beside the database, for every process's
    writers (the store process's and the web side's): a writer waiting for
    another process runs within a millisecond of the lock's release, where
    SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries. A record
    lock belongs to its process: a fork's child never holds its parent's.
    The file is opened for each write and closed with it, so no descriptor
    stays open; waiting for another process is bounded by the busy timeout,
    past which the write fails as SQLite's would ('database is locked')."""

    def __init__(self, path: str) -> None:
        self.path = path
        with _LOCKS_LOCK:
            self._threads = _THREAD_LOCKS.setdefault(path, threading.Lock())
        self._fd = -1

    def acquire(self) -> bool:
        self._threads.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _lock_within(fd, BUSY_TIMEOUT_MS / 1000)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        except BaseException:
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        try:
            os.close(self._fd)      # the record lock goes with it
        finally:
            self._fd = -1
            self._threads.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_THREAD_LOCKS: dict[str, threading.Lock] = {}     # one per database file in this process
_LOCKS_LOCK = threading.Lock()


def _lock_within(fd: int, timeout: float) -> None:
    """lockf, trying again every 0.1 to 1 ms (a blocking lockf could not
    be given up on), until `timeout`."""
    deadline = 0.0
    pause = 0.0001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except (BlockingIOError, PermissionError):     # EAGAIN or EACCES: held elsewhere
            now = time.monotonic()
            deadline = deadline or now + timeout
            if now >= deadline:
                raise sqlite3.OperationalError(
                    'database is locked (another process writes)') from None
            time.sleep(pause)
            pause = min(pause * 2, 0.001)


class Failed:
    """What writing one item of `GroupCommit.commit_all` raised."""

    __slots__ = ('error',)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Ticket(Generic[Item, Result]):
    __slots__ = ('item', 'done', 'result', 'error')

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """`commit(item)` from many threads; the items that wait together are
    written in one transaction by whichever of their threads gets the
    write lock first, `write(tx, items) -> results` (one per item, in
    order). Each caller returns when the transaction holding its item has
    committed, with its result, or raises what writing it raised: a batch
    that fails is written again an item at a time, so one bad item fails
    only its own caller. `commit_all(items)` brings several items of one
    caller at once (the capture's thread, with every message its hub has
    waiting)."""

    def __init__(self, database: Database,
                 write: Callable[[Transaction, Sequence[Item]], Sequence[Result]]):
        self.database = database
        self.write = write
        self._waiting: collections.deque[_Ticket[Item, Result]] = collections.deque()
        self.commits = 0        # transactions committed (fewer than items under load)

    def commit(self, item: Item) -> Result:
        [outcome] = self.commit_all([item])
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    def commit_all(self, items: Sequence[Item]) -> list[Result | Failed]:
        """`commit` of several items of one caller (a thread that stores the
        messages waiting in its hub): one result each, in order, or `Failed`
        holding what writing that item raised."""
        tickets: list[_Ticket[Item, Result]] = [_Ticket(item) for item in items]
        self._waiting.extend(tickets)
        changed = False
        with self.database.writing:
            if not all(ticket.done for ticket in tickets):
                batch = []
                while self._waiting:
                    batch.append(self._waiting.popleft())
                taken = set(map(id, batch))
                # those whose batch's writer was killed mid-way
                batch.extend(t for t in tickets if not t.done and id(t) not in taken)
                changed = self._run(batch)
        if changed:         # the listeners, once the lock is free
            self.database.changed()
        outcomes: list[Result | Failed] = []
        for ticket in tickets:
            if ticket.error is not None:
                error, ticket.error = ticket.error, None
                outcomes.append(Failed(error))
            else:
                outcomes.append(ticket.result)      # type: ignore[arg-type]  # set when done
        return outcomes

    def _run(self, batch: list[_Ticket[Item, Result]]) -> bool:
        """Write the batch; whether rows changed."""
        try:
            return self._write(batch)
        except Exception as exc:        # noqa: BLE001 - each item's own error, below
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done = True
                return False
            changed = False
            for ticket in batch:
                try:
                    changed = self._write([ticket]) or changed
                except Exception as single:     # noqa: BLE001 - raised in its caller
                    ticket.error = single
                    ticket.done = True
            return changed

    def _write(self, batch: list[_Ticket[Item, Result]]) -> bool:
        with self.database.write(locked=True) as tx:
            results = self.write(tx, [ticket.item for ticket in batch])
        self.commits += 1
        for ticket, result in zip(batch, results, strict=True):
            ticket.result = result
            ticket.done = True
        return tx.changed


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
