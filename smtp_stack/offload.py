"""Blocking calls run off the gevent hub: the one helper of the package.

- `offload(fn, *args)`: in the hub's own thread pool. For short blocking
  calls of ours and of the user (an fsync, a password hash, an SQLite
  query of the inbox, a recipients file read, a DKIM check, a delivery
  function). Where no hub exists in this thread (a plain thread of a
  threaded WSGI server, a thread of a pool itself) it runs right here:
  nothing else can run in this thread meanwhile, so there is nothing to
  protect, and no hub nor pool is made for the occasion.
- `OwnThreads(n)`: `n` threads of one's own per hub and per process, for a
  client library whose calls may stall for as long as its timeout (the
  SQLite store of `smtp_stack.state`, through `state.backend.Offloaded`;
  Redis runs in the calling greenlet over gevent sockets instead). Why not
  the hub's pool: a stalled backend then holds its own threads only, never
  those that flush mail or hash passwords; its size is its own (SQLite's one
  connection per pool is used by exactly one thread, so two transactions
  never interleave on it); and a forked worker gets fresh threads, never its
  parent's (which do not exist in the child).
- `Lanes(n)`: `n` native threads of one's own per hub and per process for
  many short calls (the Maildir delivery's file calls): fed through a C
  queue, results back through one watcher per hub, so a hand-off costs a
  few µs of CPU where the hub's pool spends tens (docs/performance.md).
- `Coalesced(fn, *args)`: one offloaded call shared by the greenlets that
  need it done after a change of their own (group commit: the fsync of a
  directory after many renames into it).
- `run_in(pool, fn, *args)`: what both use. An exception never leaves the
  worker thread as such: gevent's pool would hand it to the hub, which
  prints its traceback on stderr (whatever the log level) before the
  caller sees it. It is carried back as a value and raised in the calling
  greenlet, where the caller's `except` deals with it, printed by nobody.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gevent import get_hub
from gevent.event import AsyncResult
from gevent.hub import Waiter
from gevent._hub_local import get_hub_if_exists  # also gevent.hub._get_hub; no public name
from gevent.threadpool import ThreadPool

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    Args = TypeVarTuple('Args')

Result = TypeVar('Result')


def offload(fn: Callable[[Unpack[Args]], Result], *args: Unpack[Args]) -> Result:
    """`fn(*args)` in a worker thread of the hub's thread pool, so one slow
    disk flush or hash does not stall every other session of the process;
    where no hub runs in this thread, right here."""
    hub = get_hub_if_exists()
    if hub is None:
        return fn(*args)
    return run_in(hub.threadpool, fn, *args)


def run_in(pool: ThreadPool, fn: Callable[[Unpack[Args]], Result], *args: Unpack[Args]) -> Result:
    """`fn(*args)` in one of `pool`'s threads; what it raises is raised
    here, in the caller's greenlet, and nothing is printed."""
    outcome: _Outcome[Result] = pool.apply(_captured, (fn, args))    # gevent is untyped: Any
    if outcome.error is not None:
        error, outcome.error = outcome.error, None      # no reference cycle through the frame
        raise error
    return outcome.value


class _Outcome(Generic[Result]):
    """What a call in a worker thread returned, or raised."""

    __slots__ = ('value', 'error')

    def __init__(self, value: Result, error: BaseException | None) -> None:
        self.value = value
        self.error = error


def _captured(fn: Callable[..., Result], args: tuple[object, ...]) -> _Outcome[Result | None]:
    """Run in the worker thread: never raises, so the pool has nothing to print."""
    try:
        return _Outcome(fn(*args), None)
    except BaseException as exc:    # SystemExit of user code too: the caller's session deals
        return _Outcome(None, exc)


class OwnThreads:
    """`threads` native threads of one's own for each hub of this process.

    A gevent ThreadPool belongs to one hub (a server thread, the main
    thread of a test each have theirs): a pool asked from another hub's
    thread would run the call in place and block that hub. So there is one
    pool per hub, made on first use (with the thread's hub, if it had none:
    what a user keeps per pool, a connection, must not be shared by two
    threads); after a fork the parent's pools are forgotten (their threads
    are not in the child) and `after_fork()` is called first, so the user
    drops what it made in the parent.
    """

    def __init__(self, threads: int, after_fork: Callable[[], None] = lambda: None) -> None:
        self.threads = threads
        self._after_fork = after_fork
        self._pid: int | None = None
        self._pools: dict[object, ThreadPool] = {}      # hub -> its pool
        self._lock = threading.Lock()       # hubs of several threads may ask at once

    def pool(self) -> ThreadPool:
        """This hub's pool in this process."""
        hub = get_hub()
        with self._lock:
            if self._pid != os.getpid():
                self._pools = {}
                self._pid = os.getpid()
                self._after_fork()
            pool = self._pools.get(hub)
            if pool is None:
                pool = self._pools[hub] = ThreadPool(self.threads)
        return pool

    @property
    def forked(self) -> bool:
        """True in a process that made no pool yet (a fresh child of a fork)."""
        return self._pid != os.getpid()

    def close(self) -> None:
        """Stop this process's threads (a parent's are not ours to stop)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            mine = not self.forked
        if mine:
            for pool in pools:
                if getattr(pool.hub, 'loop', None) is None:
                    # Its hub was destroyed (a server thread that ended):
                    # kill() would wait on that hub's loop. A None in the
                    # queue ends each idle thread without waiting.
                    for _ in range(pool.size):
                        pool.task_queue.put(None)
                else:
                    pool.kill()


_pid = os.getpid()      # this process's, kept without a getpid() system call per call


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Lanes:
    """`threads` native threads per hub and per process, for many short
    blocking calls: `call(fn, *args)` runs `fn(*args)` in one of them.

    gevent's ThreadPool makes a watcher, a result object and a Python
    condition per call: 60-100 µs of CPU a hand-off on the benchmark
    machine, more than the Maildir's own Python per message. Here a call is
    a `queue.SimpleQueue` put (C), a thread that was waiting in its get,
    and a deque append plus one async watcher shared by the hub's calls
    (signals that arrive together wake the hub once): 8-12 µs with twenty
    sessions. What `fn` raises is raised in the caller, as `run_in` does.

    Threads are started when needed and end after `idle` seconds without
    work, so the lanes of a hub that is gone (a server thread that ended)
    do not stay; after a fork the parent's lanes are forgotten.
    """

    def __init__(self, threads: int, idle: float = 10.0) -> None:
        self.threads = threads
        self.idle = idle
        self._pid = os.getpid()
        self._lanes: weakref.WeakKeyDictionary[Any, _Lane] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def call(self, fn: Callable[[Unpack[Args]], Result], *args: Unpack[Args]) -> Result:
        hub = get_hub_if_exists()
        if hub is None:
            return fn(*args)
        lane = self._lanes.get(hub)
        if lane is None or self._pid != _pid:
            lane = self._lane(hub)
        return lane.call(hub, fn, args)

    def _lane(self, hub: Any) -> _Lane:
        with self._lock:
            if self._pid != os.getpid():
                self._lanes = weakref.WeakKeyDictionary()
                self._pid = os.getpid()
            lane = self._lanes.get(hub)
            if lane is None:
                lane = self._lanes[hub] = _Lane(hub.loop, self.threads, self.idle)
        return lane


class _Lane:
    """The threads of one hub: see Lanes. It keeps no reference to the hub
    (the hub is the key of a weak dictionary)."""

    def __init__(self, loop: Any, threads: int, idle: float) -> None:
        self.size = threads
        self.idle = idle
        self.tasks: queue.SimpleQueue[tuple[Waiter, Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue())
        self.done: collections.deque[tuple[Waiter, _Outcome[Any]]] = collections.deque()
        self.alive = 0
        self.lock = threading.Lock()
        self.pending = 0            # calls in flight: the watcher keeps the loop alive then
        self.watcher = loop.async_()
        self.watcher.start(self._deliver)
        self.watcher.ref = False

    def call(self, hub: Any, fn: Callable[..., Result], args: tuple[Any, ...]) -> Result:
        waiter = Waiter(hub)
        self.pending += 1
        if self.pending == 1:
            self.watcher.ref = True
        try:
            self.tasks.put((waiter, fn, args))
            with self.lock:
                if self.alive < self.size:
                    self.alive += 1
                    threading.Thread(target=self._work, daemon=True,
                                     name='smtp_stack-lane').start()
            outcome: _Outcome[Result] = waiter.get()
        finally:
            self.pending -= 1
            if not self.pending:
                self.watcher.ref = False
        if outcome.error is not None:
            error, outcome.error = outcome.error, None
            raise error
        return outcome.value

    def _work(self) -> None:
        """A thread: run tasks until none came for `idle` seconds."""
        get, finished = self.tasks.get, self.done.append
        while True:
            try:
                waiter, fn, args = get(timeout=self.idle)
            except queue.Empty:
                with self.lock:     # a task put meanwhile finds this thread gone
                    if self.tasks.empty():
                        self.alive -= 1
                        return
                continue
            finished((waiter, _captured(fn, args)))
            try:
                self.watcher.send()
            except Exception:       # the hub's loop was destroyed: nobody waits
                pass

    def _deliver(self) -> None:
        """In the hub: hand each finished call's outcome to its greenlet."""
        done = self.done
        while done:
            waiter, outcome = done.popleft()
            waiter.switch(outcome)


class Coalesced:
    """`fn(*args)` run off the hub, once for every greenlet that asked
    before that run started: group commit, as databases flush their log.

    `call()` returns once a run that *started after* the call was made has
    succeeded (so whatever the caller changed before calling is covered),
    and raises what that run raised. While a run is in flight, callers that
    arrive wait for it to end and then share the next run: under load one
    run covers many callers, alone each caller pays one run. Belongs to the
    hub of the thread that uses it (one per hub, like a ThreadPool); where
    no hub exists, `call()` runs `fn` right here.
    """

    __slots__ = ('_fn', '_args', '_via', '_asked', '_covered', '_flight', 'waiting')

    def __init__(self, fn: Callable[..., object], *args: object,
                 via: Callable[..., object] = offload) -> None:
        self._fn = fn
        self._args = args
        self._via = via         # what runs fn off the hub: offload, or Lanes.call
        self._asked = 0         # calls made so far: each one's ticket
        self._covered = 0       # tickets that a finished, successful run covers
        self._flight: AsyncResult | None = None    # the run in flight, if any
        self.waiting = 0        # callers inside call(): 0 means idle, can be dropped

    def call(self) -> None:
        if get_hub_if_exists() is None:
            self._fn(*self._args)
            return
        self._asked += 1
        ticket = self._asked
        self.waiting += 1
        try:
            while self._covered < ticket:
                flight = self._flight
                if flight is None:
                    self._lead()
                else:
                    covers, error = flight.get()
                    if error is not None and covers >= ticket:
                        raise _copy(error)
        finally:
            self.waiting -= 1

    def _lead(self) -> None:
        """Run `fn` for every ticket asked so far (this one included)."""
        self._flight = flight = AsyncResult()
        covers = self._asked
        try:
            self._via(self._fn, *self._args)
        except Exception as exc:
            self._flight = None
            flight.set((covers, exc))
            raise
        except BaseException:       # killed while waiting: the others run it again
            self._flight = None
            flight.set((0, None))
            raise
        self._flight = None
        self._covered = max(self._covered, covers)
        flight.set((covers, None))


def _copy(error: Exception) -> Exception:
    """A copy of a run's error for one more caller: one exception object
    raised in several greenlets would gather all their tracebacks."""
    if isinstance(error, OSError):
        return OSError(error.errno, error.strerror, error.filename)
    return error
