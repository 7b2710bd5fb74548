"""The inbox file's schema is versioned (`PRAGMA user_version`): a file of
the first, unversioned schema opens with its messages and is brought up to
date; a file from a newer smtp_stack is refused with one clear error; a
migration runs whole or not at all."""
from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone

import pytest

from clirunner import smtp_stack
from inbox_helpers import WAIT, make_mail
from smtp_stack.inbox.parse import parse_message
from smtp_stack.inbox.schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, migrate, version
from smtp_stack.inbox.store import Store, list_item, new_id

# The statements of inbox/store.py before versions existed, as files in the
# field were made: written out here, never taken from the package, so a
# change to the package's migrations cannot change what "old" means.
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT NOT NULL UNIQUE,
    created_ts  REAL NOT NULL,
    read        INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL,
    attachments INTEGER NOT NULL,
    inline      INTEGER NOT NULL,
    username    TEXT,
    summary     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    raw         BLOB NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(
    subject, sender, to_, cc, bcc, reply_to, message_id, body, filenames,
    tokenize = 'trigram'
);
CREATE TRIGGER IF NOT EXISTS messages_gone AFTER DELETE ON messages BEGIN
    DELETE FROM search WHERE rowid = old.id;
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('changes', 0);
"""


def unversioned_file(path, subject: str) -> tuple[str, bytes]:
    """An inbox file as the unversioned Store wrote it, holding one message
    (its rows as Store.add wrote them then): the message's ID and bytes."""
    raw = make_mail(subject=subject).as_bytes()
    fields = parse_message(raw, ['bob@example.com'], datetime.now(timezone.utc))
    uid = new_id()
    detail = {k: fields[k] for k in ('Date', 'ReturnPath', 'Text', 'HTML', 'Attachments',
                                      'Inline')}
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executescript(UNVERSIONED_SCHEMA)
    cursor = db.execute(
        'INSERT INTO messages (uid, created_ts, size, attachments, inline, username, summary,'
        ' detail, raw) VALUES (?, ?, ?, 0, 0, NULL, ?, ?, ?)',
        (uid, 1.0, len(raw), json.dumps(list_item(uid, fields, None)), json.dumps(detail), raw))
    db.execute('INSERT INTO search (rowid, subject, body) VALUES (?, ?, ?)',
               (cursor.lastrowid, subject, fields['Text']))
    db.execute("UPDATE meta SET value = 7 WHERE key = 'changes'")
    assert version(db) == 0
    db.close()
    return uid, raw


def user_version(path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return version(db)
    finally:
        db.close()


def test_a_file_of_the_unversioned_schema_opens_with_its_messages(tmp_path):
    path = tmp_path / 'old.db'
    uid, raw = unversioned_file(path, 'written before versions')
    store = Store(str(path))
    assert user_version(path) == SCHEMA_VERSION
    assert store.state()[0] == 7                    # the change counter goes on from where it was
    listed = store.listing()
    assert [(m['ID'], m['Subject']) for m in listed['messages']] == [(uid, 'written before versions')]
    assert store.listing(query='before versions')['messages_count'] == 1     # its search row
    assert store.summary(uid)['Subject'] == 'written before versions'
    assert store.raw(uid) == raw
    new = store.add(make_mail(subject='written after').as_bytes())
    assert store.listing()['total'] == 2
    assert store.listing(query='written after')['messages_count'] == 1    # waiting words
    assert store.delete([uid]) == 1                 # the trigger still empties its search row
    assert store.listing(query='before versions')['messages_count'] == 0
    assert [m['ID'] for m in store.listing()['messages']] == [new['ID']]
    Store(str(path))                                # opened again: nothing left to do
    assert user_version(path) == SCHEMA_VERSION


def test_a_new_file_gets_the_current_version(tmp_path):
    Store(str(tmp_path / 'new.db'))
    assert user_version(tmp_path / 'new.db') == SCHEMA_VERSION == len(MIGRATIONS)


def test_a_file_from_a_newer_smtp_stack_is_refused(tmp_path):
    path = tmp_path / 'newer.db'
    Store(str(path)).add(make_mail(subject='kept').as_bytes())
    db = sqlite3.connect(str(path))
    db.execute(f'PRAGMA user_version = {SCHEMA_VERSION + 1}')
    db.close()
    with pytest.raises(SchemaTooNew) as refused:
        Store(str(path))
    assert str(refused.value) == (
        f'its schema version is {SCHEMA_VERSION + 1}, newer than this smtp_stack knows '
        f'({SCHEMA_VERSION}): it was written by a newer smtp_stack; open it with that one, '
        'or use another file')
    assert isinstance(refused.value, sqlite3.DatabaseError)    # as a corrupt file is
    assert user_version(path) == SCHEMA_VERSION + 1            # left as it was
    count = sqlite3.connect(str(path)).execute('SELECT count(*) FROM messages').fetchone()[0]
    assert count == 1


def test_the_inbox_command_names_the_newer_file_in_one_line(tmp_path):
    Store(str(tmp_path / 'newer.db'))
    db = sqlite3.connect(str(tmp_path / 'newer.db'))
    db.execute(f'PRAGMA user_version = {SCHEMA_VERSION + 5}')
    db.close()
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--db', 'newer.db', cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1].endswith(
        f'cannot open newer.db: its schema version is {SCHEMA_VERSION + 5}, newer than this '
        f'smtp_stack knows ({SCHEMA_VERSION}): it was written by a newer smtp_stack; open it '
        'with that one, or use another file')


def test_a_later_migration_runs_on_an_existing_file(tmp_path):
    path = tmp_path / 'later.db'
    Store(str(path)).add(make_mail(subject='before the column').as_bytes())
    later = (*MIGRATIONS, ("ALTER TABLE messages ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",))
    db = sqlite3.connect(str(path), isolation_level=None)
    assert migrate(db, later) == SCHEMA_VERSION
    assert version(db) == SCHEMA_VERSION + 1
    assert db.execute('SELECT tags FROM messages').fetchall() == [('[]',)]
    assert migrate(db, later) == SCHEMA_VERSION + 1        # done once


def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / 'failing.db'
    Store(str(path))
    broken = (*MIGRATIONS, ('ALTER TABLE messages ADD COLUMN tags TEXT', 'NOT SQL AT ALL'))
    db = sqlite3.connect(str(path), isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, broken)
    assert version(db) == SCHEMA_VERSION
    columns = [row[1] for row in db.execute('PRAGMA table_info(messages)')]
    assert 'tags' not in columns
    assert not db.in_transaction


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    """Eight threads (each its own connection, as processes would have)."""
    path = str(tmp_path / 'race.db')
    errors = []

    def opener():
        try:
            Store(path).listing()
        except Exception as exc:     # noqa: BLE001 - must stay empty
            errors.append(exc)
    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert user_version(path) == SCHEMA_VERSION
    assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'changes'"
                                         ).fetchone() == (0,)


def version_1_file(path) -> str:
    """An inbox file of schema version 1 (the first versioned release), with one
    message as that release stored it: its detail had no ListUnsubscribe, no
    tags existed, the raw message had no Return-Path written by the inbox."""
    uid, _raw = unversioned_file(path, 'written by version 1')
    db = sqlite3.connect(str(path), isolation_level=None)
    raw = (b'List-Unsubscribe: <https://example.com/u>\r\n'
           + db.execute('SELECT raw FROM messages').fetchone()[0])
    db.execute('UPDATE messages SET raw = ?', (raw,))
    db.execute('PRAGMA user_version = 1')     # what migration 1 left: the same tables
    db.close()
    return uid


def test_a_file_of_version_1_gets_tags_and_the_event_log_and_keeps_its_messages(tmp_path):
    path = tmp_path / 'v1.db'
    uid = version_1_file(path)
    assert user_version(path) == 1
    store = Store(str(path))
    assert user_version(path) == SCHEMA_VERSION
    [item] = store.listing()['messages']
    assert (item['ID'], item['Subject'], item['Tags'], item['Username']) == (
        uid, 'written by version 1', [], '')
    message = store.summary(uid)
    assert message['ListUnsubscribe']['Links'] == ['https://example.com/u']    # from its raw
    store.set_tags([uid], ['kept', 'Old'])
    assert store.listing(query='tag:old')['messages_count'] == 1
    assert store.tag_counts() == {'kept': 1, 'Old': 1}
    assert [e['Type'] for _seq, e in store.events_since(0)] == ['update', 'update']
    store.delete([uid])                     # the new triggers take its tags away
    assert store.tags() == [] and store.listing()['total'] == 0
    db = sqlite3.connect(str(path))
    assert db.execute('SELECT count(*) FROM message_tags').fetchone() == (0,)


def counted(path) -> list[tuple[str, int, int]]:
    """Each mailbox's (messages, unread) as the rows say."""
    return sqlite3.connect(str(path)).execute(
        'SELECT mailbox, count(*), sum(read = 0) FROM messages GROUP BY mailbox'
        ' ORDER BY mailbox').fetchall()


def test_a_file_of_version_3_gets_each_mailboxs_counts_and_they_are_kept(tmp_path):
    """Migration 4 counts the messages of each mailbox once; its triggers
    keep the counts with every insert, delete and read flag after it,
    whoever writes (the Store, or SQL from another program)."""
    path = tmp_path / 'v3.db'
    db = sqlite3.connect(str(path), isolation_level=None)
    migrate(db, MIGRATIONS[:3])
    for n, box in enumerate(['', '', 'ann', '', 'ann']):
        uid = new_id()
        fields = parse_message(make_mail(subject=f'm{n}').as_bytes(), (),
                               datetime(2026, 1, 1, tzinfo=timezone.utc))
        db.execute('INSERT INTO messages (uid, mailbox, created_ts, read, size, attachments,'
                   ' inline, summary, detail, raw) VALUES (?, ?, ?, ?, 1, 0, 0, ?, ?, ?)',
                   (uid, box, float(n), n % 2, json.dumps(list_item(uid, fields, None)),
                    json.dumps({}), b''))
    db.close()
    store = Store(str(path))
    assert user_version(path) == SCHEMA_VERSION >= 4
    assert store.mailboxes() == [('', 3, 1), ('ann', 2, 2)] == counted(path)
    assert store.listing()['total'] == 3 and store.listing()['unread'] == 1
    store.add(make_mail(subject='new').as_bytes())
    store.set_read(True, mailbox='ann')
    store.delete([store.listing()['messages'][-1]['ID']])
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("UPDATE messages SET read = 0 WHERE mailbox = 'ann'")
    other.execute("UPDATE messages SET mailbox = 'bob' WHERE id = (SELECT max(id) FROM messages"
                  " WHERE mailbox = 'ann')")
    assert store.mailboxes() == counted(path) == [('', 3, 1), ('ann', 1, 1), ('bob', 1, 1)]
    store.delete(mailbox='ann')
    assert store.counts(['', 'ann', 'bob']) == {'': (3, 1), 'ann': (0, 0), 'bob': (1, 1)}
