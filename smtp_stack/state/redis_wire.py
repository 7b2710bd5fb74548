"""redis-py's protocol over gevent's sockets: the Redis store's calls run in
the greenlet that makes them, never in a native thread, and never block
the hub, whether or not gevent monkey-patched the process.

redis-py blocks on whatever socket its connection class opens. These
subclasses open `gevent.socket` sockets instead (TCP, a unix socket file,
and TLS through a `gevent.ssl` context built from the same settings), so a
call waits cooperatively: no hand-off to a thread and back, which cost a
Redis call more CPU than Redis itself (issue 25). The parser, the
authentication and `SELECT` on connect, the encoding of arguments and the
decoding of replies stay redis-py's.

`Connections` keeps the idle ones per native thread, so per hub (a gevent
socket belongs to the hub it was made in), and per process (a forked
worker makes its own); at most `max_idle` of them (MAX_IDLE, 16, by
default): a burst of concurrent calls opens more, and those past the
bound are closed when their call is done, so a burst does not leave a
process holding hundreds of idle connections on the Redis server (its
`maxclients` is 10,000 for every client of every machine).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import socket as std_socket
from collections.abc import Callable
from typing import Any

import redis
from gevent.monkey import get_original
from gevent import socket as gsocket
from gevent import ssl as gssl
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import NoScriptError
from redis.retry import Retry


def _tcp(conn: Any) -> gsocket.socket:
    """A connected gevent TCP socket for redis-py's connection `conn`. An
    address literal is connected to as it is: gevent resolves names in a
    thread of the hub's pool, which a literal does not need."""
    try:
        family = std_socket.AF_INET6 if ipaddress.ip_address(conn.host).version == 6 \
            else std_socket.AF_INET
    except ValueError:
        sock = gsocket.create_connection((conn.host, conn.port),
                                         timeout=conn.socket_connect_timeout)
    else:
        sock = gsocket.socket(family, std_socket.SOCK_STREAM)
        sock.settimeout(conn.socket_connect_timeout)
        try:
            sock.connect((conn.host, conn.port))
        except BaseException:
            sock.close()
            raise
    try:
        sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
        if conn.socket_keepalive:
            sock.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_KEEPALIVE, 1)
            for option, value in conn.socket_keepalive_options.items():
                sock.setsockopt(std_socket.IPPROTO_TCP, option, value)
        sock.settimeout(conn.socket_timeout)
    except OSError:
        sock.close()
        raise
    return sock


class GeventConnection(Connection):
    """`redis://`: TCP on a gevent socket."""

    def _connect(self) -> gsocket.socket:
        return _tcp(self)


class GeventSSLConnection(SSLConnection):
    """`rediss://`: TLS on a gevent socket; the context is gevent's
    SSLContext, configured from redis-py's TLS parameters (the URL's)."""

    def _connect(self) -> Any:
        sock = _tcp(self)
        wrap: Callable[[gsocket.socket], Any] = self._wrap_socket_with_ssl   # unannotated
        try:
            return wrap(sock)
        except BaseException:
            sock.close()
            raise

    def _build_ssl_context(self) -> gssl.SSLContext:
        context = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        context.load_default_certs()
        context.check_hostname = bool(self.check_hostname)
        context.verify_mode = self.cert_reqs
        for flag in self.ssl_include_verify_flags or ():
            context.verify_flags |= flag
        for flag in self.ssl_exclude_verify_flags or ():
            context.verify_flags &= ~flag
        if self.certfile or self.keyfile:
            context.load_cert_chain(certfile=self.certfile, keyfile=self.keyfile,
                                    password=self.certificate_password)
        if self.ca_certs or self.ca_path or self.ca_data:
            context.load_verify_locations(cafile=self.ca_certs, capath=self.ca_path,
                                          cadata=self.ca_data)
        if self.ssl_min_version is not None:
            context.minimum_version = self.ssl_min_version
        if self.ssl_ciphers:
            context.set_ciphers(self.ssl_ciphers)
        return context


class GeventUnixConnection(UnixDomainSocketConnection):
    """`unix:///PATH`: a socket file, on a gevent socket."""

    def _connect(self) -> gsocket.socket:
        sock = gsocket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        sock.settimeout(self.socket_connect_timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.socket_timeout)
        return sock


COOPERATIVE: dict[type[Any], type[Any]] = {
    Connection: GeventConnection,
    SSLConnection: GeventSSLConnection,
    UnixDomainSocketConnection: GeventUnixConnection,
}


MAX_IDLE = 16      # idle connections kept per hub and URL (Connections)


class Script:
    """A Lua script called by its SHA1 (`EVALSHA`: the text crosses the
    wire once per Redis process), sent whole (`EVAL`) when Redis answers
    NOSCRIPT: after a restart, a `SCRIPT FLUSH`, or on a replica promoted.
    `EVALSHA` and the SHA1 are packed once."""

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self._evalsha = _items(('EVALSHA', self.sha))

    def call(self, conns: Connections, keys: list[str], args: list[Any]) -> Any:
        count = 3 + len(keys) + len(args)
        try:
            return conns.execute_packed(b'*%d\r\n%s%s' % (
                count, self._evalsha, _items((len(keys), *keys, *args))))
        except NoScriptError:
            return conns.execute('EVAL', self.text, len(keys), *keys, *args)


def _items(args: tuple[Any, ...]) -> bytes:
    """The bulk strings of a command's arguments (RESP)."""
    parts = []
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode('utf-8', 'surrogateescape')
        parts.append(b'$%d\r\n%s\r\n' % (len(data), data))
    return b''.join(parts)


def packed(args: tuple[Any, ...]) -> bytes:
    """A command in RESP (the Redis protocol): an array of bulk strings.
    Arguments are str (UTF-8; a key from a non-UTF-8 address keeps its
    bytes), bytes or int; floats are written by the caller (repr)."""
    return b'*%d\r\n%s' % (len(args), _items(args))


# Native even in a monkey-patched process (where threading.local is per greenlet).
_native_local = get_original('_thread', '_local')
_pid = os.getpid()      # this process's, without a system call per command


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Connections:
    """redis-py connections of one URL, kept idle per hub and per process,
    each used by one greenlet at a time; one command is one round trip.
    A connection that failed (timeout, reset) is dropped, not reused: the
    next call opens a fresh one. `settings(timeout)` gives the class and
    the keyword arguments of a connection, read at each new connection."""

    def __init__(self, url: str, options: dict[str, Any], timeout: Callable[[], float],
                 max_idle: int = MAX_IDLE):
        self.max_idle = max_idle
        pool = redis.ConnectionPool.from_url(url, **options)
        self._class = COOPERATIVE[pool.connection_class]
        self._kwargs = dict(pool.connection_kwargs)
        self._kwargs['retry'] = Retry(NoBackoff(), 0)   # one attempt: the breaker decides
        pool.disconnect()
        self.timeout = timeout
        self._pid = os.getpid()
        # Per native thread, so per hub (a hub belongs to one thread), and
        # gone with the thread: a plain thread of a threaded WSGI server
        # leaves no connection behind.
        self._local = _native_local()

    def check(self) -> None:
        """Make (not connect) one connection: unknown parameters fail here."""
        self._class(**self._kwargs)

    def _idle_here(self) -> list[Any]:
        if self._pid != _pid:        # a forked child: the parent's are not ours
            self._local = _native_local()
            self._pid = _pid
        idle: list[Any] | None = getattr(self._local, 'idle', None)
        if idle is None:
            idle = self._local.idle = []
        return idle

    def execute(self, *args: Any) -> Any:
        """One command's reply (decoded strings); redis-py's errors raised.
        The command is packed here (packed()): redis-py's packer costs more
        than the rest of the client (issue 25)."""
        return self.execute_packed(packed(args))

    def execute_packed(self, command: bytes) -> Any:
        """The reply to one command already packed in RESP."""
        idle = self._idle_here()
        conn = idle.pop() if idle else self._class(**{
            **self._kwargs, 'socket_timeout': self.timeout(),
            'socket_connect_timeout': self.timeout()})
        try:
            conn.send_packed_command((command,))
            reply = conn.read_response()
        except redis.ResponseError:
            self._put_back(idle, conn)   # Redis answered (NOSCRIPT, WRONGTYPE): the link is sound
            raise
        except BaseException:
            conn.disconnect()
            raise
        self._put_back(idle, conn)
        return reply

    def _put_back(self, idle: list[Any], conn: Any) -> None:
        """Kept for the next call, or closed past `max_idle`."""
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.disconnect()

    def close(self) -> None:
        """Close this thread's connections; forget the others' (a gevent
        socket is closed from its own hub only; they close with their thread)."""
        idle = getattr(self._local, 'idle', []) if self._pid == _pid else []
        self._local = _native_local()
        for conn in idle:
            try:
                conn.disconnect()
            except Exception:
                pass
