"""One MTA-side connection to a milter: smtp_stack calling rspamd, OpenDKIM,
clamav-milter ... over the milter protocol, as Postfix's smtpd does.

`MilterClient` speaks the protocol of protocol.py over a gevent socket
(explicitly gevent's: it cooperates with the hub whether or not the
process is monkey-patched): it connects and negotiates, then sends one
event at a time and reads the milter's answer. It follows the milter's
wishes from the negotiation as Postfix's milter8.c does: an event the
milter asked not to get is not sent (its macros still are), an event it
answers with no reply is not waited for, SMFIR_SKIP ends the body chunks,
SMFIR_PROGRESS restarts the clock. Each wait is bounded: connecting by
`connect_timeout`, each command's reply by `command_timeout`, each content
packet's (header fields, body, end of message) by `content_timeout`, as
Postfix's milter_connect_timeout, milter_command_timeout and
milter_content_timeout.

A milter that cannot be reached, is silent past its timeout or answers
nonsense raises `MilterFailed` with why; the caller applies its default
action ([milter8] milter8_comm_error) and closes the connection. The
replies are `Answer`s: what to do (`action`), the SMTP reply to give for a
refusal (Postfix's texts for REJECT and TEMPFAIL), and at the end of the
message the modification requests, in the order they came.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import gevent
from gevent import socket as gsocket

from ..replies import Reply
from . import protocol as P
from .protocol import Packet, ProtocolError

__all__ = ['MilterClient', 'MilterFailed', 'Answer', 'Action', 'parse_address',
           'REJECTED', 'TEMPFAILED', 'SHUT_DOWN']

# [milter8] milter8_event: what Postfix answers the client for each decision.
REJECTED = Reply(550, 'Command rejected', '5.7.1')
TEMPFAILED = Reply(451, 'Service unavailable - try again later', '4.7.1')
SHUT_DOWN = Reply(421, 'Server closing connection', '4.7.0')

Action: TypeAlias = Literal['continue', 'accept', 'reject', 'tempfail', 'discard', 'skip',
                            'shutdown']
_FINAL: dict[str, Action] = {
    P.CONTINUE: 'continue', P.ACCEPT: 'accept', P.REJECT: 'reject', P.TEMPFAIL: 'tempfail',
    P.DISCARD: 'discard', P.SKIP: 'skip', P.SHUTDOWN: 'shutdown', P.CONN_FAIL: 'tempfail',
    P.REPLYCODE: 'reject'}
# Requests a milter may make at the end of the message, before its decision.
MODIFICATIONS = frozenset({P.ADDHEADER, P.INSHEADER, P.CHGHEADER, P.ADDRCPT, P.DELRCPT,
                           P.ADDRCPT_PAR, P.CHGFROM, P.REPLBODY, P.QUARANTINE})
_READ = 65536
# Bytes of modification requests (REPLBODY aside: it goes to the caller's
# sink) one end of message may bring; more is a milter gone wrong.
MAX_CHANGES = 16 << 20
# Where a socket address is a path: [mfapi] smfi_setconn's 'unix:' or 'local:'.
_UNIX_PREFIXES = ('unix:', 'local:')

# Body chunks of a replaced body go here as they arrive (policies.milter
# spools them): the caller's sink, so no body is held in a list.
BodySink: TypeAlias = Callable[[bytes], None]


class MilterFailed(Exception):
    """The milter could not be asked, or answered something that is no
    verdict: `reason` says why (for the log); `slow` when it cost a timeout."""

    def __init__(self, reason: str, slow: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.slow = slow


@dataclass
class Answer:
    """A milter's decision on one event. `reply` is the SMTP reply of a
    refusal ('reject', 'tempfail', 'shutdown'); `changes` the modification
    requests at the end of the message (letter, fields), in order."""
    action: Action
    reply: Reply | None = None
    changes: list[tuple[str, list[P.Field]]] = field(default_factory=list)


CONTINUED = Answer('continue')


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """(family, socket address) of a milter address as Postfix and
    Sendmail write it: 'inet:HOST:PORT', 'inet:PORT@HOST', 'inet6:...',
    'unix:PATH' (or 'local:PATH'); ValueError for anything else."""
    if not isinstance(address, str) or not address:
        raise ValueError(f'milter: address must be inet:HOST:PORT or unix:PATH, '
                         f'not {address!r}')
    for prefix in _UNIX_PREFIXES:
        if address.startswith(prefix) and len(address) > len(prefix):
            return gsocket.AF_UNIX, address[len(prefix):]
    kind, _, rest = address.partition(':')
    if kind in ('inet', 'inet6') and rest:
        if '@' in rest:                     # Sendmail: inet:PORT@HOST
            port_text, _, host = rest.partition('@')
        else:                               # Postfix: inet:HOST:PORT, [v6]:PORT
            host, _, port_text = rest.rpartition(':')
        host = host.strip('[]') or '127.0.0.1'
        if port_text.isdigit() and 0 < int(port_text) < 65536:
            family = gsocket.AF_INET6 if kind == 'inet6' or ':' in host else gsocket.AF_INET
            return family, (host, int(port_text))
    raise ValueError(f'milter: address must be inet:HOST:PORT, inet:PORT@HOST or unix:PATH, '
                     f'not {address!r}')


class MilterClient:
    """One connection to the milter at `address`; `open()` connects and
    negotiates. Not shared between greenlets: one per SMTP session."""

    def __init__(self, address: str, *, connect_timeout: float = 30.0,
                 command_timeout: float = 30.0, content_timeout: float = 300.0,
                 max_packet: int = P.MAX_PACKET) -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.content_timeout = content_timeout
        self.sock: gsocket.socket | None = None
        self.reader = P.PacketReader(max_packet)
        self.negotiated = P.Negotiation(0, 0, 0)
        self.skipping: str | None = None    # the event SMFIR_SKIP ended (body chunks)

    # -- the connection ------------------------------------------------------------

    def open(self, macros_wanted: bool = True) -> P.Negotiation:
        """Connect and negotiate version 6 with every action and step offered."""
        began = time.monotonic()
        sock = gsocket.socket(self.family, gsocket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.sockaddr)
        except OSError as exc:
            sock.close()
            raise MilterFailed(f'cannot connect: {_describe(exc)}',
                               slow=time.monotonic() - began >= self.connect_timeout) from None
        self.sock = sock
        actions = P.MTA_ACTIONS if macros_wanted else P.MTA_ACTIONS & ~P.SET_SYMLIST
        self._send(P.offer_negotiation(actions=actions), self.command_timeout)
        packet = self._read(self.command_timeout, 'SMFIC_OPTNEG')
        try:
            self.negotiated = P.read_answer(packet, actions)
        except ProtocolError as exc:
            raise MilterFailed(f'negotiation: {exc.reason}') from None
        return self.negotiated

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def quit(self) -> None:
        """SMFIC_QUIT (no reply), then close; never raises."""
        if self.sock is not None:
            try:
                self._send(P.command(P.QUIT), min(self.command_timeout, 1.0))
            except MilterFailed:
                pass
        self.close()

    # -- events ---------------------------------------------------------------------

    def wants(self, event: str) -> bool:
        """Whether the milter takes `event` at all (the negotiation's NO* flags)."""
        step = P.STEP_OF.get(event)
        if step is None:
            return True
        if step.command == P.DATA and self.negotiated.version < 4:
            return False        # SMFIC_DATA is version 4's ([milter8] MILTER8_V4_PROTO_MASK)
        return not self.negotiated.protocol & step.skip

    def macros(self, event: str, pairs: list[tuple[str, str]]) -> None:
        """SMFIC_MACRO for `event` (sent even when the event is not,
        [milter8] milter8_event)."""
        if pairs:
            self._send(P.macro_packet(event, pairs), self.command_timeout)

    def event(self, event: str, *fields: P.Field, content: bool = False) -> Answer:
        """Send `event` (when the milter takes it) and read its answer (when
        it gives one: CONTINUE otherwise)."""
        if not self.wants(event) or self.skipping == event:
            return CONTINUED
        if self.skipping is not None:
            self.skipping = None
        timeout = self.content_timeout if content else self.command_timeout
        self._send(P.command(event, *fields), timeout)
        if not P.expects_reply(event, self.negotiated.protocol):
            return CONTINUED
        return self._answer(event, timeout)

    def end_of_message(self, body_sink: BodySink) -> Answer:
        """SMFIC_BODYEOB: the modification requests (a replaced body goes to
        `body_sink` chunk by chunk, not into `changes`), then the decision."""
        self.skipping = None
        self._send(P.command(P.EOB, b''), self.content_timeout)
        return self._answer(P.EOB, self.content_timeout, body_sink)

    def abort(self) -> None:
        """SMFIC_ABORT: the transaction ends without its end of message (no reply)."""
        self.skipping = None
        self._send(P.command(P.ABORT), self.command_timeout)

    # -- I/O --------------------------------------------------------------------------

    def _answer(self, event: str, timeout: float, body_sink: BodySink | None = None) -> Answer:
        changes: list[tuple[str, list[P.Field]]] = []
        budget = MAX_CHANGES
        name = P.name_of(event)
        while True:
            packet = self._read(timeout, name)      # PROGRESS: a new wait, as Postfix's
            letter = packet.command
            if letter == P.PROGRESS:
                continue
            try:
                fields = P.read_reply(packet)
            except ProtocolError as exc:
                raise MilterFailed(f'after {name}: {exc.reason}') from None
            if letter in MODIFICATIONS:
                if event != P.EOB:
                    raise MilterFailed(f'{P.name_of(event)} answered with a modification '
                                       f'({letter!r}), which only the end of the message takes')
                if letter == P.REPLBODY and body_sink is not None:
                    assert isinstance(fields[0], bytes)
                    body_sink(fields[0])
                else:
                    budget -= len(packet.data)
                    if budget < 0:
                        raise MilterFailed(f'modification requests over {MAX_CHANGES} bytes')
                    changes.append((letter, fields))
                continue
            action = _FINAL.get(letter)
            if action is None:
                raise MilterFailed(f'unexpected reply {letter!r} to {name}')
            if action == 'skip':
                if event != P.BODY or not self.negotiated.protocol & P.SKIP_OK:
                    raise MilterFailed(f'SMFIR_SKIP after {name}')
                self.skipping = P.BODY
                return Answer('skip', None, changes)
            reply = None
            if letter == P.REPLYCODE:
                text = fields[0]
                assert isinstance(text, str)
                try:
                    parsed = P.parse_reply_text(text)
                except ProtocolError as exc:
                    raise MilterFailed(exc.reason) from None
                action = 'tempfail' if parsed.code < 500 else 'reject'
                reply = Reply(parsed.code, parsed.lines if len(parsed.lines) > 1
                              else parsed.lines[0], parsed.enhanced or False)
                if parsed.code == 421:
                    action = 'shutdown'
            elif action == 'reject':
                reply = REJECTED
            elif action == 'tempfail':
                reply = TEMPFAILED
            elif action == 'shutdown':
                reply = SHUT_DOWN
            return Answer(action, reply, changes)

    def _send(self, data: bytes, timeout: float) -> None:
        sock = self.sock
        if sock is None:
            raise MilterFailed('not connected')
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise MilterFailed(f'no progress sending in {timeout:g} s', slow=True) from None
        except OSError as exc:
            raise MilterFailed(f'sending: {_describe(exc)}') from None

    def _read(self, timeout: float, waiting_for: str) -> Packet:
        """The next packet, within `timeout` seconds."""
        sock = self.sock
        if sock is None:
            raise MilterFailed('not connected')
        expired = MilterFailed(f'no reply to {waiting_for} in {timeout:g} s', slow=True)
        with gevent.Timeout(timeout, expired):
            while True:
                try:
                    packet = self.reader.next_packet()
                except ProtocolError as exc:
                    raise MilterFailed(exc.reason) from None
                if packet is not None:
                    return packet
                sock.settimeout(None)
                try:
                    data = sock.recv(_READ)
                except OSError as exc:
                    raise MilterFailed(f'reading the reply to {waiting_for}: '
                                       f'{_describe(exc)}') from None
                if not data:
                    raise MilterFailed(f'the milter closed the connection instead of answering '
                                       f'{waiting_for}')
                self.reader.feed(data)
        raise AssertionError('unreachable')


def _describe(exc: BaseException) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
