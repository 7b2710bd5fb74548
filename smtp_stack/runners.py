"""SessionRunners: the greenlets that serve connections, reused.

A fresh gevent Greenlet per connection costs more than its bookkeeping: on
CPython 3.11 every new greenlet gets a new interpreter data stack (a 16 KiB
`mmap`, its page faults, and a `munmap` when it dies). Measured with
smtp-source's one-message connections, that was about a sixth of the server's
CPU per connection. A runner is a plain greenlet of the hub that serves one
connection after another and parks between them, so it keeps its data stack.

Runners are bounded: at most `max_idle` wait parked (each holds ~11 KiB);
past that, a runner whose connection ends simply returns. `close()` ends the
parked ones, so a stopped server leaves no greenlet behind.

What a connection leaves in its greenlet must not reach the next one, as it
would not with a new greenlet: each job runs in a fresh `contextvars`
context, and a runner that was given greenlet-local state (a `gevent.local`
value, any attribute set on `getcurrent()`) is not reused.
"""
from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
from gevent import getcurrent, get_hub
from greenlet import greenlet as RawGreenlet     # untyped: ignored in pyproject.toml

if TYPE_CHECKING:
    from gevent.hub import Hub

IDLE_RUNNERS = 64       # parked runners kept; more connections than that still work


class SessionRunners:
    """What `gevent.pool.Group` did for the listener: spawn, count, join, kill."""

    def __init__(self, max_idle: int = IDLE_RUNNERS) -> None:
        self.max_idle = max_idle
        self.idle: list[RawGreenlet] = []   # parked runners, newest last
        self.busy: set[RawGreenlet] = set()     # with a connection (scheduled or serving)
        self.closed = False
        self._hub: Hub | None = None    # the hub of the first spawn(): the runners' parent
        self._done = gevent.event.Event()
        self._done.set()

    def __len__(self) -> int:
        return len(self.busy)

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` in a runner, soon (from the hub's callbacks)."""
        hub = self._hub
        if hub is None:
            hub = self._hub = get_hub()
        if self.idle:
            runner = self.idle.pop()
        else:
            runner = RawGreenlet(self._serve, parent=hub)
        self.busy.add(runner)
        self._done.clear()
        hub.loop.run_callback(runner.switch, fn, args)

    def _serve(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """A runner's life: one job, park, the next job, ..."""
        me = getcurrent()
        hub = self._hub
        assert hub is not None      # spawn() set it before it made this runner
        while True:
            try:
                contextvars.Context().run(fn, *args)
            except BaseException:
                # Killed (GreenletExit): this runner ends here. Anything else
                # is reported as gevent reports a dead Greenlet, and ends it too.
                self._release(me)
                if not isinstance(sys.exc_info()[1], gevent.GreenletExit):
                    hub.handle_error(me, *sys.exc_info())
                return
            del fn, args        # the job's references go now, not at the next job
            self._release(me)
            if self.closed or len(self.idle) >= self.max_idle or me.__dict__:
                return      # (greenlet-local state dies with its greenlet)
            self.idle.append(me)
            try:
                fn, args = hub.switch()
            except BaseException:
                # close() ends a parked runner with GreenletExit. Anything
                # else thrown here (a gevent.Timeout that user code started
                # and never cancelled) ends it too, reported: an exception
                # must never leave a runner for the hub, its parent.
                if me in self.idle:
                    self.idle.remove(me)
                if not isinstance(sys.exc_info()[1], gevent.GreenletExit):
                    hub.handle_error(me, *sys.exc_info())
                return

    def _release(self, runner: RawGreenlet) -> None:
        self.busy.discard(runner)
        if not self.busy:
            self._done.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no runner has a connection; False if `timeout` passed first."""
        done: bool = self._done.wait(timeout)     # gevent is untyped: Any
        return done

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """Throw GreenletExit into every runner serving a connection.

        A runner scheduled but not started yet is left to start: the server
        it serves is stopping, so it closes its socket at once.
        """
        current = getcurrent()
        hub = self._hub
        if hub is not None:     # (None: nothing was ever spawned)
            for runner in list(self.busy):
                if runner and runner is not current:     # started, not dead, not us
                    hub.loop.run_callback(_throw_if_alive, runner)
        if block:
            self.join(timeout)

    def close(self) -> None:
        """End the parked runners; runners still serving end when done."""
        self.closed = True
        idle, self.idle = self.idle, []
        hub = self._hub
        if hub is None:         # nothing was ever spawned
            return
        for runner in idle:
            # From the hub: a runner that ends returns to its parent, the hub.
            hub.loop.run_callback(_throw_if_alive, runner)


def _throw_if_alive(runner: RawGreenlet) -> None:
    if runner:
        runner.throw(gevent.GreenletExit)
