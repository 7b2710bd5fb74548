"""One message as the MTA shows it to a milter, and what the milter answers
at its end.

`MessageReader` turns the content packets (header fields, end of header,
body chunks, end of body) into the bytes of `envelope.data_stream` while
they arrive: the header section as the client sent it (the MTA's own
Received field is not shown to milters: Postfix milter8.c, milter8_header),
an empty line, the body with CRLF line ends. It answers each packet the MTA
waits for, and keeps the header fields for the end of the message, where
`changes()` turns what middleware recorded on the envelope into the
milter's modification requests.

What a removal needs of the fields: SMFIR_CHGHEADER names a field by its
name and its index among the fields of that name, from 1, in any case
([cleanup] cleanup_milter.c, cleanup_find_header_start: strncasecmp,
`--index == 0`), and `remove_header` takes a test of the value, any
function, which middleware may record after the fields went by (once it
read the whole message). So every field's name and value must be at
hand at the end: the first `budget` bytes of them stay in memory, the
rest go to an anonymous temporary file, read back once at the end when
a removal asks (as Postfix's cleanup reads its queue file again).
Memory stays bounded however long the header section; the end keeps only
the counts of the names a removal names, and the indexes it removes: at
most MAX_REMOVALS of them. A message with more fields to remove is
refused (`TooManyRemovals`): passing it on with some of them left in
would let a forged field through.
"""
from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, BinaryIO, Protocol

import gevent

from ..headers import fold
from ..spool import Spool
from . import protocol as P
from .protocol import Packet

if TYPE_CHECKING:
    from ..addresses import Address, ParamValue
    from ..session import Envelope, HeaderPredicate

# Bytes of header names and values kept in memory for remove_header at the end
# of the message. The fields past it (Postfix passes up to message_size_limit
# of them) go to a temporary file: a forged field must not hide behind a
# megabyte of others, nor cost a megabyte of memory more per megabyte.
HEADER_BUDGET = 1 << 20
# The most fields remove_header removes from one message. A legitimate
# message has a few of any name it names (Authentication-Results, spam
# verdicts); one with more is refused (TooManyRemovals) rather than passed
# on with some left, as Postfix refuses what passes its own limits.
MAX_REMOVALS = 1000
# The fields the end of a message looks at between two turns of the hub.
FIELDS_PER_TURN = 2048
CONTINUE_PACKET = P.reply(P.CONTINUE)
SKIP_PACKET = P.reply(P.SKIP)

# (what the MTA sent: the path as in SMFIC_MAIL/SMFIC_RCPT, its parsed Address)
Sent = tuple[str, 'Address']


class TooManyRemovals(Exception):
    """remove_header's rules match more than MAX_REMOVALS fields of a
    message: it must be refused, not passed on with some of them left."""

    def __init__(self, name: str) -> None:
        super().__init__(f'more than {MAX_REMOVALS} header fields to remove '
                         f'(the {MAX_REMOVALS + 1}th: {name})')
        self.name = name


class Channel(Protocol):
    """What the reader needs of its connection."""

    owed: str | None        # the command the MTA waits for a reply to

    def read_packet(self) -> Packet: ...
    def answer(self, data: bytes) -> None: ...
    def expects(self, command: str) -> bool: ...
    def take_macros(self, packet: Packet) -> None: ...


class MessageReader:
    """The content of one message, from `first` (the packet that began it,
    when it was not SMFIC_DATA) to the end of the body, an abort, or a
    command of another transaction (`pushback`: the connection handles it
    next). `pull()` is the DataStream's source."""

    def __init__(self, channel: Channel, first: Packet | None, leading_space: bool,
                 budget: int = HEADER_BUDGET) -> None:
        self.channel = channel
        self._first = first
        self._leading_space = leading_space
        self._budget = budget
        self.headers: list[tuple[str, str]] = []    # (name, value) as the MTA sent them,
        self._spilled: Spool | None = None          # ... and past the budget, in a file
        self.ended = False          # SMFIC_BODYEOB arrived: the MTA waits for the verdict
        self.aborted = False        # the MTA abandoned the message (ABORT, QUIT, ...)
        self.quit = False           # ... with SMFIC_QUIT
        self.pushback: Packet | None = None
        self._in_body = False       # the empty line after the header section was given

    @property
    def done(self) -> bool:
        return self.ended or self.aborted

    @property
    def overflow(self) -> bool:
        """Fields past the budget went to a temporary file."""
        return self._spilled is not None

    def fields(self) -> Iterator[tuple[str, str]]:
        """Every header field read so far, (name, value) as the MTA sent
        them: those in memory, then those past the budget, read back from
        their file a chunk at a time."""
        yield from self.headers
        spilled = self._spilled
        if spilled is not None:
            yield from _read_back(spilled)

    def close(self) -> None:
        """Remove the temporary file of the fields past the budget, if any."""
        spilled, self._spilled = self._spilled, None
        if spilled is not None:
            spilled.close()

    def pull(self) -> bytes | None:
        """The next piece of the message, or None at its end; answers
        SMFIR_CONTINUE to the packet before it when the MTA waits."""
        channel = self.channel
        while not self.done:
            if channel.owed is not None:
                channel.answer(CONTINUE_PACKET)
            piece = self._take(self._next())
            if piece:
                return piece
        return None

    def skip_rest(self, skip_ok: bool) -> None:
        """Read to the end of the message when the chain wants no more of
        it, keeping the header fields (for remove_header) but not the body:
        with `skip_ok` (SMFIP_SKIP agreed), the first body chunk the MTA
        waits on is answered SMFIR_SKIP and no more chunks come ([milter8]
        skip_event_type); every other packet waited on, CONTINUE."""
        channel = self.channel
        while not self.done:
            owed = channel.owed
            if owed is not None:
                channel.answer(SKIP_PACKET if skip_ok and owed == P.BODY else CONTINUE_PACKET)
            self._take(self._next())

    def answer_when_asked(self, data: bytes) -> bool:
        """Send `data` (a refusal) at the first packet the MTA waits for a
        reply to, reading on to it; False when the message was abandoned
        before one came."""
        channel = self.channel
        while channel.owed is None:
            if self.done:
                return False
            self._take(self._next())
        if self.aborted:
            return False
        channel.answer(data)
        return True

    def _next(self) -> Packet:
        first, self._first = self._first, None
        return first if first is not None else self.channel.read_packet()

    def _take(self, packet: Packet) -> bytes | None:
        """One packet's share of the message (None: nothing to add)."""
        command, channel = packet.command, self.channel
        if command == P.MACRO:      # for the packet that follows ([milter8]: EOH, EOB)
            channel.take_macros(packet)
            return None
        if command == P.HEADER:
            name, value = P.read_command(packet)
            assert isinstance(name, str) and isinstance(value, str)
            self._keep(packet, name, value)
            channel.owed = command if channel.expects(command) else None
            return self._field(name, value)
        if command in (P.EOH, P.BODY, P.EOB):
            data = b''
            if command != P.EOH:
                (raw,) = P.read_command(packet)
                assert isinstance(raw, bytes)
                data = raw
            else:
                P.read_command(packet)
            if not self._in_body:
                self._in_body = True
                data = b'\r\n' + data
            if command == P.EOB:
                self.ended = True
                channel.owed = command
            else:
                channel.owed = command if channel.expects(command) else None
            return data
        self.aborted = True         # ABORT, QUIT, or the next transaction's command
        self.quit = command == P.QUIT
        if command not in (P.ABORT, P.QUIT):
            self.pushback = packet
        channel.owed = None
        return None

    def _keep(self, packet: Packet, name: str, value: str) -> None:
        spilled = self._spilled
        if spilled is None:
            self._budget -= len(name) + len(value)
            if self._budget >= 0:
                self.headers.append((name, value))
                return
            spilled = self._spilled = Spool(memory_limit=0)   # a file from the first byte
        spilled.write(packet.data)      # name NUL value NUL, as SMFIC_HEADER carries them

    def _field(self, name: str, value: str) -> bytes:
        """The field as it stood in the message: Sendmail (and Postfix
        without SMFIP_HDR_LEADSPC) eats one space after the colon, and
        sends a folded field with LF alone between its lines."""
        text = value.replace('\r\n', '\n').replace('\n', '\r\n')
        gap = '' if self._leading_space else ' '
        return f'{name}:{gap}{text}\r\n'.encode('utf-8', 'surrogateescape')


def _read_back(spilled: Spool) -> Iterator[tuple[str, str]]:
    """The fields written to `spilled`, each its SMFIC_HEADER data (name
    NUL value NUL), read a chunk at a time: memory is one chunk and the
    longest field."""
    spilled.finish()
    pair: list[str] = []
    pending: list[bytes] = []       # the start of a string a chunk cut
    with spilled.open() as file:
        while chunk := file.read(P.CHUNK_SIZE):
            *ended, rest = chunk.split(b'\0')
            for piece in ended:
                if pending:
                    pending.append(piece)
                    piece = b''.join(pending)
                    pending = []
                pair.append(piece.decode('utf-8', 'surrogateescape'))
                if len(pair) == 2:
                    yield pair[0], pair[1]
                    pair = []
            if rest:
                pending.append(rest)


# -- the end of the message: what changed ------------------------------------------

class Allowed(Protocol):
    """What the MTA allowed in the negotiation (SMFIF_* bits), and whether
    header values carry their leading space."""
    actions: int
    leading_space: bool


def changes(envelope: Envelope, headers: Iterable[tuple[str, str]], sender: Sent | None,
            recipients: Sequence[Sent], actions: int, leading_space: bool,
            warn: list[str]) -> Iterator[bytes]:
    """The modification requests for the end of the message, in an order
    that keeps the header indexes right: deletions first, highest index
    first (a deletion never moves a field it has not reached yet, however
    the MTA counts), then the added fields, each inserted on top (index 0),
    so the last added is topmost, as the built-in deliveries put them; then
    the envelope, the body, the quarantine. What the MTA did not allow is
    said in `warn` and left out."""
    yield from _removals(envelope, headers, actions, warn)
    added = envelope.added_headers
    if added:
        if actions & P.ADDHDRS:
            for name, value in added:
                yield P.reply(P.INSHEADER, 0, name, _value(name, value, leading_space))
        else:
            warn.append('add a header field')
    yield from _sender(envelope, sender, actions, warn)
    yield from _recipients(envelope, recipients, actions, warn)
    body = envelope.replaced_body
    if body is not None:
        if actions & P.CHGBODY:
            yield from body_chunks(body)
        else:
            warn.append('replace the body')
    reason = envelope.quarantined
    if reason is not None:
        if actions & P.QUARANTINE_ACTION:
            yield P.reply(P.QUARANTINE, reason)
        else:
            warn.append('quarantine')


def _removals(envelope: Envelope, headers: Iterable[tuple[str, str]], actions: int,
              warn: list[str]) -> Iterator[bytes]:
    """CHGHEADER with an empty value for each field a rule removes. Only
    the names the rules name are counted: the fields of the others pass
    by, however many (and however many names) the section holds, with a
    turn of the hub every FIELDS_PER_TURN fields. Past MAX_REMOVALS
    fields to remove, TooManyRemovals before the first packet."""
    rules = envelope.removed_headers
    if not rules:
        return
    if not actions & P.CHGHDRS:
        warn.append('remove a header field')
        return
    tests: dict[str, list[HeaderPredicate | None]] = {}
    for rule, test in rules:
        tests.setdefault(rule.lower(), []).append(test)
    doomed: list[tuple[int, str]] = []      # at most MAX_REMOVALS
    seen: Counter[str] = Counter()
    fields = iter(headers)
    more = True
    while more:
        more = False
        for name, value in islice(fields, FIELDS_PER_TURN):
            more = True
            key = name.lower()
            named = tests.get(key)
            if named is None:
                continue
            seen[key] += 1      # libmilter and Postfix count per name, any case, from 1
            unfolded = value.replace('\r', '').replace('\n', '').strip(' \t')
            if any(test is None or test(unfolded) for test in named):
                if len(doomed) == MAX_REMOVALS:
                    raise TooManyRemovals(name)
                doomed.append((seen[key], name))
        gevent.sleep(0)
    for index, name in sorted(doomed, reverse=True):
        yield P.reply(P.CHGHEADER, index, name, '')


def _value(name: str, value: str, leading_space: bool) -> str:
    """A value as the MTA takes it: folded as add_header's fields are
    (headers.fold), the lines joined by LF alone ([pmilter]: the layout
    of SMFIC_HEADER both ways), with the space after the colon when the
    MTA keeps it (SMFIP_HDR_LEADSPC)."""
    text = fold(name, value)[len(name) + 1:].rstrip('\r\n').replace('\r\n', '\n')
    return text if leading_space else text[1:]


def _path(address: Address) -> str:
    return f'<{address.address}>'


def _args(address: Address) -> str | None:
    if not address.args:
        return None
    return ' '.join(key if value is True else f'{key}={value}'
                    for key, value in address.args.items())


def _key(address: Address) -> tuple[str, tuple[tuple[str, ParamValue], ...]]:
    return address.address, tuple(sorted(address.args.items()))


def _sender(envelope: Envelope, sender: Sent | None, actions: int,
            warn: list[str]) -> Iterator[bytes]:
    now = envelope.mail_from
    if sender is None or now is None or _key(now) == _key(sender[1]):
        return
    if actions & P.CHANGE_FROM:
        yield P.reply(P.CHGFROM, _path(now), _args(now))
    else:
        warn.append('change the sender')


def _recipients(envelope: Envelope, recipients: Sequence[Sent], actions: int,
                warn: list[str]) -> Iterator[bytes]:
    """Recipients the MTA has and the envelope no longer has are deleted
    (by the path as the MTA sent it: libmilter smfi_delrcpt); those the
    envelope has and the MTA does not are added."""
    if not recipients and not envelope.rcpt_to:
        return      # RCPT not asked for, or no recipient: nothing to compare
    remaining: Counter[tuple[str, tuple[tuple[str, ParamValue], ...]]] = Counter(
        _key(address) for address in envelope.rcpt_to)
    for raw, address in recipients:
        key = _key(address)
        if remaining[key]:
            remaining[key] -= 1
        elif actions & P.DEL_RCPT:
            yield P.reply(P.DELRCPT, raw)
        else:
            warn.append('delete a recipient')
    known: Counter[tuple[str, tuple[tuple[str, ParamValue], ...]]] = Counter(
        _key(address) for _, address in recipients)
    for address in envelope.rcpt_to:
        key = _key(address)
        if known[key]:
            known[key] -= 1
        elif address.args and actions & P.ADD_RCPT_PAR:
            yield P.reply(P.ADDRCPT_PAR, _path(address), _args(address))
        elif actions & P.ADD_RCPT:
            yield P.reply(P.ADDRCPT, _path(address))
        else:
            warn.append('add a recipient')


def body_chunks(body: bytes | BinaryIO) -> Iterator[bytes]:
    """SMFIR_REPLBODY packets of at most CHUNK_SIZE bytes each, read as
    they go (a file is never held whole)."""
    source = io.BytesIO(body) if isinstance(body, bytes) else body
    read = source.read
    sent = False
    while True:
        chunk = read(P.CHUNK_SIZE)
        if not chunk:
            break
        sent = True
        yield P.reply(P.REPLBODY, bytes(chunk))
    if not sent:        # an empty body: one empty chunk says so
        yield P.reply(P.REPLBODY, b'')
