"""POP3 (RFC 1939) over the inbox, as Mailpit serves it: the protocol, no sockets.

`Pop3Session.handle(line)` takes one command line and returns the `Reply`
to write; the server (pop3_server.py) owns the socket and STLS. Mailpit's
facts kept: USER/PASS against a users file (no POP3 without one), the
newest 100 messages newest first, the message ID as the UIDL, CAPA with
TOP, USER, UIDL and IMPLEMENTATION. Where Mailpit departs from RFC 1939
this follows the RFC: a message marked by DELE is left out of STAT and
LIST and cannot be retrieved (section 5), RSET unmarks, and the marked
messages are deleted only when QUIT enters the UPDATE state (section 6);
a connection that drops without QUIT deletes nothing. STLS is RFC 2595's:
only before login, then CAPA no longer offers it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_MESSAGES = 100      # Mailpit offers the newest 100
MAX_LINE = 512          # RFC 2449 4: commands stay within 255 octets; some slack
MAX_AUTH_FAILURES = 3   # then the connection is closed

AUTHORIZATION = 'AUTHORIZATION'
TRANSACTION = 'TRANSACTION'
UPDATE = 'UPDATE'


class Maildrop(Protocol):
    """What a session needs of the inbox (blocking calls are the caller's affair)."""

    def authenticate(self, user: str, password: str) -> bool: ...

    def listing(self) -> Sequence[tuple[str, int]]:
        """(ID, size in octets) of the messages offered, in POP3's order."""

    def raw(self, uid: str) -> bytes | None: ...

    def delete(self, uids: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class Reply:
    data: bytes
    close: bool = False         # close the connection after writing it
    start_tls: bool = False     # handshake after writing it (STLS)


def ok(text: str = '') -> Reply:
    return Reply(f'+OK {text}'.rstrip().encode() + b'\r\n')


def err(text: str, close: bool = False) -> Reply:
    return Reply(f'-ERR {text}'.encode() + b'\r\n', close=close)


def multiline(first: str, body: bytes) -> Reply:
    """A positive reply with a body: each line that starts with the
    termination octet is byte-stuffed, and a '.' line ends it (RFC 1939 3).
    A line after a bare LF is stuffed too: clients that split on LF alone
    (fetchmail) would otherwise take a lone '.' there for the end."""
    if body and not body.endswith(b'\n'):
        body += b'\r\n'
    stuffed = body.replace(b'\n.', b'\n..')
    if stuffed.startswith(b'.'):
        stuffed = b'.' + stuffed
    return Reply(f'+OK {first}'.rstrip().encode() + b'\r\n' + stuffed + b'.\r\n')


def top(raw: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` lines of the body (RFC 1939 7)."""
    head, sep, body = raw.partition(b'\r\n\r\n')
    if not sep:
        return raw
    every = body.split(b'\r\n')
    if body.endswith(b'\r\n'):
        every.pop()
    return head + b'\r\n\r\n' + b''.join(line + b'\r\n' for line in every[:max(lines, 0)])


class Pop3Session:
    """One POP3 conversation: states and the commands each state allows."""

    def __init__(self, maildrop: Maildrop, *, stls: bool = False, name: str = 'smtp-stack'):
        self.maildrop = maildrop
        self.state = AUTHORIZATION
        self.stls_offered = stls
        self.secure = False
        self.name = name
        self.user: str | None = None
        self.failures = 0
        self.messages: list[tuple[str, int]] = []
        self.deleted: set[int] = set()      # message numbers marked by DELE
        self._commands: dict[str, tuple[Callable[[list[str]], Reply], frozenset[str]]] = {
            'CAPA': (self.capa, frozenset({AUTHORIZATION, TRANSACTION})),
            'STLS': (self.stls, frozenset({AUTHORIZATION})),
            'USER': (self.user_, frozenset({AUTHORIZATION})),
            'PASS': (self.pass_, frozenset({AUTHORIZATION})),
            'QUIT': (self.quit, frozenset({AUTHORIZATION, TRANSACTION})),
            'STAT': (self.stat, frozenset({TRANSACTION})),
            'LIST': (self.list_, frozenset({TRANSACTION})),
            'UIDL': (self.uidl, frozenset({TRANSACTION})),
            'RETR': (self.retr, frozenset({TRANSACTION})),
            'TOP': (self.top, frozenset({TRANSACTION})),
            'DELE': (self.dele, frozenset({TRANSACTION})),
            'RSET': (self.rset, frozenset({TRANSACTION})),
            'NOOP': (self.noop, frozenset({TRANSACTION})),
        }

    def greeting(self) -> Reply:
        return ok(f'{self.name} POP3 server ready')

    def handle(self, line: bytes) -> Reply:
        if len(line) > MAX_LINE:
            return err('line too long')
        text = line.rstrip(b'\r\n').decode('utf-8', 'replace')
        verb, *args = text.split(' ') if text else ['']
        entry = self._commands.get(verb.upper())
        if entry is None:
            return err('unknown command')
        action, states = entry
        if self.state not in states:
            return err('not authenticated' if self.state == AUTHORIZATION
                       else f'{verb.upper()} is not allowed now')
        return action(args)

    def tls_started(self) -> None:
        self.secure = True

    # -- AUTHORIZATION -------------------------------------------------------------
    def capa(self, args: list[str]) -> Reply:
        """RFC 2449 5; STLS only while it can still be used (RFC 2595 4)."""
        caps = ['TOP', 'USER', 'UIDL', 'RESP-CODES']
        if self.stls_offered and not self.secure and self.state == AUTHORIZATION:
            caps.append('STLS')
        caps.append('IMPLEMENTATION smtp-stack')
        return Reply(b'+OK capability list follows\r\n'
                     + b''.join(c.encode() + b'\r\n' for c in caps) + b'.\r\n')

    def stls(self, args: list[str]) -> Reply:
        if not self.stls_offered:
            return err('STLS is not offered')
        if self.secure:
            return err('TLS is already on')
        self.user = None        # RFC 2595 4: nothing said before the handshake counts
        return Reply(b'+OK begin TLS negotiation\r\n', start_tls=True)

    def user_(self, args: list[str]) -> Reply:
        if len(args) != 1 or not args[0]:
            return err('USER takes one name')
        self.user = args[0]
        return ok()

    def pass_(self, args: list[str]) -> Reply:
        """PASS takes the rest of the line: a password may hold spaces (RFC 1939 7)."""
        if self.user is None:
            return err('USER first')
        password = ' '.join(args)
        if not self.maildrop.authenticate(self.user, password):
            self.failures += 1
            self.user = None
            return err('[AUTH] invalid user name or password',
                       close=self.failures >= MAX_AUTH_FAILURES)
        self.messages = list(self.maildrop.listing())[:MAX_MESSAGES]
        self.state = TRANSACTION
        return ok(f'signed in, {len(self.messages)} messages')

    def quit(self, args: list[str]) -> Reply:
        """In TRANSACTION: the UPDATE state, where the marked messages go (RFC 1939 6)."""
        if self.state == TRANSACTION:
            self.state = UPDATE
            uids = [self.messages[n - 1][0] for n in sorted(self.deleted)]
            if uids:
                self.maildrop.delete(uids)
            return Reply(f'+OK bye, {len(uids)} messages deleted\r\n'.encode(), close=True)
        return Reply(b'+OK bye\r\n', close=True)

    # -- TRANSACTION ----------------------------------------------------------------
    def _live(self) -> list[tuple[int, str, int]]:
        return [(n, uid, size) for n, (uid, size) in enumerate(self.messages, 1)
                if n not in self.deleted]

    def _number(self, text: str) -> int | None:
        """A message number that exists and is not marked deleted, else None."""
        if not text.isdigit():
            return None
        number = int(text)
        if not 1 <= number <= len(self.messages) or number in self.deleted:
            return None
        return number

    def stat(self, args: list[str]) -> Reply:
        live = self._live()
        return ok(f'{len(live)} {sum(size for _, _, size in live)}')

    def list_(self, args: list[str]) -> Reply:
        return self._scan(args, lambda n, uid, size: f'{n} {size}')

    def uidl(self, args: list[str]) -> Reply:
        return self._scan(args, lambda n, uid, size: f'{n} {uid}')

    def _scan(self, args: list[str], line: Callable[[int, str, int], str]) -> Reply:
        if len(args) > 1:
            return err('one message number at most')
        if args:
            number = self._number(args[0])
            if number is None:
                return err('no such message')
            uid, size = self.messages[number - 1]
            return ok(line(number, uid, size))
        rows = ''.join(line(*entry) + '\r\n' for entry in self._live())
        return Reply(b'+OK\r\n' + rows.encode() + b'.\r\n')

    def retr(self, args: list[str]) -> Reply:
        number = self._number(args[0]) if len(args) == 1 else None
        if number is None:
            return err('no such message')
        raw = self.maildrop.raw(self.messages[number - 1][0])
        if raw is None:
            return err('message gone (deleted meanwhile)')
        return multiline(f'{len(raw)} octets', raw)

    def top(self, args: list[str]) -> Reply:
        if len(args) != 2 or not args[1].isdigit():
            return err('TOP takes a message number and a line count')
        number = self._number(args[0])
        if number is None:
            return err('no such message')
        raw = self.maildrop.raw(self.messages[number - 1][0])
        if raw is None:
            return err('message gone (deleted meanwhile)')
        return multiline('top of message follows', top(raw, int(args[1])))

    def dele(self, args: list[str]) -> Reply:
        number = self._number(args[0]) if len(args) == 1 else None
        if number is None:
            return err('no such message')
        self.deleted.add(number)
        return ok(f'message {number} marked for deletion')

    def rset(self, args: list[str]) -> Reply:
        self.deleted.clear()
        return ok(f'{len(self.messages)} messages')

    def noop(self, args: list[str]) -> Reply:
        return ok()
