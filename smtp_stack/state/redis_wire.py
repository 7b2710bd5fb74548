"""redis-py's protocol over gevent's sockets: the Redis store's calls run in
the greenlet that makes them, never in a native thread, and never block
the hub, whether or not gevent monkey-patched the process.

redis-py blocks on whatever socket its connection class opens. These
subclasses open `gevent.socket` sockets instead (TCP, a unix socket file,
and TLS through a `gevent.ssl` context built from the same settings), so a
call waits cooperatively: no hand-off to a thread and back, which cost a
Redis call more CPU than Redis itself (issue 25). Connecting, the
handshake (HELLO, AUTH, SELECT) and closing stay redis-py's; a command
and its reply go over the connection's socket as resp.py writes and reads
them: redis-py's writer and generic reader were half of a call's CPU.

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
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry

from . import resp


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
READ_SIZE = 65536


def _read_reply(sock: Any) -> Any:
    """One reply from the socket (the only one asked for: nothing may follow it)."""
    data = sock.recv(READ_SIZE)
    while True:
        if not data:
            raise ConnectionError('Redis closed the connection')
        found = resp.reply(data)
        if found is not None:
            if found[1] != len(data):
                raise resp.ProtocolError('bytes after the reply')
            return found[0]
        more = sock.recv(READ_SIZE)
        data = data + more if more else b''


class Script:
    """A Lua script called by its SHA1 (`EVALSHA`: the text crosses the
    wire once per Redis process), sent whole (`EVAL`) when Redis answers
    NOSCRIPT: after a restart, a `SCRIPT FLUSH`, or on a replica promoted.
    `EVALSHA` and the SHA1 are packed once."""

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self._evalsha = resp.bulk_strings(('EVALSHA', self.sha))

    def call(self, conns: Connections, keys: list[str], args: list[Any]) -> Any:
        count = 3 + len(keys) + len(args)
        try:
            return conns.execute_packed(b'*%d\r\n%s%s' % (
                count, self._evalsha, resp.bulk_strings((len(keys), *keys, *args))))
        except NoScriptError:
            return conns.execute('EVAL', self.text, len(keys), *keys, *args)


packed = resp.command       # its older name


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
        """One command's reply (strings decoded); an error reply raised as
        redis-py's ResponseError (NoScriptError for NOSCRIPT)."""
        return self.execute_packed(resp.command(args))

    def execute_packed(self, command: bytes) -> Any:
        """The reply to one command already written in RESP."""
        # _idle_here's usual answer without its frame: this process's list
        idle = getattr(self._local, 'idle', None) if self._pid == _pid else None
        if idle is None:
            idle = self._idle_here()
        conn = idle.pop() if idle else self._class(**{
            **self._kwargs, 'socket_timeout': self.timeout(),
            'socket_connect_timeout': self.timeout()})
        try:
            if conn._sock is None:      # redis-py's socket attribute: None until connected
                conn.connect()          # and its handshake: HELLO 3, AUTH, SELECT
            sock = conn._sock
            sent = sock.send(command)
            if sent != len(command):
                sock.sendall(command[sent:])
            found = _read_reply(sock)
        except BaseException:
            conn.disconnect()
            raise
        # Kept for the next call, or closed past max_idle (an error reply
        # too: Redis answered, the link is sound).
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.disconnect()
        if isinstance(found, ResponseError):
            raise found
        return found

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
