"""What every delivery shares: when to deliver, the headers on top, the body
(without the fields recorded with `envelope.remove_header`).

A delivery is a middleware `fn(ctx, next)`. On DATA it calls `next()` (the
built-in handler sends 354 and opens `ctx.data_stream`), then reads the body
(from the envelope's spool when a middleware made one, else from the stream
as it arrives) and commits the message only when all of these hold:

- the reply so far is a success (an inner middleware or hook may already
  have refused the message: then nothing is delivered);
- nobody read the stream before it without spooling it (a delivery must
  see every byte);
- the body reached its end: a body the server refuses raises MessageRefused
  on the way (too big, bare line ends, a line too long), and the delivery
  removes what it wrote;
- the reply is still a success after the body was read (the `inspect`
  callback may refuse it on its content).

What middleware decided about the message applies to every delivery the
same way (docs/delivery.md, "Dropped, replaced and quarantined messages"):
`envelope.drop()` -> `discard_dropped` (250, nothing stored or passed on,
one delivery line with status `discarded`); `envelope.replace_body()` ->
`message_body` yields the header section, then the new body;
`envelope.quarantine()` -> `message_head` adds a `X-Quarantine-Reason`
field, and each delivery holds the message where its docs say.
"""
from __future__ import annotations

import email.utils
import errno
import functools
import io
import itertools
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeAlias

from ..errors import SmtpError
from ..events import DELIVERY, queue_id, refused_by, reply_text, status_of
from ..headers import header_block
from ..logs import emit
from ..replies import Reply
from .header_edits import client_message, edits_of, top_block

if TYPE_CHECKING:
    from ..addresses import Address
    from ..middleware import Context, Next
    from ..session import Envelope, Session
    from ..stream import DataStream

# `inspect(ctx, chunk)`: sees each piece of the body before a delivery
# writes it; raising SmtpError refuses the message.
Inspect: TypeAlias = 'Callable[[Context, bytes], object]'
# What `ctx.reply` holds: nothing yet, one reply, or LMTP's one per recipient.
ReplySoFar: TypeAlias = 'Reply | list[Reply] | None'

class Delivery(Protocol):
    """What every delivery is: a middleware that says in one line where the
    mail goes (`smtp-stack serve` prints it when it starts). One that keeps
    state per session, or runs something beside the server, is also a
    component (middleware.Component): RelayDelivery, the inbox section."""

    def __call__(self, ctx: Context, next: Next, /) -> None: ...
    def describe(self) -> str: ...

CHUNK = 65536

# RFC 3463: 4.3.1 "mail system full", 4.3.0 "other or undefined mail system status".
DISK_FULL = Reply(452, 'Error: insufficient system storage', '4.3.1')
LOCAL_ERROR = Reply(451, 'Error: local error, message not stored', '4.3.0')
BODY_CONSUMED = Reply(451, 'Error: message body was read before delivery', '4.3.0')
# Delivery statuses beside events.SENT/DEFERRED/BOUNCED (a fixed set: the
# metrics count deliveries by status).
DISCARDED, QUARANTINED = 'discarded', 'quarantined'
# The field a quarantined message carries on top, with the reason given.
QUARANTINE_FIELD = 'X-Quarantine-Reason'
_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, 'EDQUOT', errno.ENOSPC)})


def disk_error_reply(exc: OSError) -> Reply:
    """452 when the disk or quota is full (the client should retry later,
    RFC 5321 4.5.3.1.10), else 451. Never the OSError text: paths stay private."""
    return DISK_FULL if exc.errno in _FULL_ERRNOS else LOCAL_ERROR


def first_code(reply: ReplySoFar) -> int:
    """The code of a reply, of the first of an LMTP list; 0 when unset."""
    if isinstance(reply, list):
        return reply[0].code if reply else 0
    return reply.code if reply is not None else 0


def is_success(reply: ReplySoFar) -> bool:
    """True when the reply (every entry of an LMTP list) is 2xx."""
    if isinstance(reply, list):
        return bool(reply) and all(200 <= r.code < 300 for r in reply)
    return reply is not None and 200 <= reply.code < 300


def wants_delivery(ctx: Context) -> bool:
    """A DATA command whose body the built-in handler accepted so far."""
    return delivered_stream(ctx) is not None


def delivered_stream(ctx: Context) -> DataStream | None:
    """The body's stream when the command is a DATA (or BDAT) whose body
    the built-in handler accepted so far, else None."""
    stream = ctx.data_stream
    return stream if stream is not None and stream.started and is_success(ctx.reply) else None


def untouched(ctx: Context) -> bool:
    """True when the whole body is still to be had: spooled, or not read yet.
    If someone read the stream without spooling it, a delivery would store a
    truncated message: it refuses with 451 instead."""
    stream = ctx.data_stream
    if stream is not None and stream.spooled is None and (stream.bytes_read or stream.finished):
        note(ctx, 40, 'the message body was read before the delivery middleware; '
                      'register the delivery so that it reads the body first')
        refuse(ctx, BODY_CONSUMED)
        return False
    return True


# -- what a delivery tells (events.Events, through the server) --------------------

def delivered(ctx: Context, status: str, relay: str, reason: str,
              recipients: Sequence[Address] | None = None) -> None:
    """Tell the outcome for `recipients` (all the envelope's by default):
    events.SENT, DEFERRED or BOUNCED, where (`relay`: 'maildir', a host and
    port ...) and what happened (`reason`: the file, the upstream's reply)."""
    session = ctx.session
    events = getattr(ctx.server, 'events', None)
    if events is not None:
        events.delivered(session, queue_id(session),
                         session.envelope.rcpt_to if recipients is None else recipients,
                         status, relay, reason)


def refuse(ctx: Context, reply: Reply | list[Reply], relay: str | None = None,
           reason: str | None = None, by: str = DELIVERY) -> None:
    """Answer with `reply` for the delivery (the log says `by=delivery`);
    with `relay`, also tell each recipient's outcome (`reason`, or the
    reply's text)."""
    ctx.send(reply)
    ctx.refusal = (reply, by)
    if relay is not None:
        single = reply if isinstance(reply, Reply) else reply[0]
        delivered(ctx, status_of(single), relay, reason or reply_text(single))


def note(ctx: Context, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
    """A line of a delivery about this session ('<session id>: msg'), on the
    server's delivery logger at `level` (log_level honoured)."""
    server = ctx.server
    if level < server.options.log_level:
        return
    sid = ctx.session.id
    emit(server.delivery_log, level, '%s: ' + msg, (sid, *args), {'session': sid}, exc_info)


def open_body(ctx: Context) -> io.BufferedIOBase:
    """A reader of the whole body: a file of its own from the spool when a
    middleware spooled it (so any number of readers compose), else the
    stream itself, read as it arrives."""
    stream = ctx.data_stream
    if stream is None:
        raise RuntimeError('no message body: read it on DATA or BDAT, after next()')
    spool = stream.spooled
    return spool.open() if spool is not None else stream


def body_chunks(reader: io.BufferedIOBase, inspect: Inspect | None,
                ctx: Context) -> Iterator[bytes]:
    """The body in pieces; `inspect(ctx, piece)` sees each one first and may
    raise SmtpError to refuse the message. A refused body raises
    MessageRefused (an SmtpError) before its end."""
    try:
        while True:
            piece = reader.read1(CHUNK)
            if not piece:
                return
            if inspect is not None:
                inspect(ctx, piece)
            yield piece
    finally:
        if reader is not ctx.data_stream:
            reader.close()      # a reader of the spool, ours to close


def message_body(ctx: Context, inspect: Inspect | None = None, *,
                 top_fields: bool = False) -> Iterator[bytes]:
    """The message as the client sent it, in pieces, for a delivery to write
    after `message_head`: `body_chunks` of `open_body(ctx)` (so `inspect`
    sees each piece as read, and a refused body raises MessageRefused),
    with the fields recorded by `envelope.remove_header` taken out of the
    header section as it streams (headers.HeaderFilter), and the fields a
    milter placed among the client's (header_edits.client_message). When a
    middleware replaced the body (`envelope.replace_body`), its header
    section is followed by the new body instead (`with_new_body`).

    The fields a milter inserted on top (above this server's Received) are
    written by `message_head`, or by `header_edits.top_block` for a writer
    without trace fields of its own (MailSink); `top_fields=True` puts
    them first here instead (without the fields add_header recorded)."""
    envelope = ctx.session.envelope
    pieces = client_message(body_chunks(open_body(ctx), inspect, ctx), envelope)
    replaced = envelope.replaced_body
    if replaced is not None:
        pieces = with_new_body(pieces, replaced)
    edits = edits_of(envelope)
    if top_fields and edits is not None and edits.top:
        pieces = itertools.chain([b''.join(line for _, line in edits.top)], pieces)
    return pieces


def with_new_body(pieces: Iterable[bytes], body: bytes | BinaryIO) -> Iterator[bytes]:
    """The header section of the message in `pieces` (up to and with its
    empty line, RFC 5322 2.1), then `body` in pieces: bytes, or a binary
    file read from where it stands, CHUNK bytes at a time (never whole).
    A seekable file is put back where it stood afterwards, so every reader
    (another delivery, MailSink, the code that recorded it) gets the same
    body. The rest of the old message is still read to its end, unused, so a
    refused body raises MessageRefused as it would have, and `inspect` sees
    every piece. A message without an empty line gets one."""
    tail = b'\r\n'        # as if a line had just ended: a message may start with it
    in_head = True
    for piece in pieces:
        if not in_head:
            continue
        window = tail + piece
        found = window.find(b'\r\n\r\n')
        if found >= 0:
            in_head = False
            yield piece[:found + 4 - len(tail)]
        else:
            yield piece
            tail = window[-3:]
    if in_head:
        yield b'\r\n' if tail.endswith(b'\r\n') else b'\r\n\r\n'
    if isinstance(body, bytes):
        for start in range(0, len(body), CHUNK):
            yield body[start:start + CHUNK]
        return
    stood = body.tell() if body.seekable() else None
    try:
        while True:
            piece = body.read(CHUNK)
            if not piece:
                return
            yield piece
    finally:
        if stood is not None:
            body.seek(stood)    # where it stood: the next reader gets the same body


def discard_dropped(ctx: Context, relay: str) -> bool:
    """True when a middleware dropped the message (`envelope.drop`): the
    client keeps the reply it has (250), nothing is stored or passed on,
    and one delivery line per recipient says `status=discarded` and why.
    A body not read yet is read to its end first, so a body the server
    refuses (too big, bare line ends) still gets its refusal, not a 250."""
    reason = ctx.session.envelope.dropped
    if reason is None:
        return False
    stream = ctx.data_stream
    try:
        if stream is not None and stream.spooled is None:
            while stream.read1(CHUNK):
                pass
    except SmtpError as err:        # MessageRefused
        refuse(ctx, err.reply, by=refused_by(err) or DELIVERY)
        return True
    if (stream is None or stream.acceptable) and is_success(ctx.reply):
        delivered(ctx, DISCARDED, relay,
                  f'discarded: {reason}' if reason else 'discarded (no reason given)')
    return True


def message_head(ctx: Context, *, return_path: bool) -> bytes:
    """The header fields this server puts on top of the message, top first:
    Return-Path (at final delivery, RFC 5321 4.4), the reason of a
    quarantined message (`X-Quarantine-Reason`), the fields middleware
    added with `envelope.add_header` (RFC 8601 5: above the trace fields
    this server prepends) and those a milter inserted on top among them
    (header_edits.top_block), then this server's Received."""
    session, envelope = ctx.session, ctx.session.envelope
    received = received_header(session, envelope, ctx.server.options.name)
    parts = [return_path_header(envelope).encode('utf-8', 'surrogateescape')] if return_path else []
    if envelope.quarantined is not None:
        parts.append(header_block([(QUARANTINE_FIELD, envelope.quarantined)]))
    parts.append(top_block(envelope))
    parts.append(received.encode('utf-8', 'surrogateescape'))
    return b''.join(parts)


# -- trace headers (RFC 5321 4.4) ------------------------------------------------

@functools.lru_cache(maxsize=1024)     # the same few HELO names, message after message
def _clean(text: str) -> str:
    """Client-supplied text made safe for a header: no controls, no comment
    or clause delimiters that would change how the line parses."""
    text = ''.join(ch if ch.isprintable() and ch not in '();<>' and not ch.isspace() else '?'
                   for ch in text)
    return text[:255] or 'unknown'


@functools.lru_cache(maxsize=1024)     # the same client, message after message
def address_literal(ip: str | None) -> str:
    """'[192.0.2.1]' or '[IPv6:2001:db8::1]' (RFC 5321 4.1.3)."""
    try:
        parsed = ipaddress.ip_address((ip or '').split('%', 1)[0])
    except ValueError:
        return '[unknown]'
    if parsed.version == 6:
        return f'[IPv6:{parsed.compressed}]'
    return f'[{parsed}]'


def message_id(session: Session) -> str:
    """Per-message id for logs and the Received header: session id, transaction."""
    return f'{session.id}-{session.transaction}'


def received_header(session: Session, envelope: Envelope, name: str,
                    date: str | None = None) -> str:
    """The Received line this server adds, folded, ending in CRLF.

    `from helo (client_hostname [ip]) by name with PROTOCOL id ID for <rcpt>; date`.
    The `for` clause names the recipient only when there is exactly one, as
    Postfix does: listing them all would tell each recipient about the others.
    """
    literal = address_literal(session.remote_address)
    host = session.client_hostname or ''
    tcp_info = literal if not host or host.startswith('[') else f'{_clean(host)} {literal}'
    lines = [f'Received: from {_clean(session.helo or "unknown")} ({tcp_info})',
             f'by {name} with {session.transmission_type}']
    tls = session.tls
    if tls and tls.get('version'):
        lines[-1] += f' ({tls.get("version")} cipher {tls.get("cipher") or "unknown"})'
    lines[-1] += f' id {message_id(session)}'
    if len(envelope.rcpt_to) == 1:
        lines.append(f'for <{envelope.rcpt_to[0].address}>')
    lines[-1] += f'; {date or trace_date()}'
    return '\r\n\t'.join(lines) + '\r\n'


_DATE: tuple[int, str] = (-1, '')     # (second, its date-time), made once a second


def trace_date() -> str:
    """Now as an RFC 5322 3.3 date-time in local time, for a Received field.
    Made once per second (email.utils goes through datetime, astimezone
    and strftime, ~10 µs a call); the text has a resolution of one second,
    so the cached text is exact, offset included."""
    global _DATE
    now = int(time.time())
    cached = _DATE
    if cached[0] != now:
        cached = _DATE = (now, email.utils.formatdate(now, localtime=True))
    return cached[1]


def return_path_header(envelope: Envelope) -> str:
    sender = envelope.mail_from.address if envelope.mail_from is not None else ''
    return f'Return-Path: <{sender}>\r\n'


# -- upstream replies ------------------------------------------------------------

_ENHANCED = re.compile(r'([245])\.(\d{1,3})\.(\d{1,3})(?: (.*))?\Z', re.DOTALL)


def reply_from(code: int, text: str) -> Reply:
    """A Reply carrying someone else's verdict. The enhanced code is taken
    from the text when there is one. 421 means "I am closing" and is ours to
    say, so an upstream 421 reaches the client as 451; a code outside
    200..599 becomes 451 as well."""
    if code == 421 or not (200 <= code < 300 or 400 <= code < 600):
        code = 451
    lines = text.split('\n') if text else ['']
    match = _ENHANCED.match(lines[0])
    enhanced = None
    if match and int(match[1]) == code // 100:
        enhanced = f'{match[1]}.{match[2]}.{match[3]}'
        lines = [(found[4] or '') if (found := _ENHANCED.match(line)) else line
                 for line in lines]
    return Reply(code, '\n'.join(lines) if len(lines) > 1 else lines[0], enhanced)

