"""Worker processes: the master binds, N forked workers serve (option `workers`, docs/api.md).

With `workers=N > 1`, `SmtpServer.start()` binds the listening socket in the
calling process (the master) and returns at once; the first time the master's
hub runs, it forks N workers. Every worker inherits the listening sockets
(the kernel hands each new connection to whichever worker accepts first) and
a copy of the server as it was then: options, middleware and hooks. The
master serves no connection; it only keeps the workers running:

- a worker that dies (killed, or exits with a non-zero status) is forked
  again, with a back-off when it keeps dying young;
- SIGTERM to the master (or `stop()`) stops every worker gracefully: each
  closes its listening socket, 421s its idle sessions, lets transactions
  finish within `close_timeout`, and exits; the master reaps them all;
- SIGHUP to the master (or `reload()`) forks a new set of workers from the
  master's current state, then tells the old ones to stop gracefully.

The master's signal handlers are installed only when start() runs in the
main thread (signals are only ever delivered there), so a test that runs a
multi-worker server in a thread keeps its own signal handling.

How a worker runs. Forking copies the whole process, including every
greenlet of the forking thread's hub (the caller's, the master's
watchers...). None of them must run in the worker, so the worker never runs
that hub again: it serves in a fresh OS thread with a fresh gevent hub, and
the forked thread (now the worker's main thread) only waits for the master's
word and for signals. A worker learns that the master is gone from the end
of file on its control socket, and then stops gracefully too: a killed
master never leaves orphans serving.

The control socket (a socketpair per worker) carries one line from master to
worker, `stop <seconds>`, and one byte back, `R`, once the worker serves
(`worker_pids` lists only those); the master learns that a worker exited
from the end of file on its side, then reaps it with waitpid. SIGTERM,
SIGHUP and SIGINT are blocked across the fork until the worker's handlers
are in place, so a SIGTERM sent to a brand-new worker is a graceful stop
too, never a kill.
"""
from __future__ import annotations

import _thread
import mmap
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Collection
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import gevent
import gevent.pool
from gevent import monkey
from gevent import socket as gsocket
from gevent.os import make_nonblocking, nb_read

from . import logs
from .proctitle import master_title, worker_title

if TYPE_CHECKING:
    from .options import Options

# The real primitives even in a monkey-patched process: the worker's own
# thread must be an OS thread, and its main thread must block for real.
# (Typed here as the originals are: gevent's get_original is untyped.)
_fork: Callable[[], int] = monkey.get_original('os', 'fork')
_waitpid: Callable[[int, int], tuple[int, int]] = monkey.get_original('os', 'waitpid')
_read: Callable[[int, int], bytes] = monkey.get_original('os', 'read')
_start_thread: Callable[[Callable[..., object], tuple[Any, ...]], int] = \
    monkey.get_original('_thread', 'start_new_thread')
_allocate_lock: Callable[[], _thread.LockType] = monkey.get_original('_thread', 'allocate_lock')
_signal: Callable[[int, Callable[[int, FrameType | None], object] | int], object] = \
    monkey.get_original('signal', 'signal')

_WATCHED = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
STOP_MARGIN = 3.0        # seconds past the grace period before SIGKILL
YOUNG = 5.0              # a worker that dies younger is restarted after a back-off
MAX_BACKOFF = 5.0
WORKER_START_TIMEOUT = 10.0

log = logs.get('smtp_stack.workers')


COUNTERS_PER_WORKER = 4  # those serving, and up to three sets still finishing after reloads


class SessionCounts:
    """How many sessions every worker has open, in memory shared with them
    (an anonymous shared mapping, made before the first fork), so that
    `max_connections` holds for the whole server rather than per worker.

    Each worker writes only its own counter, so no lock is needed; a worker
    reads the sum. The master hands a counter to each worker it forks and
    zeroes it once the worker is reaped, so a worker that died never leaves
    its sessions counted. Two workers accepting at the same instant may
    both see room for one more: the limit may be passed by that much.
    """

    def __init__(self, size: int) -> None:
        self._memory = mmap.mmap(-1, size * 8)
        self.counts = memoryview(self._memory).cast('q')
        self._free = list(range(size))

    def take(self) -> int | None:
        """A zeroed counter for a new worker, or None when all are in use
        (that worker then counts its own sessions only)."""
        if not self._free:
            return None
        index = self._free.pop(0)
        self.counts[index] = 0
        return index

    def give_back(self, index: int | None) -> None:
        if index is not None:
            self.counts[index] = 0
            self._free.append(index)

    def total(self) -> int:
        return sum(self.counts)


# A worker's share of SessionCounts: the counts and its counter's index.
Shared: TypeAlias = tuple[SessionCounts, int]


class PerWorker(Protocol):
    """Memory shared with the workers in which each worker writes a part of
    its own (the metrics' counters, metrics/cells.py): the master takes a
    part before each fork (None: none left), the new worker adopts it
    before it serves, and the master gives it back once the worker is
    reaped (a worker that was killed leaves what it wrote)."""

    def take(self) -> int | None: ...
    def adopt(self, part: int | None) -> None: ...
    def give_back(self, part: int | None) -> None: ...


#: Told of every worker that any pool of this process forks and reaps.
per_worker: list[PerWorker] = []

#: Sockets only the master serves (the metrics' HTTP listener): a worker
#: that held one open would keep its port bound after the master is gone.
master_only: list[Any] = []
#: Collections of sockets only the master serves, looked at as each worker
#: forks (the metrics' connections being served: a worker holding one would
#: keep it open after the master closed it, and its client would wait).
master_only_groups: list[Collection[Any]] = []


class Forkable(Protocol):
    """What the WorkerPool and its workers need of the server they fork
    (an SmtpServer): its options and signal policy, and the steps of its
    lifecycle that a forked worker takes in its own serving thread."""

    options: Options
    handle_signals: bool
    hub: Any        # the serving thread's gevent hub, once serving

    def stop(self, timeout: float | None = None) -> None: ...
    def serve_forever(self) -> None: ...
    def become_worker(self, worker_id: int, shared: Shared | None) -> None:
        """Forget the master's state (listeners, sessions, hub): a fresh start."""
    def listen_on(self, sock: Any) -> None:
        """Serve on an inherited listening socket."""
    def stop_in_hub(self, timeout: float | None) -> None:
        """Stop, called in the serving hub (as stop() does from outside)."""


# What a worker was given of each per_worker memory.
Parts: TypeAlias = tuple[tuple[PerWorker, int | None], ...]


class Worker:
    """The master's record of one worker process."""

    __slots__ = ('pid', 'fd', 'slot', 'counter', 'parts', 'started', 'retiring', 'ready')

    def __init__(self, pid: int, fd: int, slot: int, counter: int | None = None,
                 parts: Parts = ()) -> None:
        self.pid = pid
        self.fd = fd            # the master's end of the control socket
        self.slot = slot
        self.counter = counter  # its index in SessionCounts, or None
        self.parts = parts      # its part of each per_worker memory
        self.started = time.monotonic()
        self.retiring = False   # told to stop: not restarted when it exits
        self.ready = False      # said it is serving

    def __repr__(self) -> str:
        return f'<Worker {self.slot} pid={self.pid}>'


class WorkerPool:
    """The master side: fork, watch, restart, reload and stop the workers."""

    def __init__(self, server: Forkable) -> None:
        self.server = server
        self.count = server.options.workers
        self.sockets: list[Any] = []    # the listening (gevent) sockets, bound here
        self.current: dict[int, Worker] = {}    # slot -> Worker serving now
        self.retired: list[Worker] = []     # told to stop, not reaped yet
        self.watchers = gevent.pool.Group()     # one per worker: EOF, reap
        self.pending = gevent.pool.Group()      # delayed (re)starts
        self.stopping = False
        self.master_pid = os.getpid()
        self._backoff: dict[int, float] = {}    # slot -> delay before its next restart
        self._signals: list[Any] = []       # gevent signal handlers
        # max_connections counts the sessions of all the workers
        self.sessions = (SessionCounts(self.count * COUNTERS_PER_WORKER)
                         if server.options.max_connections else None)

    @property
    def pids(self) -> list[int]:
        """The workers serving now (forked, and said they are listening)."""
        return [w.pid for _, w in sorted(self.current.items()) if w.ready]

    def add_socket(self, sock: Any) -> None:
        """A socket bound by start(): every worker forked from now serves it."""
        self.sockets.append(sock)
        if len(self.sockets) == 1:
            # Forked when the hub first runs, so that several start() calls
            # in a row give the same workers every socket.
            self.pending.spawn(self._start_all)
        elif self.current:
            self.pending.spawn(self.reload)

    def _start_all(self) -> None:
        if self.stopping:
            return
        master_title()      # 'smtp-stack: master' in ps, when setproctitle is installed
        self._install_signals()
        for slot in range(self.count):
            if slot not in self.current:
                self._fork(slot)

    # -- one worker --------------------------------------------------------
    def _fork(self, slot: int) -> Worker:
        master_end, worker_end = socket.socketpair()
        master_fd, worker_fd = master_end.detach(), worker_end.detach()
        # The worker must not hold the master's end of any control socket,
        # or a dead master would look alive to the other workers.
        close = [master_fd] + [w.fd for w in self._all()]
        listening = [s.fileno() for s in self.sockets]
        for stream in (sys.stdout, sys.stderr):     # no duplicated buffers
            try:
                stream.flush()
            except Exception:
                pass
        # A signal sent to the new worker before it can take it must wait
        # (not kill it): blocked across the fork, unblocked by each side.
        counter = self.sessions.take() if self.sessions is not None else None
        if self.sessions is not None and counter is None:
            log.warning('worker %d: no shared session counter left (too many workers still '
                        'finishing); it applies max_connections to its own sessions', slot)
        shared = (self.sessions, counter) if self.sessions is not None and counter is not None \
            else None
        parts = tuple((memory, memory.take()) for memory in list(per_worker))
        for memory, part in parts:
            if part is None:
                log.warning('worker %d: %r has no part left (too many workers still '
                            'finishing); what this worker counts there is not read', slot, memory)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            pid = _fork()
            if pid == 0:
                _worker_main(self.server, slot, shared, parts, listening, worker_fd, close,
                             mask)  # never returns
        except BaseException:
            _give_back(parts)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(worker_fd)
        make_nonblocking(master_fd)
        worker = Worker(pid, master_fd, slot, counter, parts)
        self.current[slot] = worker
        self.watchers.spawn(self._watch, worker)
        log.debug('worker %d started: pid %d', slot, pid)
        return worker

    def _all(self) -> list[Worker]:
        return list(self.current.values()) + self.retired

    def _watch(self, worker: Worker) -> None:
        """Wait for the worker to exit, reap it, and replace it if it died."""
        try:
            while nb_read(worker.fd, 64):   # b'R': serving; then end of file
                worker.ready = True
        except OSError:
            pass
        status = self._reap(worker.pid)
        os.close(worker.fd)
        if self.sessions is not None:
            self.sessions.give_back(worker.counter)     # its sessions ended with it
        _give_back(worker.parts)
        if self.current.get(worker.slot) is worker:
            del self.current[worker.slot]
        elif worker in self.retired:
            self.retired.remove(worker)
        code = None if status is None else os.waitstatus_to_exitcode(status)
        if self.stopping or worker.retiring or code == 0:
            # 0: it was told to stop (SIGTERM sent to the worker alone).
            log.debug('worker %d (pid %d) exited: %s', worker.slot, worker.pid, code)
            return
        log.warning('worker %d (pid %d) died (%s); restarting it', worker.slot,
                    worker.pid, 'unknown status' if code is None else
                    f'signal {-code}' if code < 0 else f'exit status {code}')
        self.pending.spawn(self._restart, worker)

    def _reap(self, pid: int) -> int | None:
        """The exit status of `pid` (None when someone else reaped it)."""
        delay = 0.001
        while True:
            try:
                done, status = _waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done:
                return status
            gevent.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _restart(self, dead: Worker) -> None:
        slot = dead.slot
        if time.monotonic() - dead.started < YOUNG:
            delay = self._backoff.get(slot, 0.05)
            self._backoff[slot] = min(delay * 2, MAX_BACKOFF)
            gevent.sleep(delay)
        else:
            self._backoff.pop(slot, None)
        if not self.stopping and slot not in self.current:
            self._fork(slot)

    @staticmethod
    def _tell(worker: Worker, line: str) -> None:
        try:
            os.write(worker.fd, line.encode('ascii') + b'\n')
        except OSError:     # already gone: its watcher reaps it
            pass

    # -- the whole pool --------------------------------------------------------
    def reload(self) -> None:
        """Fork a fresh set of workers, then stop the old ones gracefully."""
        if self.stopping or not self.sockets:
            return
        old = list(self.current.values())
        self.current = {}
        for worker in old:
            worker.retiring = True
            self.retired.append(worker)
        for slot in range(self.count):
            self._fork(slot)
        grace = self.server.options.close_timeout
        for worker in old:
            self._tell(worker, f'stop {grace}')
        log.info('reloaded: workers %s replace %s', self.pids, [w.pid for w in old])

    def stop(self, grace: float) -> None:
        """Stop every worker gracefully; SIGKILL what is left after the grace."""
        self.stopping = True
        self.pending.kill(block=False)
        for worker in self._all():
            worker.retiring = True
            self._tell(worker, f'stop {grace}')
        for sock in self.sockets:
            sock.close()
        if not self.watchers.join(timeout=grace + STOP_MARGIN):
            for worker in self._all():
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except OSError:
                    pass
            self.watchers.join(timeout=STOP_MARGIN)
        self._remove_signals()

    # -- signals (main thread only) ---------------------------------------------
    def _install_signals(self) -> None:
        if self._signals or not gevent.get_hub().loop.default:
            return      # not the main thread: signals are not ours to take
        server = self.server
        if not server.handle_signals:
            return      # the application (smtp-stack serve) handles them itself
        self._signals = [
            gevent.signal_handler(signal.SIGTERM, server.stop),
            gevent.signal_handler(signal.SIGHUP, self.reload),
        ]

    def _remove_signals(self) -> None:
        for handler in self._signals:
            handler.cancel()
        self._signals = []


def _give_back(parts: Parts) -> None:
    """The parts of a reaped worker (or of a fork that failed), given back."""
    for memory, part in parts:
        try:
            memory.give_back(part)
        except Exception as exc:    # the pool must go on watching its workers
            log.warning('%r could not take back part %s: %r', memory, part, exc)


# -- inside a worker ----------------------------------------------------------

class _StopRequested(Exception):
    """Raised by the worker's SIGTERM handler to end its wait."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested()


def _worker_main(server: Forkable, slot: int, shared: Shared | None, parts: Parts,
                 listening: list[int], control_fd: int, close: list[int],
                 mask: set[int | signal.Signals]) -> None:
    """The forked child, in the thread that forked: never returns.

    Starts the serving thread, tells the master it serves, then waits for
    `stop` from the master, its end of file (the master died), or SIGTERM;
    asks the serving thread to stop gracefully, which ends the process.
    SIGTERM, SIGHUP and SIGINT arrive blocked (see `_fork`) and stay so
    until the handlers are in place and the serving thread has started,
    so that a SIGTERM sent early is a graceful stop too.
    """
    code = 1
    try:
        logs.set_worker(slot)       # every record of this process says which worker
        worker_title(slot)          # and ps: 'smtp-stack: worker N'
        for memory, part in parts:  # before anything is counted
            memory.adopt(part)
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        _release_master_only()
        fds = [os.dup(fd) for fd in listening]
        ready = _allocate_lock()
        ready.acquire()
        # The serving thread inherits the blocked signals: they all come to
        # this thread, the one that can take them.
        _start_thread(_serve, (server, slot, shared, fds, ready))
        _signal(signal.SIGHUP, signal.SIG_IGN)     # the master reloads
        _signal(signal.SIGINT, signal.SIG_IGN)     # the master decides
        _signal(signal.SIGTERM, _raise_stop)
        if not ready.acquire(timeout=WORKER_START_TIMEOUT):
            raise RuntimeError('the serving thread did not start')
        os.write(control_fd, b'R')
        grace = None
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            grace = _wait_for_stop(control_fd)
        except _StopRequested:
            pass
        finally:
            _signal(signal.SIGTERM, signal.SIG_IGN)
        if grace is None:
            grace = server.options.close_timeout
        server.hub.loop.run_callback_threadsafe(gevent.spawn, server.stop_in_hub, grace)
        # The serving thread ends the process once stopped; this is a bound.
        never = _allocate_lock()
        never.acquire()
        never.acquire(True, grace + STOP_MARGIN)
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def _release_master_only() -> None:
    """Let go of the master's own sockets in a new worker. /dev/null is put
    on each descriptor rather than closing it: the master's socket objects
    still name that number, and a closed one could be reused and then
    closed by them."""
    for sock in [*master_only, *(sock for group in master_only_groups for sock in group)]:
        try:
            fd = sock.fileno()
        except OSError:
            continue
        if fd < 0:
            continue
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


def _wait_for_stop(fd: int) -> float | None:
    """Block until the master says `stop <seconds>` or goes away (None)."""
    buf = b''
    while True:
        data = _read(fd, 256)
        if not data:
            return None
        buf += data
        while b'\n' in buf:
            line, _, buf = buf.partition(b'\n')
            words = line.split()
            if words[:1] == [b'stop']:
                try:
                    return float(words[1]) if len(words) > 1 else None
                except ValueError:
                    return None


def _serve(server: Forkable, slot: int, shared: Shared | None, fds: list[int],
           ready: _thread.LockType) -> None:
    """The worker's serving thread: a fresh hub, the inherited sockets."""
    code = 1
    try:
        server.become_worker(slot, shared)
        for fd in fds:
            server.listen_on(gsocket.socket(fileno=fd))
        ready.release()
        server.serve_forever()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
