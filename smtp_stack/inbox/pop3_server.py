"""The POP3 side of the inbox (`smtp-stack inbox --pop3 HOST:PORT`): sockets and TLS.

A gevent StreamServer in the inbox's hub; each connection is a greenlet
that runs a `Pop3Session` (pop3.py) over the socket classes the SMTP
sessions use (sockets.py: `PlainSocket`, and `TlsSocket` after STLS).
With `implicit_tls` (POP3S, RFC 8314 3.3: port 995's way, Mailpit's
only one) TLS starts with the connection, before the greeting, and
STLS is not offered.
The store is SQLite, so every call on it (the listing at login, RETR,
the deletes at QUIT) and the password hash run in the hub's thread pool
through `offload`, as the web side's do: a slow disk never stalls SMTP.

Users come from a file of `name:hash` lines (`smtp-stack hash-password`),
the format of `--ui-auth-file`; Mailpit too serves POP3 only with one.
With mailboxes (mailboxes.py), a user reads the mailbox of their name
(`USER ann` -> ann's mailbox), or with a slash after it the default one
(`USER ann/`, ann's password): the mail nobody's mailbox took, which the
web side too lets every user read. The slash cannot be mistaken for a
mailbox (no mailbox name holds one) and needs no user of its own. Without
mailboxes, everyone reads the one mailbox.
"""
from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from typing import Any

from gevent.server import StreamServer

from .. import logs
from ..offload import offload
from ..server import hostport
from ..sockets import PlainSocket, TlsSocket
from ..users import hash_password, verify_password
from .mailboxes import DEFAULT, mailbox_name
from .pop3 import MAX_LINE, MAX_MESSAGES, Pop3Session, err
from .store import Store

log = logs.get('smtp_stack.inbox.pop3')

IDLE_TIMEOUT = 600.0        # RFC 1939 3: an autologout timer of at least 10 minutes
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 4096


class StoreMaildrop:
    """The inbox's messages for a POP3 session, every call off the hub: the
    default mailbox, or with mailboxes the one named by the user."""

    _dummy: str | None = None       # checked for unknown names: the same time as a bad password

    def __init__(self, store: Store, users: dict[str, str]):
        self.store = store
        self.users = users
        self.mailbox = DEFAULT

    def authenticate(self, user: str, password: str) -> bool:
        default = user not in self.users and user.endswith('/')     # `ann/`: the default
        name = user[:-1] if default else user
        stored = self.users.get(name)
        if stored is None:
            if StoreMaildrop._dummy is None:
                StoreMaildrop._dummy = offload(hash_password, os.urandom(16).hex())
            offload(verify_password, StoreMaildrop._dummy, password)
            return False
        if not offload(verify_password, stored, password):
            return False
        if self.store.routing.on:
            mailbox = DEFAULT if default else mailbox_name(name)
            if mailbox is None:     # a name no mailbox can have ('a b'): nothing to read
                return False
            self.mailbox = mailbox
        return True

    def listing(self) -> Sequence[tuple[str, int]]:
        return offload(self.store.newest, MAX_MESSAGES, self.mailbox)

    def raw(self, uid: str) -> bytes | None:
        return offload(self.store.raw, uid, self.mailbox)

    def delete(self, uids: Sequence[str]) -> int:
        return offload(self.store.delete, uids, self.mailbox)


class Pop3Server:
    """POP3 on `address` over `store`, for the users of a users file."""

    def __init__(self, store: Store, users: dict[str, str], address: tuple[str, int], *,
                 tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 name: str = 'localhost', idle_timeout: float = IDLE_TIMEOUT):
        if implicit_tls and tls is None:
            raise ValueError('POP3 over implicit TLS needs a TLS context')
        self.store = store
        self.users = users
        self.tls = tls          # STLS is offered when there is a context ...
        self.implicit_tls = implicit_tls    # ... unless TLS starts with the connection
        self.name = name
        self.idle_timeout = idle_timeout
        self._address = address
        self._server: Any = None        # gevent's StreamServer, while serving

    def start(self) -> Pop3Server:
        """Listen (an OSError naming the address when it cannot be bound)."""
        server = StreamServer(self._address, self._serve)
        try:
            server.start()
        except OSError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc),
                          hostport(*self._address)) from None
        self._server = server
        return self

    @property
    def address(self) -> tuple[Any, ...] | None:
        return self._server.address if self._server is not None else None

    def serve_forever(self) -> None:
        if self._server is not None:
            self._server.serve_forever()

    def stop(self, timeout: float = 1) -> None:
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None

    def _serve(self, sock: Any, address: Any) -> None:
        # The accepted gevent socket gains PlainSocket's waits (as the SMTP
        # listener's do): PlainSocket adds methods only, no state.
        sock.__class__ = PlainSocket
        conn: PlainSocket | TlsSocket = sock
        session = Pop3Session(StoreMaildrop(self.store, self.users),
                              stls=self.tls is not None and not self.implicit_tls, name=self.name)
        try:
            if self.implicit_tls and self.tls is not None:     # RFC 8314 3.3: TLS first
                conn = TlsSocket(sock, self.tls)
                conn.do_handshake(HANDSHAKE_TIMEOUT)
                session.tls_started()
            lines = _Lines(conn, self.idle_timeout)
            conn.sendall(session.greeting().data)
            while True:
                line = lines.readline()
                if line is None:
                    return
                reply = session.handle(line) if len(line) <= MAX_LINE else err('line too long')
                conn.sendall(reply.data)
                if reply.start_tls and self.tls is not None:
                    # RFC 2595 4: what the client sent after STLS in the clear is dropped
                    conn = TlsSocket(sock, self.tls)
                    conn.do_handshake(HANDSHAKE_TIMEOUT)
                    lines = _Lines(conn, self.idle_timeout)
                    session.tls_started()
                if reply.close:
                    return
        except (OSError, ssl.SSLError) as exc:     # timeouts, resets, failed handshakes
            log.debug('pop3: %s: %s', address[0] if address else '?', exc)
        except Exception:       # noqa: BLE001 - one client's trouble, logged, never the server's
            log.exception('pop3: session with %s failed', address[0] if address else '?')
        finally:
            sock.close()


class _Lines:
    """Command lines off a socket; a line over MAX_LINE is returned cut (the
    session refuses it) and the rest of it skipped."""

    def __init__(self, conn: PlainSocket | TlsSocket, timeout: float):
        self.conn = conn
        self.timeout = timeout
        self.buffer = b''
        self.skipping = False

    def readline(self) -> bytes | None:
        """The next line with its end, or None when the client has gone."""
        while True:
            end = self.buffer.find(b'\n')
            if end >= 0:
                line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
                if self.skipping:
                    self.skipping = False
                    continue
                return line
            if len(self.buffer) > MAX_LINE:
                line, self.buffer = self.buffer, b''
                if self.skipping:
                    continue
                self.skipping = True
                return line
            data = self.conn.recv_within(READ_SIZE, self.timeout, True)
            if not data:
                return None
            self.buffer += data
