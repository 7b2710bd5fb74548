"""smtp_stack.inbox.store: SQLite in WAL mode, shared by threads and
processes; a slow write never stalls the hub."""
from __future__ import annotations

import smtplib
import sqlite3
import threading
import time

from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
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
