"""Maildir delivery: tmp/ -> new/, durable before the 250.

The Maildir rules (D. J. Bernstein, "Using maildir format"; the same file
layout Dovecot, Courier and mutt read): a message is written under a unique
name in `tmp/`, flushed to disk, then renamed into `new/`; readers only look
at `new/` and `cur/`, so they never see half a message. We also fsync the
`new/` directory, so the rename itself survives a crash: only then does the
client get its 250 (RFC 5321 6.1: once a server has accepted a message it
must not lose it).

The cost of that, per message (docs/performance.md, "Durable delivery"):
the body is gathered on the hub (spilled to the file in batches when it is
large), and one hand-off to a worker thread (offload.Lanes) creates the file, writes it,
fsyncs it and renames it into new/; the fsync of new/ is shared by the
messages renamed into it meanwhile (offload.Coalesced: group commit), and
each 250 waits for an fsync that started after its own rename. Maildirs are
made when the delivery is built, or for a template when a call finds one
missing (ENOENT), not per message.

Lines are stored with LF ends, as local delivery agents write them
(binary messages, BODY=BINARYMIME, byte for byte).
The message gets a Return-Path, the fields added with `envelope.add_header`
and a Received header, in that order from the top (RFC 5321 4.4, RFC 8601 5);
the fields recorded with `envelope.remove_header` are left out of its own
header section.

A message a middleware dropped (`envelope.drop`) is not stored (base.py);
a replaced body (`envelope.replace_body`) is stored after the header
section instead of the one sent; a quarantined one (`envelope.quarantine`)
goes with an `X-Quarantine-Reason` field into the quarantine Maildir, never
into the recipients' new/: by default the Maildir++ folder `.Quarantine`
of each target Maildir (mail readers show it as a folder), else the
`quarantine` Maildir given (a template like `path`).
"""
from __future__ import annotations

import itertools
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from gevent._hub_local import get_hub_if_exists  # also gevent.hub._get_hub; no public name

from ..errors import ClientDisconnected, SmtpError
from ..events import DEFERRED, DELIVERY, SENT, refused_by
from ..logs import get
from ..offload import Coalesced, Lanes
from ..params import Kind, Reader
from ..replies import Reply
from .base import (QUARANTINED, Inspect, delivered, delivered_stream, discard_dropped,
                   disk_error_reply, is_success, message_body, message_head, message_id,
                   note, refuse, untouched)

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..session import Envelope
    from ..stream import DataStream

Result = TypeVar('Result')

SUBDIRS = ('tmp', 'new', 'cur')
QUARANTINE_FOLDER = '.Quarantine'     # a Maildir++ folder of the target Maildir
RELAY = 'maildir'       # where a message went, in its delivery line
SPILL = 256 * 1024      # body bytes gathered in memory before they go to the file
# The threads that make, write, fsync and rename the files, per hub and process:
# calls into one directory queue on its lock in the kernel, so more threads
# than this only wait there (docs/performance.md, "Durable delivery").
FILE_THREADS = Lanes(4)
_counter = itertools.count(1)


class _Process:
    """This process's id and a random source for file names, made again
    after a fork: no getpid() or getrandom() system call per message."""

    pid = os.getpid()
    random = random.Random(os.urandom(16))

    @classmethod
    def after_fork(cls) -> None:
        cls.pid = os.getpid()
        cls.random = random.Random(os.urandom(16))
        _DIR_SYNCS.clear()


# new/ directory -> its shared fsync, per hub (a Coalesced belongs to one hub).
_DIR_SYNCS: weakref.WeakKeyDictionary[Any, dict[str, Coalesced]] = weakref.WeakKeyDictionary()
os.register_at_fork(after_in_child=_Process.after_fork)


def ensure_maildir(path: str, mode: int = 0o700) -> None:
    """Create `path` with tmp/, new/, cur/ (missing parents too)."""
    for sub in SUBDIRS:
        os.makedirs(os.path.join(path, sub), mode=mode, exist_ok=True)


def _fsync_dir(path: str) -> None:
    """Open, fsync and close a directory: in a worker thread (Coalesced)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_new(new: str) -> None:
    """Return once an fsync of the directory `new`, started after this
    call, has succeeded: the rename the caller just made is on disk. The
    messages renamed into `new` while one fsync runs share the next one."""
    hub = get_hub_if_exists()
    if hub is None:
        _fsync_dir(new)
        return
    syncs = _DIR_SYNCS.get(hub)
    if syncs is None:
        syncs = _DIR_SYNCS[hub] = {}
    sync = syncs.get(new)
    if sync is None:
        sync = syncs[new] = Coalesced(_fsync_dir, new, via=FILE_THREADS.call)
    try:
        sync.call()
    finally:
        if not sync.waiting and syncs.get(new) is sync:
            del syncs[new]      # idle: a templated server may see many Maildirs


def _unique_name(hostname: str) -> str:
    """time.M<usec>P<pid>Q<n>R<random>.host, as the Maildir spec suggests;
    '/' and ':' in the host name are escaped as octal (they are separators)."""
    now = time.time()
    host = hostname.replace('/', r'\057').replace(':', r'\072')
    return (f'{int(now)}.M{int(now % 1 * 1e6)}P{_Process.pid}Q{next(_counter)}'
            f'R{_Process.random.getrandbits(32):08x}.{host}')


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

    A quarantined message goes to `quarantine` (a Maildir, or a template
    like `path`), by default to the Maildir++ folder `.Quarantine` of each
    target Maildir; it is made when first needed.

    In YAML, `deliver: {maildir: DIR}` is `path` (params.py).
    """

    def __init__(self, path: Annotated[str, MAILDIR], *, hostname: str | None = None,
                 inspect: Inspect | None = None, mode: int = 0o700,
                 quarantine: str | None = None):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.templated = '{' in path
        self.quarantine = None if quarantine is None else \
            os.path.abspath(os.path.expanduser(quarantine))
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
        if stream is None or not untouched(ctx) or discard_dropped(ctx, RELAY):
            return
        envelope = ctx.session.envelope
        try:
            targets = self.targets(envelope)
            if envelope.quarantined is not None:
                targets = self.quarantine_targets(envelope, targets)
        except ValueError as exc:
            refuse(ctx, Reply(550, f'Error: {exc}', '5.1.3'), RELAY)
            return
        draft = self._receive(ctx, stream, targets[0])
        if draft is None:
            return
        replies = self._commit(ctx, draft, targets)
        if replies is not None:
            ctx.send(replies if len(replies) > 1 else replies[0])

    def targets(self, envelope: Envelope) -> list[str]:
        """The Maildir of each recipient, in RCPT order (absolute paths: the
        file paths below are made from them with '/')."""
        if not self.templated:
            return [self.path] * len(envelope.rcpt_to)
        return [self._render(rcpt.address) for rcpt in envelope.rcpt_to]

    def quarantine_targets(self, envelope: Envelope, targets: list[str]) -> list[str]:
        """Where a quarantined message goes, per recipient: `quarantine`
        (rendered per recipient when a template), else `.Quarantine` in
        each target Maildir."""
        if self.quarantine is None:
            return [f'{target}/{QUARANTINE_FOLDER}' for target in targets]
        if '{' not in self.quarantine:
            return [self.quarantine] * len(targets)
        return [self._render(rcpt.address, self.quarantine) for rcpt in envelope.rcpt_to]

    def _render(self, address: str, template: str | None = None) -> str:
        local, _, domain = address.rpartition('@')
        if not local:
            local, domain = address, ''
        values = {'local': local, 'domain': domain, 'address': address}
        for key, value in values.items():
            value = value.lower().replace('/', '_').replace('\0', '_')
            if value in ('', '.', '..') and key != 'domain':
                raise ValueError(f'cannot make a mailbox path from {address!r}')
            values[key] = value or '_'
        return os.path.abspath((template or self.path).format(**values))

    # -- writing -----------------------------------------------------------
    def _receive(self, ctx: Context, stream: DataStream, maildir: str) -> _Draft | None:
        """Read headers and body into a draft of a file in `maildir`/tmp/;
        the draft, or None when not to be delivered (the reply says why, or
        the server will)."""
        envelope = ctx.session.envelope
        draft = _Draft(f'{maildir}/tmp/{_unique_name(self.hostname)}', self.mode)
        try:
            body = envelope.mail_from.args.get('BODY') if envelope.mail_from else None
            draft.lf = _LF(keep=str(body).upper() == 'BINARYMIME')
            draft.add(message_head(ctx, return_path=True))
            for piece in message_body(ctx, self.inspect, top_fields=False):
                draft.add(piece)
            if not stream.acceptable or not is_success(ctx.reply):
                raise _Abandon()
            return draft
        except _Abandon:
            draft.discard()
            return None
        except SmtpError as err:        # inspect() refused it, or MessageRefused
            draft.discard()
            refuse(ctx, err.reply, by=refused_by(err) or DELIVERY)
            return None
        except ClientDisconnected:      # an OSError, but not the disk's
            draft.discard()
            raise
        except OSError as exc:          # a spill to the file failed
            draft.discard()
            refuse(ctx, disk_error_reply(exc), RELAY, f'cannot store in {maildir}: {exc}')
            return None
        except BaseException:           # a client gone, stop(), a bug: leave no litter
            draft.discard()
            raise

    def _commit(self, ctx: Context, draft: _Draft, targets: list[str]) -> list[Reply] | None:
        """Put the message into new/ of each distinct target (one hand-off:
        write, fsync, link, rename) and wait for the fsync of each new/; one
        Reply per recipient (or one for all over SMTP), or None when the file
        could not be written (the refusal is sent)."""
        session = ctx.session
        distinct = list(dict.fromkeys(targets))    # distinct[0] holds the draft
        try:
            name, outcomes = draft.hand_off(_place, draft.take(final=True), distinct)
        except OSError as exc:
            refuse(ctx, disk_error_reply(exc), RELAY, f'cannot store in {distinct[0]}: {exc}')
            return None
        failures: dict[str, Reply] = {}
        why: dict[str, str] = {}
        made: list[str] = []
        for maildir, problem in zip(distinct, outcomes, strict=True):
            new = f'{maildir}/new'
            if problem is None:
                made.append(f'{new}/{name}')
                try:
                    _sync_new(new)
                except OSError as exc:
                    problem = exc
                    _remove(made.pop())
            if problem is not None:
                note(ctx, 40, 'maildir %s: cannot deliver: %s', maildir, problem)
                failures[maildir] = disk_error_reply(problem)
                why[maildir] = f'cannot deliver to {maildir}: {problem}'
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
        envelope = ctx.session.envelope
        status = SENT if envelope.quarantined is None else QUARANTINED
        for recipient, target in zip(envelope.rcpt_to, targets, strict=True):
            if target in why:
                delivered(ctx, DEFERRED, RELAY, why[target], [recipient])
            else:
                delivered(ctx, status, RELAY, f'{target}/new/{name}', [recipient])


def describe_maildir(path: str) -> str:
    """'maildir /var/mail/{domain}/{local}': the start-up line's words."""
    return f'maildir {path}'


class _Abandon(Exception):
    """Not delivered, and the reply is already right (or the server's to set)."""


class _Draft:
    """A message on its way into tmp/. Its pieces are gathered in memory
    (LF line ends made once per batch, not per piece); past SPILL bytes a
    worker thread creates the file and writes the batch, so a large body
    neither sits in memory nor is written by the hub. `_place` writes the
    rest and commits it.

    The file is the worker thread's while a hand-off is in flight (`busy`):
    a greenlet killed meanwhile (stop()) only marks the draft abandoned, and
    the thread removes the file when it is done, so no descriptor is closed
    under a thread still writing to it."""

    __slots__ = ('path', 'mode', 'lf', 'fd', 'pieces', 'gathered', 'written',
                 'busy', 'abandoned', 'lock')

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode        # of the Maildir's directories, should tmp/ be missing
        self.lf = _LF()
        self.fd: int | None = None
        self.pieces: list[bytes] = []
        self.gathered = 0
        self.written = 0        # bytes in the file so far
        self.busy = False
        self.abandoned = False
        self.lock = threading.Lock()    # held for a few assignments only

    def add(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.gathered += len(piece)
        if self.gathered >= SPILL:
            self.hand_off(_spill, self.take())

    def take(self, final: bool = False) -> bytes:
        """The pieces gathered so far as one buffer with LF line ends (a CR
        at the end of a batch waits for the next: it may start a CRLF)."""
        data = self.lf(b''.join(self.pieces))
        self.pieces, self.gathered = [], 0
        return data + self.lf.tail() if final else data

    def hand_off(self, step: Callable[..., Result], *args: Any) -> Result:
        """`step(self, *args)` in a worker thread."""
        self.busy = True
        return FILE_THREADS.call(_turn, step, self, *args)

    def discard(self) -> None:
        """Forget the message: close and remove the file if it was made
        (or leave that to the worker thread that holds it)."""
        with self.lock:
            self.abandoned = True
            self.pieces = []
            if self.busy:
                return
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
            _remove(self.path)


def _turn(step: Callable[..., Result], draft: _Draft, *args: Any) -> Result:
    """In a worker thread: `step(draft, *args)`, then the draft goes back to
    its greenlet; if the step failed, or the greenlet gave up on the draft
    meanwhile, the file is removed here."""
    try:
        return step(draft, *args)
    except BaseException:
        draft.abandoned = True
        raise
    finally:
        with draft.lock:
            draft.busy = False
            abandoned = draft.abandoned
        if abandoned:
            draft.discard()


def _create(path: str, mode: int) -> int:
    """A new file in tmp/ (O_EXCL); when tmp/ is missing (ENOENT: a
    template's Maildir seen for the first time, or one removed since), the
    Maildir is made and the open tried again."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        ensure_maildir(os.path.dirname(os.path.dirname(path)), mode)
        return os.open(path, flags, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _spill(draft: _Draft, data: bytes) -> None:
    """In a worker thread: a batch of a large body into the file."""
    if draft.fd is None:
        draft.fd = _create(draft.path, draft.mode)
    _write_all(draft.fd, data)
    draft.written += len(data)


def _place(draft: _Draft, data: bytes, maildirs: list[str]) -> tuple[str, list[OSError | None]]:
    """In a worker thread, the one hand-off of a message: the rest of the
    file written, fsync'd and closed, then hard-linked into new/ of
    maildirs[1:] and renamed into new/ of maildirs[0] (the file must stay in
    tmp/ until the links exist). Returns the name in new/ and, per Maildir,
    None or why it could not be placed there. A failed write or fsync
    raises (_turn removes the file): nothing was placed."""
    if draft.fd is None:
        draft.fd = _create(draft.path, draft.mode)
    _write_all(draft.fd, data)
    draft.written += len(data)
    os.fsync(draft.fd)      # a failure raises: _turn removes the file
    fd, draft.fd = draft.fd, None
    os.close(fd)
    name = os.path.basename(draft.path) + f',S={draft.written}'
    outcomes: list[OSError | None] = []
    for maildir in maildirs[1:]:
        outcomes.append(_try(_link_or_copy, draft.path, f'{maildir}/new/{name}',
                             maildir, draft.mode))
    first = _try(os.rename, draft.path, f'{maildirs[0]}/new/{name}',
                 maildirs[0], draft.mode)
    if first is not None:
        _remove(draft.path)     # only when the rename failed: else it is gone already
    return name, [first, *outcomes]


def _try(call: Any, source: str, final: str, maildir: str, mode: int) -> OSError | None:
    """`call(source, final)`; on ENOENT the Maildir is made and it is tried
    once more. None, or the OSError that stopped it."""
    try:
        try:
            call(source, final)
        except FileNotFoundError:
            ensure_maildir(maildir, mode)
            call(source, final)
    except OSError as exc:
        return exc
    return None


def _link_or_copy(source: str, final: str) -> None:
    """Hard link; across file systems, copy through the target's tmp/
    (in a worker thread)."""
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
            os.fsync(dst.fileno())
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
