"""Delivery to a Python function: `deliver(session, envelope, body)`.

The function sees only messages that arrived whole and acceptable: the body
is first spooled (a `spool.Spool`: in memory up to `spool_memory` bytes,
then in an anonymous temporary file) and the function is called once the
final dot was read. `body` starts with the fields added with
`envelope.add_header` and this server's Received header (RFC 5321 4.4: a
server that takes a message on records its hop), then the message as the
client sent it, less the fields recorded with `envelope.remove_header`. It
runs in a worker thread of the hub's thread pool (`offload`), so it may
block (HTTP calls, a database, a queue) without stalling other sessions;
it must therefore be thread-safe.

A message a middleware dropped (`envelope.drop`) is not passed (base.py);
after a `envelope.replace_body` the body holds the header section and
then the new body; a quarantined message (`envelope.quarantine`) is passed
with `envelope.quarantined` set and an `X-Quarantine-Reason` field on
top: the function decides where it goes.

It returns None (the client gets 250), or a reply: `(code, message)`, a
`Reply`, or for an LMTP server a list of them, one per recipient. Raising
`SmtpError` refuses the message with that reply; any other exception is
logged and the client gets 451 (it will retry).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeAlias, cast

from ..errors import ClientDisconnected, SmtpError
from ..events import DELIVERY, SENT, refused_by, reply_text, status_of
from ..offload import offload
from ..replies import Reply
from ..spool import Spool
from .base import (LOCAL_ERROR, Inspect, delivered, delivered_stream, discard_dropped,
                   disk_error_reply, is_success, message_body, message_head, note, refuse,
                   untouched)

if TYPE_CHECKING:
    from ..middleware import Context, Next, ReplyLike
    from ..session import Envelope, Session

# What the function returns: None (250), a reply, or for LMTP one per recipient.
DeliverResult: TypeAlias = 'ReplyLike | Sequence[ReplyLike] | None'
# `deliver(session, envelope, body)`; `body` is a binary file at its start.
DeliverFunction: TypeAlias = 'Callable[[Session, Envelope, IO[bytes]], DeliverResult]'


def load_callable(spec: str) -> Callable[..., Any]:
    """'package.module:function' (or 'module:Class.method') -> the object."""
    if not isinstance(spec, str) or spec.count(':') != 1:
        raise ValueError(f'{spec!r} is not of the form "package.module:function"')
    module_name, _, attr = spec.partition(':')
    if not module_name or not attr:
        raise ValueError(f'{spec!r} is not of the form "package.module:function"')
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:    # ImportError, or the module's own failure
        raise ValueError(f'cannot import {module_name!r}: {exc}') from None
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f'{module_name!r} has no attribute {attr!r}') from None
    if not callable(obj):
        raise ValueError(f'{spec!r} is not callable')
    return obj


class CallableDelivery:
    """Middleware handing each accepted message to `fn(session, envelope, body)`."""

    # what a delivery line says of a message the function took (returned None)
    accepted_reason = 'accepted by the function'

    def __init__(self, fn: DeliverFunction | str, *, threaded: bool = True,
                 spool_memory: int = 1 << 20, inspect: Inspect | None = None):
        if isinstance(fn, str):
            fn = load_callable(fn)
        if not callable(fn):
            raise ValueError('deliver function must be callable')
        self.fn = fn
        self.threaded = threaded
        self.spool_memory = spool_memory
        self.inspect = inspect
        self._relay = self.describe()      # where its lines say the mail went

    def __repr__(self) -> str:
        return f'CallableDelivery({self.fn!r})'

    def describe(self) -> str:
        fn = self.fn
        name = getattr(fn, '__qualname__', None) or type(fn).__qualname__     # an instance
        return f'callable {getattr(fn, "__module__", "?")}:{name}'

    def __call__(self, ctx: Context, next: Next) -> None:
        next()
        stream = delivered_stream(ctx)
        if stream is None or not untouched(ctx) or discard_dropped(ctx, self._relay):
            return
        session = ctx.session
        envelope = session.envelope
        spool = Spool(memory_limit=self.spool_memory)
        with spool:
            try:
                spool.write(message_head(ctx, return_path=False))
                for piece in message_body(ctx, self.inspect, top_fields=False):
                    spool.write(piece)
                spool.finish()
            except SmtpError as err:        # inspect() refused it, or MessageRefused
                refuse(ctx, err.reply, by=refused_by(err) or DELIVERY)
                return
            except ClientDisconnected:
                raise
            except OSError as exc:
                refuse(ctx, disk_error_reply(exc), self._relay,
                       f'cannot spool the message: {exc}')
                return
            if not stream.acceptable or not is_success(ctx.reply):
                return
            try:
                with spool.open() as body:
                    result = self._call(session, envelope, cast('IO[bytes]', body))
            except SmtpError as err:
                refuse(ctx, err.reply, self._relay)
                return
            except Exception as exc:
                note(ctx, 40, 'delivery function %s failed: %r', self._relay, exc,
                     exc_info=True)
                refuse(ctx, LOCAL_ERROR, self._relay, f'the function failed: {exc!r}')
                return
        if result is None:
            held = envelope.quarantined
            delivered(ctx, SENT, self._relay, self.accepted_reason if held is None
                      else f'{self.accepted_reason}, quarantined: {held}')
            return
        ctx.send(result)
        self._tell(ctx)

    def _tell(self, ctx: Context) -> None:
        """The delivery line of each recipient, from the reply the function
        returned (LMTP: its own reply each)."""
        reply = ctx.reply
        recipients = ctx.session.envelope.rcpt_to
        if isinstance(reply, Reply):
            if reply.code >= 400:
                ctx.refusal = (reply, DELIVERY)
            delivered(ctx, status_of(reply), self._relay, reply_text(reply))
            return
        for one, recipient in zip(reply or (), recipients, strict=False):
            delivered(ctx, status_of(one), self._relay, reply_text(one), [recipient])
        if reply and any(one.code >= 400 for one in reply):
            ctx.refusal = (reply, DELIVERY)

    def _call(self, session: Session, envelope: Envelope, body: IO[bytes]) -> DeliverResult:
        """The function, off the hub unless `threaded=False`."""
        fn: DeliverFunction = self.fn
        return offload(fn, session, envelope, body) if self.threaded else \
            fn(session, envelope, body)
