"""The state user code sees: the session and its envelope."""
from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypedDict

from .headers import Removal, check_field, check_name, fold

if TYPE_CHECKING:
    from .addresses import Address
    from .proxy import ProxyHeader
    from .sasl import AuthInfo
    from .spool import Spool
    from .stream import DataStream

# `envelope.remove_header(name, predicate)`: the field goes when
# predicate(value) is true (any truthy result), or always without one.
HeaderPredicate = Callable[[str], object]
# The command the client greeted with (`session.greeting`).
Greeting = Literal['HELO', 'EHLO', 'LHLO']

# Session ids need to be unique, not secret: a generator of our own, seeded
# from os.urandom in each process (and again in each forked worker), costs
# no system call per connection; the application seeding `random` for its
# own reasons cannot make two processes repeat each other's ids.
_ids = random.Random()
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_ids.seed)


def new_session_id() -> str:
    """16 lower-case hex digits (64 random bits): unique enough to grep
    logs by, and made at a quarter of the cost of base32."""
    return '%016x' % _ids.getrandbits(64)  # noqa: UP031 (faster than f'{n:016x}')


class Envelope:
    """One mail transaction. Never reset in place: each transition of the
    session (Session's table) makes a new one, so user code that kept a
    reference (a delivery queue) never sees it change; its spool, though,
    is removed with the transaction (copy what you keep)."""

    __slots__ = ('mail_from', 'rcpt_to', 'data_stream', '_added', '_removed', '__dict__')

    mail_from: Address | None
    rcpt_to: list[Address]
    data_stream: DataStream | None
    _added: list[tuple[str, str]] | None
    _removed: list[Removal] | None
    # Set by the `authenticate` policy (policies.md), absent without it: a
    # policies.authentication.AuthResults (the core names no policy's types).
    auth_results: Any
    # Set when a milter placed, changed or deleted header fields: a
    # delivery.header_edits.HeaderEdits, honoured by every delivery.
    header_edits: Any

    def __init__(self) -> None:
        self.mail_from = None
        self.rcpt_to = []
        self.data_stream = None
        self._added = None
        self._removed = None

    @property
    def last_to(self) -> Address | None:
        return self.rcpt_to[-1] if self.rcpt_to else None

    def spool(self) -> Spool:
        """The whole body, read to its end into a Spool that several readers
        can `open()`; the same one on later calls. Raises MessageRefused as
        reading `data_stream` does."""
        if self.data_stream is None:
            raise RuntimeError('spool() needs a message body: call it on DATA or BDAT, '
                               'after next()')
        return self.data_stream.spool()

    def add_header(self, name: str, value: str) -> None:
        """Record a header field (Authentication-Results, X-Spam-Status ...)
        that the built-in deliveries and MailSink put on top of the message.
        ValueError for a name that is not RFC 5322 field-name syntax, or a
        value holding CR, LF or NUL."""
        field = check_field(name, value)
        fold(*field)        # a word no line can hold is refused now, not at delivery
        if self._added is None:
            self._added = []
        self._added.append(field)

    @property
    def added_headers(self) -> list[tuple[str, str]]:
        """The (name, value) pairs recorded with add_header, in call order."""
        return list(self._added) if self._added else []

    def remove_header(self, name: str, predicate: HeaderPredicate | None = None) -> None:
        """Record that the built-in deliveries and MailSink leave out the
        message's own header fields called `name` (in any case) for which
        `predicate(value)` is true, all of them when predicate is None;
        `value` is the field's unfolded body, a str. Fields recorded with
        add_header are never removed: they are this server's (RFC 8601 5:
        a forged field goes before the server adds its own). ValueError
        for a name that is not RFC 5322 field-name syntax, or a predicate
        that is not callable."""
        check_name(name)
        if predicate is not None and not callable(predicate):
            raise ValueError(f'a header predicate must be callable, not {type(predicate).__name__}')
        if self._removed is None:
            self._removed = []
        self._removed.append((name, predicate))

    @property
    def removed_headers(self) -> list[Removal]:
        """The (name, predicate) pairs recorded with remove_header, in call order."""
        return list(self._removed) if self._removed else []

    # -- what a milter answers at the end of a message ----------------------------
    # Class defaults: an envelope that never calls these stores nothing.
    _replaced_body: bytes | BinaryIO | None = None
    _quarantined: str | None = None
    _dropped: str | None = None

    def replace_body(self, body: bytes | BinaryIO) -> None:
        """Record a new body for the message: what follows its header
        section (the fields stay, as add_header and remove_header leave
        them), with CRLF line ends; bytes, or a binary file read from where
        it stands to its end (a large body need not be held in memory).
        Inside an MTA (smtp_stack.milter) it becomes the milter's body
        replacement (SMFIR_REPLBODY); the built-in deliveries store or
        relay it after the header section. TypeError for anything else."""
        if not isinstance(body, bytes) and not callable(getattr(body, 'read', None)):
            raise TypeError(f'a body is bytes or a binary file, not {type(body).__name__}')
        self._replaced_body = body

    @property
    def replaced_body(self) -> bytes | BinaryIO | None:
        """What replace_body recorded, or None."""
        return self._replaced_body

    def quarantine(self, reason: str) -> None:
        """Ask for the message to be held for a person to look at, with
        `reason` (one line). Inside an MTA it becomes SMFIR_QUARANTINE
        (Postfix's hold queue, Sendmail's quarantine); the built-in
        deliveries hold it apart (docs/delivery.md). ValueError for a reason holding CR,
        LF or NUL."""
        _check_line(reason, 'a quarantine reason')
        self._quarantined = reason

    @property
    def quarantined(self) -> str | None:
        """The reason given to quarantine(), or None."""
        return self._quarantined

    def drop(self, reason: str = '') -> None:
        """Accept the message and throw it away: the client is told it was
        accepted, and nobody receives it. Inside an MTA it becomes
        SMFIR_DISCARD; the built-in deliveries store and relay nothing. `reason`
        goes to the log. ValueError for a reason holding CR, LF or NUL."""
        _check_line(reason, 'a reason')
        self._dropped = reason

    @property
    def dropped(self) -> str | None:
        """The reason given to drop() ('' when none was), or None."""
        return self._dropped

    def discard(self) -> None:
        """Release what the transaction holds (the spool and its temporary file)."""
        stream = self.data_stream
        if stream is not None:
            stream.discard()

    def __repr__(self) -> str:
        return f'<Envelope from={self.mail_from!r} to={self.rcpt_to!r}>'


def _check_line(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f'{what} is a str, not {type(text).__name__}')
    if '\r' in text or '\n' in text or '\0' in text:
        raise ValueError(f'{what} cannot hold CR, LF or NUL: {text!r}')


class TlsInfo(TypedDict):
    """`session.tls` once TLS is established."""
    cipher: str | None
    bits: int | None
    version: str | None
    servername: str | None              # what the client asked for with SNI
    peer_certificate: dict[str, Any] | None     # ssl's getpeercert(), verified
    peer_certificate_der: bytes | None


class Session:
    """Per-connection state. A plain object: user code may add attributes.

    Rule 1: every reset a command causes is made here, by the transitions
    below; the handlers call them and reset no field themselves. The states
    are read from the fields: greeted while `greeting` is set, in a
    transaction while `envelope.mail_from` is, with recipients while
    `envelope.rcpt_to` is not empty.

    What each transition does to each field (a test reads this table):

    field              greet    end_transaction  STARTTLS  XCLIENT
    id                 kept     kept             kept      kept
    lmtp               kept     kept             kept      kept
    local_address      kept     kept             kept      command
    local_port         kept     kept             kept      command
    remote_address     kept     kept             kept      command
    remote_port        kept     kept             kept      command
    client_hostname    kept     kept             kept      command
    proxy              kept     kept             kept      kept
    pre_greeting_data  kept     kept             kept      kept
    secure             kept     kept             command   kept
    tls                kept     kept             command   kept
    xclient            kept     kept             kept      command
    helo               set      kept             reset     set
    greeting           set      kept             reset     reset
    auth               kept     kept             reset     command
    user               kept     kept             reset     command
    xforward           if-MAIL  if-MAIL          if-MAIL   if-MAIL
    transaction        if-MAIL  if-MAIL          if-MAIL   if-MAIL
    envelope           new      new              new       new

    kept: unchanged. reset: back to a new session's value. set: from the
    transition's arguments. command: set by the command before its
    transition, which keeps it (the TLS handshake; the XCLIENT attribute
    naming it, kept when absent, but for the login: none without LOGIN=).
    new: a new Envelope; the old one keeps
    its fields, its spool removed. if-MAIL: only when the transaction had a
    MAIL, `transaction` goes one up and `xforward` is emptied (XFORWARD
    describes one message: Postfix XFORWARD_README). Attributes added by
    user code or policies (`session.dnsbl`) are kept by every transition.

    - greet(kind, name): HELO, EHLO, LHLO. RFC 5321 4.1.4: the server
      "MUST clear all buffers and reset the state exactly as if a RSET
      command had been issued"; so the login stays, as after RSET (RFC
      4954 4: only a second AUTH is refused).
    - end_transaction(): RSET (RFC 5321 4.1.1.5: sender, recipients and
      data discarded), the end of DATA or BDAT (4.1.1.4: the end of the
      data consumes the transaction), a BDAT transfer the client abandoned.
    - start_over(keep_login=False), STARTTLS, after the handshake: RFC
      3207 4.2: back to the state after the 220, knowledge "not obtained
      from the TLS negotiation itself" discarded: the greeting, the login,
      the transaction. The connection's facts (addresses, the PROXY
      header) and what a trusted XCLIENT or XFORWARD peer said stay.
    - start_over(keep_login=True, helo=...), XCLIENT, after its attributes:
      Postfix XCLIENT_README: back to the greeting stage, but TLS stays,
      and so do the last XCLIENT's attributes (HELO=, LOGIN=). A login
      there was before is not kept without LOGIN=: it was the proxy's.
    """

    id: str
    secure: bool
    tls: TlsInfo | None
    # '' when unknown; None once XCLIENT said [UNAVAILABLE] (ADDR, DESTADDR).
    local_address: str | None
    local_port: int
    remote_address: str | None
    remote_port: int
    client_hostname: str
    helo: str | None
    greeting: Greeting | None
    lmtp: bool
    xclient: dict[str, str | None]
    xforward: dict[str, str | None]
    proxy: ProxyHeader | None
    auth: AuthInfo | None
    # What on_auth (or middleware) made of a login: any object the
    # application chooses, so its type is the application's.
    user: Any
    transaction: int
    envelope: Envelope
    pre_greeting_data: bool
    # Set by the `dnsbl` policy (policies.md), absent without it: a
    # policies.dnsbl.DnsblResult (the core names no policy's types).
    dnsbl: Any

    def __init__(self, local_address: str, local_port: int, remote_address: str,
                 remote_port: int, lmtp: bool = False) -> None:
        self.id = new_session_id()
        self.secure = False
        self.tls = None
        self.local_address = local_address
        self.local_port = local_port
        self.remote_address = remote_address
        self.remote_port = remote_port
        self.client_hostname = f'[{remote_address}]' if remote_address else '[unknown]'
        self.helo = None
        self.greeting = None      # 'HELO', 'EHLO' or 'LHLO' once the client said one
        self.lmtp = lmtp
        self.xclient = {}
        self.xforward = {}
        self.proxy = None
        self.auth = None
        self.user = None
        self.transaction = 1
        self.envelope = Envelope()
        self.pre_greeting_data = False

    @property
    def transmission_type(self) -> str:
        """RFC 3848 'with' keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP..."""
        if self.lmtp:
            base = 'LMTP'
        elif self.greeting == 'EHLO':
            base = 'ESMTP'
        else:
            base = 'SMTP'
        if base == 'SMTP' and not (self.secure or self.user):
            return base
        if base == 'SMTP':
            base = 'ESMTP'      # RFC 3848 has no SMTPS/SMTPA: TLS/AUTH imply ESMTP
        return base + ('S' if self.secure else '') + ('A' if self.user else '')

    # -- the transitions (the table above) ---------------------------------
    def greet(self, kind: Greeting, name: str) -> None:
        """HELO, EHLO or LHLO `name`: the transaction ends; after XCLIENT
        HELO=, the original client's name stays (Postfix)."""
        self.end_transaction()
        self.helo = self.xclient.get('HELO') or name
        self.greeting = kind

    def end_transaction(self) -> None:
        """RSET, the end of DATA or BDAT: a new envelope; the old one's spool goes."""
        envelope = self.envelope
        if envelope.mail_from is not None:
            self.transaction += 1
            self.xforward = {}
        if envelope.data_stream is not None:
            envelope.discard()
        self.envelope = Envelope()

    # The name this had before the transitions were named.
    reset_envelope = end_transaction

    def start_over(self, *, keep_login: bool, helo: str | None = None) -> None:
        """Back to the state after the 220: STARTTLS (keep_login=False)
        and XCLIENT (keep_login=True, its HELO= as `helo`)."""
        self.end_transaction()
        self.greeting = None
        self.helo = helo
        if not keep_login:
            self.auth = self.user = None

    def __repr__(self) -> str:
        return f'<Session {self.id} {self.remote_address}:{self.remote_port}>'
