"""Mailpit's API v1 beyond reading messages: send, tags, chaos, the checks, swagger.json.

Handlers as in api.py (the app and the Request in, a Response out), with
Mailpit's answers: `{"ID"}` for a send and `{"Error"}` for a refused one,
plain `ok` for the tag writes, the ChaosTriggers object for chaos.

Each works in the request's mailbox (api.py); chaos is the SMTP side's,
for all of them. The HTML check is htmlcheck.py's (with tinycss2), the
link check linkcheck.py's, the spam check spamd.py's (with
`--enable-spamassassin`), the thumbnails thumbnail.py's (with Pillow).
What this inbox cannot serve -- the HTML check without tinycss2, the
spam check without spamd, thumbnails without Pillow -- answers
`501 {"Error": ...}` saying what is missing, not 404: a client sees the
endpoint exists and why it cannot serve it (docs/inbox.md).
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..offload import offload
from .api import resolve, run
from .chaos import ChaosError
from .http import HttpError, Request, Response, json_response, ok
from .linkcheck import extract_links
from .mailboxes import DEFAULT
from .parse import find_part, html_body, part_payload
from .send import SendError, build
from .store import DUPLICATE
from .swagger import document
from .thumbnail import available as thumbnails_available
from .thumbnail import thumbnail as make_thumbnail

if TYPE_CHECKING:
    from .app import InboxApp

SEND_MAX_BODY = 32 << 20    # a send request carries its attachments in base64


# -- send -----------------------------------------------------------------------------------

def send(app: InboxApp, req: Request) -> Response:
    """Store a message made from the JSON request, as if it came over SMTP;
    the HTTP user (basic auth) is its Username, as in Mailpit."""
    try:
        body = req.json(max_size=SEND_MAX_BODY)
    except HttpError as error:
        raise HttpError(error.status, error.reason, as_json=True) from None
    if body is None:
        raise HttpError(400, 'the body must be a JSON send request', as_json=True)
    try:
        raw, sender, recipients = build(body)
    except SendError as exc:
        raise HttpError(400, str(exc), as_json=True) from None
    credentials = req.basic_auth()
    username = credentials[0] if credentials else None
    # Under /mailbox/NAME/ into that mailbox; else where SMTP would route it.
    into = req.mailbox if req.mailbox != DEFAULT else None
    stored = offload(lambda: app.store.add(raw, recipients, username=username,
                                           mail_from=sender, mailbox=into))
    if stored is DUPLICATE:         # --ignore-duplicate-ids: left out, no ID (Mailpit's "")
        app.stats['ignored'] = app.stats.get('ignored', 0) + 1
        return json_response({'ID': ''})
    app.stats['accepted'] += 1
    app.stats['accepted_size'] += len(raw)
    return json_response({'ID': stored['ID']})


# -- tags ------------------------------------------------------------------------------------

def get_tags(app: InboxApp, req: Request) -> Response:
    return json_response(offload(app.store.tags, req.mailbox))


def set_tags(app: InboxApp, req: Request) -> Response:
    """`{"IDs": [...], "Tags": [...]}`: those messages get exactly those tags."""
    body = req.json(default={})
    ids = body.get('IDs') or []
    tags = body.get('Tags') or []
    for name, value in (('IDs', ids), ('Tags', tags)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HttpError(400, f'{name} must be a list of strings')
    offload(app.store.set_tags, ids, tags, req.mailbox)
    return ok()


def rename_tag(app: InboxApp, req: Request, tag: str) -> Response:
    body = req.json(default={})
    name = body.get('Name')
    if not isinstance(name, str):
        raise HttpError(400, 'Name must be a string')
    run(app.store.rename_tag, tag, name, req.mailbox)   # 400: not found, a bad or taken name
    return ok()


def delete_tag(app: InboxApp, req: Request, tag: str) -> Response:
    run(app.store.delete_tag, tag, req.mailbox)         # 400: not found
    return ok()


# -- chaos -----------------------------------------------------------------------------------

def get_chaos(app: InboxApp, req: Request) -> Response:
    return json_response(app.chaos.triggers())


def set_chaos(app: InboxApp, req: Request) -> Response:
    """Every trigger from the body; those left out go back to 0 %."""
    try:
        app.chaos.set(req.json(default={}))
    except ChaosError as exc:
        raise HttpError(400, str(exc)) from None
    return json_response(app.chaos.triggers())


# -- checks ------------------------------------------------------------------

NOT_HERE = {
    'html-check': 'the HTML check needs a CSS parser (tinycss2), which is not installed here',
    'sa-check': 'the spam check needs SpamAssassin (spamd) or rspamd: start the inbox with '
                '--enable-spamassassin HOST:PORT or --enable-rspamd URL',
    'thumb': 'thumbnails need an imaging library (Pillow), which is not installed here',
}


def html_check(app: InboxApp, req: Request, message_id: str) -> Response:
    """Which HTML and CSS features of the HTML part mail clients lack
    (htmlcheck.py, the caniemail data), worked out off the hub; a message
    without HTML is Mailpit's 400. Reading it does not mark it read."""
    if importlib.util.find_spec('tinycss2') is None:
        return _not_here(app, req, message_id, 'html-check')
    raw = offload(app.store.raw, resolve(app, message_id, req), req.mailbox)
    if raw is None:
        raise HttpError(404, 'message not found')
    result = offload(_html_check_of, raw)
    if result is None:
        raise HttpError(400, 'message does not contain HTML')
    return json_response(result)


def _html_check_of(raw: bytes) -> dict[str, object] | None:
    from .htmlcheck import check

    markup = html_body(raw)
    return check(markup) if markup else None


def link_check(app: InboxApp, req: Request, message_id: str) -> Response:
    """Each link of the message asked for its status (`follow=1`: through
    redirects); reading the message marks it read, as in Mailpit."""
    found = run(app.store.summary, resolve(app, message_id, req), True, req.mailbox)
    if found is None:
        raise HttpError(404, 'message not found')
    links = extract_links(found['HTML'], found['Text'])
    return json_response(app.link_checker.check(links, req.arg('follow') in ('1', 'true')))


def spam_check(app: InboxApp, req: Request, message_id: str) -> Response:
    """SpamAssassin's verdict through spamd (spamd.py), or rspamd's
    (rspamd_check.py), in Mailpit's shape; a checker that cannot be
    reached is a 200 whose `Error` says so, as in Mailpit."""
    if app.spam_checker is None:
        return _not_here(app, req, message_id, 'sa-check')
    raw = offload(app.store.raw, resolve(app, message_id, req), req.mailbox)
    if raw is None:
        raise HttpError(404, 'message not found')
    return json_response(app.spam_checker.check(raw))


def thumbnail(app: InboxApp, req: Request, message_id: str, part_id: str) -> Response:
    """Mailpit's 180x120 JPEG of an image attachment (thumbnail.py); made off
    the hub. Without Pillow, a 501."""
    if not thumbnails_available():
        return _not_here(app, req, message_id, 'thumb')
    raw = offload(app.store.raw, resolve(app, message_id, req), req.mailbox)
    made = offload(_thumbnail_of, raw, part_id) if raw is not None else None
    if made is None:
        raise HttpError(404, 'part not found')
    name, jpeg = made
    ascii_name = ''.join(c if 32 <= ord(c) < 127 and c not in '\\;"' else '_' for c in name)
    return Response(jpeg, content_type='image/jpeg',
                    headers=[('Content-Disposition', f'filename="{ascii_name}"')])


def _thumbnail_of(raw: bytes, part_id: str) -> tuple[str, bytes] | None:
    """(file name, JPEG) of a part, or None when there is no such part."""
    if len(part_id) > 64 or not all(c.isdigit() or c == '.' for c in part_id):
        return None
    found = find_part(raw, part_id)
    if found is None:
        return None
    name = found.get_filename() or str(found.get('Content-ID', '')).strip('<> ') or part_id
    return name, make_thumbnail(found.get_content_type(), part_payload(found))


def _not_here(app: InboxApp, req: Request, message_id: str, what: str) -> Response:
    resolve(app, message_id, req)       # an unknown message is still a 404
    raise HttpError(501, NOT_HERE[what], as_json=True)


# -- the API's description --------------------------------------------------------------------

def swagger(app: InboxApp, req: Request) -> Response:
    """OpenAPI 2.0 of what this inbox serves (swagger.py), under its mount point."""
    return json_response(document(app.routes, req.environ.get('SCRIPT_NAME', '')))
