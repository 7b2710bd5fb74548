"""Maildir delivery: tmp/ -> new/, durable before the 250.

The Maildir rules (D. J. Bernstein, "Using maildir format"; the same file
layout Dovecot, Courier and mutt read): a message is written under a unique
name in `tmp/`, flushed to disk, then renamed into `new/`; readers only look
at `new/` and `cur/`, so they never see half a message. We also fsync the
`new/` directory, so the rename itself survives a crash: only then does the
client get its 250 (RFC 5321 6.1: once a server has accepted a message it
must not lose it).

Lines are stored with LF ends, as local delivery agents write them
(binary messages, BODY=BINARYMIME, byte for byte).
The message gets a Return-Path, the fields added with `envelope.add_header`
and a Received header, in that order from the top (RFC 5321 4.4, RFC 8601 5);
the fields recorded with `envelope.remove_header` are left out of its own
header section.
"""
from __future__ import annotations

import itertools
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Annotated, Any

from ..errors import ClientDisconnected, SmtpError
from ..events import DEFERRED, DELIVERY, SENT, refused_by
from ..logs import get
from ..offload import offload
from ..params import Kind, Reader
from ..replies import Reply
from .base import (Inspect, delivered, delivered_stream, disk_error_reply, is_success,
                   message_body, message_head, message_id, note, refuse, untouched)

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..session import Envelope
    from ..stream import DataStream

SUBDIRS = ('tmp', 'new', 'cur')
RELAY = 'maildir'       # where a message went, in its delivery line
_counter = itertools.count(1)


def ensure_maildir(path: str, mode: int = 0o700) -> None:
    """Create `path` with tmp/, new/, cur/ (missing parents too)."""
    for sub in SUBDIRS:
        os.makedirs(os.path.join(path, sub), mode=mode, exist_ok=True)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        offload(os.fsync, fd)
    finally:
        os.close(fd)


def _unique_name(hostname: str) -> str:
    """time.M<usec>P<pid>Q<n>R<random>.host, as the Maildir spec suggests;
    '/' and ':' in the host name are escaped as octal (they are separators)."""
    now = time.time()
    host = hostname.replace('/', r'\057').replace(':', r'\072')
    return (f'{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}'
            f'R{secrets.token_hex(4)}.{host}')


def maildir_problem(path: str) -> str | None:
    """Why a Maildir cannot be made at `path`, or None. Templates ({local})
    are checked up to their first placeholder."""
    path = os.path.abspath(path)
    probe = path.split('{', 1)[0]
    if '{' in path:
        probe = os.path.dirname(probe) or '/'
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        return f'{probe} is not a directory'
    if not os.access(probe, os.W_OK | os.X_OK):
        return f'{probe} is not writable'
    return None


def _maildir(value: Any, reader: Reader) -> str:
    """A directory (or template) from YAML, taken from the configuration's
    directory, that can be made and written."""
    if not isinstance(value, str) or not value:
        raise ValueError
    path = reader.file_path(value)
    problem = maildir_problem(path)
    if problem:
        raise ValueError(problem)
    return path


MAILDIR = Kind('a directory name', _maildir)


class _LF:
    """CRLF -> LF across chunk boundaries (a chunk may end between CR and LF).
    `keep=True` changes nothing: a BODY=BINARYMIME message (RFC 3030) is
    stored byte for byte, its headers included."""

    def __init__(self, keep: bool = False):
        self._cr = False
        self._keep = keep

    def __call__(self, data: bytes) -> bytes:
        if self._keep:
            return data
        if self._cr:
            data = b'\r' + data
        self._cr = data.endswith(b'\r')
        if self._cr:
            data = data[:-1]
        return data.replace(b'\r\n', b'\n')

    def tail(self) -> bytes:
        return b'\r' if self._cr else b''


class MaildirDelivery:
    """Middleware storing each accepted message in a Maildir.

    `path` is one Maildir, or a template with `{local}`, `{domain}` and
    `{address}` (the recipient's, lower-cased, '/' replaced) for one Maildir
    per recipient: `/var/mail/{domain}/{local}`. With several target Maildirs
    the message is written once and hard-linked into the others.

    With `lmtp=True` servers each recipient gets its own reply; over SMTP a
    failure for any target removes the copies already made and the whole
    message gets 451/452, so the client's retry creates no duplicates.

    `inspect(ctx, chunk)` is called for each piece of the body before it is
    written and may raise SmtpError to refuse the message.

    In YAML, `deliver: {maildir: DIR}` is `path` (params.py).
    """

    def __init__(self, path: Annotated[str, MAILDIR], *, hostname: str | None = None,
                 inspect: Inspect | None = None, mode: int = 0o700):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.templated = '{' in path
        self.hostname = hostname or socket.gethostname()
        self.inspect = inspect
        self.mode = mode
        if not self.templated:
            ensure_maildir(self.path, mode)

    def __repr__(self) -> str:
        return f'MaildirDelivery({self.path!r})'

    def describe(self) -> str:
        return describe_maildir(self.path)

    # -- middleware ------------------------------------------------------
    def __call__(self, ctx: Context, next: Next) -> None:
        next()
        stream = delivered_stream(ctx)
        if stream is None or not untouched(ctx):
            return
        envelope = ctx.session.envelope
        try:
            targets = self.targets(envelope)
        except ValueError as exc:
            refuse(ctx, Reply(550, f'Error: {exc}', '5.1.3'), RELAY)
            return
        written = self._write_tmp(ctx, stream, targets[0])
        if written is None:
            return
        tmp_path, size = written
        replies = self._commit(ctx, tmp_path, size, targets)
        if replies is not None:
            ctx.send(replies if len(replies) > 1 else replies[0])

    def targets(self, envelope: Envelope) -> list[str]:
        """The Maildir of each recipient, in RCPT order."""
        if not self.templated:
            return [self.path] * len(envelope.rcpt_to)
        return [self._render(rcpt.address) for rcpt in envelope.rcpt_to]

    def _render(self, address: str) -> str:
        local, _, domain = address.rpartition('@')
        if not local:
            local, domain = address, ''
        values = {'local': local, 'domain': domain, 'address': address}
        for key, value in values.items():
            value = value.lower().replace('/', '_').replace('\0', '_')
            if value in ('', '.', '..') and key != 'domain':
                raise ValueError(f'cannot make a mailbox path from {address!r}')
            values[key] = value or '_'
        return os.path.abspath(self.path.format(**values))

    # -- writing -----------------------------------------------------------
    def _write_tmp(self, ctx: Context, stream: DataStream,
                   maildir: str) -> tuple[str, int] | None:
        """Stream headers and body into tmp/; (path, size) or None when not
        to be delivered (the reply says why, or the server will)."""
        envelope = ctx.session.envelope
        tmp_path = None
        fd: int | None = None
        try:
            ensure_maildir(maildir, self.mode)
            tmp_path = os.path.join(maildir, 'tmp', _unique_name(self.hostname))
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, 'O_CLOEXEC', 0), 0o600)
            out = os.fdopen(fd, 'wb', buffering=65536)
            fd = None
            with out:
                body = envelope.mail_from.args.get('BODY') if envelope.mail_from else None
                lf = _LF(keep=str(body).upper() == 'BINARYMIME')
                out.write(lf(message_head(ctx, return_path=True)))
                for piece in message_body(ctx, self.inspect):
                    out.write(lf(piece))
                out.write(lf.tail())
                if not stream.acceptable or not is_success(ctx.reply):
                    raise _Abandon()
                out.flush()
                offload(os.fsync, out.fileno())
                size = out.tell()
            return tmp_path, size
        except _Abandon:
            _remove(tmp_path)
            return None
        except SmtpError as err:        # inspect() refused it, or MessageRefused
            _remove(tmp_path)
            refuse(ctx, err.reply, by=refused_by(err) or DELIVERY)
            return None
        except ClientDisconnected:
            _remove(tmp_path)
            raise
        except OSError as exc:
            _remove(tmp_path)
            refuse(ctx, disk_error_reply(exc), RELAY, f'cannot store in {maildir}: {exc}')
            return None
        except BaseException:           # killed by stop(), a bug: leave no litter
            _remove(tmp_path)
            raise
        finally:
            if fd is not None:
                os.close(fd)

    def _commit(self, ctx: Context, tmp_path: str, size: int,
                targets: list[str]) -> list[Reply]:
        """Move the message into new/ of each distinct target and fsync each
        new/; one Reply per recipient (or one for all over SMTP)."""
        session = ctx.session
        name = os.path.basename(tmp_path) + f',S={size}'
        distinct = list(dict.fromkeys(targets))    # distinct[0] holds tmp_path
        failures: dict[str, Reply] = {}
        why: dict[str, str] = {}
        made: list[str] = []

        def place(maildir: str, move: bool) -> None:
            final = os.path.join(maildir, 'new', name)
            try:
                if move:
                    os.rename(tmp_path, final)
                else:
                    ensure_maildir(maildir, self.mode)
                    _link_or_copy(tmp_path, final)
                made.append(final)
                _fsync_dir(os.path.join(maildir, 'new'))
            except OSError as exc:
                note(ctx, 40, 'maildir %s: cannot deliver: %s', maildir, exc)
                failures[maildir] = disk_error_reply(exc)
                why[maildir] = f'cannot deliver to {maildir}: {exc}'
                if made and made[-1] == final:
                    _remove(made.pop())

        try:
            # The others first: the tmp file must stay until they are linked.
            for maildir in distinct[1:]:
                place(maildir, move=False)
            place(distinct[0], move=True)
        finally:
            _remove(tmp_path)       # gone already when the rename succeeded
        ok = Reply(250, f'OK: queued as {message_id(session)}', '2.0.0')
        if failures and not ctx.server.options.lmtp:
            # One reply for all recipients: undo, so the retry duplicates nothing.
            for path in made:
                _remove(path)
            refusal = next(iter(failures.values()))
            ctx.refusal = (refusal, DELIVERY)
            delivered(ctx, DEFERRED, RELAY, next(iter(why.values())))
            return [refusal]
        self._tell(ctx, name, targets, why)
        if not ctx.server.options.lmtp:
            return [ok]
        replies = [failures.get(target, ok) for target in targets]
        if failures:
            ctx.refusal = (replies, DELIVERY)
        return replies

    @staticmethod
    def _tell(ctx: Context, name: str, targets: list[str], why: dict[str, str]) -> None:
        """The delivery line of each recipient: the file, or why not (LMTP)."""
        recipients = ctx.session.envelope.rcpt_to
        for recipient, target in zip(recipients, targets, strict=True):
            if target in why:
                delivered(ctx, DEFERRED, RELAY, why[target], [recipient])
            else:
                delivered(ctx, SENT, RELAY, os.path.join(target, 'new', name), [recipient])


def describe_maildir(path: str) -> str:
    """'maildir /var/mail/{domain}/{local}': the start-up line's words."""
    return f'maildir {path}'


class _Abandon(Exception):
    """Not delivered, and the reply is already right (or the server's to set)."""


def _link_or_copy(source: str, final: str) -> None:
    """Hard link; across file systems, copy through the target's tmp/."""
    try:
        os.link(source, final)
        return
    except OSError as exc:
        if exc.errno not in (18, 1):    # EXDEV, EPERM (no hard links there)
            raise
    maildir = os.path.dirname(os.path.dirname(final))
    tmp = os.path.join(maildir, 'tmp', os.path.basename(final))
    try:
        with open(source, 'rb') as src, open(tmp, 'xb') as dst:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                dst.write(block)
            dst.flush()
            offload(os.fsync, dst.fileno())
        os.rename(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        get('smtp_stack.delivery').warning('cannot remove %s: %s', path, exc)
