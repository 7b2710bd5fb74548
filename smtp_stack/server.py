"""SmtpServer: listening sockets, connection limits, middleware and lifecycle.

With `workers > 1` this process becomes the master of forked workers that
serve the sockets it binds; see workers.py.
"""
from __future__ import annotations

import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import gevent
import gevent.event
from gevent import socket as gsocket
from gevent.server import StreamServer

from . import replies as R
from .engine import Engine, SessionShutdown
from .engine.engine import builtin, session_for
from .events import LIMIT, LogEvents
from .limits import RecentFailures
from .logs import RecordLog, child, record_log
from .state import FailureCounter, SharedConnections, SharedFailures
from .middleware import Lifecycle, compose, name_of
from .options import Options
from .replies import Reply, format_reply
from .runners import SessionRunners
from .sockets import DeadlineSweeper, PlainSocket
from .tls import TLS_OPTIONS, build_secure_contexts, install_sni
from .workers import WorkerPool

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .events import Events
    from .middleware import Context, Dispatch, Middleware, ServerEvent
    from .options import LogBackend, ServerOptions
    from .session import Session

EVENTS = ('listening', 'close', 'error')

# Made in logs.py; named here too, where they were first (and are imported from).
__all__ = ['SmtpServer', 'RecordLog', 'record_log', 'hostport']

M = TypeVar('M', bound='Middleware')
L = TypeVar('L', bound=Callable[..., object])


class ChainHost:
    """What a server of the middleware chain is, whatever it speaks:
    `use()`, the listeners of its events, the components' start and stop,
    and `serve_forever()`. SmtpServer and the milter's MilterServer are
    both one; each gives `_init_chain` its innermost handler."""

    options: Options
    log_backend: LogBackend
    _stopped: gevent.event.Event | None
    _pool: WorkerPool | None

    def _init_chain(self, innermost: Dispatch) -> None:
        self._innermost = innermost
        self._middleware: list[Middleware] = []
        # What sessions call per command: the middleware, composed.
        self.chain: Dispatch = innermost
        # The components' lifecycle methods (middleware.Component), found at use().
        self.lifecycle = Lifecycle()
        self._components_started = False   # in this process, by the first start()
        self._handlers: dict[str, list[Callable[..., object]]] = {e: [] for e in EVENTS}

    # -- middleware and events ---------------------------------------------
    def use(self, fn: M) -> M:
        """Register a middleware `fn(ctx, next)`; usable as a decorator.

        A component's lifecycle methods (middleware.Component) are found
        here, once; one registered after start() is started at once.
        """
        if not callable(fn):
            raise TypeError('middleware must be callable as fn(ctx, next)')
        found = Lifecycle.of(fn)
        if self._components_started:
            self._start_components(found)
        self._middleware.append(fn)
        self.lifecycle.add(found)
        self.chain = compose(self._middleware, self._innermost)
        return fn

    def on(self, event: str, fn: L) -> L:
        if event not in self._handlers:
            raise ValueError(f'unknown event {event!r}; known: {", ".join(EVENTS)}')
        self._handlers[event].append(fn)
        return fn

    def emit(self, event: str, *args: object) -> None:
        """Call the listeners of `event`. A listener that fails is logged,
        one line per failure naming the event, and the others still run: a
        listener's bug never reaches the server."""
        for fn in self._handlers[event]:
            try:
                fn(*args)
            except Exception as exc:
                self.log_backend.log(40, 'A listener of %r failed: %s: %r', event,
                                     name_of(fn), exc)

    def dispatch(self, ctx: Context) -> None:
        """Run the middleware chain for one command (`chain`, composed at each use())."""
        self.chain(ctx)

    # -- lifecycle -----------------------------------------------------------
    @property
    def worker_pids(self) -> list[int]:
        """The pids of the worker processes, in the master (else [])."""
        return self._pool.pids if self._pool is not None else []

    def serve_forever(self) -> None:
        """Block (cooperatively) until stop() has finished."""
        if self._stopped is None:
            raise RuntimeError('call start() before serve_forever()')
        self._stopped.wait()

    def _start_components(self, lifecycle: Lifecycle) -> None:
        """`start(self)` of each component, in registration order. When one
        fails, those it started are stopped again and the failure raised."""
        server: Any = self      # what components are given: the server
        started: list[ServerEvent | None] = []
        try:
            for start, stop in lifecycle.serving:
                if start is not None:
                    start(server)
                started.append(stop)
        except BaseException:
            for stop in reversed(started):
                if stop is not None:
                    self._call_stop(stop)
            raise

    def _stop_components(self) -> None:
        """`stop(self)` of each component, newest first, if this process started them."""
        if self._components_started:
            self._components_started = False
            for stop in self.lifecycle.stops:
                self._call_stop(stop)

    def _call_stop(self, stop: ServerEvent) -> None:
        server: Any = self
        try:
            stop(server)
        except (Exception, gevent.Timeout) as exc:     # the others must still stop
            self.log_backend.log(40, '%s failed: %r', name_of(stop), exc)
            self.emit('error', exc)


class SmtpServer(ChainHost):
    """A configurable SMTP/LMTP server; see docs/api.md for the options
    (`ServerOptions` lists them for type checkers)."""

    def __init__(self, **options: Unpack[ServerOptions]):
        self.options = Options(**options)
        # What sessions log through (logs.RecordLog): made once per server;
        # the deliveries' lines go to its child logger `.delivery`.
        self.log_backend = record_log(self.options.log_backend)
        self.delivery_log = child(self.options.log_backend, 'delivery')
        # Who hears of each fact of the sessions (events.Events): the log;
        # replace it (or wrap it in events.Fanout) to count them as well.
        self.events: Events = LogEvents(self.log_backend, self.delivery_log,
                                        self.options.log_level)
        self._init_chain(builtin)
        self.listeners: list[_Listener] = []
        self.runners = SessionRunners()     # the greenlets that serve connections (introspection)
        self._connections: set[Engine] = set()
        self._shared_sessions: tuple[Any, int] | None = None   # a worker's (SessionCounts, slot)
        self._per_ip: Counter[str] = Counter()
        self.auth_failures = self._auth_failure_counter()   # per client address, or None
        self.stopping = False
        self._stopped = None
        self.hub: Any = None
        self._thread_id: int | None = None
        self.sweeper: DeadlineSweeper | None = None     # of the serving hub
        self.address: tuple[str, int] | None = None
        self.worker_id: int | None = None       # 0..workers-1 inside a worker process
        # workers > 1 in the main thread: the master takes SIGTERM (stop) and
        # SIGHUP (re-fork) unless the application handles signals itself.
        self.handle_signals = True
        self._pool = None    # the master's (workers > 1)
        self._shared_conns: SharedConnections | None = None
        self.secure_context: dict[str, ssl.SSLContext] = {}
        opts = self.options
        if opts.secure or opts.enabled('STARTTLS'):
            # Built now so that bad PEM raises here, not on a live connection;
            # the self-signed fallback is generated once per process and name.
            settings: dict[str, Any] = {name: getattr(opts, name) for name in TLS_OPTIONS}
            settings['sni_options'] = opts.sni_options
            self.secure_context = build_secure_contexts(settings, opts.name)
            install_sni(self.secure_context, opts.sni_callback)

    # -- lifecycle -----------------------------------------------------------
    def start(self, port: int = 25, host: str = '', backlog: int = 1024) -> SmtpServer:
        """Bind and start accepting; returns at once (serving runs in greenlets).

        With `workers > 1` this process only binds: the workers, forked when
        its hub first runs, accept and serve (workers.py).
        """
        if self.stopping:
            raise RuntimeError('this server was stopped; create a new one')
        sock = _bind(host, port, backlog)
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
        if self.address is None:
            self.address = sock.getsockname()[:2]
        self.emit('listening', sock.getsockname()[:2])
        return self

    def listen_on(self, sock: Any) -> None:
        """Accept and serve on `sock`, a listening socket bound elsewhere
        (by the master, for a worker: the WorkerPool's interface, workers.Forkable)."""
        listener = _Listener(sock, self._accept, spawn=self.runners.spawn)
        bound = sock.getsockname()
        if bound[0] not in ('0.0.0.0', '::', ''):
            listener.local_address = bound
        listener.start()
        self.listeners.append(listener)
        self._init_lifecycle()

    def _init_lifecycle(self) -> None:
        if self._stopped is None:
            self.hub = gevent.get_hub()
            self._thread_id = threading.get_ident()
            self._stopped = gevent.event.Event()
            self.sweeper = DeadlineSweeper(self.hub)

    def become_worker(self, worker_id: int, shared: tuple[Any, int] | None = None) -> None:
        """In a forked worker's serving thread: forget the master's state.
        `shared`: (SessionCounts, this worker's counter) for max_connections.
        The components were started by the master, which also stops them."""
        self.worker_id = worker_id
        self._components_started = False
        self._shared_sessions = shared
        self._pool = None
        self.listeners = []
        self.runners = SessionRunners()
        self._connections = set()
        self._per_ip = Counter()
        self.auth_failures = self._auth_failure_counter()
        self.stopping = False
        self._stopped = None
        self.hub = None
        self._thread_id = None
        self.sweeper = None

    def _auth_failure_counter(self) -> FailureCounter | None:
        opts = self.options
        if not opts.max_auth_failures_per_ip:
            return None
        if opts.store is not None:      # across workers and machines
            return SharedFailures(opts.store, opts.max_auth_failures_per_ip,
                                  opts.auth_failure_window, opts.on_store_error)
        return RecentFailures(opts.max_auth_failures_per_ip, opts.auth_failure_window)

    def reload(self) -> None:
        """In the master: replace every worker by a fresh fork, gracefully
        (what SIGHUP does). A single-process server has nothing to reload."""
        if self._pool is not None:
            self._pool.reload()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let sessions finish, then 421 the rest; blocks until done.

        Idle sessions (no transaction open) get 421 at once; sessions in a
        transaction may finish it within `timeout` (default close_timeout).
        Callable from any thread: from another thread the stop runs in the
        server's hub and this call waits for it.
        """
        if self._stopped is None:
            self.stopping = True
            return
        if self._stopped.is_set():
            return
        if threading.get_ident() != self._thread_id:
            done = threading.Event()
            self.hub.loop.run_callback_threadsafe(
                gevent.spawn, self._stop_and_signal, timeout, done)
            done.wait()
            return
        self.stop_in_hub(timeout)

    def _stop_and_signal(self, timeout: float | None, done: threading.Event) -> None:
        try:
            self.stop_in_hub(timeout)
        finally:
            done.set()

    def stop_in_hub(self, timeout: float | None) -> None:
        """What stop() does, in the server's own hub (a worker's control
        thread schedules it there: workers.Forkable)."""
        stopped, sweeper = self._stopped, self.sweeper
        assert stopped is not None and sweeper is not None, 'stop() before start() returns early'
        if self.stopping:
            stopped.wait()
            return
        self.stopping = True
        if self._pool is not None:
            grace = self.options.close_timeout if timeout is None else timeout
            self._pool.stop(grace)
            self._stop_components()
            self.emit('close')
            stopped.set()
            return
        for listener in self.listeners:
            listener.close()
        for conn in list(self._connections):
            if conn.waiting_idle:
                self._interrupt(conn)
        grace = self.options.close_timeout if timeout is None else timeout
        self.runners.join(timeout=grace)
        for conn in list(self._connections):
            self._interrupt(conn)
        # A session blocked in a write to a client that never reads cannot
        # answer the kill promptly; closing its socket ends it.
        if not self.runners.join(timeout=1.0):
            for conn in list(self._connections):
                conn.abort()
            self.runners.kill(block=True, timeout=1.0)
        self.runners.close()
        sweeper.close()
        self._stop_components()
        if self.worker_id is None:      # the master reports the close once
            self.emit('close')
        stopped.set()

    def _interrupt(self, conn: Engine) -> None:
        """Throw SessionShutdown into `conn`'s session soon, if its runner
        still serves it then (runners move on to other connections)."""
        def throw() -> None:
            if conn in self._connections and conn.greenlet:
                conn.greenlet.throw(SessionShutdown)
        self.hub.loop.run_callback(throw)

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connections -----------------------------------------------------------
    def _accept(self, sock: Any, peer: tuple[Any, ...], local: Any = None) -> None:
        """Run in its own greenlet for each accepted socket (`local`: our
        address, when the listener knows it)."""
        opts = self.options
        if self.stopping:
            sock.close()
            return
        if opts.on_socket is not None:
            try:
                opts.on_socket(sock, peer)
            except Exception:
                sock.close()
                return
        shared = self._shared_sessions     # with workers: every worker's sessions count
        if opts.max_connections and (shared[0].total() if shared else len(self._connections)) \
                >= opts.max_connections:
            self.events.refused(session_for(sock, peer, local, opts.lmtp), 'CONNECT',
                                R.TOO_MANY_CONNECTIONS, LIMIT, None, None)
            return _refuse(sock, R.TOO_MANY_CONNECTIONS)
        conn = Engine(self, sock, peer, local)
        self._connections.add(conn)
        if shared:
            shared[0].counts[shared[1]] += 1
        try:
            conn.run()
        finally:
            self._connections.discard(conn)
            if shared:
                shared[0].counts[shared[1]] -= 1

    def claim_client_ip(self, ip: str) -> bool:
        """Count a session against max_connections_per_ip; False when over.

        Called by the session once it knows the real client (after a PROXY
        header), so clients behind one proxy are not counted as the proxy.
        """
        limit = self.options.max_connections_per_ip
        if limit and self.options.store is not None:
            return self._shared_connections().claim(ip, limit)
        if limit and self._per_ip[ip] >= limit:
            return False
        self._per_ip[ip] += 1
        return True

    def release_client_ip(self, ip: str) -> None:
        if self.options.max_connections_per_ip and self.options.store is not None:
            return self._shared_connections().release(ip)
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def _shared_connections(self) -> SharedConnections:
        shared = self._shared_conns
        if shared is None:
            assert self.options.store is not None, 'called only when there is a store'
            shared = self._shared_conns = SharedConnections(self.options.store,
                                                            self.options.on_store_error)
        return shared

    @property
    def connections(self) -> int:
        """How many sessions are open now."""
        return len(self._connections)

    @property
    def sessions(self) -> list[Session]:
        """The `Session` of every open connection (a snapshot)."""
        return [engine.session for engine in list(self._connections)]

    @property
    def engines(self) -> list[Engine]:
        """The `Engine` running each open connection (a snapshot, for tests
        and debugging: its `transport.pending` bytes, its `counters`)."""
        return list(self._connections)

    @property
    def connections_per_ip(self) -> dict[str, int]:
        """Open sessions counted per client address (max_connections_per_ip),
        as this process counts them without a `store`."""
        return dict(self._per_ip)


class _Listener(StreamServer):     # type: ignore[misc]   # gevent has no type information
    """A StreamServer whose accepted sockets are `PlainSocket`s, each served by
    a greenlet that starts right in `_serve` (one interpreter frame less on
    the C stack that every idle session keeps a copy of)."""

    # Our address on every accepted socket, when the listening socket is
    # bound to one address (not a wildcard): no getsockname() per connection.
    local_address: tuple[Any, ...] | None = None

    def do_read(self) -> Any:
        accepted = super().do_read()
        if accepted is not None:
            accepted[0].__class__ = PlainSocket
        return accepted

    def do_handle(self, sock: Any, address: Any) -> None:
        if self._spawn is None:
            return self._serve(sock, address)
        try:
            self._spawn(self._serve, sock, address)
        except BaseException:
            sock.close()
            raise

    def _serve(self, sock: Any, address: Any) -> None:
        try:
            self._handle(sock, address, self.local_address)
        finally:
            sock.close()


def _refuse(sock: Any, reply: Reply) -> None:
    try:
        sock.sendall(format_reply(reply.code, reply.message, reply.enhanced, True))
    except OSError:
        pass
    finally:
        sock.close()


def _bind(host: str, port: int, backlog: int) -> Any:
    """A listening gevent socket. An OSError names the address it was about
    (`filename`: '127.0.0.1:25'), so that every caller can say which one."""
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, hostport(host or '*', port)) from None
    family, _, _, _, sockaddr = infos[0]
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = hostport(str(sockaddr[0]), int(sockaddr[1]))
        raise OSError(exc.errno, exc.strerror, where) from None
    return sock


def hostport(host: str, port: int) -> str:
    """'127.0.0.1:25', '[::1]:25': an address as people write it."""
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
