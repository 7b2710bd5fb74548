"""The inbox's messages in one SQLite file: WAL, FTS5, pruning, safe to share.

Why SQLite from the stdlib: one file that survives restarts, is shared by
processes (the `smtp-stack inbox` command and a gunicorn mount of the web
side may be different processes), and needs no server. WAL mode lets
readers go on while one writer commits; `BEGIN IMMEDIATE` takes the write
lock up front, so two writers queue on `busy_timeout` instead of failing
on a lock upgrade (a deferred transaction that finds the database changed
gets SQLITE_BUSY at once, without the busy handler).

Threads: every method is blocking and opens its own connection per thread
(`threading.local`). From gevent greenlets, call them through
`smtp_stack.offload.offload()`, which runs them in the hub's thread pool so
the hub never waits on disk.

The tables and their versions are in schema.py (`PRAGMA user_version` and
migrations): a file written by an older smtp_stack is brought up to date
when opened, one written by a newer one is refused.

Each message is stored as received (raw bytes) with the fields of
`parse.parse_message` computed once at arrival; `messages.summary` holds the
JSON list item and `messages.detail` the rest of the summary endpoint.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal

from .parse import html_to_text, parse_message
from .schema import migrate
from .search import compile_query

# A JSON object of the API (Mailpit's field names).
Json = dict[str, Any]

ID_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
ID_LENGTH = 22              # as long as Mailpit's IDs; 131 bits of randomness
BUSY_TIMEOUT_MS = 10_000

LIST_COLUMNS = 'm.uid, m.read, m.summary'


def new_id() -> str:
    return ''.join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def valid_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in ID_ALPHABET for c in text)


class Store:
    """The messages of one inbox file."""

    def __init__(self, path: str, max_messages: int = 500):
        if max_messages < 1:
            raise ValueError('max_messages must be 1 or more')
        self.path = os.path.abspath(path)
        self.max_messages = max_messages
        self._local = threading.local()
        self._listeners: list[Callable[[], object]] = []    # called after each change (any thread)
        self.deleted = 0                # messages deleted or pruned since start
        migrate(self._db())     # schema.py: versioned; a newer file is refused

    # -- connections ---------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, 'db', None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None, check_same_thread=False)
            db.execute('PRAGMA journal_mode = WAL')
            # durable at checkpoints; WAL keeps it consistent
            db.execute('PRAGMA synchronous = NORMAL')
            db.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection, store: Store, write: bool):
            self.db, self.store, self.write = db, store, write

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute('BEGIN IMMEDIATE' if self.write else 'BEGIN')
            self.before = self.db.total_changes
            return self.db

        def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                     tb: TracebackType | None) -> Literal[False]:
            if kind is None:
                # The change counter moves only when rows did: watchers
                # (events.Broker) compare it, so a no-op write wakes nobody.
                changed = self.write and self.db.total_changes > self.before
                if changed:
                    self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'changes'")
                self.db.execute('COMMIT')
                if changed:
                    self.store._changed()
            else:
                self.db.execute('ROLLBACK')
            return False

    def _write(self) -> _Transaction:
        return self._Transaction(self._db(), self, True)

    def _read(self) -> _Transaction:
        return self._Transaction(self._db(), self, False)

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        db: sqlite3.Connection | None = getattr(self._local, 'db', None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- change listeners ------------------------------------------------------
    def on_change(self, fn: Callable[[], object]) -> None:
        self._listeners.append(fn)

    def _changed(self) -> None:
        for fn in list(self._listeners):
            fn()

    # -- writing ---------------------------------------------------------------
    def add(self, raw: bytes, envelope_to: Iterable[str] = (), username: str | None = None,
            mail_from: str | None = None, received: datetime | None = None) -> Json:
        """Store one message; returns its list item. Prunes beyond max_messages.

        `mail_from` (the envelope sender) is the ReturnPath when given; a
        release sends the message from it.
        """
        received = received or datetime.now(timezone.utc)
        fields = parse_message(raw, envelope_to, received)
        if mail_from is not None:
            fields['ReturnPath'] = mail_from
        uid = new_id()
        item = list_item(uid, fields, username)
        detail = {k: fields[k] for k in ('Date', 'ReturnPath', 'Text', 'HTML',
                                          'Attachments', 'Inline')}
        index = _index_row(fields)
        with self._write() as db:
            cursor = db.execute(
                'INSERT INTO messages (uid, created_ts, size, attachments, inline, username,'
                ' summary, detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (uid, received.timestamp(), len(raw), len(fields['Attachments']),
                 len(fields['Inline']), username, json.dumps(item), json.dumps(detail), raw))
            db.execute('INSERT INTO search (rowid, subject, sender, to_, cc, bcc, reply_to,'
                       ' message_id, body, filenames) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                       (cursor.lastrowid, *index))
            pruned = db.execute(
                'DELETE FROM messages WHERE id <= (SELECT id FROM messages'
                ' ORDER BY id DESC LIMIT 1 OFFSET ?)', (self.max_messages,)).rowcount
        self.deleted += pruned
        return {**item, 'Read': False}

    def delete(self, ids: Iterable[str] | None = None) -> int:
        """Delete these IDs (None: all). Unknown IDs are ignored, as in Mailpit."""
        with self._write() as db:
            if ids is None:
                count: int = db.execute('DELETE FROM messages').rowcount
            else:
                count = 0
                for uid in ids:
                    count += db.execute('DELETE FROM messages WHERE uid = ?', (uid,)).rowcount
        self.deleted += count
        return count

    def delete_matching(self, query: str) -> int:
        where, params = compile_query(query)
        with self._write() as db:
            count: int = db.execute(f'DELETE FROM messages WHERE id IN (SELECT m.id FROM'
                                    f' messages m WHERE {where})', params).rowcount
        self.deleted += count
        return count

    def set_read(self, read: bool, ids: Iterable[str] | None = None,
                 query: str | None = None) -> int:
        """Mark IDs, or the matches of a query, or (neither) every message."""
        flag = 1 if read else 0
        with self._write() as db:
            if ids is not None:
                return sum(db.execute('UPDATE messages SET read = ? WHERE uid = ?',
                                      (flag, uid)).rowcount for uid in ids)
            where, params = compile_query(query or '')
            count: int = db.execute(f'UPDATE messages SET read = ? WHERE id IN (SELECT m.id'
                                    f' FROM messages m WHERE {where})', (flag, *params)).rowcount
            return count

    # -- reading -----------------------------------------------------------------
    def listing(self, start: int = 0, limit: int = 50, query: str = '') -> Json:
        """Mailpit's MessagesSummary: newest first, `start`/`limit` paging."""
        where, params = compile_query(query)
        with self._read() as db:
            total, unread = db.execute(
                'SELECT count(*), coalesce(sum(read = 0), 0) FROM messages').fetchone()
            if query.strip():
                matched, matched_unread = db.execute(
                    f'SELECT count(*), coalesce(sum(m.read = 0), 0) FROM messages m'
                    f' WHERE {where}', params).fetchone()
            else:
                matched, matched_unread = total, unread
            rows = db.execute(f'SELECT {LIST_COLUMNS} FROM messages m WHERE {where}'
                              f' ORDER BY m.id DESC LIMIT ? OFFSET ?',
                              (*params, limit, start)).fetchall()
        messages = [_item(row) for row in rows]
        return {'total': total, 'unread': unread, 'count': len(messages),
                'messages_count': matched, 'messages_unread': matched_unread,
                'start': start, 'tags': [], 'messages': messages}

    def resolve(self, uid: str) -> str | None:
        """'latest' -> the newest ID; an ID -> itself if stored; else None."""
        with self._read() as db:
            if uid == 'latest':
                row = db.execute('SELECT uid FROM messages ORDER BY id DESC LIMIT 1').fetchone()
            else:
                row = db.execute('SELECT uid FROM messages WHERE uid = ?', (uid,)).fetchone()
        found: str | None = row[0] if row else None
        return found

    def summary(self, uid: str, mark_read: bool = True) -> Json | None:
        """Mailpit's Message (the summary endpoint); opening it marks it read."""
        with self._read() as db:
            row = db.execute('SELECT m.uid, m.read, m.summary, m.detail FROM messages m'
                             ' WHERE m.uid = ?', (uid,)).fetchone()
        if row is None:
            return None
        if mark_read and not row[1]:     # only an unread message costs a write
            with self._write() as db:
                db.execute('UPDATE messages SET read = 1 WHERE uid = ?', (uid,))
            row = (row[0], 1, row[2], row[3])
        item = _item(row[:3])
        detail = json.loads(row[3])
        out = {k: item[k] for k in ('ID', 'MessageID', 'Read', 'From', 'To', 'Cc', 'Bcc',
                                     'ReplyTo', 'Subject', 'Tags', 'Size')}
        if item.get('Username'):
            out['Username'] = item['Username']
        out.update(detail)
        out['ListUnsubscribe'] = {'Header': '', 'HeaderPost': '', 'Links': [], 'Errors': ''}
        return out

    def raw(self, uid: str) -> bytes | None:
        with self._read() as db:
            row = db.execute('SELECT raw FROM messages WHERE uid = ?', (uid,)).fetchone()
        return bytes(row[0]) if row else None

    def envelope_sender(self, uid: str) -> str:
        """The Return-Path of a stored message (for a release), or ''."""
        with self._read() as db:
            row = db.execute('SELECT detail FROM messages WHERE uid = ?', (uid,)).fetchone()
        if row is None:
            return ''
        sender: str = json.loads(row[0]).get('ReturnPath', '')
        return sender

    def state(self) -> tuple[int, int, int, int]:
        """(changes counter, newest row id, total, unread): cheap, for watchers."""
        with self._read() as db:
            changes = db.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()[0]
            newest, total, unread = db.execute(
                'SELECT coalesce(max(id), 0), count(*), coalesce(sum(read = 0), 0)'
                ' FROM messages').fetchone()
        return changes, newest, total, unread

    def newer_than(self, row_id: int, limit: int = 100) -> list[Json]:
        """List items of messages stored after row `row_id`, oldest first."""
        with self._read() as db:
            rows = db.execute(f'SELECT {LIST_COLUMNS} FROM messages m WHERE m.id > ?'
                              f' ORDER BY m.id LIMIT ?', (row_id, limit)).fetchall()
        return [_item(row) for row in rows]

    def file_size(self) -> int:
        return sum(os.path.getsize(p) for p in (self.path, self.path + '-wal')
                   if os.path.exists(p))


def list_item(uid: str, fields: Json, username: str | None) -> Json:
    """Mailpit's MessageSummary (an element of `messages`), without Read."""
    item = {
        'ID': uid,
        'MessageID': fields['MessageID'],
        'From': fields['From'],
        'To': fields['To'],
        'Cc': fields['Cc'],
        'Bcc': fields['Bcc'],
        'ReplyTo': fields['ReplyTo'],
        'Subject': fields['Subject'],
        'Created': fields['Created'],
        'Tags': [],
        'Size': fields['Size'],
        'Attachments': len(fields['Attachments']),
        'Snippet': fields['Snippet'],
    }
    if username:
        item['Username'] = username
    return item


def _item(row: Sequence[Any]) -> Json:
    uid, read, summary = row
    item: Json = json.loads(summary)
    item['Read'] = bool(read)
    return item


def _people(addresses: Iterable[Json | None] | None) -> str:
    return ' '.join(f'{a["Name"]} <{a["Address"]}>' for a in addresses or () if a)


def _index_row(fields: Json) -> tuple[str, ...]:
    files = ' '.join(p['FileName'] for p in fields['Attachments'] + fields['Inline'])
    body = fields['Text'] + '\n' + html_to_text(fields['HTML'])
    return (fields['Subject'], _people([fields['From']] if fields['From'] else []),
            _people(fields['To']), _people(fields['Cc']), _people(fields['Bcc']),
            _people(fields['ReplyTo']), fields['MessageID'], body, files)

