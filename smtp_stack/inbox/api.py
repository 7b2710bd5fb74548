"""Mailpit's API v1: the messages, one message, and the instance (docs/inbox.md).

Thin handlers over the store (Mailpit's own shape: the API is the product,
the page is one of its clients). Each takes the app and the `Request` and
returns a `Response`; path parameters arrive as keyword arguments. Shapes
and status codes are those of Mailpit's handlers (server/apiv1): list and
search results as `MessagesSummary`, a message as `Message`, plain-text
`ok` for the writes, 404 for an ID that is unknown or is no ID at all,
`start` and `limit` that are no numbers ignored, a search without a query
a 400. Where Mailpit acts on a body it could not read (a DELETE whose
body is not JSON deletes every message there), this answers 400; the one
such body a known client sends -- a form (`ids=...&Read=true`, PyPI's
mailpit-api-client) -- is read as the JSON it stands for (_messages_body).
The send, tags, chaos and check endpoints are in api_extra.py.

Every handler works in the request's mailbox (`req.mailbox`: the default
one, or the one of a `/mailbox/NAME/` prefix, app.py), so an ID of
another mailbox is a 404 there; `GET /api/v1/mailboxes` (ours, not
Mailpit's) lists the mailboxes.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, quote


from .. import __version__
from ..offload import offload
from .http import HttpError, Request, Response, json_response, ok
from .mailboxes import BY_USER, DEFAULT, mailbox_name, mailbox_path
from .parse import find_part, header_map, part_payload
from .search import QueryError
from .store import Json, valid_id
from .tags import TagError

if TYPE_CHECKING:
    from .app import InboxApp

T = TypeVar('T')

MAX_IDS = 10_000
DEFAULT_LIMIT = 50


def _ids(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise HttpError(400, 'IDs must be a list of strings')
    if len(value) > MAX_IDS:
        raise HttpError(413, f'more than {MAX_IDS} IDs')
    bad = [i for i in value if not valid_id(i)]
    if bad:
        raise HttpError(400, f'invalid ID {bad[0][:40]!r}')
    return value


class _Refused:
    def __init__(self, reason: str):
        self.reason = reason


def _refusing(fn: Callable[..., T], args: tuple[object, ...]) -> T | _Refused:
    try:
        return fn(*args)
    except (QueryError, TagError) as exc:
        return _Refused(str(exc))


def run(fn: Callable[..., T], *args: object) -> T:
    """A store call off the hub; a query or a tag change the store refuses
    is the client's 400. The refusal comes back as a value, not raised in
    the worker thread, where gevent would print it as a failure."""
    outcome = offload(_refusing, fn, args)
    if isinstance(outcome, _Refused):
        raise HttpError(400, outcome.reason)
    return outcome



def resolve(app: InboxApp, message_id: str, req: Request) -> str:
    """An ID from the path -> a stored ID of the request's mailbox, else
    404. `latest` is the newest message, or with `?query=` the newest that
    matches (as Mailpit's)."""
    query = req.arg('query').strip()
    uid: str | None = None
    if message_id == 'latest' and query:
        uid = run(app.store.latest, query, _tz(req), req.mailbox)
    elif message_id == 'latest' or valid_id(message_id):
        uid = run(app.store.resolve, message_id, req.mailbox)
    if uid is None:
        raise HttpError(404, 'message not found')
    return uid


def _tz(req: Request) -> str | None:
    """The `tz` of after:/before: in a search (an IANA zone name)."""
    return req.arg('tz') or None


def _paging(req: Request) -> tuple[int, int, float | None]:
    """Mailpit's `start`, `limit` and `before` (an ISO 8601 time or day):
    malformed values are ignored, not refused."""
    start = req.lenient_int('start', 0)
    limit = req.lenient_int('limit', DEFAULT_LIMIT)
    before = None
    if req.arg('before'):
        try:
            moment = datetime.fromisoformat(req.arg('before'))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            before = moment.timestamp()
    return start, limit, before


# -- messages -------------------------------------------------------------------

def list_messages(app: InboxApp, req: Request) -> Response:
    start, limit, before = _paging(req)
    return json_response(run(lambda: app.store.listing(start, limit, '', before=before,
                                                        mailbox=req.mailbox)))


FORM_TYPE = 'application/x-www-form-urlencoded'
FORM_TRUE, FORM_FALSE = ('true', 'True', '1', 'on'), ('false', 'False', '0', 'off', '')


def _messages_body(req: Request) -> dict[str, object]:
    """The body of PUT/DELETE /api/v1/messages: JSON, as Mailpit reads it,
    or a form, as PyPI's mailpit-api-client 1.0.0 sends it (httpx `data=`:
    `ids` once per ID, `Read=true`). Mailpit fails to decode the form: its
    DELETE then deletes every message, its PUT answers 400; here the form
    means what its sender asked for (docs/inbox.md)."""
    content_type = req.environ.get('CONTENT_TYPE', '').split(';')[0].strip().lower()
    if content_type != FORM_TYPE:
        return req.json(default={})
    try:
        fields = parse_qs(req.body().decode('ascii'), keep_blank_values=True,
                          strict_parsing=False)
    except UnicodeDecodeError:
        raise HttpError(400, 'the form is not ASCII') from None
    body: dict[str, object] = {}
    ids = fields.get('IDs', []) + fields.get('ids', [])
    if ids:
        body['IDs'] = ids
    for name in ('Read', 'read'):
        if name in fields:
            value = fields[name][-1]
            if value not in FORM_TRUE + FORM_FALSE:
                raise HttpError(400, 'Read must be true or false')
            body['Read'] = value in FORM_TRUE
    for name in ('Search', 'search'):
        if name in fields:
            body['Search'] = fields[name][-1]
    return body


def delete_messages(app: InboxApp, req: Request) -> Response:
    body = _messages_body(req)
    ids = _ids(body.get('IDs', body.get('ids')))
    run(app.store.delete, ids or None, req.mailbox)        # none given: all, as in Mailpit
    return ok()


def set_read(app: InboxApp, req: Request) -> Response:
    body = _messages_body(req)
    read = body.get('Read', False)
    if not isinstance(read, bool):
        raise HttpError(400, 'Read must be true or false')
    ids = _ids(body.get('IDs'))
    search = body.get('Search')
    if search is not None and not isinstance(search, str):
        raise HttpError(400, 'Search must be a string')
    if ids and search:
        raise HttpError(400, 'You may specify either IDs or a search query, not both')
    if ids:
        run(app.store.set_read, read, ids, None, None, req.mailbox)
    else:
        run(app.store.set_read, read, None, search or '', _tz(req), req.mailbox)
    return ok()


def _query(req: Request) -> str:
    query = req.arg('query').strip()
    if not query:
        raise HttpError(400, 'Error: no search query')
    return query


def search(app: InboxApp, req: Request) -> Response:
    query = _query(req)
    start, limit, before = _paging(req)
    tz = _tz(req)
    return json_response(run(lambda: app.store.listing(start, limit, query, before=before,
                                                        tz=tz, mailbox=req.mailbox)))


def delete_search(app: InboxApp, req: Request) -> Response:
    run(app.store.delete_matching, _query(req), _tz(req), req.mailbox)
    return ok()


# -- one message ------------------------------------------------------------------

def message(app: InboxApp, req: Request, message_id: str) -> Response:
    uid = resolve(app, message_id, req)
    found = run(app.store.summary, uid, True, req.mailbox)
    if found is None:
        raise HttpError(404, 'message not found')
    return json_response(found)


def _raw(app: InboxApp, message_id: str, req: Request) -> tuple[str, bytes]:
    uid = resolve(app, message_id, req)
    raw: bytes | None = run(app.store.raw, uid, req.mailbox)
    if raw is None:
        raise HttpError(404, 'message not found')
    return uid, raw


def raw(app: InboxApp, req: Request, message_id: str) -> Response:
    """The source as text, never as HTML (nosniff is on every reply)."""
    uid, source = _raw(app, message_id, req)
    headers = []
    if req.arg('dl') == '1':
        headers.append(('Content-Disposition', f'attachment; filename="{uid}.eml"'))
    return Response(source, content_type='text/plain; charset=utf-8', headers=headers)


def headers(app: InboxApp, req: Request, message_id: str) -> Response:
    return json_response(header_map(_raw(app, message_id, req)[1]))


def part(app: InboxApp, req: Request, message_id: str, part_id: str) -> Response:
    """One MIME part, decoded. Always a download, and sandboxed by CSP, so
    an HTML or SVG part opened from here cannot run in the page's origin."""
    found = None
    if len(part_id) <= 64 and all(c.isdigit() or c == '.' for c in part_id):
        found = find_part(_raw(app, message_id, req)[1], part_id)
    if found is None:
        raise HttpError(404, 'part not found')
    name = found.get_filename() or f'part-{part_id}'
    # RFC 6266: an ASCII fallback, and the real name in filename* (RFC 8187).
    ascii_name = ''.join(c if 32 <= ord(c) < 127 and c not in '\\;"' else '_' for c in name)
    disposition = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
    return Response(part_payload(found), content_type=found.get_content_type(), headers=[
        ('Content-Disposition', disposition),
        ('Content-Security-Policy', "sandbox; default-src 'none'"),
    ])


def release(app: InboxApp, req: Request, message_id: str) -> Response:
    if app.relay is None:
        raise HttpError(400, 'message relay is not enabled (start with --relay HOST:PORT)')
    body = req.json(default={})
    to = body.get('To')
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and '@' in a
                                                     for a in to):
        raise HttpError(400, 'To must be a non-empty list of addresses')
    uid = resolve(app, message_id, req)
    raw_message = run(app.store.raw, uid, req.mailbox)
    if raw_message is None:         # deleted meanwhile
        raise HttpError(404, 'message not found')
    sender = run(app.store.envelope_sender, uid, req.mailbox)
    try:
        app.relay.release(raw_message, sender, to)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    except OSError as exc:
        raise HttpError(502, f'relay failed: {exc}') from None
    return ok()


# -- the instance ---------------------------------------------------------------------

def info(app: InboxApp, req: Request) -> Response:
    """Mailpit's AppInformation; the counts and tags are the mailbox's."""
    return json_response(runtime_info(app, req.mailbox))


def runtime_info(app: InboxApp, mailbox: str) -> Json:
    """Mailpit's AppInformation of `mailbox` (/api/v1/info, and the metrics)."""
    _changes, _newest, total, unread, _event = run(app.store.state, mailbox)
    return {
        'Version': __version__,
        'LatestVersion': __version__,
        'Database': app.store.path,
        'DatabaseSize': run(app.store.file_size),
        'Messages': total,
        'Unread': unread,
        'Tags': run(app.store.tag_counts, mailbox),
        'RuntimeStats': {
            'Uptime': int(time.monotonic() - app.started),
            'Memory': _memory(),
            'MessagesDeleted': app.store.deleted,
            'SMTPAccepted': app.stats['accepted'],
            'SMTPAcceptedSize': app.stats['accepted_size'],
            'SMTPRejected': app.stats['rejected'],
            'SMTPIgnored': app.stats.get('ignored', 0),
        },
    }


def mailboxes(app: InboxApp, req: Request) -> Response:
    """Ours (Mailpit has one mailbox): the mode, the request's mailbox, and
    each mailbox the caller may read with its path and counts -- the default
    one first, always; the others while they hold mail (and a UI user's own
    always, in the mode where that is all they see)."""
    counts = {name: (total, unread) for name, total, unread in run(app.store.mailboxes)}
    names = {DEFAULT, req.mailbox, *counts}
    own = mailbox_name(req.user) if app.routing.mode == BY_USER and app.users else None
    if own is not None:
        names.add(own)
    shown = sorted(name for name in names if app.may_see(req.user, name))
    return json_response({
        'Mode': app.routing.mode,
        'Mailbox': req.mailbox,
        'Mailboxes': [{'Name': name, 'Path': mailbox_path(req.root, name),
                       'Total': counts.get(name, (0, 0))[0],
                       'Unread': counts.get(name, (0, 0))[1]} for name in shown],
    })


def webui(app: InboxApp, req: Request) -> Response:
    """Mailpit's web UI configuration; the page asks whether release works,
    through which relay, and to whom (RecipientAllowlist is Mailpit's older
    name of AllowedRecipients, still sent beside it)."""
    allowlist = app.relay.allowed_recipients if app.relay else ''
    return json_response({
        'Label': '', 'SpamAssassin': app.spam_checker is not None, 'ChaosEnabled': True,
        'DuplicatesIgnored': app.store.ignore_duplicate_ids,
        'HideDeleteAllButton': app.hide_delete_all_button,
        'MessageRelay': {
            'Enabled': app.relay is not None,
            'SMTPServer': app.relay.describe() if app.relay else '',
            'ReturnPath': '', 'AllowedRecipients': allowlist, 'BlockedRecipients': '',
            'OverrideFrom': '', 'PreserveMessageIDs': True, 'RecipientAllowlist': allowlist,
        },
    })


def livez(app: InboxApp, req: Request) -> Response:
    return ok()


def readyz(app: InboxApp, req: Request) -> Response:
    run(app.store.state)       # the database answers
    return ok()


def _memory() -> int:
    """Resident set size in bytes, where /proc tells it."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0
