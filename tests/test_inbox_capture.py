"""smtp_stack.inbox.capture without a store process (store_process=False;
test_inbox_store_process.py has it): the messages of a hub's sessions go
to one ingest thread, which stores every message waiting in one
transaction; one message that cannot be stored fails its own session alone."""
from __future__ import annotations

import os
import smtplib
import threading
import time

import pytest

from inbox_helpers import WAIT, Http, InboxThread, Senders, make_mail, send
from log_lines import kept_lines
from smtp_stack.inbox.database import Failed, GroupCommit
from smtp_stack.inbox.store import Store


def wait_until(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'never happened'
        time.sleep(0.001)


def queued(inbox: InboxThread) -> int:
    """Messages handed to the ingest thread and not taken yet."""
    return sum(ingest.tasks.qsize() for ingest in inbox.inbox.capture._threads.values())


def test_the_messages_waiting_are_stored_in_one_transaction(tmp_path):
    """While the write lock is held, one message waits for it in the ingest
    thread and eleven more queue behind it; once it is free they are all
    written in two transactions (with a thread per message, as before,
    a transaction held at most as many messages as there were threads)."""
    with InboxThread(tmp_path / 'batch.db', store_process=False) as inbox:
        store = inbox.inbox.store
        senders = Senders(inbox.smtp)
        with store.database.writing:
            commits = store._arrivals.commits
            senders.start('first')
            wait_until(lambda: len(store._arrivals._waiting) == 1)
            for n in range(11):
                senders.start(f'queued {n}')
            wait_until(lambda: queued(inbox) == 11)
        senders.join()
        assert set(senders.codes.values()) == {250} and len(senders.codes) == 12
        assert store._arrivals.commits == commits + 2
        assert store.listing()['total'] == 12


def test_a_message_that_cannot_be_stored_fails_its_session_alone(tmp_path):
    with InboxThread(tmp_path / 'poison.db', store_process=False) as inbox:
        store = inbox.inbox.store
        read = store._arrival

        def arrival(raw, *args):
            if b'poison' in raw:
                raise ValueError('this one cannot be read')
            return read(raw, *args)
        store._arrival = arrival
        senders = Senders(inbox.smtp)
        with store.database.writing:
            senders.start('first')
            wait_until(lambda: len(store._arrivals._waiting) == 1)
            for subject in ('good 1', 'poison', 'good 2'):
                senders.start(subject)
            wait_until(lambda: queued(inbox) == 3)
        senders.join()
        assert senders.codes == {'first': 250, 'good 1': 250, 'poison': 451, 'good 2': 250}
        assert sorted(m['Subject'] for m in store.listing()['messages']) == [
            'first', 'good 1', 'good 2']
        assert inbox.inbox.capture.stats['accepted'] == 3


def test_commit_all_writes_one_callers_items_together_and_fails_each_alone(tmp_path):
    store = Store(str(tmp_path / 'all.db'))
    commits = GroupCommit(store.database, lambda tx, items: [
        tx.db.execute('UPDATE meta SET value = value + ? WHERE key = ?',
                      (1 / item, 'changes')).rowcount for item in items])   # 1 / 0 fails
    assert commits.commit_all([1, 2, 4]) == [1, 1, 1]
    assert commits.commits == 1
    outcomes = commits.commit_all([1, 0, 2])
    assert outcomes[0] == outcomes[2] == 1
    assert isinstance(outcomes[1], Failed) and isinstance(outcomes[1].error, ZeroDivisionError)
    assert commits.commits == 3         # the batch failed, then 1 and 2 alone


def open_files(path) -> int:
    """How many of this process's descriptors name `path`."""
    count = 0
    for fd in os.listdir('/proc/self/fd'):
        try:
            count += os.readlink(f'/proc/self/fd/{fd}') == str(path)
        except OSError:
            pass
    return count


def ingest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == 'smtp_stack-inbox-ingest']


def test_stopping_the_inbox_ends_its_ingest_thread_and_closes_its_files(tmp_path):
    """The ingest thread, with its SQLite connection, ends when the inbox
    stops instead of 10 s later (a test run of many inboxes ran out of
    descriptors select() can take)."""
    db = tmp_path / 'inbox.db'
    inbox = InboxThread(db, store_process=False).start()
    try:
        send(inbox.smtp, make_mail(subject='one'))
        assert ingest_threads()
    finally:
        inbox.stop()
    wait_until(lambda: not ingest_threads())        # the ingest thread ends with the inbox
    wait_until(lambda: open_files(db) == 0)         # and no connection keeps the file open


@pytest.mark.parametrize('store_process', [True, False], ids=['process', 'thread'])
def test_the_verbose_line_looks_for_the_subject_in_the_messages_start_only(tmp_path,
                                                                          store_process):
    """The line is made on the SMTP hub: its Subject is looked for in the
    first 16 KiB, so a huge header section costs it nothing (one field
    beyond that: no subject in the line; the message is stored whole)."""
    folded = (b'From: a@example.com\r\nTo: b@example.com\r\n'
              b'Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n again\r\n\r\nhi\r\n')
    late = (b'From: a@example.com\r\nTo: b@example.com\r\nX-Padding: ' + b'y' * 20_000
            + b'\r\nSubject: too late to be seen\r\n\r\nhi\r\n')
    with kept_lines('smtp_stack.inbox') as lines, \
            InboxThread(tmp_path / 'inbox.db', verbose=True,
                        store_process=store_process) as inbox:
        with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
            client.sendmail('a@example.com', ['b@example.com'], folded)
            client.sendmail('a@example.com', ['b@example.com'], late)
        subjects = [m['Subject'] for m in Http(inbox.url).json('GET', '/api/v1/messages')
                    ['messages']]
    stored = [line for line in lines.lines if 'stored in the inbox' in line]
    assert [line.rsplit('subject=', 1)[1] for line in stored] == [
        '"=?utf-8?q?Gr=C3=BC=C3=9Fe?= again"', '""'], stored
    assert subjects == ['too late to be seen', 'Grüße again']
