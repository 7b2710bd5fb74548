"""What happens in a session, as named events with their facts.

Each fact is reported at one place, where it happens (the engine, the
server, a delivery), to one observer the server holds: `server.events`, an
`Events`. The log is one consumer (`LogEvents`, the default: one line per
event, Postfix's facts, docs/operating.md); metrics are another, with the
same methods. `Fanout` hands each event to several observers.

An observer is called in the session's greenlet, on the hot path for
`accepted` and `delivered`: it must not block, and must be cheap when it
has nothing to do (LogEvents compares one level and returns).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .logs import Fields, Prepared, RecordLog
from .replies import Reply, default_enhanced

if TYPE_CHECKING:
    from .addresses import Address
    from .options import LogBackend
    from .session import Envelope, Session

INFO, WARNING = logging.INFO, logging.WARNING

# Who refused (`by` of `refused`): these words, or the name of the component
# that raised the SmtpError (middleware.component_name: 'recipients' for the
# Recipients policy), or of the hook ('on_rcpt_to').
ENGINE = 'engine'           # sequence, syntax, a bad line
LIMIT = 'limit'             # a configured limit (size, recipients, connections, errors)
MIDDLEWARE = 'middleware'   # a reply set with ctx.send() by a middleware
DELIVERY = 'delivery'       # a delivery could not take the message (or its upstream refused)

# What `delivered` says of each recipient (Postfix's words).
SENT, DEFERRED, BOUNCED = 'sent', 'deferred', 'bounced'


class Events(Protocol):
    """The observer of a server's sessions: one method per fact.

    connected(session)      a connection is served (after a PROXY header,
                            the per-client limit and the reverse lookup);
                            every session that was connected is also
                            disconnected
    tls(session, failure)   a TLS handshake (STARTTLS or implicit)
                            succeeded (failure None) or failed (why)
    authenticated(session, mechanism)
                            AUTH succeeded: `session.user`, `session.auth`
    auth_failed(session, mechanism, username, reply)
                            AUTH was answered 535 (username: what the
                            client gave, None when it gave none)
    refused(session, command, reply, by, address, queue_id)
                            a command got a 4xx/5xx (also a connection:
                            command 'CONNECT'); `by`: who refused it
                            (ENGINE, LIMIT, MIDDLEWARE, DELIVERY, or a
                            component's or hook's name); `address`: the
                            MAIL or RCPT argument refused (the recipient,
                            for an LMTP DATA reply); `queue_id` for DATA
    accepted(session, envelope, queue_id, size)
                            the client got 2xx for its message: `size`
                            bytes received, queue id `queue_id` (the
                            session id and the transaction's number)
    delivered(session, queue_id, recipients, status, relay, reason)
                            a delivery's outcome for these recipients:
                            SENT, DEFERRED or BOUNCED; `relay` where
                            ('maildir', 'mx.example:25', 'callable ...'),
                            `reason` what happened (the file, the upstream's
                            reply)
    disconnected(session, commands, failed)
                            the session ended: commands per verb
                            ('ehlo': 1 ...), and of those the ones refused
    """

    def connected(self, session: Session, /) -> None: ...
    def tls(self, session: Session, failure: str | None, /) -> None: ...
    def authenticated(self, session: Session, mechanism: str, /) -> None: ...
    def auth_failed(self, session: Session, mechanism: str, username: str | None,
                    reply: Reply, /) -> None: ...
    def refused(self, session: Session, command: str, reply: Reply, by: str,
                address: Address | None, queue_id: str | None, /) -> None: ...
    def accepted(self, session: Session, envelope: Envelope, queue_id: str,
                 size: int, /) -> None: ...
    def delivered(self, session: Session, queue_id: str, recipients: Sequence[Address],
                  status: str, relay: str, reason: str, /) -> None: ...
    def disconnected(self, session: Session, commands: Mapping[str, int],
                     failed: Mapping[str, int], /) -> None: ...


def stamp(error: BaseException, by: str) -> None:
    """Name who raised this SmtpError, unless someone did already (the
    innermost middleware level it leaves, a hook): `by` of the refusal."""
    vars(error).setdefault('refused_by', by)


def refused_by(error: BaseException) -> str | None:
    """Who raised this SmtpError (stamp), or None."""
    by: str | None = vars(error).get('refused_by')
    return by


def began(envelope: Envelope, at: float) -> None:
    """Note when the transaction of `envelope` began (time.monotonic() when
    its MAIL came, Engine.handle): `accepted` observers read it with
    began_at (the metrics' transaction time)."""
    vars(envelope)['began'] = at


def began_at(envelope: Envelope) -> float | None:
    """When the transaction began (began), or None when nobody noted it."""
    at: float | None = vars(envelope).get('began')
    return at


def queue_id(session: Session) -> str:
    """The id of the session's current transaction: '<session id>-<n>', as
    the Received header and a Maildir delivery's reply give it."""
    return f'{session.id}-{session.transaction}'


def status_of(reply: Reply) -> str:
    """SENT for 2xx, DEFERRED for 4xx (the client retries), else BOUNCED."""
    return SENT if reply.code < 400 else DEFERRED if reply.code < 500 else BOUNCED


def reply_text(reply: Reply) -> str:
    """'550 5.1.1 No such user': a reply as one line of a log."""
    code, enhanced, reason = reply_facts(reply)
    return f'{code} {enhanced} {reason}' if enhanced else f'{code} {reason}'


def reply_facts(reply: Reply) -> tuple[int, str | None, str]:
    """(code, enhanced code, reason): the reason on one line, printable."""
    message = reply.message
    reason = message if isinstance(message, str) else ' '.join(str(m) for m in message)
    reason = printable(reason.replace('\r', '').replace('\n', ' '))
    enhanced = reply.enhanced
    if enhanced is None:
        enhanced = default_enhanced(reply.code)
    written = _ENHANCED.match(reason)
    if written:             # 'ctx.send(550, "5.7.1 Denied")': the code is in the text
        enhanced, reason = written[1], reason[written.end():]
    return reply.code, enhanced or None, reason


_ENHANCED = re.compile(r'([245]\.\d{1,3}\.\d{1,3})(?: |$)')
_HOSTNAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,253}\Z')


def printable(text: str) -> str:
    """`text` as it can stand in a log line: control characters (a client
    could otherwise write a line of its own) escaped."""
    return text if text.isprintable() else text.encode('unicode_escape').decode('ascii')


def client_of(session: Session) -> tuple[str, str]:
    """(name, address) as logs write them, `name[address]`: the name from
    the reverse lookup (or XCLIENT) when it is a host name, else 'unknown'.
    Nothing a client chose can hold a bracket or a space here, so a pattern
    such as fail2ban's finds the real address."""
    name = session.client_hostname
    if not name or name[0] == '[' or not _HOSTNAME.match(name):
        name = 'unknown'
    return name, session.remote_address or 'unknown'


def user_of(session: Session) -> str | None:
    """The login of an authenticated session, as the client gave it."""
    if not session.user:
        return None
    auth = session.auth
    return printable(auth.username if auth is not None else str(session.user))


class _Client:
    """What a session's lines say of its client, joined once per change:
    `fields` (address, name, helo, proto, tls, user) and, with a RecordLog,
    the records of its accepted messages and deliveries prepared with them.
    As a line's argument it is 'helo=<h>, proto=ESMTPS, tls=TLSv1.3,
    user=u', written when a handler formats the line."""

    __slots__ = ('helo', 'greeting', 'tls', 'user', 'hostname', 'address',
                 'fields', 'accepted', 'delivery')

    def __init__(self, session: Session) -> None:
        # What the lines depend on, to see when it changes (identity: cheap).
        self.helo, self.greeting, self.tls = session.helo, session.greeting, session.tls
        self.user, self.hostname = session.user, session.client_hostname
        self.address = session.remote_address
        name, ip = client_of(session)
        helo = printable(session.helo) if session.helo else None
        proto = session.transmission_type
        tls = session.tls
        version = tls.get('version') if tls else None
        self.fields: Fields = {'client': ip, 'client_name': name, 'helo': helo,
                               'proto': proto, 'tls': version, 'user': user_of(session)}
        self.accepted: Prepared | None = None
        self.delivery: Prepared | None = None

    def __str__(self) -> str:
        fields = self.fields
        text = f'helo=<{fields["helo"] or ""}>, proto={fields["proto"]}'
        if fields['tls']:
            text += f', tls={fields["tls"]}'
        if fields['user'] is not None:
            text += f', user={fields["user"]}'
        return text


class LogEvents:
    """The default observer: one line per event through the server's log
    backend (`log_backend`, a RecordLog for a Logger; delivery lines on its
    child `.delivery`), each with its facts as `extra` fields; nothing is
    made when `log_level` is above the event's level."""

    def __init__(self, log: LogBackend, deliveries: LogBackend, level: int) -> None:
        self._line = _writer(log)
        self._delivery_line = _writer(deliveries)
        # The backends that take prepared records (RecordLog), else None.
        self._records = log if type(log) is RecordLog else None
        self._delivery_records = deliveries if type(deliveries) is RecordLog else None
        self._level = level
        # Per session: what its lines say of the client, made again when it changes.
        self._clients: dict[str, _Client] = {}

    def _client(self, session: Session, keep: bool = True) -> _Client:
        """The session's _Client, made again when its facts changed (`keep`:
        remembered until the session disconnects)."""
        known = self._clients.get(session.id)
        if (known is not None and known.helo is session.helo and known.tls is session.tls
                and known.user is session.user and known.greeting is session.greeting
                and known.hostname is session.client_hostname
                and known.address is session.remote_address):
            return known
        client = _Client(session)
        if keep:
            self._clients[session.id] = client
        return client

    # -- the events ------------------------------------------------------------
    def connected(self, session: Session) -> None:
        if self._level > INFO:
            return
        name, ip = client_of(session)
        sid, port = session.id, session.remote_port
        self._line(INFO, '%s: connect from %s[%s]:%s', (sid, name, ip, port),
                   {'event': 'connect', 'session': sid, 'client': ip, 'client_name': name,
                    'client_port': port})

    def tls(self, session: Session, failure: str | None) -> None:
        if self._level > INFO:
            return
        name, ip = client_of(session)
        sid = session.id
        fields: Fields = {'event': 'tls' if failure is None else 'tls_failed', 'session': sid,
                          'client': ip, 'client_name': name}
        if failure is not None:
            fields['reason'] = failure
            self._line(INFO, '%s: TLS handshake failed from %s[%s]: %s',
                       (sid, name, ip, failure), fields)
            return
        info: Mapping[str, Any] = session.tls or {}
        fields['tls'], fields['cipher'] = info.get('version'), info.get('cipher')
        self._line(INFO, '%s: TLS established from %s[%s]: %s %s',
                   (sid, name, ip, fields['tls'], fields['cipher']), fields)

    def authenticated(self, session: Session, mechanism: str) -> None:
        if self._level > INFO:
            return
        name, ip = client_of(session)
        sid, user = session.id, user_of(session)
        self._line(INFO, '%s: auth ok from %s[%s]: mechanism=%s, user=%s',
                   (sid, name, ip, mechanism, user),
                   {'event': 'auth', 'session': sid, 'client': ip, 'client_name': name,
                    'mechanism': mechanism, 'user': user})

    def auth_failed(self, session: Session, mechanism: str, username: str | None,
                    reply: Reply) -> None:
        if self._level > WARNING:
            return
        name, ip = client_of(session)
        sid = session.id
        user = printable(username) if username is not None else None
        code, enhanced, reason = reply_facts(reply)
        self._line(WARNING, '%s: auth failed from %s[%s]: mechanism=%s, user=%s: %s',
                   (sid, name, ip, mechanism, user, reply_text(reply)),
                   {'event': 'auth_failed', 'session': sid, 'client': ip, 'client_name': name,
                    'mechanism': mechanism, 'user': user, 'code': code,
                    'enhanced': enhanced, 'reason': reason})

    def refused(self, session: Session, command: str, reply: Reply, by: str,
                address: Address | None, queue_id: str | None) -> None:
        if self._level > INFO:
            return
        code, enhanced, reason = reply_facts(reply)
        # A refused connection never disconnects: nothing to remember.
        client = self._client(session, keep=command != 'CONNECT')
        fields = client.fields
        sender = session.envelope.mail_from
        if command == 'MAIL':
            sender, recipient = address, None
        else:
            recipient = address
        mail_from = printable(sender.address) if sender is not None else None
        rcpt = printable(recipient.address) if recipient is not None else None
        envelope = ''
        if mail_from is not None:
            envelope += f'from=<{mail_from}>, '
        if rcpt is not None:
            envelope += f'to=<{rcpt}>, '
        self._line(INFO, '%s: reject: %s from %s[%s]: %s; %s%s, by=%s',
                   (queue_id or session.id, command, fields['client_name'], fields['client'],
                    reply_text(reply), envelope, client, by),
                   {'event': 'reject', 'session': session.id, 'queue_id': queue_id, **fields,
                    'command': command, 'code': code, 'enhanced': enhanced,
                    'reason': reason, 'mail_from': mail_from, 'rcpt': rcpt, 'by': by})

    def accepted(self, session: Session, envelope: Envelope, queue_id: str,
                 size: int) -> None:
        if self._level > INFO:
            return
        sender = envelope.mail_from
        mail_from = sender.address if sender is not None else ''
        if not mail_from.isprintable():
            mail_from = printable(mail_from)
        count = len(envelope.rcpt_to)
        client = self._client(session)
        fields = client.fields
        args = (queue_id, mail_from, size, count, fields['client_name'], fields['client'],
                client)
        facts = {'queue_id': queue_id, 'mail_from': mail_from, 'size': size, 'nrcpt': count}
        records = self._records
        if records is None:
            self._line(INFO, _ACCEPTED, args, facts)
            return
        prepared = client.accepted
        if prepared is None:
            prepared = client.accepted = records.prepare(
                INFO, {'event': 'accepted', 'session': session.id, **fields})
        records.record_prepared(prepared, _ACCEPTED, args, facts)

    def delivered(self, session: Session, queue_id: str, recipients: Sequence[Address],
                  status: str, relay: str, reason: str) -> None:
        level = INFO if status != DEFERRED else WARNING
        if self._level > level:
            return
        if not reason.isprintable():
            reason = printable(reason)
        records = self._delivery_records
        if records is None or level != INFO:
            for recipient in recipients:
                rcpt = printable(recipient.address)
                self._delivery_line(level, _DELIVERED, (queue_id, rcpt, relay, status, reason),
                                    {'event': 'delivery', 'session': session.id,
                                     'queue_id': queue_id, 'rcpt': rcpt, 'relay': relay,
                                     'status': status, 'reason': reason})
            return
        client = self._client(session)
        prepared = client.delivery
        if prepared is None:
            prepared = client.delivery = records.prepare(
                INFO, {'event': 'delivery', 'session': session.id})
        for recipient in recipients:
            rcpt = recipient.address
            if not rcpt.isprintable():
                rcpt = printable(rcpt)
            records.record_prepared(prepared, _DELIVERED, (queue_id, rcpt, relay, status, reason),
                                    {'queue_id': queue_id, 'rcpt': rcpt, 'relay': relay,
                                     'status': status, 'reason': reason})

    def disconnected(self, session: Session, commands: Mapping[str, int],
                     failed: Mapping[str, int]) -> None:
        self._clients.pop(session.id, None)
        if self._level > INFO:
            return
        name, ip = client_of(session)
        sid = session.id
        self._line(INFO, '%s: disconnect from %s[%s] %s', (sid, name, ip,
                                                           _Summary(commands, failed)),
                   {'event': 'disconnect', 'session': sid, 'client': ip, 'client_name': name,
                    'commands': commands, 'failed': failed})


_ACCEPTED = '%s: accepted: from=<%s>, size=%d, nrcpt=%d, client=%s[%s], %s'
_DELIVERED = '%s: to=<%s>, relay=%s, status=%s (%s)'


def summary(commands: Mapping[str, int], failed: Mapping[str, int]) -> str:
    """'ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6', as Postfix says
    it: per verb the commands that succeeded, out of how many when some
    were refused."""
    parts = []
    total = refused = 0
    for verb, count in commands.items():
        bad = failed.get(verb, 0)
        total += count
        refused += bad
        parts.append(f'{verb}={count - bad}/{count}' if bad else f'{verb}={count}')
    parts.append(f'commands={total - refused}/{total}' if refused else f'commands={total}')
    return ' '.join(parts)


class _Summary:
    """summary() made when a handler formats the line, not before."""

    __slots__ = ('commands', 'failed')

    def __init__(self, commands: Mapping[str, int], failed: Mapping[str, int]) -> None:
        self.commands = commands
        self.failed = failed

    def __str__(self) -> str:
        return summary(self.commands, self.failed)


def _writer(backend: LogBackend) -> Any:
    """`write(level, msg, args, fields)` into a backend: a RecordLog takes
    the facts, any other backend (only `.log()`) the text."""
    if type(backend) is RecordLog:
        return backend.record

    def write(level: int, msg: str, args: tuple[Any, ...], fields: Fields) -> None:
        backend.log(level, msg, *args)
    return write


class Fanout:
    """Several observers as one: each event goes to each, in order. One
    that raises keeps the event neither from the others nor from the
    session: its first failure per method is logged, with the traceback."""

    def __init__(self, *observers: Events) -> None:
        self.observers = observers
        self._failed: set[tuple[int, str]] = set()

    def _each(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, name)(*args)
            except Exception:   # an observer's bug must not cost a session
                if (id(observer), name) not in self._failed:
                    self._failed.add((id(observer), name))
                    logging.getLogger('smtp_stack').exception(
                        'the events observer %r failed on %s', observer, name)

    def connected(self, session: Session) -> None:
        self._each('connected', session)

    def tls(self, session: Session, failure: str | None) -> None:
        self._each('tls', session, failure)

    def authenticated(self, session: Session, mechanism: str) -> None:
        self._each('authenticated', session, mechanism)

    def auth_failed(self, session: Session, mechanism: str, username: str | None,
                    reply: Reply) -> None:
        self._each('auth_failed', session, mechanism, username, reply)

    def refused(self, session: Session, command: str, reply: Reply, by: str,
                address: Address | None, queue_id: str | None) -> None:
        self._each('refused', session, command, reply, by, address, queue_id)

    def accepted(self, session: Session, envelope: Envelope, queue_id: str,
                 size: int) -> None:
        self._each('accepted', session, envelope, queue_id, size)

    def delivered(self, session: Session, queue_id: str, recipients: Sequence[Address],
                  status: str, relay: str, reason: str) -> None:
        self._each('delivered', session, queue_id, recipients, status, relay, reason)

    def disconnected(self, session: Session, commands: Mapping[str, int],
                     failed: Mapping[str, int]) -> None:
        self._each('disconnected', session, commands, failed)
