"""The inbox's messages in one SQLite file: WAL, FTS5, tags, pruning, safe to share.

The file, its connections and transactions are database.py's; the tables
and their versions schema.py's (`PRAGMA user_version` and migrations: a
file written by an older smtp_stack is brought up to date when opened, one
written by a newer one is refused).

Each message is stored as it arrived, with what Mailpit writes into it
(arrival.py: Return-Path, a generated Message-ID, Bcc for envelope-only
recipients), and with the fields of `parse.parse_message` computed once:
`messages.summary` holds the list fields and `messages.detail` the rest;
render.py shapes them as Mailpit's JSON when they are read.

Mailboxes (mailboxes.py): every message belongs to one, `''` being the
default (the only one without `--mailboxes`). A new message goes where
`routing` sends it, a copy in each mailbox; every other method works in
the one mailbox it is given (`mailbox=`, the default one by default), so
an ID of another mailbox is unknown there. `max_messages` bounds each
mailbox, so a busy one does not push another's mail out.

The search index: each message's words (subject, addresses, body, file
names) go into an FTS5 table with the trigram tokenizer. FTS5 writes a
segment of the index per transaction and merges segments later, which in
a transaction of one message cost more than all its other rows (0.3 of
0.57 ms, docs/performance.md "Ingest, fourth round"). So a new message's
words wait in `search_pending`, written with its rows, and go into the
index INDEX_BATCH messages at a time, in the transaction that brings the
count there; a search first moves whatever waits (`_index_waiting`), so
it finds every message already stored, as before.

Every method is blocking and uses this thread's connection: from gevent
greenlets, call them through `smtp_stack.offload.offload()`.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import render
from .arrival import ID_ALPHABET, ID_LENGTH, field_value, new_id, stamped
from .database import Database, Failed, GroupCommit, Transaction
from .mailboxes import DEFAULT, Routing
from .parse import field_date, message_from_bytes, parse_message
from .rows import arrival_time, index_row, list_item
from .search import FTS_COLUMNS, compile_query
from .tags import (TagRule, all_tags, arrival_tags, delete_tag, message_addresses, rename_tag,
                   rule_tags, set_message_tags, tag_counts, tags_of)
from .unsubscribe import list_unsubscribe

__all__ = ['Store', 'Incoming', 'Failed', 'new_id', 'valid_id', 'list_item', 'ID_ALPHABET',
           'ID_LENGTH', 'Json']

# A JSON object of the API (Mailpit's field names).
Json = dict[str, Any]

# A message as the SMTP side hands it over: its bytes, the envelope
# recipients, the SMTP user, the envelope sender (None: no envelope).
Incoming = tuple[bytes, Sequence[str], str | None, str | None]

PRUNE_EVENT_OVER = 200      # deleting more matches at once: one `prune` event, as Mailpit
INDEX_BATCH = 64            # messages whose words go into the search index together
_INDEX_COLUMNS = ', '.join(FTS_COLUMNS)


@dataclass(frozen=True)
class Arrival:
    """A new message read and shaped into its rows, before it is written:
    the stored bytes, the columns of `messages` and `search`, its arrival
    tags, and per copy (mailbox, list fields with its new ID, their JSON)."""
    raw: bytes
    created: float
    username: str | None
    attachments: int
    inline: int
    detail: str
    index_row: tuple[str, ...]
    tags: list[str]
    copies: list[tuple[str, Json, str]]


def valid_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in ID_ALPHABET for c in text)


def _in(mailbox: str, where: str, params: Sequence[str | float]) -> tuple[str, list[Any]]:
    """A search condition (search.compile_query) kept to one mailbox."""
    return f'm.mailbox = ? AND ({where})', [mailbox, *params]


class Store:
    """The messages of one inbox file."""

    def __init__(self, path: str, max_messages: int = 500, routing: Routing | None = None):
        if max_messages < 0:
            raise ValueError('max_messages must be 0 (keep every message) or more')
        self.database = Database(path)
        self.path = self.database.path
        self.max_messages = max_messages        # per mailbox; 0: no limit (Mailpit's --max 0)
        self.routing = routing or Routing()     # which mailboxes a new message goes to
        self.deleted = 0                # messages deleted or pruned since start
        # tagging on arrival (tags.py): rules, Mailpit's --tags-disable and --tags-username
        self.tag_rules: Sequence[TagRule] = ()
        self.tags_disabled: frozenset[str] = frozenset()
        self.tag_username = False
        self.tags_title_case = False        # Mailpit's --tags-title-case
        self.use_message_dates = False      # Mailpit's --use-message-dates: Created is Date
        # Mailpit's --ignore-duplicate-ids: a message whose Message-ID its
        # mailbox holds is not stored (add() answers DUPLICATE)
        self.ignore_duplicate_ids = False
        self._arrivals = GroupCommit(self.database, self._write_arrivals)

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        self.database.close()

    def on_change(self, fn: Callable[[], object]) -> None:
        """fn() after each change, from the thread that made it."""
        self.database.on_change(fn)

    def _write(self) -> Transaction:
        return self.database.write()

    def _read(self) -> Transaction:
        return self.database.read()

    # -- writing ---------------------------------------------------------------
    def add(self, raw: bytes, envelope_to: Iterable[str] = (), username: str | None = None,
            mail_from: str | None = None, received: datetime | None = None, *,
            mailbox: str | None = None) -> Json:
        """Store one message, a copy in each mailbox `routing` gives for its
        user and recipients (or in `mailbox` alone); returns the first copy
        as the `new` event's Data once the transaction holding it has
        committed. Prunes each mailbox beyond max_messages.

        `mail_from` (the envelope sender) becomes the Return-Path, and a
        release sends the message from it; None: the message has no envelope.

        The message is read (stamped, parsed, shaped as rows) in the calling
        thread; the rows are written by `_arrivals`, with those of other
        threads' messages waiting at the same time (database.GroupCommit).
        """
        return self._arrivals.commit(self._arrival(raw, envelope_to, username, mail_from,
                                                   received, mailbox))

    def add_all(self, messages: Sequence[Incoming]) -> list[Json | Failed]:
        """`add` of several messages (`Incoming`: raw, envelope_to, username,
        mail_from), in one transaction when they can be: each one's result,
        or `Failed` holding what reading or writing that message raised (it
        alone is not stored)."""
        outcomes: list[Json | Failed] = []
        arrivals: list[Arrival] = []
        for raw, envelope_to, username, mail_from in messages:
            try:
                arrival = self._arrival(raw, envelope_to, username, mail_from, None, None)
            except Exception as exc:    # noqa: BLE001 - this message's own failure
                outcomes.append(Failed(exc))
            else:
                outcomes.append({})
                arrivals.append(arrival)
        written = iter(self._arrivals.commit_all(arrivals))
        return [next(written) if not isinstance(o, Failed) else o for o in outcomes]

    def _arrival(self, raw: bytes, envelope_to: Iterable[str], username: str | None,
                 mail_from: str | None, received: datetime | None,
                 mailbox: str | None) -> Arrival:
        received = received or datetime.now(timezone.utc)
        rcpt = list(envelope_to)
        mailboxes = [mailbox] if mailbox is not None else self.routing.mailboxes(username, rcpt)
        raw, head = stamped(raw, mail_from, rcpt)
        if self.use_message_dates:
            received = arrival_time(field_date(field_value(raw, head, b'date'))) or received
        fields = parse_message(raw, (), received)
        tags = arrival_tags(
            None if 'x-tags' in self.tags_disabled else field_value(raw, head, b'x-tags'),
            () if 'plus-addresses' in self.tags_disabled else message_addresses(fields),
            title_case=self.tags_title_case)
        if self.tag_username and username:
            tags.append(username)
        copies = []
        for box in mailboxes:
            summary = list_item(new_id(), fields, username)
            copies.append((box, summary, json.dumps(summary)))
        detail = json.dumps({k: fields[k] for k in ('Date', 'ReturnPath', 'Text', 'HTML',
                                                     'Attachments', 'Inline', 'ListUnsubscribe')})
        return Arrival(raw, received.timestamp(), username, len(fields['Attachments']),
                       len(fields['Inline']), detail, index_row(fields), sorted(tags), copies)

    def _write_arrivals(self, tx: Transaction, arrivals: Sequence[Arrival]) -> list[Json]:
        """The rows of `arrivals`, in one transaction; each one's first copy
        as the `new` event's Data. Then each mailbox written to is pruned
        to its newest max_messages."""
        added: list[Json] = []
        boxes: set[str] = set()
        if self.ignore_duplicate_ids:       # a no-op once made (and committed)
            tx.db.execute(BY_MESSAGE_ID)
        for arrival in arrivals:
            first: Json | None = None
            copies = arrival.copies
            if self.ignore_duplicate_ids:
                copies = [copy for copy in copies if not _holds(tx.db, copy[0], copy[1])]
                if not copies:
                    added.append(DUPLICATE)
                    continue
            for box, summary, summary_json in copies:
                row_id = tx.db.execute(
                    'INSERT INTO messages (uid, mailbox, created_ts, size, attachments, inline,'
                    ' username, summary, detail, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (summary['ID'], box, arrival.created, len(arrival.raw), arrival.attachments,
                     arrival.inline, arrival.username, summary_json, arrival.detail,
                     arrival.raw)).lastrowid or 0
                tx.db.execute(f'INSERT INTO search_pending (id, {_INDEX_COLUMNS})'
                              ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                              (row_id, *arrival.index_row))
                applied = self._tag(tx, row_id, box, arrival)
                boxes.add(box)
                if first is None:
                    first = render.list_item(summary, False, applied, event=True)
            added.append(first or {})
        if tx.db.execute('SELECT count(*) FROM search_pending').fetchone()[0] >= INDEX_BATCH:
            _index_waiting(tx.db)
        for box in sorted(boxes):
            self._prune(tx, box)
        return added

    def _tag(self, tx: Transaction, row_id: int, box: str, arrival: Arrival) -> list[str]:
        """Tag a new copy: its arrival tags, then those of the rules that
        find it (which see the arrival tags: `tag:` works in a rule)."""
        applied = (set_message_tags(tx.db, row_id, arrival.tags, box, untagged=True)
                   if arrival.tags else [])
        if self.tag_rules:
            words = dict(zip(FTS_COLUMNS, arrival.index_row, strict=True))
            extra = rule_tags(tx.db, row_id, self.tag_rules, words)
            if extra:
                applied = set_message_tags(tx.db, row_id, sorted(arrival.tags + extra), box)
        return applied

    def _prune(self, tx: Transaction, box: str) -> None:
        """Delete the oldest messages of `box` beyond max_messages (its count
        is kept by the schema's triggers, so nothing is counted here)."""
        if not self.max_messages:
            return
        row = tx.db.execute('SELECT total FROM mailbox_counts WHERE mailbox = ?',
                            (box,)).fetchone()
        over = (row[0] if row else 0) - self.max_messages
        if over > 0:
            gone: int = tx.db.execute(
                'DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE mailbox = ?'
                ' ORDER BY id LIMIT ?)', (box, over)).rowcount
            tx.event('prune', mailbox=box)
            self.deleted += gone

    def delete(self, ids: Iterable[str] | None = None, mailbox: str = DEFAULT) -> int:
        """Delete these IDs (None: all). Unknown IDs are ignored, as in Mailpit."""
        with self._write() as tx:
            if ids is None:
                count: int = tx.db.execute('DELETE FROM messages WHERE mailbox = ?',
                                           (mailbox,)).rowcount
                tx.event('truncate', mailbox=mailbox)
            else:
                count = 0
                for uid in dict.fromkeys(ids):
                    if tx.db.execute('DELETE FROM messages WHERE uid = ? AND mailbox = ?',
                                     (uid, mailbox)).rowcount:
                        count += 1
                        tx.event('delete', {'ID': uid}, mailbox)
        self.deleted += count
        return count

    def prune_older(self, cutoff: float) -> int:
        """Delete the messages received before `cutoff` (a POSIX time), in
        every mailbox: the `--max-age` pruning, one `prune` event per mailbox
        as for `max_messages`."""
        with self._write() as tx:
            mailboxes = [box for (box,) in tx.db.execute(
                'SELECT DISTINCT mailbox FROM messages WHERE created_ts < ?', (cutoff,))]
            count: int = tx.db.execute('DELETE FROM messages WHERE created_ts < ?',
                                       (cutoff,)).rowcount
            for box in mailboxes:
                tx.event('prune', mailbox=box)
        self.deleted += count
        return count

    def delete_matching(self, query: str, tz: str | None = None,
                        mailbox: str = DEFAULT) -> int:
        where, params = _in(mailbox, *compile_query(query, tz))
        with self._write() as tx:
            _index_waiting(tx.db)
            uids = [uid for (uid,) in tx.db.execute(
                f'SELECT m.uid FROM messages m WHERE {where}', params)]
            tx.db.execute(f'DELETE FROM messages WHERE id IN (SELECT m.id FROM'
                          f' messages m WHERE {where})', params)
            if len(uids) > PRUNE_EVENT_OVER:
                tx.event('prune', mailbox=mailbox)
            for uid in uids if len(uids) <= PRUNE_EVENT_OVER else ():
                tx.event('delete', {'ID': uid}, mailbox)
        self.deleted += len(uids)
        return len(uids)

    def set_read(self, read: bool, ids: Iterable[str] | None = None,
                 query: str | None = None, tz: str | None = None,
                 mailbox: str = DEFAULT) -> int:
        """Mark IDs, or the matches of a query, or (neither) every message.
        Each message marked by ID or query is an `update` event, as in Mailpit."""
        flag = 1 if read else 0
        with self._write() as tx:
            if ids is None and not (query or '').strip():
                count: int = tx.db.execute('UPDATE messages SET read = ?'
                                           ' WHERE mailbox = ? AND read != ?',
                                           (flag, mailbox, flag)).rowcount
                return count
            if ids is None:
                where, params = _in(mailbox, *compile_query(query or '', tz))
                _index_waiting(tx.db)
                ids = [uid for (uid,) in tx.db.execute(
                    f'SELECT m.uid FROM messages m WHERE ({where}) AND m.read != ?',
                    (*params, flag))]
            count = 0
            for uid in dict.fromkeys(ids):
                if tx.db.execute('UPDATE messages SET read = ?'
                                 ' WHERE uid = ? AND mailbox = ? AND read != ?',
                                 (flag, uid, mailbox, flag)).rowcount:
                    count += 1
                    tx.event('update', {'ID': uid, 'Read': read}, mailbox)
            return count

    def unindexed(self) -> int:
        """Messages whose words wait for the search index (introspection)."""
        with self._read() as tx:
            waiting: int = tx.db.execute('SELECT count(*) FROM search_pending').fetchone()[0]
        return waiting

    def index_waiting(self) -> int:
        """Put the words of the messages waiting for the search index into
        it now (a search does, first); how many there were."""
        waiting = self.unindexed()
        if waiting:
            with self._write() as tx:
                _index_waiting(tx.db)
        return waiting

    # -- tags -------------------------------------------------------------------------
    def set_tags(self, ids: Iterable[str], names: Sequence[str], mailbox: str = DEFAULT) -> None:
        """Replace the tags of these messages (unknown IDs are skipped)."""
        with self._write() as tx:
            for uid in dict.fromkeys(ids):
                row = tx.db.execute('SELECT id FROM messages WHERE uid = ? AND mailbox = ?',
                                    (uid, mailbox)).fetchone()
                if row is not None:
                    applied = set_message_tags(tx.db, row[0], names, mailbox)
                    tx.event('update', {'ID': uid, 'Tags': applied}, mailbox)

    def tags(self, mailbox: str = DEFAULT) -> list[str]:
        with self._read() as tx:
            return all_tags(tx.db, mailbox)

    def tag_counts(self, mailbox: str = DEFAULT) -> dict[str, int]:
        with self._read() as tx:
            return tag_counts(tx.db, mailbox)

    def rename_tag(self, old: str, new: str, mailbox: str = DEFAULT) -> None:
        """TagError with Mailpit's text for a bad or taken name, an unknown tag."""
        with self._write() as tx:
            if rename_tag(tx.db, old, new, mailbox):
                tx.event('prune', mailbox=mailbox)

    def delete_tag(self, name: str, mailbox: str = DEFAULT) -> None:
        with self._write() as tx:
            delete_tag(tx.db, name, mailbox)
            tx.event('prune', mailbox=mailbox)

    # -- reading -----------------------------------------------------------------
    def listing(self, start: int = 0, limit: int = 50, query: str = '', *,
                before: float | None = None, tz: str | None = None,
                mailbox: str = DEFAULT) -> Json:
        """Mailpit's MessagesSummary, newest first: the mailbox (`query`
        blank) or a search. `limit` 0 is every message of the mailbox but
        none of a search, `before` (a POSIX time) keeps older ones only:
        each as Mailpit answers it."""
        searching = bool(query.strip())
        where, params = _in(mailbox, *compile_query(query, tz))
        if before is not None:
            where, params = f'({where}) AND m.created_ts < ?', [*params, before]
        page = f'SELECT m.id, m.read, m.summary FROM messages m WHERE {where} ORDER BY m.id DESC'
        page_params = [*params, limit, start] if limit else params
        if limit:
            page += ' LIMIT ? OFFSET ?'
        if searching:
            self.index_waiting()
        with self._read() as tx:
            total, unread = _counts(tx.db, mailbox)
            matched, matched_unread = total, unread
            if searching:
                matched, matched_unread = tx.db.execute(
                    f'SELECT count(*), coalesce(sum(m.read = 0), 0) FROM messages m'
                    f' WHERE {where}', params).fetchone()
            rows = tx.db.execute(page, page_params).fetchall() if limit or not searching else []
            tagged = tags_of(tx.db, [row[0] for row in rows])
            every_tag = all_tags(tx.db, mailbox)
        messages = [render.list_item(json.loads(summary), bool(read), tagged.get(row_id, []))
                    for row_id, read, summary in rows]
        return {'total': total, 'unread': unread, 'count': len(messages),
                'messages_count': matched, 'messages_unread': matched_unread,
                'start': start, 'tags': every_tag, 'messages': messages}

    def resolve(self, uid: str, mailbox: str = DEFAULT) -> str | None:
        """'latest' -> the newest ID; an ID -> itself if stored; else None."""
        with self._read() as tx:
            if uid == 'latest':
                row = tx.db.execute('SELECT uid FROM messages WHERE mailbox = ?'
                                    ' ORDER BY id DESC LIMIT 1', (mailbox,)).fetchone()
            else:
                row = tx.db.execute('SELECT uid FROM messages WHERE uid = ? AND mailbox = ?',
                                    (uid, mailbox)).fetchone()
        found: str | None = row[0] if row else None
        return found

    def latest(self, query: str, tz: str | None = None, mailbox: str = DEFAULT) -> str | None:
        """The newest message matching a search (`latest?query=`), or None."""
        where, params = _in(mailbox, *compile_query(query, tz))
        self.index_waiting()
        with self._read() as tx:
            row = tx.db.execute(f'SELECT m.uid FROM messages m WHERE {where}'
                                f' ORDER BY m.id DESC LIMIT 1', params).fetchone()
        found: str | None = row[0] if row else None
        return found

    def summary(self, uid: str, mark_read: bool = True, mailbox: str = DEFAULT) -> Json | None:
        """Mailpit's Message (the summary endpoint); opening it marks it read."""
        with self._read() as tx:
            row = tx.db.execute('SELECT id, read, summary, detail FROM messages'
                                ' WHERE uid = ? AND mailbox = ?', (uid, mailbox)).fetchone()
            if row is None:
                return None
            tags = tags_of(tx.db, [row[0]]).get(row[0], [])
        if mark_read and not row[1]:     # only an unread message costs a write
            self.set_read(True, [uid], mailbox=mailbox)
        detail = json.loads(row[3])
        if 'ListUnsubscribe' not in detail:     # stored before it was
            detail['ListUnsubscribe'] = _unsubscribe_of(self.raw(uid, mailbox) or b'')
        return render.message(json.loads(row[2]), detail, tags)

    def newest(self, limit: int, mailbox: str = DEFAULT) -> list[tuple[str, int]]:
        """(ID, size) of the newest `limit` messages, newest first (POP3's listing)."""
        with self._read() as tx:
            rows = tx.db.execute('SELECT uid, size FROM messages WHERE mailbox = ?'
                                 ' ORDER BY id DESC LIMIT ?', (mailbox, limit)).fetchall()
        return [(uid, size) for uid, size in rows]

    def raw(self, uid: str, mailbox: str = DEFAULT) -> bytes | None:
        with self._read() as tx:
            row = tx.db.execute('SELECT raw FROM messages WHERE uid = ? AND mailbox = ?',
                                (uid, mailbox)).fetchone()
        return bytes(row[0]) if row else None

    def envelope_sender(self, uid: str, mailbox: str = DEFAULT) -> str:
        """The Return-Path of a stored message (for a release), or ''."""
        with self._read() as tx:
            row = tx.db.execute('SELECT detail FROM messages WHERE uid = ? AND mailbox = ?',
                                (uid, mailbox)).fetchone()
        if row is None:
            return ''
        sender: str = json.loads(row[0]).get('ReturnPath', '')
        return sender

    def mailboxes(self) -> list[tuple[str, int, int]]:
        """(name, messages, unread) of every mailbox that holds mail, by name."""
        with self._read() as tx:
            rows = tx.db.execute('SELECT mailbox, total, unread FROM mailbox_counts'
                                 ' WHERE total > 0 ORDER BY mailbox').fetchall()
        return [(name, total, unread) for name, total, unread in rows]

    def counts(self, mailboxes: Iterable[str]) -> dict[str, tuple[int, int]]:
        """{mailbox: (messages, unread)} of these mailboxes (an empty one: (0, 0))."""
        with self._read() as tx:
            return {box: _counts(tx.db, box) for box in dict.fromkeys(mailboxes)}

    def state(self, mailbox: str = DEFAULT) -> tuple[int, int, int, int, int]:
        """(changes counter, newest row id, total, unread, last event), the
        counts of `mailbox`."""
        with self._read() as tx:
            total, unread = _counts(tx.db, mailbox)
            changes, newest, last_event = _watermark(tx.db)
        return changes, newest, total, unread, last_event

    def watermark(self) -> tuple[int, int, int]:
        """(changes counter, newest row id, last event): the cheapest look, for watchers."""
        with self._read() as tx:
            return _watermark(tx.db)

    def newer_than(self, row_id: int, limit: int = 100) -> list[tuple[str, Json]]:
        """(mailbox, `new` event's Data) for messages stored after row
        `row_id`, in every mailbox, oldest first."""
        with self._read() as tx:
            rows = tx.db.execute('SELECT id, mailbox, read, summary FROM messages WHERE id > ?'
                                 ' ORDER BY id LIMIT ?', (row_id, limit)).fetchall()
            tagged = tags_of(tx.db, [row[0] for row in rows])
        return [(box, render.list_item(json.loads(summary), bool(read), tagged.get(i, []),
                                       event=True))
                for i, box, read, summary in rows]

    def events_since(self, seq: int, mailbox: str | None = DEFAULT) -> list[tuple[int, Json]]:
        """(seq, event) logged after `seq` in `mailbox` (None: in every
        mailbox): delete, update, truncate, prune."""
        return [(s, event) for s, box, event in self.logged_since(seq)
                if mailbox is None or box == mailbox]

    def logged_since(self, seq: int) -> list[tuple[int, str, Json]]:
        """(seq, mailbox, event) of every mailbox's events logged after `seq`."""
        with self._read():
            return self.database.events_since(seq)

    def file_size(self) -> int:
        return self.database.file_size()


# What add() and add_all() answer for a message left out because its
# mailbox holds one with its Message-ID (ignore_duplicate_ids).
DUPLICATE: Json = {'Duplicate': True}
# The index of that look-up, made only when it is asked for (an index costs
# every write a page): outside the versioned schema, and harmless to it.
BY_MESSAGE_ID = ("CREATE INDEX IF NOT EXISTS messages_by_message_id"
                 " ON messages (mailbox, json_extract(summary, '$.MessageID'))")


def _holds(db: sqlite3.Connection, mailbox: str, summary: Json) -> bool:
    """Whether `mailbox` holds a message with this list entry's Message-ID."""
    message_id = summary.get('MessageID')
    return bool(message_id) and db.execute(
        "SELECT 1 FROM messages WHERE mailbox = ? AND json_extract(summary, '$.MessageID') = ?"
        ' LIMIT 1', (mailbox, message_id)).fetchone() is not None


def _index_waiting(db: sqlite3.Connection) -> None:
    """In a write transaction: the waiting words into the index, in one go."""
    db.execute(f'INSERT INTO search (rowid, {_INDEX_COLUMNS})'
               f' SELECT id, {_INDEX_COLUMNS} FROM search_pending')
    db.execute('DELETE FROM search_pending')


def _watermark(db: sqlite3.Connection) -> tuple[int, int, int]:
    changes: int = db.execute("SELECT value FROM meta WHERE key = 'changes'").fetchone()[0]
    newest: int = db.execute('SELECT coalesce(max(id), 0) FROM messages').fetchone()[0]
    last_event: int = db.execute('SELECT coalesce(max(seq), 0) FROM events').fetchone()[0]
    return changes, newest, last_event


def _counts(db: sqlite3.Connection, mailbox: str) -> tuple[int, int]:
    """(messages, unread) of a mailbox (the schema's triggers keep them)."""
    row = db.execute('SELECT total, unread FROM mailbox_counts WHERE mailbox = ?',
                     (mailbox,)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _unsubscribe_of(raw: bytes) -> Json:
    message = message_from_bytes(raw.split(b'\r\n\r\n', 1)[0] + b'\r\n\r\n')
    return list_unsubscribe(str(message.get('List-Unsubscribe', '') or ''),
                            str(message.get('List-Unsubscribe-Post', '') or ''))
