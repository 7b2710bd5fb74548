"""smtp_stack.inbox.store: SQLite in WAL mode, shared by threads and
processes; a slow write never stalls the hub."""
from __future__ import annotations

import smtplib
import sqlite3
import threading
import time

from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
from smtp_stack.inbox.database import AUTOCHECKPOINT_PAGES, GroupCommit
from smtp_stack.inbox.store import ID_LENGTH, Store, valid_id


def raw(subject: str) -> bytes:
    return make_mail(subject=subject).as_bytes()


def test_writers_in_many_threads_lose_nothing(tmp_path):
    store = Store(str(tmp_path / 't.db'), max_messages=1000)
    ids, errors = [], []

    def writer(n):
        try:
            for i in range(25):
                ids.append(store.add(raw(f'{n}-{i}'), ['bob@example.com'])['ID'])
        except Exception as exc:     # noqa: BLE001 - must stay empty
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert errors == [] and len(set(ids)) == 200
    assert all(valid_id(i) and len(i) == ID_LENGTH for i in ids)
    listed = store.listing(limit=1000)
    assert listed['total'] == 200 and {m['ID'] for m in listed['messages']} == set(ids)
    assert sqlite3.connect(store.path).execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_pruning_keeps_the_newest_and_the_index_follows(tmp_path):
    store = Store(str(tmp_path / 'p.db'), max_messages=2)
    for i in range(4):
        store.add(raw(f'p{i}'))
    assert [m['Subject'] for m in store.listing()['messages']] == ['p3', 'p2']
    assert store.deleted == 2
    assert store.listing(query='p0')['messages_count'] == 0
    count = sqlite3.connect(store.path).execute('SELECT count(*) FROM search').fetchone()[0]
    assert count == 2


def test_a_locked_database_does_not_stall_other_sessions(tmp_path):
    """While another process holds the write lock, the message being stored
    waits (in the thread pool), and everything else is served at once."""
    with InboxThread(tmp_path / 'locked.db') as inbox:
        send(inbox.smtp, subject='before')
        blocker = sqlite3.connect(str(tmp_path / 'locked.db'), isolation_level=None)
        blocker.execute('BEGIN IMMEDIATE')
        done = {}

        def slow_send():
            send(inbox.smtp, subject='during the lock')
            done['at'] = time.monotonic()
        sender = threading.Thread(target=slow_send)
        sender.start()
        try:
            web = Http(inbox.url)
            started = time.monotonic()
            assert web.json('GET', '/api/v1/messages')['total'] == 1      # WAL: readers go on
            with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as other:        # a new session is greeted
                assert other.noop()[0] == 250
            assert web.get('/livez').status == 200
            served = time.monotonic() - started
            assert 'at' not in done, 'the locked write finished early?'
        finally:
            released = time.monotonic()
            blocker.execute('ROLLBACK')
            blocker.close()
        sender.join(WAIT)
        assert done['at'] >= released
        assert served < 1.0, served
        assert Http(inbox.url).json('GET', '/api/v1/messages')['total'] == 2


def wait_until(condition, timeout: float = WAIT) -> None:
    """Until `condition()` (threads reaching a queue), `timeout` at most."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'never happened'
        time.sleep(0.001)


def test_messages_that_wait_together_share_one_commit(tmp_path):
    """Group commit: while the write lock is busy, new messages queue; the
    first thread to get the lock writes them all in one transaction, and
    each caller returns its own message once that has committed."""
    store = Store(str(tmp_path / 'g.db'))
    commits = store._arrivals.commits
    results: dict[int, str] = {}

    def add(n: int) -> None:
        results[n] = store.add(raw(f'queued {n}'))['Subject']
    with store.database.writing:        # as a transaction of another thread would
        threads = [threading.Thread(target=add, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        wait_until(lambda: len(store._arrivals._waiting) == 5)
    for t in threads:
        t.join(WAIT)
    assert results == {n: f'queued {n}' for n in range(5)}
    assert store._arrivals.commits == commits + 1
    assert store.listing()['total'] == 5


def test_an_item_that_cannot_be_written_fails_its_caller_alone(tmp_path):
    store = Store(str(tmp_path / 'f.db'))
    commits = GroupCommit(store.database, lambda tx, items: [
        tx.db.execute('UPDATE meta SET value = value + ? WHERE key = ?',
                      (1 / item, 'changes')).rowcount for item in items])   # 1 / 0 fails
    outcomes: dict[int, object] = {}

    def commit(n: int) -> None:
        try:
            outcomes[n] = commits.commit(n)
        except ZeroDivisionError as exc:
            outcomes[n] = exc
    with store.database.writing:
        threads = [threading.Thread(target=commit, args=(n,)) for n in (1, 0, 2)]
        for t in threads:
            t.start()
        wait_until(lambda: len(commits._waiting) == 3)
    for t in threads:
        t.join(WAIT)
    assert outcomes[1] == outcomes[2] == 1 and isinstance(outcomes[0], ZeroDivisionError)
    assert commits.commits == 2         # the batch failed, then 1 and 2 alone


def test_the_250_comes_after_the_commit(tmp_path):
    """What the SMTP side accepted is in the file: another connection (as
    another process) sees it as soon as the client has its 250."""
    with InboxThread(tmp_path / 'durable.db') as inbox:
        outside = sqlite3.connect(str(tmp_path / 'durable.db'))
        with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
            for n in range(20):
                client.send_message(make_mail(subject=f'durable {n}'))
                count = outside.execute('SELECT count(*) FROM messages').fetchone()[0]
                assert count == n + 1


def test_checkpoints_run_aside_every_so_many_commits(tmp_path):
    """SQLite's own checkpoint would run in the commit that crosses 1,000
    pages, syncing while every writer waits; the store's run in a thread
    of their own, and SQLite's is left as a net far beyond them."""
    store = Store(str(tmp_path / 'c.db'))
    store.database.checkpoint_every = 5
    for n in range(12):
        store.add(raw(f'c{n}'))
    wait_until(lambda: store.database.checkpoints >= 2
               and not store.database._checkpointing.locked())
    pages = store.database.connection().execute('PRAGMA wal_autocheckpoint').fetchone()[0]
    assert pages == AUTOCHECKPOINT_PAGES > 1000
    assert store.listing()['total'] == 12


def test_one_session_may_send_more_than_a_thousand_messages(tmp_path):
    """SmtpServer stops a session at its 1,001st message by default; the
    inbox's has no such limit, as Mailpit's has none."""
    with InboxThread(tmp_path / 'many.db', max_messages=2000) as inbox:
        with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
            for n in range(1005):
                client.sendmail('a@example.com', ['b@example.com'],
                                f'Subject: {n}\r\n\r\nbody {n}\r\n'.encode())
            assert client.noop()[0] == 250
        assert Http(inbox.url).json('GET', '/api/v1/messages?limit=1')['total'] == 1005
