"""The inbox's store in a process of its own, fed by the SMTP process.

Why: reading a message into its rows (parsing, shaping, tagging) is
Python, and so is the SMTP side; in one process they take turns on one
GIL, which capped ingest near 650 messages a second whatever the cores
(docs/performance.md, "The development inbox under load"). Here the SMTP
process hands each accepted message over a socket pair to a child, `python
-m smtp_stack.inbox.store_process FD`, which stores what waits in one
transaction (`Store.add_all`) and answers each message; its session gets
its 250 once that answer says the transaction holding it committed, so
what is accepted is in the file, as before. A message the child could not
store, and every message waiting when it ended, get 451 (the client sends
them again) and are not kept: a child that does not answer within
STORE_TIMEOUT is killed, so the transaction it was in rolls back, and the
answers it had written are read before the others are refused. The web
side goes on reading the same file in the SMTP process, nudged after each
answer.

The child ends when its socket closes: when the inbox stops, when it has
had nothing to do for IDLE_SECONDS, or when the SMTP process ends however
it ends. One that ends unasked is logged once and started again with the
next message, not sooner than a delay that doubles (up to a minute) while
children end without storing anything. It ignores SIGINT and SIGTERM, so
that Ctrl-C or a stop signal to the process group lets it finish what it
was handed and end with its socket.

The parent side is gevent: each session greenlet sends its frame and
waits; one reader greenlet per child hands the answers out. The frames
are store_wire.py's.
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket
from gevent import monkey
from gevent.hub import Waiter
from gevent.lock import Semaphore

from ..errors import SmtpError
from ..proctitle import set_process_title
from .database import Failed
from .mailboxes import Routing
from .store import DUPLICATE, Incoming, Store
from .store_wire import Frames, frame, message_head, read_message, read_reply, reply
from .tags import TagRule

log = logging.getLogger('smtp_stack.inbox')

BATCH_MAX = 64              # messages one transaction takes at most: bounds a session's wait
STORE_TIMEOUT = 60.0        # seconds a session waits for its answer before the child is ended
IDLE_SECONDS = 60.0         # a child with nothing to do ends after this long
RESTART_DELAY = 1.0         # seconds before a child that ended unasked is started again...
RESTART_DELAY_MAX = 60.0    # ... doubling to this while children store nothing
READ_SIZE = 1 << 16
REAP_SECONDS = 10.0         # a child is given this long to exit once its answers ended
# The real waitpid even in a process gevent patched (its own waits on the
# default loop's child watcher, which a hub in another thread has not).
_waitpid: Callable[[int, int], tuple[int, int]] = monkey.get_original('os', 'waitpid')


@dataclass(frozen=True)
class StoreSettings:
    """What the child needs to open the same store: the parent's settings
    when the child starts (tag rules and the rest are set after Store())."""
    path: str
    max_messages: int
    routing: Routing
    tag_rules: tuple[TagRule, ...]
    tags_disabled: frozenset[str]
    tag_username: bool
    tags_title_case: bool = False
    use_message_dates: bool = False
    ignore_duplicate_ids: bool = False

    @classmethod
    def of(cls, store: Store) -> StoreSettings:
        return cls(store.path, store.max_messages, store.routing, tuple(store.tag_rules),
                   store.tags_disabled, store.tag_username, store.tags_title_case,
                   store.use_message_dates, store.ignore_duplicate_ids)

    def open(self) -> Store:
        store = Store(self.path, self.max_messages, self.routing)
        store.tag_rules = list(self.tag_rules)
        store.tags_disabled = self.tags_disabled
        store.tag_username = self.tag_username
        store.tags_title_case = self.tags_title_case
        store.use_message_dates = self.use_message_dates
        store.ignore_duplicate_ids = self.ignore_duplicate_ids
        return store


class StoreProcessError(SmtpError):
    """The store process did not store a message: 451, saying why (the
    session's refusal line carries it; no traceback, however many fail)."""

    def __init__(self, reason: str) -> None:
        self.reason = ' '.join(reason.split())[:300]     # one reply line (RFC 5321 4.5.3.1.5)
        super().__init__(451, f'Error: local error, message not stored ({self.reason})',
                         '4.3.0')


# -- the parent (the SMTP process, gevent) ----------------------------------------------------


class StoreProcess:
    """The child storing the messages of one hub's sessions: started with
    the first message, started again after it ended."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pid = os.getpid()          # a fork's child makes its own
        self._child: _Child | None = None
        self._not_before = 0.0          # monotonic: no new child before
        self._delay = RESTART_DELAY
        self.started = 0                # children started so far
        self.idle_seconds = IDLE_SECONDS    # for the children started after it is set

    @property
    def child_pid(self) -> int | None:
        """The running child's process ID, None when none runs."""
        child = self._child
        return child.proc.pid if child is not None and child.usable else None

    @property
    def waiting(self) -> int:
        """Messages handed to the running child and not answered yet."""
        child = self._child
        return len(child.waiting) if child is not None else 0

    def start(self) -> None:
        """Start the child now rather than with the first message (it takes
        a few hundred milliseconds to import the store)."""
        self._running()

    def put(self, raw: bytes, recipients: Sequence[str], username: str | None,
            sender: str | None) -> bool:
        """Store one message; returns once the transaction holding it has
        committed (False: left out, its Message-ID a duplicate), raises
        StoreProcessError saying why it was not stored."""
        return self._running().put(raw, recipients, username, sender)

    def close(self, timeout: float = 10.0) -> None:
        """End the child once what it was handed is answered, and wait for it."""
        child, self._child = self._child, None
        if child is not None:
            child.close(timeout)

    def _running(self) -> _Child:
        child = self._child
        if child is not None and child.usable:
            return child
        now = time.monotonic()
        if child is not None:
            self._child = None
            if child.stored:
                self._delay = RESTART_DELAY
            elif not child.asked_to_end:
                self._later(now)
        if now < self._not_before:
            raise StoreProcessError('the store process ended; it is started again in '
                                    f'{self._not_before - now:.1f} s')
        try:
            child = _Child(self.store, self._on_end, self.idle_seconds)
        except OSError as exc:          # no process (EAGAIN, EMFILE, ENOMEM, no python)
            self._later(now)
            log.error('inbox: cannot start the store process: %s; messages get 451, '
                      'the next try in %.0f s', exc, self._not_before - now)
            raise StoreProcessError(f'cannot start the store process: {exc}') from None
        self._child = child
        self.started += 1
        return child

    def _later(self, now: float) -> None:
        """No child before the delay; the delay doubles (up to a minute)."""
        self._not_before = now + self._delay
        self._delay = min(self._delay * 2, RESTART_DELAY_MAX)

    def _on_end(self, child: _Child, reason: str) -> None:
        if not child.asked_to_end:
            log.error('inbox: the store process (pid %d) ended: %s; the messages it had '
                      'were answered 451, and the next one starts it again',
                      child.proc.pid, reason)


class _Child:
    """One child process, its socket and its reader greenlet. The reader is
    the only one to end it: at the end of the child's answers (EOF) it
    fails whoever still waits, closes the socket and reaps the child. To
    end a child is to make its answers end: shut our side (it answers what
    it has and exits) or kill it (SIGKILL: what it had not committed is
    rolled back, what it had answered is read first)."""

    def __init__(self, store: Store, on_end: Callable[[_Child, str], None],
                 idle_seconds: float) -> None:
        self.store = store
        self.idle_seconds = idle_seconds
        self.on_end = on_end
        self.alive = True
        self.asked_to_end = False       # ended by us: idle, or the inbox stopping
        self.killed = False
        self.reason: str | None = None  # why it ends, as first known
        self.stored = 0
        self.waiting: dict[int, Any] = {}   # seq -> gevent Waiter of the session
        self.sending = Semaphore()      # a frame goes out whole
        self._seq = 0
        self._hub = gevent.get_hub()
        self.sock, theirs = gevent.socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_child_environment(),
                close_fds=True)
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        try:
            # its exit is waited for on this fd, never by its (reusable) PID
            self.pidfd = os.pidfd_open(self.proc.pid)
        except OSError:
            self.pidfd = -1             # gone already (reaped by gevent's child watcher)
        try:
            self.sock.sendall(frame(pickle.dumps(StoreSettings.of(store))))
        except OSError as exc:
            self.reason = f'cannot give it the settings: {exc}'
            self.kill()
        self.reader = gevent.spawn(self._read)

    @property
    def usable(self) -> bool:
        """Takes messages: alive and not being ended."""
        return self.alive and not self.asked_to_end and not self.killed

    def put(self, raw: bytes, recipients: Sequence[str], username: str | None,
            sender: str | None) -> bool:
        self._seq = seq = self._seq % 0xFFFFFFFF + 1
        try:
            head = message_head(seq, recipients, username, sender, len(raw))
        except ValueError as exc:
            raise SmtpError(552, f'Error: {exc}', '5.3.4') from None
        waiter = Waiter(self._hub)
        self.waiting[seq] = waiter
        try:
            try:
                with self.sending:
                    self.sock.sendall(head + raw if len(raw) < READ_SIZE else head)
                    if len(raw) >= READ_SIZE:
                        self.sock.sendall(raw)
            except OSError as exc:      # a frame cut short: the stream is lost
                self.kill(f'cannot write to it: {exc}')
                raise StoreProcessError(f'the store process is gone: {exc}') from None
            error, duplicate = self._answer_of(waiter)
        finally:
            self.waiting.pop(seq, None)
        if error:
            raise StoreProcessError(error)
        return not duplicate

    def _answer_of(self, waiter: Any) -> tuple[str, bool]:
        """The answer to a message, waited for STORE_TIMEOUT; past it the
        child is killed, and the answer is then whatever it had written (its
        transaction committed) or its end (rolled back)."""
        try:
            with gevent.Timeout(STORE_TIMEOUT):
                answer: tuple[str, bool] = waiter.get()
                return answer
        except gevent.Timeout:
            self.kill(f'no answer within {STORE_TIMEOUT:.0f} s')
        try:
            with gevent.Timeout(REAP_SECONDS):
                answer = waiter.get()
                return answer
        except gevent.Timeout:
            return f'no answer within {STORE_TIMEOUT:.0f} s', False

    def _read(self) -> None:
        """The reader greenlet: each answer to the session waiting for it;
        at the end, the end of the child."""
        frames = Frames()
        reason = 'it closed its socket'
        self.sock.settimeout(self.idle_seconds)
        try:
            while True:
                try:
                    data = self.sock.recv(READ_SIZE)
                except TimeoutError:
                    if not self.waiting and not self.sending.locked():
                        self.finish()       # idle: the next message starts another
                    continue
                except OSError as exc:
                    reason = f'its socket failed: {exc}'
                    self.kill()
                    break
                if not data:
                    break
                self._answer(frames.feed(data))
        except BaseException as exc:    # noqa: BLE001 - nothing escapes the greenlet
            reason = f'reading its answers failed: {exc!r}'
            self.kill()
        finally:
            self._end(self.reason or reason)

    def _answer(self, answers: list[bytes]) -> None:
        stored = 0
        for payload in answers:
            seq, deleted, duplicate, error = read_reply(payload)
            self.store.deleted += deleted
            if seq == 0:            # the store's opening
                if error:
                    self.reason = self.reason or f'it could not open the store: {error}'
                continue
            waiter = self.waiting.pop(seq, None)
            if not error and not duplicate:
                stored += 1
            if waiter is not None:
                self._hub.loop.run_callback(waiter.switch, (error, duplicate))
        if stored:
            self.stored += stored
            self.store.database.changed()       # the websocket broker looks now

    def finish(self) -> None:
        """No more messages: the child reads to the end of what it was sent,
        answers it, and exits; the reader reads the answers to the end."""
        if self.asked_to_end or not self.alive:
            return
        self.asked_to_end = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.kill(f'cannot end its input: {exc}')

    def kill(self, reason: str | None = None) -> None:
        """SIGKILL: its socket closes, the reader reads what it had written."""
        self.reason = self.reason or reason
        if self.killed or not self.alive:
            return
        self.killed = True
        try:
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.pidfd < 0:      # never had one: closing our side is all there is
            self.sock.close()

    def close(self, timeout: float) -> None:
        """End the child once it has answered what it was sent, and wait for
        it (past `timeout`, kill it)."""
        self.finish()
        self.reader.join(timeout)
        if not self.reader.dead:
            self.kill('it did not end when the inbox stopped')
            self.reader.join(REAP_SECONDS * 2)

    def _end(self, reason: str) -> None:
        """In the reader, once the answers ended: fail whoever waits, close
        the socket, reap the child."""
        self.alive = False
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            self._hub.loop.run_callback(waiter.switch,
                                        (f'the store process ended: {reason}', False))
        try:
            self.on_end(self, reason)
        finally:
            self.sock.close()
            self._reap()

    def _reap(self) -> None:
        """Wait for the exit on the pidfd (the hub goes on); past
        REAP_SECONDS kill it; then collect its status."""
        if self.pidfd < 0:
            return
        try:
            if not _readable(self.pidfd, REAP_SECONDS):
                log.warning('inbox: the store process (pid %d) did not end; killed',
                            self.proc.pid)
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                _readable(self.pidfd, REAP_SECONDS)
            try:
                pid, status = _waitpid(self.proc.pid, os.WNOHANG)
                self.proc.returncode = os.waitstatus_to_exitcode(status) if pid else None
            except ChildProcessError:       # gevent's child watcher took it
                self.proc.returncode = 0
        finally:
            os.close(self.pidfd)
            self.pidfd = -1


def _readable(fd: int, timeout: float) -> bool:
    try:
        gevent.socket.wait_read(fd, timeout)
        return True
    except TimeoutError:
        return False


def _child_environment() -> dict[str, str]:
    """This process's environment, with this smtp_stack's directory first on
    the path: the child imports the same code (a checkout, not whatever an
    installed copy would give)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get('PYTHONPATH')
    return dict(os.environ, PYTHONPATH=here + (os.pathsep + path if path else ''))


# -- the child ---------------------------------------------------------------------------------


def serve(sock: socket.socket) -> None:
    """Store what comes on `sock` until it closes: the settings first, then
    messages, those that arrived together in one transaction. One thread:
    a second one writing while this one reads the next message ran no
    faster (measured: both hold the GIL for most of their work)."""
    frames = Frames()
    store: Store | None = None
    try:
        while True:
            data = sock.recv(READ_SIZE)
            if not data:
                return
            batch = frames.feed(data)
            if store is None and batch:
                store = _open(sock, batch.pop(0))
                if store is None:
                    return
            while batch and store is not None:
                taken, batch = batch[:BATCH_MAX], batch[BATCH_MAX:]
                sock.sendall(store_batch(store, taken))
    except (BrokenPipeError, ConnectionResetError):
        return          # the parent is gone, or ended us: it answers its sessions itself
    finally:
        if store is not None:
            store.close()


def _open(sock: socket.socket, settings: bytes) -> Store | None:
    try:
        store: Store = pickle.loads(settings).open()   # noqa: S301 - our parent's, our pair
    except Exception as exc:        # noqa: BLE001 - told to the parent, which logs it
        sock.sendall(reply(0, error=f'{type(exc).__name__}: {exc}'))
        return None
    sock.sendall(reply(0))
    return store


def store_batch(store: Store, payloads: list[bytes]) -> bytes:
    """The answers to a batch of message frames, stored in one transaction.
    Empties `payloads` once each message is cut from its frame, so that a
    large message is not held in its frame too while it is stored."""
    seqs: list[int] = []
    incoming: list[Incoming] = []
    for seq, message in map(read_message, payloads):    # no name keeps a frame alive
        seqs.append(seq)
        incoming.append(message)
    payloads.clear()
    before = store.deleted
    try:
        results: Sequence[object] = store.add_all(incoming)
    except Exception as exc:        # noqa: BLE001 - each message of the batch is told
        results = [Failed(exc)] * len(incoming)
    deleted = store.deleted - before
    answers = []
    for place, (seq, result) in enumerate(zip(seqs, results, strict=True)):
        error = (f'{type(result.error).__name__}: {result.error}'
                 if isinstance(result, Failed) else '')
        answers.append(reply(seq, deleted if place == len(seqs) - 1 else 0, error,
                             duplicate=result is DUPLICATE))
    return b''.join(answers)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when this ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s (store process): %(message)s')
    set_process_title('inbox store')
    with socket.socket(fileno=int(args[0])) as sock:
        sock.setblocking(True)      # the parent's end is gevent's, made non-blocking
        serve(sock)
    return 0


if __name__ == '__main__':
    sys.exit(main())

