"""Durable Maildir delivery under concurrency and crashes: the order of the
system calls before a 250 (write, fsync of the file, rename, fsync of new/),
the group commit of new/ (each 250 waits for an fsync that started after its
own rename), nothing accepted lost when the server is killed, and what the
per-message work no longer does (makedirs, an unlink of the renamed file)."""
import errno
import os
import re
import signal
import smtplib
import stat
import subprocess
import sys
import threading
import time

import pytest

from smtp_stack.delivery import MaildirDelivery
from smtp_stack.delivery import maildir as maildir_module
from smtp_stack.offload import Coalesced, Lanes

import peers
from conftest import WAIT, RawClient, readable, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A server in a process of its own, delivering to the Maildir argv[1]; it
# prints its pid and port, then serves until it is signalled.
SERVER = '''
import os, sys
from smtp_stack import LogLevels, SmtpServer
from smtp_stack.delivery import MaildirDelivery
server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_level=LogLevels.SILENT)
server.use(MaildirDelivery(sys.argv[1]))
server.start(0, '127.0.0.1')
print(os.getpid(), server.address[1], flush=True)
server.serve_forever()
'''


def new_files(box):
    return sorted(os.listdir(os.path.join(box, 'new')))


def subject_of(box, name):
    with open(os.path.join(box, 'new', name), 'rb') as f:
        return re.search(rb'^Subject: (.*)$', f.read(), re.M)[1].decode()


def start_server(argv_prefix, box):
    """The SERVER script (under `argv_prefix`, e.g. strace); (process, pid, port)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
    proc = subprocess.Popen([*argv_prefix, sys.executable, '-c', SERVER, box], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if readable(proc.stdout, 3 * WAIT) else ''
    if not line:
        proc.kill()
        proc.wait(WAIT)
        pytest.fail(f'the server did not start: {proc.stderr.read()[-2000:]}')
    pid, port = map(int, line.split())
    return proc, pid, port


# --- the order of the system calls (strace) --------------------------------------

SYSCALL = re.compile(r'^(\d+) +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$')
RESULT = re.compile(r'(.*)\)\s+= (\S+)', re.S)   # strace pads before '= result'



def syscalls(trace_path):
    """Every traced call, in the order the kernel finished them:
    dicts {name, args, result, start, end} (start/end: line numbers;
    a call another thread interrupted spans two lines)."""
    calls, pending = [], {}
    with open(trace_path, errors='replace') as f:
        for number, line in enumerate(f):
            match = SYSCALL.match(line.rstrip('\n'))
            if not match:
                continue
            pid, resumed, rest, name, args = match.groups()
            if resumed:
                call = pending.pop(pid, None)
                if call is None:
                    continue
                text = call['args'] + rest
            else:
                call = {'name': name, 'args': '', 'start': number}
                text = args
                if text.endswith('<unfinished ...>'):
                    call['args'] = text[:-len('<unfinished ...>')]
                    pending[pid] = call
                    continue
            ended = RESULT.match(text)
            if ended is None:           # '= ?' of a call that never returned
                continue
            call['args'], call['result'], call['end'] = ended[1], ended[2], number
            calls.append(call)
    return calls


def test_strace_shows_write_fsync_rename_fsync_of_new_then_the_250(tmp_path):
    strace = peers.program('strace', 'strace')
    box = str(tmp_path / 'mail')
    trace = str(tmp_path / 'trace')
    prefix = [strace, '-f', '-qq', '-s', '128', '-o', trace, '-e',
              'trace=openat,write,pwrite64,writev,fsync,fdatasync,rename,renameat,renameat2,'
              'sendto,sendmsg']
    proc, pid, port = start_server(prefix, box)
    try:
        with smtplib.SMTP('127.0.0.1', port, timeout=WAIT) as c:
            for n in range(3):
                c.sendmail('a@b.example', ['c@d.example'],
                           f'Subject: message {n}\r\n\r\nbody {n}\r\n')
    finally:
        os.kill(pid, signal.SIGKILL)
        proc.wait(3 * WAIT)
        proc.stdout.close()
        proc.stderr.close()
    calls = syscalls(trace)
    tmp_dir, new_dir = os.path.join(box, 'tmp') + '/', os.path.join(box, 'new')
    creates = [c for c in calls if c['name'] == 'openat' and f'"{tmp_dir}' in c['args']
               and 'O_CREAT' in c['args']]
    replies = [c for c in calls if c['name'] in ('sendto', 'sendmsg')
               and 'queued as' in c['args']]
    assert len(creates) == len(replies) == 3, (creates, replies)
    for create, reply in zip(creates, replies, strict=True):
        fd = create['result']
        tmp_name = re.search(r'"([^"]+)"', create['args'])[1]
        later = [c for c in calls if c['start'] > create['end']]
        writes = [c for c in later if c['name'] in ('write', 'writev', 'pwrite64')
                  and c['args'].startswith(f'{fd},') and c['end'] < reply['start']]
        assert writes, f'no write of {tmp_name} before its 250'
        [fsync] = [c for c in later if c['name'] in ('fsync', 'fdatasync')
                   and c['args'] == fd][:1]
        assert fsync['start'] > max(w['end'] for w in writes)
        [rename] = [c for c in later if c['name'].startswith('rename')
                    and f'"{tmp_name}"' in c['args']]
        assert rename['result'] == '0' and f'"{new_dir}/' in rename['args']
        assert rename['start'] > fsync['end']
        # new/ opened, and fsync'd after the rename finished, before the 250 began
        dir_fds = {c['result'] for c in calls if c['name'] == 'openat'
                   and f'"{new_dir}"' in c['args'] and 'O_DIRECTORY' in c['args']}
        covering = [c for c in calls if c['name'] == 'fsync' and c['args'] in dir_fds
                    and c['start'] > rename['end'] and c['end'] < reply['start']
                    and c['result'] == '0']
        assert covering, f'no fsync of new/ between the rename of {tmp_name} and its 250'
    assert len(new_files(box)) == 3


# --- group commit ------------------------------------------------------------------

def test_concurrent_messages_share_the_fsync_of_new_and_each_waits_for_its_own(
        serve, tmp_path, monkeypatch):
    """Ten messages end at once while each fsync of new/ takes 0.3 s: they
    share a few fsyncs, and each 250 comes after an fsync of new/ that
    started after that message's rename and has finished."""
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    real_fsync, real_rename = os.fsync, os.rename
    dir_syncs, renamed, lock = [], {}, threading.Lock()

    def fsync(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return real_fsync(fd)
        started = time.monotonic()
        time.sleep(0.3)
        real_fsync(fd)
        with lock:
            dir_syncs.append((started, time.monotonic()))

    def rename(src, dst):
        real_rename(src, dst)
        with lock:
            renamed[os.path.basename(dst)] = time.monotonic()
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'rename', rename)

    count = 10
    ready = threading.Barrier(count, timeout=WAIT)
    answered = {}

    def send(n):
        c = RawClient(server.address)
        try:
            c.expect(220)
            c.expect(250, 'EHLO x')
            c.expect(250, 'MAIL FROM:<a@b.example>')
            c.expect(250, 'RCPT TO:<c@d.example>')
            c.expect(354, 'DATA')
            ready.wait()
            c.send(f'Subject: client {n}\r\n\r\nhello\r\n.\r\n')
            code, _ = c.reply()
            answered[f'client {n}'] = (code, time.monotonic())
        finally:
            c.close()
    threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * WAIT)
    assert len(answered) == count and all(code == 250 for code, _ in answered.values())
    assert len(dir_syncs) <= count // 2, dir_syncs     # shared, not one per message
    for name in new_files(box):
        _, replied = answered[subject_of(box, name)]
        assert any(start > renamed[name] and end < replied for start, end in dir_syncs), (
            f'{name}: no fsync of new/ started after its rename and ended before its 250')


def test_a_failed_fsync_of_new_fails_the_messages_it_covers_and_not_the_next(
        serve, tmp_path, monkeypatch):
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    real_fsync = os.fsync
    failures = [1]

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode) and failures:
            failures.pop()
            raise OSError(errno.EIO, 'I/O error')
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail('a@b.example', ['c@d.example'], 'Subject: first\r\n\r\nx\r\n')
        assert err.value.smtp_code == 451
        c.sendmail('a@b.example', ['c@d.example'], 'Subject: second\r\n\r\nx\r\n')
    [name] = new_files(box)
    assert subject_of(box, name) == 'second'
    assert os.listdir(os.path.join(box, 'tmp')) == []


def test_coalesced_reports_an_error_to_the_callers_it_covered():
    """Without a hub the call runs in place: the error reaches the caller."""
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EIO, 'I/O error')
    shared = Coalesced(flaky)
    with pytest.raises(OSError):
        shared.call()
    shared.call()
    assert len(calls) == 2


def test_coalesced_runs_once_for_the_greenlets_that_waited_together():
    import gevent
    runs = []

    def slow():
        runs.append(time.monotonic())
        time.sleep(0.1)
    shared = Coalesced(slow)
    first = gevent.spawn(shared.call)
    gevent.sleep(0.02)                  # the first run is in flight
    rest = [gevent.spawn(shared.call) for _ in range(5)]
    assert gevent.joinall([first, *rest], timeout=WAIT, raise_error=True)
    assert len(runs) == 2               # the five share the run after the first
    assert shared.waiting == 0


def test_lanes_run_calls_in_their_threads_while_the_hub_goes_on():
    import gevent
    lanes = Lanes(2)
    ticks = []

    def tick():
        while True:
            ticks.append(1)
            gevent.sleep(0.01)
    ticker = gevent.spawn(tick)
    try:
        gevent.sleep(0.02)
        before = len(ticks)
        idents = gevent.joinall([gevent.spawn(lanes.call, lambda: (time.sleep(0.2),
                                                                   threading.get_ident())[1])
                                 for _ in range(2)], timeout=WAIT, raise_error=True)
        during = len(ticks) - before
    finally:
        ticker.kill()
    assert during >= 10, during        # the hub ran while both calls blocked their threads
    assert len({g.value for g in idents} | {threading.get_ident()}) == 3


def test_lanes_raise_in_the_caller_and_survive_a_killed_caller():
    import gevent
    lanes = Lanes(1, idle=0.2)

    def fail():
        raise OSError(errno.EIO, 'I/O error')
    with pytest.raises(OSError):
        lanes.call(fail)
    waiting = gevent.spawn(lanes.call, time.sleep, 0.2)
    gevent.sleep(0.05)
    waiting.kill()                      # its result arrives later and is dropped
    assert lanes.call(lambda: 42) == 42
    lane = next(iter(lanes._lanes.values()))
    assert wait_until(lambda: lane.alive == 0)      # idle threads end
    assert lanes.call(lambda: 43) == 43             # and start again when needed
    assert lane.pending == 0 and not lane.watcher.ref


def test_lanes_without_a_hub_run_in_place():
    seen = {}

    def run():
        seen['ident'] = Lanes(2).call(threading.get_ident)
    t = threading.Thread(target=run)
    t.start()
    t.join(WAIT)
    assert seen['ident'] == t.ident


def test_a_slow_disk_keeps_the_hub_running(serve, client, tmp_path, monkeypatch):
    """While a message's fsync takes a second, another session is served."""
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    real_fsync, in_fsync = os.fsync, threading.Event()

    def slow_fsync(fd):
        in_fsync.set()
        time.sleep(1.0)
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', slow_fsync)
    writer = client(server)
    writer.expect(250, 'EHLO x')
    writer.expect(250, 'MAIL FROM:<a@b.example>')
    writer.expect(250, 'RCPT TO:<c@d.example>')
    writer.expect(354, 'DATA')
    writer.send(b'Subject: slow\r\n\r\nx\r\n.\r\n')
    assert in_fsync.wait(WAIT)
    started = time.monotonic()
    other = client(server)              # the greeting, then a reply
    other.expect(250, 'NOOP')
    assert time.monotonic() - started < 0.5
    assert writer.reply()[0] == 250


# --- kill -9 -----------------------------------------------------------------------

def test_kill_9_loses_no_message_that_got_its_250(tmp_path):
    box = str(tmp_path / 'mail')
    proc, pid, port = start_server([], box)
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()

    def sender(n):
        try:
            c = RawClient(('127.0.0.1', port))
            c.expect(220)
            c.expect(250, 'EHLO x')
            for i in range(10_000):
                if stop.is_set():
                    break
                c.expect(250, 'MAIL FROM:<a@b.example>')
                c.expect(250, 'RCPT TO:<c@d.example>')
                c.expect(354, 'DATA')
                c.send(f'Subject: sender {n} message {i}\r\n\r\nbody\r\n.\r\n')
                if c.reply()[0] == 250:
                    with lock:
                        acknowledged.append(f'sender {n} message {i}')
        except (OSError, AssertionError, ValueError):
            pass            # the kill reached this session
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(acknowledged) >= 60)
    finally:
        os.kill(pid, signal.SIGKILL)
        stop.set()
        proc.wait(WAIT)
        proc.stdout.close()
        proc.stderr.close()
        for t in threads:
            t.join(WAIT)
    stored = {subject_of(box, name) for name in new_files(box)}
    with lock:
        lost = [m for m in acknowledged if m not in stored]
    assert lost == [], f'{len(lost)} of {len(acknowledged)} acknowledged messages lost'


# --- what each message no longer costs -------------------------------------------

def test_no_makedirs_and_no_unlink_per_message(serve, tmp_path, monkeypatch):
    template = str(tmp_path / '{local}')
    server = serve(middleware=[MaildirDelivery(template)])
    made, unlinked = [], []
    real_makedirs, real_unlink = os.makedirs, os.unlink
    monkeypatch.setattr(os, 'makedirs', lambda *a, **k: (made.append(a[0]),
                                                         real_makedirs(*a, **k)))
    monkeypatch.setattr(os, 'unlink', lambda p: (unlinked.append(p), real_unlink(p)))
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['ann@d.example'], 'Subject: x\r\n\r\nx\r\n')
        first = list(made)
        for _ in range(2):
            c.sendmail('a@b.example', ['ann@d.example'], 'Subject: x\r\n\r\nx\r\n')
    assert len(new_files(str(tmp_path / 'ann'))) == 3
    assert first and made == first      # made when first seen, not per message
    assert unlinked == []


def test_a_maildir_removed_while_serving_is_made_again(serve, tmp_path):
    import shutil
    box = str(tmp_path / 'mail')
    server = serve(middleware=[MaildirDelivery(box)])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], 'Subject: one\r\n\r\nx\r\n')
        shutil.rmtree(box)
        c.sendmail('a@b.example', ['c@d.example'], 'Subject: two\r\n\r\nx\r\n')
    [name] = new_files(box)
    assert subject_of(box, name) == 'two'


# --- large bodies: batches written by a worker thread ------------------------------

def test_a_large_body_is_written_in_batches_with_crlf_split_between_them(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(maildir_module, 'SPILL', 8)
    box = str(tmp_path / 'mail')
    maildir_module.ensure_maildir(box)
    draft = maildir_module._Draft(os.path.join(box, 'tmp', 'draft'), 0o700)
    pieces = [b'Subject: x\r', b'\n\r\nline one\r', b'\nline two\r\n', b'\r', b'\n']
    for piece in pieces:
        draft.add(piece)
    assert draft.fd is not None         # spilled: the file exists before the end
    name, outcomes = maildir_module._place(draft, draft.take(final=True), [box])
    assert outcomes == [None] and name == 'draft,S=31'
    with open(os.path.join(box, 'new', name), 'rb') as f:
        assert f.read() == b'Subject: x\n\nline one\nline two\n\n'
    assert os.listdir(os.path.join(box, 'tmp')) == []


def test_a_large_message_is_stored_whole(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    lines = b''.join(b'line %07d ' % n + b'x' * 60 + b'\r\n' for n in range(20_000))
    c.send(b'Subject: big\r\n\r\n' + lines + b'.\r\n')
    assert c.reply()[0] == 250
    [name] = new_files(box)
    with open(os.path.join(box, 'new', name), 'rb') as f:
        assert f.read().endswith(b'\n\n' + lines.replace(b'\r\n', b'\n'))


def test_a_client_gone_after_a_spill_leaves_no_file(serve, client, tmp_path):
    box = str(tmp_path / 'mail')
    done = threading.Event()
    c = client(serve(middleware=[MaildirDelivery(box)], on_close=lambda s: done.set()))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: half\r\n\r\n' + (b'z' * 998 + b'\r\n') * 1000)
    assert wait_until(lambda: os.listdir(os.path.join(box, 'tmp')))   # spilled
    c.close()
    assert done.wait(WAIT)
    assert wait_until(lambda: os.listdir(os.path.join(box, 'tmp')) == [])
    assert new_files(box) == []


def test_a_failed_spill_gives_452_and_leaves_no_file(serve, client, tmp_path, monkeypatch):
    box = str(tmp_path / 'mail')
    c = client(serve(middleware=[MaildirDelivery(box)]))
    real_write = os.write

    def full(fd, data):
        if os.path.dirname(os.readlink(f'/proc/self/fd/{fd}')) == os.path.join(box, 'tmp'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_write(fd, data)
    monkeypatch.setattr(os, 'write', full)
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: big\r\n\r\n' + (b'y' * 998 + b'\r\n') * 1000 + b'.\r\n')
    assert c.reply()[0] == 452
    assert os.listdir(os.path.join(box, 'tmp')) == [] and new_files(box) == []
    assert c.cmd('NOOP')[0] == 250
