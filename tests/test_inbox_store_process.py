"""The inbox's store process (smtp_stack.inbox.store_process), over real
sockets: messages accepted over SMTP are stored by a child process; one
that ends is logged once and started again; the messages it had get 451
and are not stored; an idle one ends; none is left when the inbox stops."""
from __future__ import annotations

import email.policy
import os
import signal
import smtplib
import subprocess
import sys
import tracemalloc

import pytest

from conftest import wait_until
from peers import running
from inbox_helpers import WAIT, Http, InboxThread, Senders, make_mail, send
from log_lines import kept_lines
from smtp_stack.inbox import store_process, store_wire
from smtp_stack import SmtpServer
from smtp_stack.inbox.capture import Capture
from smtp_stack.inbox.database import WritersLock
from smtp_stack.inbox.store import Store
from smtp_stack.testing import ServerThread

def the_process(inbox: InboxThread) -> store_process.StoreProcess:
    [process] = inbox.inbox.capture.store_processes
    return process


def get_json(inbox: InboxThread, path: str):
    client = Http(inbox.url)
    try:
        return client.json('GET', path)
    finally:
        client.close()


def subjects(inbox: InboxThread) -> set[str]:
    return {m['Subject'] for m in get_json(inbox, '/api/v1/messages')['messages']}


def test_messages_are_stored_by_a_child_process_which_ends_with_the_inbox(tmp_path):
    inbox = InboxThread(tmp_path / 'inbox.db').start()
    try:
        process = the_process(inbox)
        assert wait_until(lambda: process.child_pid is not None)   # started with the inbox
        pid = process.child_pid
        assert pid != os.getpid()
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            command = f.read()
        assert b'smtp_stack.inbox.store_process' in command or b'inbox store' in command
        for n in range(3):
            send(inbox.smtp, make_mail(subject=f'message {n}'))
        assert subjects(inbox) == {'message 0', 'message 1', 'message 2'}
        # their words wait for the index; a search of the web side puts them there
        assert inbox.inbox.store.unindexed() == 3
        found = get_json(inbox, '/api/v1/search?query=%22message%201%22')
        assert [m['Subject'] for m in found['messages']] == ['message 1']
        assert inbox.inbox.store.unindexed() == 0
        assert process.child_pid == pid and process.started == 1
        assert inbox.inbox.capture.stats['accepted'] == 3
    finally:
        inbox.stop()
    assert not running(pid)


def test_a_child_that_ends_is_logged_once_and_the_next_message_starts_another(tmp_path):
    with kept_lines('smtp_stack.inbox') as lines, InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, make_mail(subject='before'))
        process = the_process(inbox)
        first = process.child_pid
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: process.child_pid is None)
        send(inbox.smtp, make_mail(subject='after'))
        assert subjects(inbox) == {'before', 'after'}
        assert process.child_pid not in (None, first) and process.started == 2
    ended = [line for line in lines.lines if 'store process' in line]
    assert len(ended) == 1 and f'(pid {first}) ended' in ended[0], lines.lines


def test_a_message_waiting_when_the_child_dies_gets_451_and_is_not_stored(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, make_mail(subject='stored'))
        process = the_process(inbox)
        pid = process.child_pid
        os.kill(pid, signal.SIGSTOP)        # it cannot answer: the message waits
        senders = Senders(inbox.smtp)
        senders.start('lost')
        assert wait_until(lambda: process.waiting == 1)
        os.kill(pid, signal.SIGKILL)
        senders.join()
        assert senders.codes == {'lost': 451}
        assert b'store process ended' in senders.texts['lost']
        assert subjects(inbox) == {'stored'}
        send(inbox.smtp, make_mail(subject='again'))    # a new child takes it
        assert subjects(inbox) == {'stored', 'again'}


def test_a_child_that_never_stored_anything_is_not_started_again_at_once(tmp_path):
    """One that ends before storing a message (a broken installation)
    would otherwise be started again by every message: the next ones get
    451 for a delay that doubles, and the log has one line per child."""
    with kept_lines('smtp_stack.inbox') as lines, InboxThread(tmp_path / 'inbox.db') as inbox:
        process = the_process(inbox)
        assert wait_until(lambda: process.child_pid is not None)
        os.kill(process.child_pid, signal.SIGKILL)
        assert wait_until(lambda: process.child_pid is None)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(inbox.smtp, make_mail(subject='too soon'))
        assert refused.value.smtp_code == 451
        assert process.started == 1
        assert wait_until(lambda: _accepted(inbox, 'later'), timeout=WAIT)
        assert process.started == 2
    assert sum('store process' in line for line in lines.lines) == 1


def _accepted(inbox: InboxThread, subject: str) -> bool:
    try:
        send(inbox.smtp, make_mail(subject=subject))
        return True
    except smtplib.SMTPDataError as exc:
        assert exc.smtp_code == 451
        return False


def test_an_idle_child_ends_and_the_next_message_starts_another(tmp_path, monkeypatch):
    monkeypatch.setattr(store_process, 'IDLE_SECONDS', 0.3)
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, make_mail(subject='one'))
        process = the_process(inbox)
        first = process.child_pid
        assert wait_until(lambda: process.child_pid is None and not running(first))
        send(inbox.smtp, make_mail(subject='two'))
        assert subjects(inbox) == {'one', 'two'}
        assert process.started == 2


def test_pruning_in_the_child_is_counted_by_the_web_side(tmp_path):
    """MessagesDeleted of /api/v1/info counts what the child pruned."""
    with InboxThread(tmp_path / 'inbox.db', max_messages=2) as inbox:
        for n in range(5):
            send(inbox.smtp, make_mail(subject=f'm{n}'))
        assert subjects(inbox) == {'m3', 'm4'}
        assert get_json(inbox, '/api/v1/info')['RuntimeStats']['MessagesDeleted'] == 3


def test_without_a_store_process_a_thread_stores(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', store_process=False) as inbox:
        send(inbox.smtp, make_mail(subject='threaded'))
        assert subjects(inbox) == {'threaded'}
        assert inbox.inbox.capture.store_processes == []


PATCHED = r'''
from gevent import monkey; monkey.patch_all()
import os, smtplib, sys
import gevent
from smtp_stack.inbox.service import Inbox
inbox = Inbox(sys.argv[1], smtp=('127.0.0.1', 0), http=('127.0.0.1', 0)).start()
def client():
    with smtplib.SMTP(*inbox.smtp_address[:2], timeout=10) as c:
        c.sendmail('a@example.com', ['b@example.com'], b'Subject: patched\r\n\r\nhi\r\n')
    [process] = inbox.capture.store_processes
    child = process.child_pid
    inbox.stop(2)
    print(child, process.child_pid, inbox.capture.stats['accepted'], flush=True)
gevent.spawn(inbox.serve_forever)
gevent.spawn(client).join(30)
'''


def test_in_a_process_gevent_patched_the_child_is_waited_for(tmp_path):
    """gevent's patched Popen waits on the default loop's child watcher; the
    store process is waited for through a pidfd instead, so stopping works
    whatever the hub (it raised InvalidThreadUseError)."""
    done = subprocess.run([sys.executable, '-c', PATCHED, str(tmp_path / 'inbox.db')],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and 'Error' not in done.stderr, done.stderr
    child, after, accepted = done.stdout.split()
    assert after == 'None' and accepted == '1'
    assert not running(int(child))


def test_a_child_that_does_not_answer_in_time_is_killed_and_its_message_not_kept(
        tmp_path, monkeypatch):
    """Past STORE_TIMEOUT the session answers 451 only once the child is
    dead, so the transaction it was in is rolled back, not committed
    after the refusal (a review found it committed a moment later)."""
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, make_mail(subject='first'))    # the child is up (a start takes ~0.5 s)
        monkeypatch.setattr(store_process, 'STORE_TIMEOUT', 0.5)
        process = the_process(inbox)
        pid = process.child_pid
        senders = Senders(inbox.smtp)
        with inbox.inbox.store.database.writing:     # the child cannot write meanwhile
            senders.start('late')
            senders.join()
            assert senders.codes == {'late': 451}
        assert wait_until(lambda: not running(pid))
        assert subjects(inbox) == {'first'}
        monkeypatch.undo()      # the next child's start must not count against 0.5 s
        send(inbox.smtp, make_mail(subject='next'))
        assert subjects(inbox) == {'first', 'next'}


def test_a_child_that_cannot_be_started_costs_one_log_line_per_try(tmp_path, monkeypatch):
    with kept_lines('smtp_stack.inbox') as lines, InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, make_mail(subject='first'))
        process = the_process(inbox)
        monkeypatch.setattr(sys, 'executable', str(tmp_path / 'no-such-python'))
        os.kill(process.child_pid, signal.SIGKILL)
        assert wait_until(lambda: process.child_pid is None)
        for _ in range(3):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(inbox.smtp, make_mail(subject='refused'))
            assert refused.value.smtp_code == 451
        monkeypatch.undo()
        assert wait_until(lambda: _accepted(inbox, 'later'))
    cannot = [line for line in lines.lines if 'cannot start the store process' in line]
    assert len(cannot) == 1, lines.lines


def test_a_message_too_large_for_a_frame_is_refused_and_leaves_nothing_waiting(
        tmp_path, monkeypatch):
    monkeypatch.setattr(store_wire, 'MAX_FRAME', 10_000)
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(inbox.smtp, make_mail(subject='big', text='x' * 20_000))
        assert refused.value.smtp_code == 552
        assert the_process(inbox).waiting == 0
        send(inbox.smtp, make_mail(subject='small'))
        assert subjects(inbox) == {'small'}


def test_a_fork_never_keeps_the_writers_lock(tmp_path):
    """A worker forked while a thread of its parent writes does not hold
    the lock once the parent lets it go (with an flock it did, for ever)."""
    path = str(tmp_path / 'inbox.db-lock')
    lock = WritersLock(path)
    lock.acquire()
    hold_open, closed = os.pipe()
    pid = os.fork()
    if pid == 0:                        # the forked worker: lives until the pipe closes
        os.close(closed)
        os.read(hold_open, 1)
        os._exit(0)
    os.close(hold_open)
    try:
        lock.release()
        other = subprocess.run(
            [sys.executable, '-c', 'import sys\n'
             'from smtp_stack.inbox.database import WritersLock\n'
             'WritersLock(sys.argv[1]).acquire()\nprint("taken")', path],
            capture_output=True, text=True, timeout=30)
        assert other.stdout.strip() == 'taken', other.stderr
    finally:
        os.close(closed)
        os.waitpid(pid, 0)


def test_closing_from_another_thread_ends_the_child_of_each_hub(tmp_path):
    """One Capture on two servers, each in a thread with its hub: each hub
    has its own child, and close() from a third thread ends both in their
    own hubs (a greenlet of one hub cannot be joined from another)."""
    store = Store(str(tmp_path / 'inbox.db'))
    capture = Capture(store)
    servers = []
    try:
        for _ in range(2):
            server = SmtpServer(name='localhost', max_messages=0)
            server.use(capture.delivery())
            servers.append(ServerThread(server).start())
        for n, served in enumerate(servers):
            send(served.address, make_mail(subject=f'hub {n}'))
        processes = capture.store_processes
        pids = [process.child_pid for process in processes]
        assert len(pids) == 2 and None not in pids
        capture.close()
        assert [process.child_pid for process in processes] == [None, None]
        for pid in pids:
            assert wait_until(lambda pid=pid: not running(pid))
        assert store.listing()['total'] == 2
    finally:
        for served in servers:
            served.stop(2)
        store.close()


def test_a_large_message_is_not_held_in_its_frame_while_it_is_stored(tmp_path):
    """store_batch lets go of each frame once its message is cut from it: the
    child's peak for a message is that of storing it, not that plus the frame."""
    raw = make_mail(subject='large', attachments=[
        ('big.bin', 'application/octet-stream', bytes(range(256)) * 40_000)]).as_bytes(
        policy=email.policy.SMTP)       # CRLF, as it comes over SMTP
    store = Store(str(tmp_path / 'inbox.db'))
    tracemalloc.start()
    try:
        head = store_wire.message_head(1, ['bob@example.com'], None, 'a@example.com', len(raw))
        payloads = store_wire.Frames().feed(head + raw)
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        answers = store_process.store_batch(store, payloads)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        store.close()
    assert payloads == []
    [answer] = store_wire.Frames().feed(answers)
    assert store_wire.read_reply(answer) == (1, 0, False, '')    # stored
    assert peak < 4.2 * len(raw), peak / len(raw)      # 4.75 times when the frame was kept
