"""`rspamd(url='http://127.0.0.1:11333', timeout=10, fail_open=True, ...)`:
ask rspamd about each message over its HTTP protocol, and do what it says.

After the body has arrived (DATA, or the BDAT of a message: `next()`
first, as `authenticate` does), the message goes to rspamd's normal worker
as `POST /checkv2`, streamed from `envelope.spool()` with a Content-Length,
with the envelope in the request's header fields, as rspamd's protocol
describes them (https://rspamd.com/doc/developers/protocol.html): `IP`,
`Helo`, `Hostname` (when the reverse lookup found one), `From` (`<>` for
the null sender), one `Rcpt` per recipient, `User` (after AUTH),
`Queue-Id`, `MTA-Name` (the server's name: rspamd's Authentication-Results
names it), `TLS-Cipher` and `TLS-Version` (after STARTTLS or on SMTPS),
and `Settings-ID` (when given). `Pass: all` is not sent: it asks rspamd
to run every rule even after a prefilter decided, which costs time and
changes no verdict.

The reply's `action` becomes what the client gets, as rspamd's own proxy
answers Postfix in milter mode (rspamd's src/libserver/milter.c and
milter.h: 554 and 5.7.1 for a reject, 451 and 4.7.1 for a soft reject,
"Spam message rejected" and "Try again later" when rspamd gives no text):

    action            reply                               message
    reject            554 5.7.1 rspamd's smtp_message     not delivered
    soft reject       451 4.7.1 rspamd's smtp_message     not delivered
    rewrite subject   250                                 Subject replaced by rspamd's `subject`
    add header        250                                 spam_header: Yes
    greylist          250                                 as it came
    no action         250                                 as it came
    discard, quarantine  250                              spam_header: Yes (see docs/policies.md)

'greylist' is accepted, as rspamd's milter does: rspamd's greylist module
turns a message it greylists into 'soft reject' (with its own text) and
one that passed into 'no action', so 'greylist' reaches us only when that
module is not running (it needs Redis), and a 4xx then would be given
again at every retry until the sender gives up.

Whatever the action, the reply's `milter` block is applied to what the
deliveries store: `remove_headers` (by name: 0 every field of that name,
n the n-th, -n the n-th from the end) with `envelope.remove_header`, and
then `add_headers` with `envelope.add_header` (on top of the message, as
the server's own fields are: rspamd's `order` is not kept), and the
reply's `dkim-signature` (rspamd's dkim_signing module, for submission)
on top of them. Those are the
headers rspamd's milter_headers module is configured to give
(X-Spamd-Result, X-Spam-Status, Authentication-Results ...): this policy
adds no score header of its own, so a site's rspamd configuration decides
alone, as it does behind Postfix. The message's own `spam_header` fields
always go: a sender cannot forge the verdict.

rspamd down, slow or answering nonsense: each request is bounded by
`timeout` (connecting, sending and reading together); the failure goes
through the circuit breaker of rspamd's address (state/breaker.py: after a
slow failure the next requests fail at once for a few seconds, so an
outage costs one timeout per period), and is logged once per period
(common.warnings). With `fail_open=True` (the default) the message is then
accepted unchecked; with `fail_open=False` it gets `451 4.7.1 Service
unavailable - try again later`, what Postfix answers when a milter fails
with `milter_default_action = tempfail`, and the client retries.

The HTTP/1.1 client (h11 over gevent sockets, connections kept when the
server allows it) is rspamd_client.py's, shared with the inbox's spam check.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from ..errors import SmtpError
from ..headers import check_name
from ..params import BOOL, COUNT, SECONDS, STRING
from ..replies import Reply
from ..rspamd_client import HttpPool, RspamdError, number, reply_json, rspamd_address
from ..state.breaker import Breaker, breaker
from .common import client_ip, warnings

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..session import Envelope, Session

__all__ = ['Rspamd', 'RspamdError', 'Verdict', 'HttpPool', 'field_value']

# rspamd's milter.h: what its proxy answers Postfix for each action.
REJECT = Reply(554, 'Spam message rejected', '5.7.1')
TEMPFAIL = Reply(451, 'Try again later', '4.7.1')
# Postfix's reply when a milter fails with milter_default_action = tempfail.
UNAVAILABLE = Reply(451, 'Service unavailable - try again later', '4.7.1')

# The accepted actions that leave no spam_header (rspamd's milter marks only 'add header';
# 'discard' and 'quarantine', which no built-in delivery does, are marked instead).
UNMARKED = frozenset({'no action', 'greylist', 'rewrite subject'})

HEAD_BYTES = 256 << 10      # where an indexed remove_headers looks for its field
_FOLD = re.compile(r'\r?\n(?=[ \t])')



# -- the verdict ----------------------------------------------------------------------

@dataclass
class Verdict:
    """What rspamd said of one message, as `envelope.rspamd` keeps it."""
    action: str
    score: float = 0.0
    required_score: float = 0.0
    message: str = ''                   # messages.smtp_message
    subject: str | None = None          # the new Subject, for 'rewrite subject'
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    dkim_signatures: list[str] = field(default_factory=list)
    remove_headers: list[tuple[str, int]] = field(default_factory=list)
    symbols: dict[str, float] = field(default_factory=dict, repr=False)
    reply: Reply | None = None          # the refusal, or None: accepted

    @classmethod
    def from_json(cls, data: object) -> Verdict:
        """The checkv2 reply (JSON, decoded); RspamdError for one without an action."""
        if not isinstance(data, dict) or not isinstance(data.get('action'), str):
            raise RspamdError(f'a reply without an action: {str(data)[:200]!r}')
        messages = data.get('messages')
        text = messages.get('smtp_message') if isinstance(messages, dict) else None
        milter = _mapping(data.get('milter'))
        symbols = _mapping(data.get('symbols'))
        verdict = cls(
            action=data['action'], score=number(data.get('score')),
            required_score=number(data.get('required_score')),
            message=_one_line(text) if isinstance(text, str) else '',
            subject=_one_line(data['subject']) if isinstance(data.get('subject'), str) else None,
            add_headers=list(_added(milter.get('add_headers'))),
            dkim_signatures=[_one_line(v) for v in _strings(data.get('dkim-signature'))],
            remove_headers=list(_removed(milter.get('remove_headers'))),
            symbols={name: number(_mapping(v).get('score')) for name, v in symbols.items()})
        verdict.reply = _refusal(verdict)
        return verdict


def _refusal(verdict: Verdict) -> Reply | None:
    if verdict.action == 'reject':
        return Reply(REJECT.code, verdict.message or REJECT.message, REJECT.enhanced)
    if verdict.action == 'soft reject':
        return Reply(TEMPFAIL.code, verdict.message or TEMPFAIL.message, TEMPFAIL.enhanced)
    return None


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _strings(value: object) -> list[str]:
    """A string, or a list of them (anything else: none)."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, str)]


def _one_line(text: str) -> str:
    """rspamd folds long values with CRLF and a tab (RFC 5322 2.2.3): unfolded
    here, since add_header folds again; other line breaks become spaces."""
    text = _FOLD.sub('', text)
    return ' '.join(text.replace('\0', '').splitlines()) if '\n' in text or '\r' in text \
        else text.replace('\0', '')


def _added(value: object) -> Iterable[tuple[str, str]]:
    """milter.add_headers: {name: value | {value, order} | [value | {value, order} ...]}."""
    if not isinstance(value, dict):
        return
    for name, spec in value.items():
        for item in spec if isinstance(spec, list) else [spec]:
            text = item.get('value') if isinstance(item, dict) else item
            if isinstance(name, str) and isinstance(text, str):
                yield name, _one_line(text)


def _removed(value: object) -> Iterable[tuple[str, int]]:
    """milter.remove_headers: {name: n} (0: all of them)."""
    if not isinstance(value, dict):
        return
    for name, index in value.items():
        if isinstance(name, str) and isinstance(index, int) and not isinstance(index, bool):
            yield name, index


# -- the policy -------------------------------------------------------------------------

class Rspamd:
    """Ask rspamd at `url` about each message and apply its action; the
    factory `policies.rspamd`, and the YAML entry `rspamd:`."""

    def __init__(self, url: Annotated[str, STRING] = 'http://127.0.0.1:11333',
                 timeout: Annotated[float, SECONDS] = 10.0,
                 fail_open: Annotated[bool, BOOL] = True,
                 settings_id: Annotated[str | None, STRING] = None,
                 spam_header: Annotated[str | None, STRING] = 'X-Spam',
                 connections: Annotated[int, COUNT] = 4):
        host, port = rspamd_address(url)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError('rspamd: timeout must be a positive number of seconds')
        if settings_id is not None and (not isinstance(settings_id, str) or not settings_id
                                        or not settings_id.isprintable() or ' ' in settings_id):
            raise ValueError(f'rspamd: settings_id must be a word, not {settings_id!r}')
        spam_header = spam_header or None          # '' (YAML) as None: no mark
        if spam_header is not None:
            try:
                check_name(spam_header)
            except ValueError:
                raise ValueError(f'rspamd: spam_header must be a field name (RFC 5322 3.6.8), '
                                 f'not {spam_header!r}') from None
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError('rspamd: connections must be an integer, 1 or more')
        self.url = url
        self.timeout = float(timeout)
        self.fail_open = bool(fail_open)
        self.settings_id = settings_id
        self.spam_header = spam_header
        self.pool = HttpPool(host, port, self.timeout, connections)
        self.where = f'rspamd {self.pool.authority}'
        self.breaker: Breaker = breaker(self.where, slow=self.timeout / 2)

    def __repr__(self) -> str:
        return f'rspamd({self.url!r}, timeout={self.timeout:g}, fail_open={self.fail_open})'

    # -- asking ---------------------------------------------------------------------

    def request_headers(self, ctx: Context) -> list[tuple[str, str]]:
        """The envelope as rspamd's protocol takes it (its header fields)."""
        session = ctx.session
        envelope = session.envelope
        out: list[tuple[str, str]] = []
        ip = client_ip(session)
        if ip is not None:
            out.append(('IP', str(ip)))
        if session.helo:
            out.append(('Helo', session.helo))
        hostname = session.client_hostname
        if hostname and not hostname.startswith('['):
            out.append(('Hostname', hostname))
        sender = envelope.mail_from.address if envelope.mail_from else ''
        out.append(('From', sender or '<>'))
        out.extend(('Rcpt', rcpt.address) for rcpt in envelope.rcpt_to)
        user = _user(session)
        if user:
            out.append(('User', user))
        out.append(('Queue-Id', f'{session.id}-{session.transaction}'))
        out.append(('MTA-Name', ctx.server.options.name))
        tls = session.tls
        if tls:
            if tls.get('cipher'):
                out.append(('TLS-Cipher', str(tls['cipher'])))
            if tls.get('version'):
                out.append(('TLS-Version', str(tls['version'])))
        if self.settings_id:
            out.append(('Settings-ID', self.settings_id))
        return [(name, _header_safe(value)) for name, value in out]

    def check(self, ctx: Context) -> Verdict:
        """rspamd's verdict on the message of `ctx`; RspamdError when none came."""
        spool = ctx.session.envelope.spool()    # MessageRefused propagates: the client's reply
        headers = self.request_headers(ctx)
        ticket = self.breaker.admit()
        if ticket is None:
            raise RspamdError(self.breaker.refusal())
        began = time.monotonic()
        try:
            status, body = self.pool.post('/checkv2', headers, spool.open, spool.size)
            if status != 200:
                raise RspamdError(f'HTTP {status}: {body[:200].decode("utf-8", "replace")}')
            verdict = Verdict.from_json(reply_json(body))
        except RspamdError as exc:
            self.breaker.failed(ticket, time.monotonic() - began, str(exc))
            raise
        self.breaker.succeeded(ticket)
        return verdict

    # -- the middleware ---------------------------------------------------------------

    def __call__(self, ctx: Context, next: Next) -> None:
        next()
        if ctx.command_name not in ('DATA', 'BDAT'):
            return
        envelope = ctx.session.envelope
        if envelope.data_stream is None:
            return
        if ctx.reply is not None and not isinstance(ctx.reply, list) and ctx.reply.code >= 400:
            return      # already refused by an inner middleware
        try:
            verdict = self.check(ctx)
        except RspamdError as exc:
            if self.fail_open:
                warnings.failed(self.where, '%s: %s', self.where, exc)
                return
            warnings.failed(self.where, '%s: %s', self.where, exc,
                            consequence='tempfail: 451 4.7.1')
            raise SmtpError(UNAVAILABLE) from None
        warnings.ok(self.where)
        vars(envelope)['rspamd'] = verdict
        if verdict.reply is not None:
            raise SmtpError(verdict.reply)
        self.apply(verdict, envelope)

    def apply(self, verdict: Verdict, envelope: Envelope) -> None:
        """rspamd's header changes, and the marks of its action, on what the
        deliveries store."""
        if self.spam_header:
            envelope.remove_header(self.spam_header)
        for name, index in verdict.remove_headers:
            if index == 0:
                envelope.remove_header(name)
            else:
                value = _nth_field(envelope, name, index)
                if value is not None:
                    envelope.remove_header(name, value.__eq__)
        if verdict.action == 'rewrite subject' and verdict.subject is not None:
            envelope.remove_header('Subject')
            envelope.add_header('Subject', verdict.subject)
        for name, value in verdict.add_headers:
            envelope.add_header(name, value)
        if self.spam_header and verdict.action not in UNMARKED:
            envelope.add_header(self.spam_header, 'Yes')
        for signature in verdict.dkim_signatures:     # on top: a signature covers what is below
            envelope.add_header('DKIM-Signature', signature)


def _user(session: Session) -> str | None:
    """The login of an authenticated session, as the client gave it."""
    if not session.user:
        return None
    auth = session.auth
    return str(auth.username) if auth is not None and auth.username else str(session.user)


def _header_safe(value: str) -> str:
    """A value h11 sends: no control characters (a HELO is the client's text)."""
    return ''.join(c if c.isprintable() else '?' for c in value).strip()


def _nth_field(envelope: Envelope, name: str, index: int) -> str | None:
    """The value of the `index`-th field `name` of the message (field_value)."""
    with envelope.spool().open() as f:
        return field_value(f.read(HEAD_BYTES), name, index)


def field_value(head: bytes, name: str, index: int) -> str | None:
    """The unfolded value of the `index`-th field `name` (1 the first, -1 the
    last) in the header section that `head` starts with, as remove_header's
    predicate is given it (headers.HeaderFilter); None when there is none."""
    section = re.split(rb'\r?\n\r?\n', head, maxsplit=1)[0]
    values = []
    for item in re.split(rb'\r?\n(?![ \t])', section):
        label, colon, value = item.partition(b':')
        if colon and label.rstrip(b' \t').lower() == name.lower().encode():
            unfolded = re.sub(rb'\r?\n', b'', value).strip(b' \t')
            values.append(unfolded.decode('utf-8', 'surrogateescape'))
    position = index - 1 if index > 0 else index
    return values[position] if -len(values) <= position < len(values) else None
