"""The message of a MilterConnection: from SMFIC_DATA (or the first content
packet) to the verdict at the end of the body.

The chain runs DATA while the content packets arrive: `open_stream` gives
it data_stream over a message.MessageReader. When the chain returns, what
nobody read is skipped (SMFIR_SKIP, where the MTA waits on a body chunk
and no size limit needs the rest counted) or drained; then the verdict:
the modification requests and CONTINUE, DISCARD, or the refusal, sent at
the first packet the MTA waits on.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ..events import ENGINE, LIMIT
from ..replies import Reply
from ..stream import DataStream
from . import message as M
from . import protocol as P
from .verdicts import CONTINUE_PACKET, DISCARD_PACKET, final, reply_packet

# The modification requests are sent in pieces of about this many bytes
# (a replaced body's chunks among them), not joined whole in memory.
SEND_SIZE = 256 << 10
# A message with more header fields to remove than message.MAX_REMOVALS:
# permanent, as the same message would match again (RFC 3463 5.6.0).
TOO_MANY_REMOVALS = Reply(554, 'Message refused: too many header fields to remove', '5.6.0')

if TYPE_CHECKING:
    from ..session import Session
    from .connection import MilterConnection
    from .protocol import Packet


def open_stream(conn: MilterConnection) -> DataStream:
    """data_stream over the content packets (handlers.data)."""
    reader = conn.message_reader
    assert reader is not None, 'DATA outside a message'
    # The stream holds pull; pull names the stream weakly, so that the two
    # are no reference cycle keeping the message's reader, and through it
    # the connection, alive until the collector runs.
    stream_ref: weakref.ref[DataStream]

    def pull() -> bytes | None:
        piece = reader.pull()
        if reader.ended:
            conn.start_progress()
        if piece is None and reader.aborted:
            stream = stream_ref()
            if stream is not None:
                stream.aborted = True   # never a clean end: MessageRefused (abandoned)
        return piece

    stream = DataStream(pull, conn.options.size)
    stream_ref = weakref.ref(stream)
    return stream


def run_message(conn: MilterConnection, first: Packet | None) -> None:
    """The message that `first` (None: SMFIC_DATA) began, to its verdict."""
    session = conn.open_session()
    reader = conn.message_reader = M.MessageReader(conn, first, conn.leading_space,
                                                   conn.server.header_budget)
    try:
        ctx = conn.run_command('DATA')
        reply = final(ctx)
        stream = ctx.data_stream
        if reply.code < 400 and not ctx.close_requested:
            if stream is None or not conn.options.size:   # nothing counts the rest
                reader.skip_rest(bool(conn.flags & P.SKIP_OK))
            else:
                stream.drain()
                if stream.refused is not None:
                    reply = stream.refused.reply
                    ctx.refusal = (reply, LIMIT if stream.size_exceeded else ENGINE)
        if reader.aborted:
            _abandoned(conn, reader)
            return
        if reply.code >= 400 or ctx.close_requested:
            if not reader.answer_when_asked(reply_packet(reply, ctx.close_requested)):
                _abandoned(conn, reader)
                return
            conn.refused(ctx, reply)
        else:
            conn.stop_progress()
            refusal = _end_of_message(conn, session, reader)
            if refusal is None:
                _accepted(conn, session, stream)
            else:
                ctx.reply = refusal
                ctx.refusal = (refusal, LIMIT)
                conn.refused(ctx, refusal)
        if ctx.close_requested:
            conn.closing = True
    except BaseException:
        conn.stop_progress()
        raise       # message_reader stays set: run() tells that it ended mid-message
    finally:
        reader.close()
    conn.stop_progress()
    conn.message_reader = None
    conn.end_transaction()


def _end_of_message(conn: MilterConnection, session: Session,
                    reader: M.MessageReader) -> Reply | None:
    """The modification requests middleware made on the envelope, then
    CONTINUE (DISCARD for a dropped message), sent as they are made, up
    to SEND_SIZE bytes at a time; or the refusal of a message with more
    fields to remove than message.MAX_REMOVALS, which is returned."""
    envelope = session.envelope
    if envelope.dropped is not None:
        conn.answer(DISCARD_PACKET)
        return None
    if not (envelope.added_headers or envelope.removed_headers or envelope.replaced_body
            is not None or envelope.quarantined is not None or conn.sender is not None
            or conn.recipients or envelope.rcpt_to):
        conn.answer(CONTINUE_PACKET)
        return None
    warn: list[str] = []
    packets = M.changes(envelope, reader.fields(), conn.sender, conn.recipients,
                        conn.actions, conn.leading_space, warn)
    try:
        first = next(packets, b'')          # the removals are counted before their first
    except M.TooManyRemovals as exc:
        conn.log(30, '%s: refused: %s', conn.queue_id(session), exc)
        conn.answer(reply_packet(TOO_MANY_REMOVALS))
        return TOO_MANY_REMOVALS
    batch, size = [first], len(first)
    for packet in packets:
        if size >= SEND_SIZE:
            conn.answer(b''.join(batch))
            batch, size = [], 0
        batch.append(packet)
        size += len(packet)
    batch.append(CONTINUE_PACKET)
    conn.answer(b''.join(batch))
    for what in warn:
        conn.log(30, 'the MTA does not allow a milter to %s: not done', what)
    return None


def _abandoned(conn: MilterConnection, reader: M.MessageReader) -> None:
    """The MTA abandoned the message (ABORT, QUIT, another transaction):
    no reply; the command that ended it is handled next."""
    conn.stop_progress()
    conn.message_reader = None
    conn.end_transaction()
    if reader.quit:
        conn.closing = True
        conn.tell('QUIT')
    elif reader.pushback is not None:
        conn.push_back(reader.pushback)
    else:
        conn.tell('RSET')


def _accepted(conn: MilterConnection, session: Session, stream: DataStream | None) -> None:
    size = stream.bytes_read if stream is not None else 0
    conn.server.events.accepted(session, session.envelope, conn.queue_id(session), size)
    if session.envelope.dropped is not None:
        conn.log(20, '%s: dropped (SMFIR_DISCARD): %s', conn.queue_id(session),
                 session.envelope.dropped or 'no reason given')

