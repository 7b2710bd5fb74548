"""rspamd's HTTP protocol, the client side shared by the `rspamd` policy
(policies/rspamd_http.py) and the inbox's spam check (inbox/rspamd_check.py):
the address of rspamd's normal worker, and HTTP/1.1 POSTs to it.

The HTTP/1.1 client is h11 (the protocol, no I/O) over gevent sockets
(explicitly: it cooperates with the hub whether or not the process is
monkey-patched). Connections are kept for the next request when the
server allows it (HTTP/1.1 persistence, RFC 9112 9.3): a small pool of
idle connections per hub and process, dropped in a forked worker. rspamd
3.4's workers answer `Connection: close` to every request, so against
them each request costs one connection, closed at once; behind a proxy
that keeps connections (haproxy, nginx) the pool reuses them.

h11 comes with the `policies` extra and with the `inbox` extra.
"""
from __future__ import annotations

import io
import json
import math
import os
import select
import time
import weakref
from collections.abc import Callable
from typing import TypeAlias
from urllib.parse import urlsplit

import gevent
import h11
from gevent import socket as gsocket

__all__ = ['RspamdError', 'HttpPool', 'rspamd_address', 'reply_json', 'number', 'Opener']

DEFAULT_PORT = 11333        # rspamd's normal worker
CHUNK = 64 << 10            # bytes of the body sent at a time
MAX_REPLY = 16 << 20        # a longer reply is nonsense: rspamd's JSON is kilobytes
KEEP_IDLE = 30.0            # seconds an idle connection is kept for the next request

# Opens the body to send, from its first byte (a spool's `open`).
Opener: TypeAlias = Callable[[], io.BufferedIOBase]


class RspamdError(Exception):
    """rspamd could not be asked, or answered something that is no verdict."""


# -- HTTP/1.1 over gevent sockets ---------------------------------------------------

class _Connection:
    """One HTTP/1.1 connection: a gevent socket and its h11 state machine."""

    def __init__(self, host: str, port: int, timeout: float):
        self.sock = gsocket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10)
        self.idle_since = time.monotonic()
        self.reused = False

    def fresh(self) -> bool:
        """Whether an idle connection may carry the next request: not too old,
        and nothing to read (a server that closed it sent EOF)."""
        if time.monotonic() - self.idle_since > KEEP_IDLE:
            return False
        # poll(), not select(): select() cannot take a descriptor past 1023,
        # which a busy server's sockets reach. A zero timeout never waits.
        watch = select.poll()
        watch.register(self.sock.fileno(), select.POLLIN)
        return not watch.poll(0)

    def post(self, host: str, target: str, headers: list[tuple[str, str]],
             body: io.BufferedIOBase,
             length: int) -> tuple[int, bytes]:
        """(status, body) of one POST whose body is `length` bytes read from `body`."""
        send = self.sock.sendall
        send(self.http.send(h11.Request(
            method='POST', target=target,
            headers=[('Host', host), ('Content-Length', str(length)), *headers])))
        while True:
            piece = body.read(CHUNK)
            if not piece:
                break
            send(self.http.send(h11.Data(data=piece)))
        send(self.http.send(h11.EndOfMessage()))
        status = 0
        reply = bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(CHUNK))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                reply += event.data
                if len(reply) > MAX_REPLY:
                    raise RspamdError(f'a reply over {MAX_REPLY} bytes')
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(reply)
            elif isinstance(event, h11.ConnectionClosed):
                raise RspamdError('the connection closed before the reply ended')

    def reusable(self) -> bool:
        """After a whole exchange: ready for the next one (else close it)."""
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            self.idle_since = time.monotonic()
            return True
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class HttpPool:
    """Keep-alive HTTP/1.1 POSTs to one host and port, with up to `size`
    idle connections kept for the next request (LIFO: the warmest first).

    The idle connections are kept per gevent hub (a gevent socket serves
    the hub of the thread that made it: a policy shared by servers in two
    threads keeps two lists) and per process (a forked worker drops the
    parent's, whose sockets it shares)."""

    def __init__(self, host: str, port: int, timeout: float, size: int = 4):
        self.host, self.port, self.timeout, self.size = host, port, timeout, size
        self.authority = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
        self._idle: weakref.WeakKeyDictionary[object, list[_Connection]] = \
            weakref.WeakKeyDictionary()
        self._pid = os.getpid()
        self.opened = 0         # connections made since the start: a reused one is not counted

    @property
    def idle(self) -> int:
        """Idle connections kept, in all hubs."""
        return sum(len(kept) for kept in list(self._idle.values()))

    def _kept(self) -> list[_Connection]:
        if self._pid != os.getpid():        # a forked worker: the parent's sockets are not ours
            self._idle, self._pid = weakref.WeakKeyDictionary(), os.getpid()
        return self._idle.setdefault(gevent.get_hub(), [])

    def _take(self) -> _Connection:
        kept = self._kept()
        while kept:
            conn = kept.pop()
            if conn.fresh():
                conn.reused = True
                return conn
            conn.close()
        self.opened += 1
        return _Connection(self.host, self.port, self.timeout)

    def _give_back(self, conn: _Connection) -> None:
        kept = self._kept()
        if conn.reusable() and len(kept) < self.size:
            kept.append(conn)
        else:
            conn.close()

    def post(self, target: str, headers: list[tuple[str, str]], body: Opener,
             length: int) -> tuple[int, bytes]:
        """One POST, within `timeout` seconds in all; `body()` opens the
        body (again, if a kept connection turned out closed and the request
        is retried once on a new one)."""
        expired = RspamdError(f'no answer in {self.timeout:g} s')
        with gevent.Timeout(self.timeout, expired):
            for attempt in (1, 2):
                try:
                    conn = self._take()
                except (OSError, UnicodeError) as exc:  # refused, unreachable, a bad name:
                    raise RspamdError(_describe(exc)) from None     # the breaker judges it
                try:
                    with body() as stream:
                        status, reply = conn.post(self.authority, target, headers, stream,
                                                  length)
                except (OSError, h11.ProtocolError, RspamdError) as exc:
                    conn.close()
                    if exc is expired:
                        raise
                    if conn.reused and attempt == 1 and _before_reply(conn):
                        continue    # the server had closed the idle connection: a new one
                    raise RspamdError(_describe(exc)) from None
                except BaseException:      # a killed greenlet: never reused
                    conn.close()
                    raise
                self._give_back(conn)
                return status, reply
        raise AssertionError('unreachable')

    def close(self) -> None:
        """Close the idle connections of this hub."""
        kept = self._kept()
        while kept:
            kept.pop().close()


def _before_reply(conn: _Connection) -> bool:
    """Whether nothing of a reply arrived: the server closed a kept
    connection before reading the request (a retry costs at most a
    second check, which changes nothing in rspamd)."""
    return conn.http.their_state is h11.SEND_RESPONSE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RspamdError):
        return str(exc)
    if isinstance(exc, h11.ProtocolError):
        return f'not HTTP: {exc}'
    return str(exc) or type(exc).__name__


def rspamd_address(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL; ValueError for anything else."""
    if not isinstance(url, str):
        raise ValueError(f'rspamd: url must be a string, not {type(url).__name__}')
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f'rspamd: url {url!r}: {exc}') from None
    if parts.scheme != 'http' or not parts.hostname or parts.path not in ('', '/') \
            or parts.query or parts.username:
        raise ValueError(f"rspamd: url must be http://HOST[:PORT] (rspamd's normal worker), "
                         f'not {url!r}')
    try:        # a name the resolver could never be asked for fails now, not at each message
        parts.hostname.encode('idna')
    except UnicodeError as exc:
        raise ValueError(f'rspamd: url {url!r}: the host name is not one: {exc}') from None
    return parts.hostname, port


def reply_json(body: bytes) -> object:
    """rspamd's reply decoded; RspamdError for one that is not JSON as JSON
    is (RFC 8259: no NaN or Infinity) or nested past the parser's depth."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RspamdError(f'not JSON: {body[:200]!r}') from None


def _no_constant(name: str) -> object:
    raise ValueError(f'{name} is not JSON')


def number(value: object) -> float:
    """A score of the reply as a float; 0.0 for anything else (a string,
    a boolean, a number too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        result = float(value)
    except OverflowError:           # an integer of hundreds of digits
        return 0.0
    return result if math.isfinite(result) else 0.0
