"""The recipients policy over real SMTP sessions, and its file of
addresses: read again when it changes, in the hub's thread pool."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import gevent
import pytest
from gevent.monkey import get_original
from gevent.threadpool import ThreadPool

from smtp_stack.policies import recipients

from clirunner import env_with_package
from policy_services import WAIT, HubPauses, rcpt, serve, wait_for  # noqa: F401 (fixtures)


def test_recipients_relay_denied_unknown_user_and_catch_all(serve):
    server = serve(recipients(domains=['catchall.test'], addresses=['alice@example.test']))
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'alice@example.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'Alice+news@EXAMPLE.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'bob@example.test') == \
        (550, b'5.1.1 No such user here')
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'anyone@catchall.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'x@elsewhere.test') == \
        (554, b'5.7.1 Relay access denied')


def test_recipients_lookup_and_authenticated_relay(serve):
    users = {'carol@lookup.test'}
    server = serve(recipients(domains=['lookup.test'], lookup=users.__contains__),
                   on_auth=lambda session: {'name': session.auth.username})
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'carol@lookup.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'dave@lookup.test')[0] == 550
    # an authenticated client (XCLIENT LOGIN) may send anywhere
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'x@elsewhere.test', login='carol')[0] == 250


def test_recipients_file_is_read_again_when_it_changes(serve, tmp_path):
    path = tmp_path / 'rcpts'
    path.write_text('# users\nerin@file.test\n')
    policy = recipients(addresses_file=str(path))
    server = serve(policy)
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'erin@file.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 550
    path.write_text('erin@file.test\nfrank@file.test  # new\n')
    policy.reload()
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 250


def test_recipients_needs_something_to_accept():
    with pytest.raises(ValueError):
        recipients()


def test_recipients_file_edit_is_seen_within_a_second(serve, tmp_path):
    """No reload, no SIGHUP: the file is looked at again once a second."""
    path = tmp_path / 'rcpts'
    path.write_text('erin@file.test\n')
    server = serve(recipients(addresses_file=str(path)))
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'gina@file.test')[0] == 550
    path.write_text('erin@file.test\ngina@file.test\n')
    started = time.monotonic()
    assert wait_for(lambda: rcpt(server, '192.0.2.5', 'a@x.test', 'gina@file.test')[0] == 250,
                    timeout=5)
    assert time.monotonic() - started < 2.5
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'erin@file.test')[0] == 250


def test_recipients_file_that_vanished_or_cannot_be_read_keeps_the_last_good_list(
        serve, tmp_path, caplog):
    path = tmp_path / 'rcpts'
    path.write_text('erin@file.test\n')
    policy = recipients(addresses_file=str(path))
    server = serve(policy)
    path.unlink()
    policy.reload()
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'erin@file.test')[0] == 250
    assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 550
    path.write_bytes(b'frank@file.test\n\xff\xfe not UTF-8\n')
    with caplog.at_level('WARNING', logger='smtp_stack.policies'):
        for _ in range(2):
            policy.reload()
            assert rcpt(server, '192.0.2.5', 'a@x.test', 'erin@file.test')[0] == 250
            assert rcpt(server, '192.0.2.5', 'a@x.test', 'frank@file.test')[0] == 550
    assert sum('cannot be read' in r.getMessage() for r in caplog.records) == 1  # per version


# -- the file is read off the hub ---------------------------------------------------------

def until(predicate, timeout: float = WAIT) -> bool:
    """Poll `predicate` from a greenlet (gevent.sleep: the hub runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True


def blocked_read_scenario(directory: str) -> float:
    """The addresses file becomes a FIFO, so the policy's next read blocks
    until a writer comes, as a read from a hung network mount would. The
    writer is a native thread (a ThreadPool's, so in a monkey-patched
    process too) that opens the FIFO, which succeeds only once the policy's
    read has opened it, and writes the new list when released (a pipe).
    Returns the longest pause of a greenlet ticking every 10 ms."""
    path = os.path.join(directory, 'rcpts')
    with open(path, 'w') as f:
        f.write('erin@file.test\n')
    book = recipients(addresses_file=path).file
    os.remove(path)
    os.mkfifo(path)
    release_r, release_w = os.pipe()
    opened = []
    poll = get_original('select', 'poll')      # blocking, in the writer's native thread

    def writer():
        with open(path, 'w') as fifo:
            opened.append(True)
            watch = poll()      # poll(): select() takes no descriptor past 1023
            watch.register(release_r)
            watch.poll(WAIT * 1000)
            fifo.write('erin@file.test\nfrank@file.test\n')
    pool = ThreadPool(1)
    job = pool.spawn(writer)
    pauses = HubPauses().start()
    try:
        now = time.monotonic()      # one clock value throughout: no second check falls due
        book.reload()
        started = time.monotonic()
        assert 'frank@file.test' not in book.current(now)   # waited, then the last good list
        assert time.monotonic() - started < book.wait + 0.5
        assert until(lambda: opened), 'the policy never opened the file'
        started = time.monotonic()
        assert 'frank@file.test' not in book.current(now + 5)    # one check at a time ...
        assert time.monotonic() - started < 0.1                  # ... and the others do not wait
        os.write(release_w, b'x')
        assert until(lambda: 'frank@file.test' in book.current(now)), 'the new list never came'
        job.get(timeout=WAIT)
    finally:
        pauses.stop()
        os.write(release_w, b'x')
        if not job.ready():         # the writer still waits for a reader: give it one
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        job.wait(WAIT)
        pool.kill()
        os.close(release_r)
        os.close(release_w)
    return pauses.longest


def test_a_file_read_that_blocks_keeps_the_hub_running(tmp_path):
    """The stat and the read run in the hub's thread pool: while the read
    hangs, other greenlets keep their pace, the RCPT that started the check
    waits at most `wait` seconds, and the others use the current list."""
    gap = blocked_read_scenario(str(tmp_path))
    assert gap < 0.2, f'the hub stopped for {gap:.2f} s'


def test_a_file_read_that_blocks_keeps_the_hub_running_when_monkey_patched(tmp_path):
    """The same in a process that gevent monkey-patched (where file I/O
    still blocks the hub: gevent patches sockets, not files)."""
    script = ('from gevent import monkey; monkey.patch_all()\n'
              'import sys; sys.path.insert(0, sys.argv[1])\n'
              'from test_policies_recipients import blocked_read_scenario\n'
              'print(blocked_read_scenario(sys.argv[2]))\n')
    out = subprocess.run([sys.executable, '-c', script, os.path.dirname(__file__), str(tmp_path)],
                         capture_output=True, text=True, timeout=30, env=env_with_package())
    assert out.returncode == 0, out.stderr
    gap = float(out.stdout.split()[-1])
    assert gap < 0.2, f'the hub stopped for {gap:.2f} s'
