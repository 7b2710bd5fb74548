"""Mailpit's API v1, the endpoints listed in docs/inbox.md.

Thin handlers over the store (Mailpit's own shape: the API is the product,
the page is one of its clients). Each takes the app and the `Request` and
returns a `Response`; path parameters arrive as keyword arguments. Shapes
and status codes follow Mailpit's published API v1 documentation: list and
search results as `MessagesSummary`, a message as `Message`, plain-text
`ok` for the writes, 404 for an unknown ID, 400 for a bad one.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from .. import __version__
from ..offload import offload
from .http import HttpError, Request, Response, json_response, ok
from .parse import find_part, header_map, part_payload
from .search import QueryError
from .store import valid_id

if TYPE_CHECKING:
    from .app import InboxApp

T = TypeVar('T')

MAX_LIMIT = 1000            # a page of the list; more is cut to this
MAX_IDS = 10_000


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


def _run(fn: Callable[..., T], *args: object) -> T:
    """A store call; a query the store cannot run is the client's 400."""
    try:
        return offload(fn, *args)
    except QueryError as exc:
        raise HttpError(400, str(exc)) from None


def resolve(app: InboxApp, message_id: str) -> str:
    """An ID from the path (or `latest`) -> a stored ID, else 400/404."""
    if message_id != 'latest' and not valid_id(message_id):
        raise HttpError(400, 'invalid message ID')
    uid: str | None = _run(app.store.resolve, message_id)
    if uid is None:
        raise HttpError(404, 'message not found')
    return uid


# -- messages -------------------------------------------------------------------

def list_messages(app: InboxApp, req: Request) -> Response:
    start = req.int_arg('start', 0, 1 << 31)
    limit = req.int_arg('limit', 50, MAX_LIMIT)
    return json_response(_run(app.store.listing, start, limit, ''))


def delete_messages(app: InboxApp, req: Request) -> Response:
    body = req.json(default={})
    ids = _ids(body.get('IDs', body.get('ids')))
    _run(app.store.delete, ids or None)        # none given: all, as in Mailpit
    return ok()


def set_read(app: InboxApp, req: Request) -> Response:
    body = req.json(default={})
    read = body.get('Read', False)
    if not isinstance(read, bool):
        raise HttpError(400, 'Read must be true or false')
    ids = _ids(body.get('IDs'))
    search = body.get('Search')
    if search is not None and not isinstance(search, str):
        raise HttpError(400, 'Search must be a string')
    if ids:
        _run(app.store.set_read, read, ids, None)
    else:
        _run(app.store.set_read, read, None, search or '')
    return ok()


def search(app: InboxApp, req: Request) -> Response:
    query = req.arg('query')
    start = req.int_arg('start', 0, 1 << 31)
    limit = req.int_arg('limit', 50, MAX_LIMIT)
    return json_response(_run(app.store.listing, start, limit, query))


def delete_search(app: InboxApp, req: Request) -> Response:
    query = req.arg('query')
    if not query.strip():
        raise HttpError(400, 'query is required')
    _run(app.store.delete_matching, query)
    return ok()


# -- one message ------------------------------------------------------------------

def message(app: InboxApp, req: Request, message_id: str) -> Response:
    uid = resolve(app, message_id)
    found = _run(app.store.summary, uid, True)
    if found is None:
        raise HttpError(404, 'message not found')
    return json_response(found)


def _raw(app: InboxApp, message_id: str) -> bytes:
    raw: bytes | None = _run(app.store.raw, resolve(app, message_id))
    if raw is None:
        raise HttpError(404, 'message not found')
    return raw


def raw(app: InboxApp, req: Request, message_id: str) -> Response:
    """The source as text, never as HTML (nosniff is on every reply)."""
    headers = []
    if req.arg('dl') == '1':
        headers.append(('Content-Disposition', 'attachment; filename="message.eml"'))
    return Response(_raw(app, message_id), content_type='text/plain; charset=utf-8',
                    headers=headers)


def headers(app: InboxApp, req: Request, message_id: str) -> Response:
    return json_response(header_map(_raw(app, message_id)))


def part(app: InboxApp, req: Request, message_id: str, part_id: str) -> Response:
    """One MIME part, decoded. Always a download, and sandboxed by CSP, so
    an HTML or SVG part opened from here cannot run in the page's origin."""
    if len(part_id) > 64 or not all(c.isdigit() or c == '.' for c in part_id):
        raise HttpError(400, 'invalid part ID')
    found = find_part(_raw(app, message_id), part_id)
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
    uid = resolve(app, message_id)
    raw_message = _run(app.store.raw, uid)
    if raw_message is None:         # deleted meanwhile
        raise HttpError(404, 'message not found')
    sender = _run(app.store.envelope_sender, uid)
    try:
        app.relay.release(raw_message, sender, to)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    except OSError as exc:
        raise HttpError(502, f'relay failed: {exc}') from None
    return ok()


# -- the instance ---------------------------------------------------------------------

def info(app: InboxApp, req: Request) -> Response:
    listing = _run(app.store.listing, 0, 0, '')
    return json_response({
        'Version': __version__,
        'LatestVersion': __version__,
        'Database': app.store.path,
        'DatabaseSize': _run(app.store.file_size),
        'Messages': listing['total'],
        'Unread': listing['unread'],
        'Tags': {},
        'RuntimeStats': {
            'Uptime': int(time.monotonic() - app.started),
            'Memory': _memory(),
            'MessagesDeleted': app.store.deleted,
            'SMTPAccepted': app.stats['accepted'],
            'SMTPAcceptedSize': app.stats['accepted_size'],
            'SMTPRejected': app.stats['rejected'],
            'SMTPIgnored': 0,
        },
    })


def webui(app: InboxApp, req: Request) -> Response:
    """Mailpit's web UI configuration; the page asks whether release works."""
    return json_response({
        'Label': '', 'SpamAssassin': False, 'ChaosEnabled': False,
        'DuplicatesIgnored': False, 'HideDeleteAllButton': False,
        'MessageRelay': {
            'Enabled': app.relay is not None,
            'SMTPServer': app.relay.describe() if app.relay else '',
            'ReturnPath': '', 'AllowedRecipients': '', 'BlockedRecipients': '',
            'OverrideFrom': '', 'PreserveMessageIDs': True, 'RecipientAllowlist': '',
        },
    })


def livez(app: InboxApp, req: Request) -> Response:
    return ok()


def readyz(app: InboxApp, req: Request) -> Response:
    _run(app.store.state)       # the database answers
    return ok()


def _memory() -> int:
    """Resident set size in bytes, where /proc tells it."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return 0
