"""The SMTP side of the inbox: every accepted message goes into the store.

By default a process of its own stores them (store_process.py: the
parsing's Python then does not share the SMTP side's GIL); with
`store_process=False`, or where no gevent hub runs, a thread of this
process does, as described below.

It is a `CallableDelivery`, so it gets what every built-in delivery
guarantees (docs/delivery.md): only whole, acceptable messages, after the
final dot, a 4xx if the store fails. It stores exactly the bytes it is
handed: the headers this server adds (the added headers, then Received;
CallableDelivery writes no Return-Path), then the message as sent, less
the fields middleware recorded with `envelope.remove_header` (forged
Authentication-Results, with the `authenticate` policy): CallableDelivery
has taken them out already.

The function is called in the session's greenlet (`threaded=False`) and
hands the message to one thread of its own per hub (`_Ingest`), which
takes every message waiting, reads, parses and writes them together
(`Store.add_all`: one transaction), then wakes their sessions. One
thread, not several: parsing is Python, which holds the GIL, so threads
beside it only wait for it and hand it to each other (four threads'
wakeups and GIL hand-offs were system and user time of their own); one
thread also makes the batches that share a commit as large as the load. A hand-off is a C
queue put and one async watcher shared by the hub's messages (a few µs,
where the hub's thread pool spends tens); the SQLite work never runs on
the hub. The call returns, and the client gets its 250, once the
transaction holding the message has committed.

`verbose` (`smtp-stack inbox --verbose`): one line for each message
stored, as Mailpit's `--verbose` writes one, with the message's id,
envelope, size and subject (docs/inbox.md, "The command").
"""
from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import gevent
from gevent._hub_local import get_hub_if_exists  # also gevent.hub._get_hub; no public name
from gevent.hub import Waiter, get_hub

from .. import logs
from ..delivery import CallableDelivery
from ..events import queue_id
from ..replies import Reply
from .arrival import field_within
from .database import Failed
from .store import DUPLICATE, Json
from .smtp_rules import ignored
from .store_process import StoreProcess

if TYPE_CHECKING:
    from ..session import Envelope, Session
    from .store import Store

# A message none of whose recipients is allowed (--smtp-allowed-recipients),
# taken all the same (--smtp-ignore-rejected-recipients): Mailpit drops it
NOT_STORED = Reply(250, 'Ok: not stored, no recipient is allowed', '2.0.0')
# ... and one whose Message-ID the inbox holds (--ignore-duplicate-ids)
DUPLICATE_REPLY = Reply(250, 'Ok: not stored, its Message-ID is in the inbox', '2.0.0')
BATCH_MAX = 64          # messages one transaction takes at most: bounds a session's wait
IDLE_SECONDS = 10.0     # a hub's thread ends after this long without mail
SUBJECT_WITHIN = 16 << 10   # bytes of a message its verbose line looks at for the Subject

# (body, envelope recipients, SMTP user, envelope sender, message id for the
# verbose line or None) as the session hands it over
Handed = tuple[IO[bytes], list[str], str | None, str, str | None]
log = logs.get('smtp_stack.inbox')


class Capture:
    """`fn(session, envelope, body)` for CallableDelivery, plus counters."""

    def __init__(self, store: Store, stats: dict[str, int] | None = None, *,
                 store_process: bool = True, verbose: bool = False):
        self.store = store
        self.verbose = verbose      # a line for each message stored
        self.stats = stats if stats is not None else {'accepted': 0, 'accepted_size': 0,
                                                      'rejected': 0,
                                                      'ignored': 0}
        self.store_process = store_process
        self._lock = threading.Lock()
        self._threads: weakref.WeakKeyDictionary[Any, _Ingest] = weakref.WeakKeyDictionary()
        self._processes: weakref.WeakKeyDictionary[Any, StoreProcess] = \
            weakref.WeakKeyDictionary()

    def __call__(self, session: Session, envelope: Envelope, body: IO[bytes]) -> Reply | None:
        sender = envelope.mail_from.address if envelope.mail_from is not None else ''
        left_out = ignored(envelope)     # --smtp-ignore-rejected-recipients
        recipients = [a.address for a in envelope.rcpt_to if a.address not in left_out]
        if left_out and not recipients:     # every one was refused, and taken: Mailpit's 250
            return NOT_STORED
        hub = get_hub_if_exists()
        told = queue_id(session) if self.verbose else None
        if self.store_process and hub is not None:
            raw = body.read()       # in memory, or the page cache (spool.py)
            if not self.process(hub).put(raw, recipients, _username(session), sender):
                return self._duplicate(told)
            self._count(1, len(raw))
            if told is not None:
                _tell_stored(told, raw, sender, recipients)
            return None
        handed = (body, recipients, _username(session), sender, told)
        if hub is None:                 # no hub in this thread: nothing to keep free
            outcome = self.keep_all([handed])[0]
        else:
            ingest = self._threads.get(hub)
            if ingest is None or ingest.pid != os.getpid():    # a fork's child: none yet
                ingest = self._threads[hub] = _Ingest(hub.loop, self.keep_all, self.store.close)
            outcome = ingest.call(hub, handed)
        if isinstance(outcome, Failed):
            raise outcome.error
        if outcome is DUPLICATE:
            return self._duplicate(told)
        return None

    def _duplicate(self, told: str | None) -> Reply:
        """A message left out, its Message-ID in the inbox already (Mailpit's
        --ignore-duplicate-ids): counted as SMTPIgnored, answered 250."""
        with self._lock:
            self.stats['ignored'] = self.stats.get('ignored', 0) + 1
        if told is not None:
            log.info('%s: not stored: a message with its Message-ID is in the inbox',
                     told, event='inbox_duplicate', queue_id=told)
        return DUPLICATE_REPLY

    def keep_all(self, handed: list[Handed]) -> list[Failed | Json | None]:
        """In the ingest thread: the messages into the store in one
        transaction, counted; None for each stored, DUPLICATE for one left
        out as a duplicate, Failed for the others."""
        outcomes: list[Failed | Json | None] = [None] * len(handed)
        incoming: list[tuple[bytes, list[str], str | None, str]] = []
        places: list[int] = []
        for place, (body, rcpt, username, sender, _told) in enumerate(handed):
            try:
                raw = body.read()
            except Exception as exc:    # noqa: BLE001 - its session answers 451
                outcomes[place] = Failed(exc)
                continue
            incoming.append((raw, rcpt, username, sender))
            places.append(place)
        stored = self.store.add_all(incoming)
        accepted = accepted_size = 0
        for place, (raw, rcpt, _user, sender), result in zip(places, incoming, stored,
                                                              strict=True):
            if isinstance(result, Failed) or result is DUPLICATE:
                outcomes[place] = result
                continue
            accepted += 1
            accepted_size += len(raw)
            told = handed[place][4]
            if told is not None:
                _tell_stored(told, raw, sender, rcpt)
        self._count(accepted, accepted_size)
        return outcomes

    def _count(self, accepted: int, size: int) -> None:
        """Messages stored and their bytes (GET /api/v1/info's SMTPAccepted)."""
        with self._lock:
            self.stats['accepted'] += accepted
            self.stats['accepted_size'] += size

    def process(self, hub: Any = None) -> StoreProcess:
        """The store process of `hub` (this thread's by default), made if
        there is none (its child starts with its first message, or `start()`)."""
        hub = hub if hub is not None else get_hub()
        process = self._processes.get(hub)
        if process is None or process.pid != os.getpid():     # a fork's child: none yet
            process = self._processes[hub] = StoreProcess(self.store)
        return process

    @property
    def store_processes(self) -> list[StoreProcess]:
        """The store processes made so far, one per hub (introspection)."""
        return [p for p in self._processes.values() if p.pid == os.getpid()]

    def delivery(self) -> CallableDelivery:
        return InboxDelivery(self, threaded=False)

    def close(self) -> None:
        """End the ingest threads and store processes once what they were
        handed is stored (the inbox stops): each closes its SQLite
        connection as it ends, instead of holding it until it is idle. A
        message handed later starts one again."""
        for ingest in list(self._threads.values()):
            ingest.close()
        here = get_hub_if_exists()
        for hub, process in list(self._processes.items()):
            if process.pid != os.getpid():
                continue
            if hub is here:
                process.close()
            else:               # its sockets and greenlets belong to that hub's thread
                _close_in(hub, process)


class InboxDelivery(CallableDelivery):
    """The Capture as a delivery: its lines say `relay=inbox, status=sent (stored)`."""

    accepted_reason = 'stored'

    def describe(self) -> str:
        return 'inbox'


class _Ingest:
    """The ingest thread of one hub (see the module's docstring): sessions
    put their message and wait; the thread takes every message waiting
    (BATCH_MAX at most), stores them with `keep_all`, and wakes each
    session through one async watcher of the hub's loop. Started when a
    message comes, ended after IDLE_SECONDS without one. It keeps no
    reference to the hub (the hub is the key of a weak dictionary)."""

    def __init__(self, loop: Any,
                 keep_all: Callable[[list[Handed]], list[Failed | Json | None]],
                 on_exit: Callable[[], None]) -> None:
        self.pid = os.getpid()
        self.keep_all = keep_all
        self.on_exit = on_exit      # in the thread, as it ends: its SQLite connection closed
        self.tasks: queue.SimpleQueue[tuple[Waiter, Handed] | None] = queue.SimpleQueue()
        self.done: collections.deque[tuple[Waiter, Failed | Json | None]] = \
            collections.deque()
        self.running = False
        self.lock = threading.Lock()
        self.pending = 0            # sessions waiting: the watcher keeps the loop alive then
        self.watcher = loop.async_()
        self.watcher.start(self._deliver)
        self.watcher.ref = False

    def call(self, hub: Any, handed: Handed) -> Failed | Json | None:
        waiter = Waiter(hub)
        self.pending += 1
        if self.pending == 1:
            self.watcher.ref = True
        try:
            self.tasks.put((waiter, handed))
            with self.lock:
                if not self.running:
                    self.running = True
                    threading.Thread(target=self._work, daemon=True,
                                     name='smtp_stack-inbox-ingest').start()
            outcome: Failed | Json | None = waiter.get()
        finally:
            self.pending -= 1
            if not self.pending:
                self.watcher.ref = False
        return outcome

    def close(self) -> None:
        """Ask the thread to end once the messages before this are stored."""
        with self.lock:
            if self.running:
                self.tasks.put(None)

    def _work(self) -> None:
        try:
            self._serve()
        finally:
            self.on_exit()

    def _serve(self) -> None:
        get, get_now = self.tasks.get, self.tasks.get_nowait
        while True:
            stop = False
            try:
                first = get(timeout=IDLE_SECONDS)
            except queue.Empty:
                first, stop = None, True
            batch: list[tuple[Waiter, Handed]] = [] if first is None else [first]
            stop = stop or first is None
            while not stop and len(batch) < BATCH_MAX:
                try:
                    task = get_now()
                except queue.Empty:
                    break
                if task is None:
                    stop = True
                else:
                    batch.append(task)
            if batch:
                self._store(batch)
            if stop:
                with self.lock:     # a message put meanwhile finds this thread gone
                    if self.tasks.empty():
                        self.running = False
                        return

    def _store(self, batch: list[tuple[Waiter, Handed]]) -> None:
        try:
            outcomes = self.keep_all([handed for _waiter, handed in batch])
        except BaseException as exc:    # noqa: BLE001 - each session of the batch raises
            outcomes = [Failed(exc) for _ in batch]     # it: none is left waiting
        self.done.extend(zip((waiter for waiter, _handed in batch), outcomes, strict=True))
        try:
            self.watcher.send()
        except Exception:       # noqa: BLE001 - the hub's loop was destroyed: nobody waits
            pass

    def _deliver(self) -> None:
        """In the hub: hand each stored message's outcome to its session."""
        done = self.done
        while done:
            waiter, outcome = done.popleft()
            waiter.switch(outcome)


def _close_in(hub: Any, process: StoreProcess, timeout: float = 15.0) -> None:
    """`process.close()` in the thread of the hub it belongs to, waited for
    (at most `timeout`: a hub whose thread ended runs nothing; its child
    ends when the socket is collected with it)."""
    done = threading.Event()

    def close() -> None:
        try:
            process.close()
        finally:
            done.set()
    try:
        hub.loop.run_callback_threadsafe(gevent.spawn, close)
    except Exception:       # noqa: BLE001 - the loop is gone: nothing runs there any more
        return
    done.wait(timeout)


def _tell_stored(message_id: str, raw: bytes, sender: str, recipients: list[str]) -> None:
    """The verbose line of a message stored. Its Subject as written (encoded
    words left as they are, as Mailpit logs it), quoted, looked for in the
    first SUBJECT_WITHIN bytes: this runs on the hub, and a message of
    megabytes of short header lines must not hold it."""
    if not log.logger.isEnabledFor(logging.INFO):
        return
    subject = field_within(raw, b'subject', SUBJECT_WITHIN)
    log.info('%s: stored in the inbox: from=<%s>, to=<%s>, size=%d, subject=%s',
             message_id, sender, '>,<'.join(recipients), len(raw),
             json.dumps(subject, ensure_ascii=False), event='inbox_stored',
             queue_id=message_id, sender=sender, recipients=recipients, size=len(raw),
             subject=subject)


def _username(session: Session) -> str | None:
    """Who authenticated, if anyone (Mailpit shows it as `Username`)."""
    user = getattr(session, 'user', None)
    if isinstance(user, dict):
        return user.get('name') or user.get('username')
    return str(user) if user else None
