"""MilterServer: the same middleware and hooks as SmtpServer, run inside an
MTA (Postfix, Sendmail) that calls this process as a milter.

    server = MilterServer(name='mx.example.com')
    server.use(my_middleware)            # as on an SmtpServer
    server.start('inet:127.0.0.1:8891')  # Postfix: smtpd_milters = inet:127.0.0.1:8891
    server.serve_forever()

One greenlet per MTA connection (each serves the SMTP sessions the MTA
runs through it, one after another: connection.py). The options are the
SmtpServer options that mean something behind an MTA, and three of the
milter's own; anything else raises TypeError at construction.
"""
from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import gevent
import gevent.event
from gevent import get_hub
from gevent import socket as gsocket
from greenlet import getcurrent, greenlet

from ..events import LogEvents
from ..server import ChainHost
from ..logs import child, record_log
from ..middleware import stages_of
from ..options import Options, suggest
from ..workers import WorkerPool
from . import message as M
from . import protocol as P
from .connection import MilterConnection
from .handlers import builtin
from .steps import needs_of
from .transport import Listener, Socket

if TYPE_CHECKING:
    import logging

    from typing_extensions import Unpack

    from ..events import Events
    from ..middleware import AuthHook, Middleware, SessionHook, AddressHook
    from ..options import LogBackend, OnStoreError
    from ..state import Store

DEFAULT_LISTEN = 'inet:127.0.0.1:8891'
# libmilter's default read timeout (smfi_settimeout: 7210 s): the MTA's
# connection idles while its SMTP client does, for as long as the MTA allows.
DEFAULT_TIMEOUT = 7210.0
PROGRESS_INTERVAL = 10.0    # s between SMFIR_PROGRESS while the chain works after the body
IDLE_KEPT = 32              # greenlets kept waiting for the next MTA connection

M_ = TypeVar('M_', bound='Middleware')


class MilterOptions(TypedDict, total=False):
    """The keyword arguments of `MilterServer(**options)` (docs/milter.md)."""
    name: str
    size: int | str
    max_recipients: int
    max_connections: int
    socket_timeout: float
    close_timeout: float
    log_level: int | str
    log_backend: logging.Logger | LogBackend
    lenient_addresses: bool
    store: str | Store | None
    on_store_error: OnStoreError
    on_connect: SessionHook | None
    on_auth: AuthHook | None
    on_mail_from: AddressHook | None
    on_rcpt_to: AddressHook | None
    on_data: SessionHook | None
    on_close: SessionHook | None
    workers: int
    max_packet: int
    progress_interval: float
    header_budget: int


# The SmtpServer options a milter takes (the rest are the MTA's business).
SMTP_OPTIONS = frozenset({'name', 'size', 'max_recipients', 'max_connections', 'workers',
                          'socket_timeout',
                          'close_timeout', 'log_level', 'log_backend', 'lenient_addresses',
                          'store', 'on_store_error', 'on_connect', 'on_auth', 'on_mail_from',
                          'on_rcpt_to', 'on_data', 'on_close'})
OWN_OPTIONS = frozenset({'max_packet', 'progress_interval', 'header_budget'})


class MilterServer(ChainHost):
    """A milter serving the middleware chain; see docs/milter.md."""

    def __init__(self, **options: Unpack[MilterOptions]) -> None:
        given: dict[str, Any] = dict(options)
        for key in given:
            if key not in SMTP_OPTIONS and key not in OWN_OPTIONS:
                hint = suggest(key, sorted(SMTP_OPTIONS | OWN_OPTIONS))
                raise TypeError(f'MilterServer has no option {key!r}{hint}')
        self.max_packet = _whole(given.pop('max_packet', P.MAX_PACKET), 'max_packet', 1024)
        self.header_budget = _whole(given.pop('header_budget', M.HEADER_BUDGET),
                                    'header_budget', 0)
        interval = given.pop('progress_interval', PROGRESS_INTERVAL)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
            raise ValueError('progress_interval must be a number of seconds >= 0 (0: never)')
        self.progress_interval = float(interval)
        given.setdefault('socket_timeout', DEFAULT_TIMEOUT)
        self.options = Options(**given)
        self.log_backend = record_log(self.options.log_backend)
        self.events: Events = LogEvents(self.log_backend,
                                        child(self.options.log_backend, 'delivery'),
                                        self.options.log_level)
        self._init_chain(builtin)
        self.needs = needs_of(())       # the stages the chain needs (steps.py)
        # The answer to each offer seen: (Negotiation, its packet, the commands
        # it leaves unanswered), per chain.
        self.negotiations: dict[bytes, tuple[P.Negotiation, bytes, frozenset[str]]] = {}
        self.connections = Connections(self._serve)
        # Stopped read watchers and their timers, for the next connections
        # (transport.WATCHERS_KEPT); the hub's, so made anew in a worker.
        self.spare_watchers: list[tuple[Any, Any]] = []
        self.listeners: list[Listener] = []
        self.address: tuple[str, int] | str | None = None
        self._unix_paths: list[str] = []
        self._stopped = None
        self.stopping = False
        self.hub: Any = None
        self._thread_id: int | None = None
        # workers > 1: this process binds, forked workers serve (workers.py).
        self.worker_id: int | None = None
        self.handle_signals = True      # the master takes SIGTERM and SIGHUP (workers.py)
        self._pool = None

    # -- middleware (as SmtpServer's, and the steps it needs) ---------------------
    def use(self, fn: M_) -> M_:
        """Register a middleware `fn(ctx, next)`; usable as a decorator. An
        unknown stage it declares is refused here, not at the MTA's first call."""
        if callable(fn):
            stages_of(fn)
        super().use(fn)
        self.needs = needs_of(self._middleware)
        self.negotiations = {}
        return fn

    # -- lifecycle ---------------------------------------------------------------
    def start(self, listen: str = DEFAULT_LISTEN, backlog: int = 1024) -> MilterServer:
        """Listen on `listen` ('inet:HOST:PORT', Sendmail's 'inet:PORT@HOST',
        'inet6:...', 'unix:PATH' or 'local:PATH'; port 0 picks a free one)
        and serve; returns at once."""
        if self.stopping:
            raise RuntimeError('this server was stopped; create a new one')
        sock = self._bind(listen, backlog)
        if not self._components_started:
            try:
                self._start_components(self.lifecycle)
            except BaseException:
                sock.close()
                raise
            self._components_started = True
        if self.options.workers > 1 and self.worker_id is None:
            self._init_lifecycle()
            if self._pool is None:
                self._pool = WorkerPool(self)
            self._pool.add_socket(sock)
        else:
            self.listen_on(sock)
        bound = sock.getsockname()
        where = bound if isinstance(bound, str) else bound[:2]
        if self.address is None:
            self.address = where
        self.emit('listening', where)
        return self

    def listen_on(self, sock: Any) -> None:
        """Serve on a listening socket (a worker: one its master bound)."""
        listener = Listener(sock, self._accepted, self._warn)
        listener.start()
        self.listeners.append(listener)
        self._init_lifecycle()

    def _warn(self, message: str, *args: object) -> None:
        self.log_backend.log(30, message, *args)

    def _init_lifecycle(self) -> None:
        if self._stopped is None:
            self._stopped = gevent.event.Event()
            self.hub = gevent.get_hub()
            self._thread_id = threading.get_ident()

    def become_worker(self, worker_id: int, shared: object = None) -> None:
        """In a forked worker's serving thread: forget the master's state
        (its listeners, hub, components: the master started and stops them;
        its unix sockets: the master removes them)."""
        self.worker_id = worker_id
        self._components_started = False
        self._pool = None
        self.listeners = []
        self.connections = Connections(self._serve)
        self.spare_watchers = []
        self._unix_paths = []
        self.stopping = False
        self._stopped = None
        self.hub = None
        self._thread_id = None

    def _bind(self, listen: str, backlog: int) -> Any:
        kind, target = parse_listen(listen)
        if kind == 'unix':
            assert isinstance(target, str)
            _remove_stale_socket(target)
            sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(target)
            except OSError:
                sock.close()
                raise
            self._unix_paths.append(target)
        else:
            assert isinstance(target, tuple)
            host, port = target
            family = socket.AF_INET6 if ':' in host else socket.AF_INET
            sock = gsocket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        sock.listen(backlog)
        return sock

    def _accepted(self, sock: Socket, address: Any) -> None:
        """A new MTA connection (in the hub: Listener): its greenlet runs at
        once, up to its first wait."""
        peer = f'{address[0]}:{address[1]}' if isinstance(address, tuple) else 'unix'
        limit = self.options.max_connections
        if self.stopping or (limit and len(self.connections) >= limit):
            self.log_backend.log(30, 'milter connection from %s refused: %s', peer,
                                 'stopping' if self.stopping else 'max_connections')
            sock.close()
            return
        self.connections.start(sock, peer)

    def _serve(self, sock: Socket, peer: str) -> None:
        """One MTA connection, in a greenlet of `connections`."""
        try:
            connection = MilterConnection(self, sock, peer)
        except BaseException:
            sock.close()
            raise
        connection.run()

    def stop(self, timeout: float | None = None) -> None:
        """Stop listening; let MTA connections end within `timeout` (default
        close_timeout), then close them (the MTA applies its default action,
        Postfix's milter_default_action, to sessions still open). Callable
        from any thread: the stop then runs in the server's hub."""
        if self._thread_id is not None and threading.get_ident() != self._thread_id:
            done = threading.Event()

            def stop_and_signal() -> None:
                try:
                    self.stop(timeout)
                finally:
                    done.set()
            self.hub.loop.run_callback_threadsafe(gevent.spawn, stop_and_signal)
            done.wait()
            return
        self.stop_in_hub(timeout)

    def stop_in_hub(self, timeout: float | None) -> None:
        """What stop() does, in the server's own hub (a worker's control
        thread schedules it there: workers.Forkable)."""
        if self.stopping:
            if self._stopped is not None:
                self._stopped.wait()
            return
        self.stopping = True
        grace = self.options.close_timeout if timeout is None else timeout
        if self._pool is not None:
            self._pool.stop(grace)
        for listener in self.listeners:
            listener.close()
        self.connections.join(grace)
        self.connections.kill(max(grace, 1.0))
        self.connections.close()
        for readable, timer in self.spare_watchers:
            readable.close()
            if timer is not None:
                timer.close()
        self.spare_watchers = []
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._stop_components()
        self.emit('close')
        if self._stopped is not None:
            self._stopped.set()

    def __enter__(self) -> MilterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=1.0)



class Connections:
    """The greenlets serving MTA connections: `start(sock, peer)` in the hub,
    `len()`, and `join`/`kill`/`close` for stop().

    Plain greenlets, the hub their parent: a gevent Greenlet's links and
    pool cost more than the rest of a short session. A greenlet whose
    connection ended waits for the next one (up to IDLE_KEPT wait): a new
    one costs its own Python frame stack (CPython 3.11 maps 16 KiB for it
    and unmaps it at its end), once per connection where Postfix opens one
    per SMTP session."""

    def __init__(self, serve: Callable[[Socket, str], None]) -> None:
        self._serve = serve
        self._serving: set[greenlet] = set()
        self._idle: list[greenlet] = []
        self._none = gevent.event.Event()
        self._none.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._serving)

    def start(self, sock: Socket, peer: str) -> None:
        """Serve a new connection: an idle greenlet's or a new one's, run
        at once, up to its first wait (called in the hub)."""
        worker = self._idle.pop() if self._idle else greenlet(self._work, parent=get_hub())
        self._serving.add(worker)
        self._none.clear()
        worker.switch(sock, peer)

    def _work(self, sock: Socket, peer: str) -> None:
        me = getcurrent()
        hub = get_hub()
        while True:
            try:
                self._serve(sock, peer)
            finally:
                self._serving.discard(me)
                if not self._serving:
                    self._none.set()
            if self.closed or len(self._idle) >= IDLE_KEPT:
                return
            self._idle.append(me)
            try:
                sock, peer = hub.switch()       # start() hands over the next one
            except BaseException:               # close(): GreenletExit
                if me in self._idle:
                    self._idle.remove(me)
                raise

    def join(self, timeout: float) -> bool:
        """Wait until none is serving, at most `timeout` s; whether none is."""
        return self._none.wait(timeout)

    def kill(self, timeout: float) -> None:
        """GreenletExit into each serving greenlet (its loop ends the
        session and closes the socket), then wait for them, at most
        `timeout` s."""
        for serving in list(self._serving):
            gevent.kill(serving)
        self.join(timeout)

    def close(self) -> None:
        """No greenlet waits for a connection any more: the idle ones end
        (GreenletExit, thrown from the hub) before this returns."""
        self.closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            gevent.kill(worker)
        if idle:
            gevent.sleep(0)     # the hub runs the kills queued before this


def parse_listen(spec: str) -> tuple[str, tuple[str, int] | str]:
    """('inet', (host, port)) or ('unix', path) from a milter socket
    address as Postfix writes it (inet:host:port, unix:path) or Sendmail
    (inet:port@host, inet6:port@host, local:path). ValueError otherwise."""
    if not isinstance(spec, str):
        raise ValueError(f'a milter address is a string, not {type(spec).__name__}')
    kind, sep, rest = spec.partition(':')
    kind = kind.lower()
    if not sep or not rest:
        raise ValueError(f'{spec!r}: expected inet:HOST:PORT or unix:PATH')
    if kind in ('unix', 'local'):
        return 'unix', rest
    if kind not in ('inet', 'inet6'):
        raise ValueError(f'{spec!r}: the kind is inet, inet6, unix or local')
    if '@' in rest:
        port_text, _, host = rest.partition('@')
    elif rest.isdigit():        # Sendmail's inet:PORT: every interface
        host, port_text = '', rest
    else:
        host, sep, port_text = rest.rpartition(':')
        if not sep:
            raise ValueError(f'{spec!r}: expected inet:HOST:PORT')
    host = host.strip('[]') or ('::' if kind == 'inet6' else '0.0.0.0')
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f'{spec!r}: the port must be a number from 0 to 65535')
    return 'inet', (host, int(port_text))


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a process that is gone is removed; any other
    file at that path is left alone (bind then fails with its reason)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):
        probe = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(f'{path}: another process listens on this socket')
        finally:
            probe.close()


def _whole(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f'{name} must be a whole number >= {least}')
    return value
