"""DATA and BDAT: the message body as a stream, and its one final reply.

The handlers open `data_stream` and return; the middleware chain reads it
while it arrives; `finish_data()` drains what nobody read and sends the
verdict. A body the server refuses on its own (size, bare CR/LF, a line
too long, an abandoned BDAT transfer) gets the stream's `refused` reply
whatever middleware said (RFC 5321 4.2.5: after the end of the data).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict

from .. import replies as R
from ..errors import SmtpError
from ..events import ENGINE, LIMIT, queue_id
from ..framing import TOO_LONG, DataDecoder, TextChecks
from ..options import MAX_COMMAND_LINE
from ..replies import Reply
from ..stream import DataStream
from .commands import COMMANDS, GREETED, IN_MAIL, NO_ARGS, WITH_RCPT, command, gate
from .exceptions import HookFailed

if TYPE_CHECKING:
    from ..addresses import Address
    from ..middleware import Context
    from .engine import Engine

# ctx attribute (LMTP): the recipients the client was told 250, as DATA or
# the first BDAT began; the chain may change envelope.rcpt_to (a milter's
# ADDRCPT, DELRCPT) and the replies after the body still follow these.
TOLD = 'lmtp_told'


class _BdatState(TypedDict):
    """Where a BDAT message stands, between its chunks."""
    remaining: int      # bytes of the current chunk still to read
    last: bool          # the current chunk is the LAST one
    received: int       # bytes of the message so far
    done: bool          # the checks' held-back CR was handed on
    started: float      # time.monotonic() at the first chunk


@command('DATA', 'DATA', NO_ARGS | GREETED | IN_MAIL | WITH_RCPT)
def data(engine: Engine, ctx: Context) -> None:
    session = engine.session
    envelope = session.envelope
    # The gate (IN_MAIL) saw MAIL: mail_from is an Address here.
    if envelope.mail_from.args.get('BODY') == 'BINARYMIME':  # type: ignore[union-attr]
        raise SmtpError(R.BINARYMIME_NEEDS_BDAT)
    stream = _data_stream(engine)
    envelope.data_stream = ctx.data_stream = stream
    if engine.options.lmtp:
        vars(ctx)[TOLD] = list(envelope.rcpt_to)
    # on_data runs before 354; if it reads the stream, 354 goes out first.
    if engine.options.on_data is not None:
        engine.hook('on_data', session)
    stream.start()
    ctx.reply = R.QUEUED


@command('BDAT', 'BDAT size [LAST]', extension='CHUNKING')
def bdat(engine: Engine, ctx: Context) -> None:
    """The first chunk of a message: middleware sees one BDAT command per
    message, like DATA. Its stream reads the following BDAT chunks by
    itself, answering each non-LAST one with an intermediate 250; the
    reply set by the chain is the LAST chunk's reply."""
    size, last = bdat_arguments(ctx.command_args)
    envelope = engine.session.envelope
    try:
        # The gate's checks, here: a refused chunk must still be read.
        gate(COMMANDS['BDAT'], engine, ctx, GREETED | IN_MAIL | WITH_RCPT)
        stream = _bdat_stream(engine, size, last)
        envelope.data_stream = ctx.data_stream = stream
        if engine.options.lmtp:
            vars(ctx)[TOLD] = list(envelope.rcpt_to)
        engine.hook('on_data', engine.session)
    except (SmtpError, HookFailed):
        if ctx.data_stream is None:
            # RFC 3030 2: the chunk is read (and dropped) whatever the reply.
            engine.transport.skip(size)
        raise
    ctx.reply = R.QUEUED


def bdat_arguments(args: list[str]) -> tuple[int, bool]:
    """'BDAT <size> [LAST]' arguments -> (size, last)."""
    if not 1 <= len(args) <= 2 or not (args[0].isascii() and args[0].isdigit()) \
            or len(args[0]) > 18 or (len(args) == 2 and args[1].upper() != 'LAST'):
        raise COMMANDS['BDAT'].syntax_error
    return int(args[0]), len(args) == 2


def data_deadline(engine: Engine, started: float, received: float) -> float:
    """When the body must have arrived so far: socket_timeout plus what
    min_data_rate allows for the bytes received (a deadline, so a client
    dripping one byte at a time is cut, as Postfix's smtpd_min_data_rate)."""
    options = engine.options
    if not options.min_data_rate:
        return time.monotonic() + options.socket_timeout
    return started + options.socket_timeout + received / options.min_data_rate


def _data_stream(engine: Engine) -> DataStream:
    options = engine.options
    decoder = DataDecoder(normalize=options.bare_newline == 'normalize')
    checks = TextChecks(False, max_line_length=options.max_line_length) \
        if options.max_line_length else None
    transport = engine.transport
    progress = [0.0, 0]     # started, bytes received

    def pull() -> bytes | None:
        if decoder.done:
            return None
        data = transport.take_buffered()
        if not data:
            data = transport.recv(data_deadline(engine, *progress))
        progress[1] += len(data)
        body, rest = decoder.feed(data)
        if rest:
            transport.unread(rest)
        return checks.feed(body) if checks is not None else body

    def start() -> None:
        engine.send_now(R.START_INPUT)
        progress[0] = time.monotonic()

    return DataStream(pull, options.size, decoder=decoder, checks=checks, on_first_read=start)


def _bdat_stream(engine: Engine, size: int, last: bool) -> DataStream:
    options = engine.options
    started = time.monotonic()
    state: _BdatState = {'remaining': size, 'last': last, 'received': 0, 'done': False,
                         'started': started}
    transport = engine.transport
    stream: DataStream      # made below; pull() runs only once it is
    # RFC 3030: only BINARYMIME content may hold bare CR/LF; text bodies
    # sent with BDAT get the same checks as DATA. (The gate saw MAIL.)
    binary = engine.session.envelope.mail_from.args.get(  # type: ignore[union-attr]
        'BODY') == 'BINARYMIME'
    checks = None if binary else TextChecks(
        True, options.bare_newline == 'normalize', options.max_line_length)

    def pull() -> bytes | None:
        while not state['remaining']:
            if state['last'] or stream.aborted:
                if checks is not None and not state['done']:
                    state['done'] = True
                    return checks.finish()
                return None
            engine.write(R.MESSAGE_TOO_BIG if stream.size_exceeded else
                         Reply(250, f'{state["received"]} octets received', '2.0.0'))
            if not _next_bdat_chunk(engine, state):
                stream.aborted = True
                return None
        data = transport.take_buffered()
        if not data:
            data = transport.recv(data_deadline(engine, started, state['received']))
        wanted = state['remaining']
        if len(data) > wanted:
            transport.unread(data[wanted:])
            data = data[:wanted]
        state['remaining'] -= len(data)
        state['received'] += len(data)
        return checks.feed(data) if checks is not None else data

    stream = DataStream(pull, options.size, decoder=checks, checks=checks)
    return stream


def _next_bdat_chunk(engine: Engine, state: _BdatState) -> bool:
    """Read the command after a non-LAST chunk: the next BDAT, or else
    the message is abandoned and that command is handled normally."""
    # The chunk lines count against the body's deadline too: a client
    # sending one-byte chunks is as slow as one dripping DATA.
    transport = engine.transport
    line = transport.read_line(MAX_COMMAND_LINE,
                               data_deadline(engine, state['started'], state['received']))
    if line is TOO_LONG:
        engine.final(R.LINE_TOO_LONG)
        engine.log(20, 'BDAT sequence abandoned by the client')
        return False
    if line[:5].upper() in (b'BDAT ', b'BDAT'):
        try:
            state['remaining'], state['last'] = bdat_arguments(
                line.decode('ascii').split()[1:])
            return True
        except (SmtpError, UnicodeDecodeError):
            pass
    transport.unread(line + b'\r\n')
    engine.log(20, 'BDAT sequence abandoned by the client')
    return False


def finish_data(engine: Engine, ctx: Context, stream: DataStream) -> None:
    """After the chain of DATA/BDAT (`stream` is ctx.data_stream): drain,
    decide, reply, tell, reset (the transaction ends after its reply is
    told, so the log has its envelope and queue id)."""
    session = engine.session
    envelope = session.envelope
    recipients = envelope.rcpt_to
    if not stream.started:
        # Refused before 354 (on_data or middleware): nothing was sent.
        return engine.final(ctx.reply or R.NO_REPLY_SET, ctx)
    stream.drain()
    reply = ctx.reply or R.NO_REPLY_SET
    if stream.aborted:
        session.end_transaction()   # the chunks were answered; no final reply
        return
    if stream.refused is not None:
        # The readers were told (MessageRefused); whatever middleware set,
        # the client gets the same reply.
        reply = stream.refused.reply
        ctx.refusal = (reply, LIMIT if stream.size_exceeded else ENGINE)
    if engine.options.lmtp:
        told: list[Address] = vars(ctx).get(TOLD, recipients)
        if isinstance(reply, list) and (len(told) != len(recipients) or any(
                a is not b for a, b in zip(told, recipients, strict=True))):
            replies = as_told(told, recipients, lmtp_replies(engine, reply, len(recipients)))
        else:
            replies = lmtp_replies(engine, reply, len(told))
        for one, recipient in zip(replies, told, strict=True):
            engine.final(one, ctx, recipient)
        accepted = any(one.code < 300 for one in replies)
        if not accepted:        # counted once for the summary, not per recipient
            verb = ctx.command_name.lower()
            engine.failed[verb] = engine.failed.get(verb, 0) + 1
    else:
        if isinstance(reply, list):     # the client gets the first (Engine.final)
            reply = reply[0] if reply else R.NO_REPLY_SET
        engine.final(reply, ctx)
        accepted = reply.code < 300
    if accepted:
        engine.counters.accepted()
        engine.events.accepted(session, envelope, queue_id(session), stream.bytes_read)
    session.end_transaction()


def lmtp_replies(engine: Engine, reply: Reply | list[Reply], count: int) -> list[Reply]:
    """RFC 2033 4.2: one reply per accepted recipient, in RCPT order."""
    if not isinstance(reply, list):
        return [reply] * count
    replies = list(reply[:count])
    if len(reply) != count:
        engine.log(30, 'LMTP: %d replies set for %d recipients', len(reply), count)
    return replies + [R.NO_REPLY_SET] * (count - len(replies))


def as_told(told: list[Address], recipients: list[Address], replies: list[Reply]) -> list[Reply]:
    """RFC 2033 4.2 when the chain changed the recipients after they were
    told 250 (a milter's DELRCPT, ADDRCPT): one reply per recipient the
    client sent, in its order, while `replies` follow `recipients`, the
    envelope delivered.

    A recipient still there gets its own reply; so does one the chain took
    out and put in again (the same address in any case: a milter that
    changed its parameters). One taken out gets 250, as an SMTP client is
    told 250 for a message whose recipient a milter deleted (the first 2xx
    of the others, or QUEUED). A recipient put in has no RCPT to answer:
    when its delivery failed for now, that failure goes to every recipient
    told 2xx, so the client tries again rather than the copy being lost
    unsaid (one served may get it twice, as from a relay whose LMTP
    upstream took some recipients only); a permanent failure goes only to
    the recipients taken out (a redirect: the client learns where its
    message went), never to one whose copy was stored (the delivery's log
    line tells of it)."""
    told_ids = {id(recipient) for recipient in told}
    own = {id(recipient): reply for recipient, reply in zip(recipients, replies, strict=True)}
    added = [(recipient.address.casefold(), reply)
             for recipient, reply in zip(recipients, replies, strict=True)
             if id(recipient) not in told_ids]
    paired: list[Reply | None] = []
    for recipient in told:
        reply = own.get(id(recipient))
        if reply is None:       # taken out; put in again under the same address?
            key = recipient.address.casefold()
            index = next((i for i, (address, _) in enumerate(added) if address == key), None)
            if index is not None:
                reply = added.pop(index)[1]
        paired.append(reply)
    failed = [reply for _, reply in added if reply.code >= 400]
    temporary = next((reply for reply in failed if reply.code < 500), None)
    carried = temporary or (failed[0] if failed else None)
    success = next((reply for reply in replies if reply.code < 300), R.QUEUED)
    told_replies = []
    for reply in paired:
        if reply is None:
            told_replies.append(carried or success)
        elif reply.code < 300 and temporary is not None:
            told_replies.append(temporary)
        else:
            told_replies.append(reply)
    return told_replies
