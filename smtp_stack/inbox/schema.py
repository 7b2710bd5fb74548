"""The inbox file's tables, versioned with `PRAGMA user_version`.

`CREATE ... IF NOT EXISTS` alone cannot change a table that exists: the
first new column would leave every existing `inbox.db` behind. So the
schema is a list of migrations, and the file records (in its header's
user_version) how many of them it has had:

- `MIGRATIONS[n]` takes a file from version n to n + 1. A change of schema
  appends one (`ALTER TABLE ... ADD COLUMN`, a new index, a copy of data)
  and never edits an earlier one: files in the field went through it.
- They run in one `BEGIN IMMEDIATE` transaction together with the new
  user_version (SQLite's DDL and the header's user_version are both
  transactional): a failure leaves the file as it was, and two processes
  opening a file at once migrate it once (the second finds it done).
- Version 0 is an empty file and also a file written before versions
  existed (same tables, user_version 0): migration 1 is that schema,
  written with `IF NOT EXISTS`, so it creates the tables in the one and
  finds them in the other.
- A file whose version is beyond the last migration was written by a
  newer smtp_stack: it is refused (`SchemaTooNew`), never guessed at.

Python rather than SQL files in the package: a trigger body holds `;`, so
the statements must be kept apart anyway, and a tuple of strings needs no
package data.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

Migration = Sequence[str]       # SQL statements, run in order

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the schema of the first release (unversioned files have exactly this).
    ("""CREATE TABLE IF NOT EXISTS messages (
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
    )""",
     """CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(
        subject, sender, to_, cc, bcc, reply_to, message_id, body, filenames,
        tokenize = 'trigram'
    )""",
     """CREATE TRIGGER IF NOT EXISTS messages_gone AFTER DELETE ON messages BEGIN
        DELETE FROM search WHERE rowid = old.id;
    END""",
     'CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)',
     "INSERT OR IGNORE INTO meta VALUES ('changes', 0)"),
    # 2: tags (Mailpit's: names unique without regard to case, a tag no
    # message carries is deleted), and the log of the websocket's delete,
    # update, truncate and prune events (a web side in another process reads it).
    ('''CREATE TABLE tags (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE
    )''',
     '''CREATE TABLE message_tags (
        message INTEGER NOT NULL,
        tag     INTEGER NOT NULL,
        PRIMARY KEY (message, tag)
    ) WITHOUT ROWID''',
     'CREATE INDEX message_tags_by_tag ON message_tags (tag)',
     '''CREATE TRIGGER messages_untagged AFTER DELETE ON messages BEGIN
        DELETE FROM message_tags WHERE message = old.id;
    END''',
     '''CREATE TRIGGER tags_unused AFTER DELETE ON message_tags
        WHEN NOT EXISTS (SELECT 1 FROM message_tags WHERE tag = old.tag) BEGIN
        DELETE FROM tags WHERE id = old.tag;
    END''',
     '''CREATE TABLE events (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        data TEXT
    )'''),
    # 3: mailboxes (mailboxes.py). Each message belongs to one mailbox, ''
    # being the default one (the only one without --mailboxes); a message
    # for several mailboxes is a copy in each. The index on the name alone
    # also orders each mailbox by id (an index entry ends with the rowid).
    # Tags are a mailbox's own: the table is made again with the mailbox in
    # its unique key (SQLite cannot change a constraint in place), every tag
    # keeping its id so that message_tags stays as it is; the trigger that
    # names the table goes first and comes back last. Events say whose they are.
    ("ALTER TABLE messages ADD COLUMN mailbox TEXT NOT NULL DEFAULT ''",
     'CREATE INDEX messages_by_mailbox ON messages (mailbox)',
     "ALTER TABLE events ADD COLUMN mailbox TEXT NOT NULL DEFAULT ''",
     'DROP TRIGGER tags_unused',
     '''CREATE TABLE mailbox_tags (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox TEXT NOT NULL DEFAULT '',
        name    TEXT NOT NULL COLLATE NOCASE,
        UNIQUE (mailbox, name)
    )''',
     "INSERT INTO mailbox_tags (id, mailbox, name) SELECT id, '', name FROM tags",
     'DROP TABLE tags',
     'ALTER TABLE mailbox_tags RENAME TO tags',
     '''CREATE TRIGGER tags_unused AFTER DELETE ON message_tags
        WHEN NOT EXISTS (SELECT 1 FROM message_tags WHERE tag = old.tag) BEGIN
        DELETE FROM tags WHERE id = old.tag;
    END'''),
    # 4: each mailbox's counts of messages and unread ones, kept by triggers
    # in the transaction that changes them, whoever writes: the pruning
    # beyond max_messages and every list's `total`/`unread` read one row
    # instead of counting the mailbox's rows (O(stored) on each insert).
    ('''CREATE TABLE mailbox_counts (
        mailbox TEXT PRIMARY KEY,
        total   INTEGER NOT NULL,
        unread  INTEGER NOT NULL
    ) WITHOUT ROWID''',
     '''INSERT INTO mailbox_counts (mailbox, total, unread)
        SELECT mailbox, count(*), coalesce(sum(read = 0), 0) FROM messages GROUP BY mailbox''',
     '''CREATE TRIGGER counts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO mailbox_counts (mailbox, total, unread) VALUES (new.mailbox, 1, new.read = 0)
            ON CONFLICT (mailbox) DO UPDATE SET total = total + 1,
                                                unread = unread + (new.read = 0);
    END''',
     '''CREATE TRIGGER counts_delete AFTER DELETE ON messages BEGIN
        UPDATE mailbox_counts SET total = total - 1, unread = unread - (old.read = 0)
            WHERE mailbox = old.mailbox;
    END''',
     '''CREATE TRIGGER counts_update AFTER UPDATE OF read, mailbox ON messages
        WHEN old.read IS NOT new.read OR old.mailbox IS NOT new.mailbox BEGIN
        UPDATE mailbox_counts SET total = total - 1, unread = unread - (old.read = 0)
            WHERE mailbox = old.mailbox;
        INSERT INTO mailbox_counts (mailbox, total, unread) VALUES (new.mailbox, 1, new.read = 0)
            ON CONFLICT (mailbox) DO UPDATE SET total = total + 1,
                                                unread = unread + (new.read = 0);
    END'''),
    # 5: the words of new messages wait here until enough of them go into the
    # FTS5 index together (store.py, "The search index"): FTS5 writes a
    # segment per transaction and merges them later, which cost a small
    # transaction more than all its other rows. A message deleted while it
    # waits takes its row with it.
    ('''CREATE TABLE search_pending (
        id        INTEGER PRIMARY KEY,
        subject   TEXT NOT NULL,
        sender    TEXT NOT NULL,
        to_       TEXT NOT NULL,
        cc        TEXT NOT NULL,
        bcc       TEXT NOT NULL,
        reply_to  TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body      TEXT NOT NULL,
        filenames TEXT NOT NULL
    )''',
     '''CREATE TRIGGER messages_gone_pending AFTER DELETE ON messages BEGIN
        DELETE FROM search_pending WHERE id = old.id;
    END'''),
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(sqlite3.DatabaseError):
    """The file was written by a newer smtp_stack (its schema version is
    beyond the last migration known here)."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f'its schema version is {found}, newer than this smtp_stack knows '
                         f'({known}): it was written by a newer smtp_stack; open it with that '
                         'one, or use another file')
        self.found = found
        self.known = known


def version(db: sqlite3.Connection) -> int:
    found: int = db.execute('PRAGMA user_version').fetchone()[0]
    return found


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file of `db` (a connection in autocommit mode,
    isolation_level None) to `len(migrations)`; the version it had."""
    latest = len(migrations)
    found = version(db)
    if found > latest:
        raise SchemaTooNew(found, latest)
    if found == latest:         # the usual case: no write lock taken
        return found
    db.execute('BEGIN IMMEDIATE')
    try:
        found = version(db)     # another process may have migrated it meanwhile
        if found > latest:
            raise SchemaTooNew(found, latest)
        for migration in migrations[found:]:
            for statement in migration:
                db.execute(statement)
        if found < latest:
            db.execute(f'PRAGMA user_version = {latest:d}')
        db.execute('COMMIT')
    except BaseException:
        db.execute('ROLLBACK')
        raise
    return found
