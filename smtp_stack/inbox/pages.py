"""The web page and what it frames: static files, and a message's HTML.

The page (static/) is plain HTML, CSS and JS shipped in the package: no
build step, no CDN. It runs under a Content-Security-Policy that allows
only its own scripts and styles, and it builds every element from mail
values with `textContent`, never with HTML strings.

`/view/{ID}.html` is Mailpit's "render message HTML" for UI tests: the
message's HTML part as it is, but for its `cid:` references, rewritten
to the parts' URLs (Mailpit's linkInlineImages); 404 for a message with
no HTML part. `?embed=1` (the page's frame) also opens links in a new tab,
with a `<base target="_blank">` rather than Mailpit's script. Like every
read of a message in Mailpit, it marks the message read (not with
`embed=1`: the page marked it when it opened it).

It is served with a CSP of its own, stricter than Mailpit's (which lets
the mail's markup run in the inbox's origin, only its scripts held back by
a nonce): `sandbox` (so even opened directly, the document gets an opaque
origin and runs nothing: the mail never reaches the page's origin as
HTML), no scripts, no connections, styles inline only, and images from the
message itself or `data:` only; `?remote=1` also allows remote images, as
Mailpit's toggle does (they are trackers as often as pictures). The page
shows it in an `<iframe sandbox>` without `allow-scripts` or
`allow-same-origin`. `/view/{ID}.txt` is the Text, as `text/plain`.
"""
from __future__ import annotations

import functools
import hashlib
import mimetypes
import os
import re
from typing import TYPE_CHECKING, Any

from ..offload import offload
from .api import resolve
from .http import HttpError, Request, Response

if TYPE_CHECKING:
    from .app import InboxApp

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
# The page's files: every file of static/ (the scripts are ES modules, one a
# concern), listed once at import; nothing else is served from there.
STATIC_FILES = frozenset(name for name in os.listdir(STATIC)
                         if os.path.isfile(os.path.join(STATIC, name)))

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
VIEW_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
            "style-src 'unsafe-inline'; font-src data:; img-src {images}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
LOCAL_IMAGES = "'self' data:"
REMOTE_IMAGES = "'self' data: https: http:"

_CID = re.compile(r'''(["'(\s=])cid:([^"')\s>;]+)''', re.IGNORECASE)


def index(app: InboxApp, req: Request) -> Response:
    return static(app, req, 'index.html')


@functools.cache
def _static_file(name: str) -> tuple[bytes, str]:
    """(the bytes, their ETag), read once per process, by load_static() when
    the app is made: a file read while serving would be I/O on the hub."""
    with open(os.path.join(STATIC, name), 'rb') as f:
        data = f.read()
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def load_static() -> None:
    """Read the page's files now (InboxApp calls it when it is made, before serving)."""
    for name in STATIC_FILES:
        _static_file(name)


def static(app: InboxApp, req: Request, name: str) -> Response:
    """A file of the page, with an ETag and `Cache-Control: no-cache`: the
    browser keeps it (and the scripts compiled) and asks each time whether
    it changed (RFC 9111 5.2.2.4), so an upgraded inbox is never served
    stale while a reload costs a 304 per file (RFC 9110 13.1.2)."""
    if name not in STATIC_FILES:
        raise HttpError(404, 'not found')
    data, etag = _static_file(name)
    ctype = mimetypes.guess_type(name)[0] or 'application/octet-stream'
    if ctype.startswith('text/') or ctype.endswith('javascript'):
        ctype += '; charset=utf-8'
    headers = [('Content-Security-Policy', PAGE_CSP), ('X-Frame-Options', 'DENY'),
               ('ETag', etag), ('Cache-Control', 'no-cache')]
    asked = _entity_tags(req.header('If-None-Match'))
    if etag in asked or '*' in asked:
        return Response(b'', 304, content_type=ctype, headers=headers)
    return Response(data, content_type=ctype, headers=headers)


def _entity_tags(header: str) -> set[str]:
    """The tags of an If-None-Match field (`*` for any), compared weakly
    as RFC 9110 13.1.2 asks: `W/"x"` is `"x"`."""
    return {tag.strip().removeprefix('W/') for tag in header.split(',') if tag.strip()}


def _message(app: InboxApp, req: Request, message_id: str) -> dict[str, Any]:
    uid = resolve(app, message_id, req)
    found: dict[str, Any] | None = offload(app.store.summary, uid, req.arg('embed') != '1',
                                           req.mailbox)
    if found is None:
        raise HttpError(404, 'message not found')
    return found


def view_html(app: InboxApp, req: Request, message_id: str) -> Response:
    """The message's HTML part, cid: links rewritten (see the module doc)."""
    found = _message(app, req, message_id)
    if not found['HTML']:
        raise HttpError(404, 'This message does not contain a HTML part')
    root = req.environ.get('SCRIPT_NAME', '').rstrip('/')
    parts = {p['ContentID']: p['PartID'] for p in found['Inline'] + found['Attachments']
             if p['ContentID']}

    def to_part(match: re.Match[str]) -> str:
        part_id = parts.get(match.group(2))
        if part_id is None:
            return match.group(0)       # no such part: left as written, as Mailpit does
        return f'{match.group(1)}{root}/api/v1/message/{found["ID"]}/part/{part_id}'
    document = _CID.sub(to_part, found['HTML'])
    if req.arg('embed') == '1':
        # Links open outside the frame, in a new tab (the frame may not navigate its parent).
        document = '<!DOCTYPE html><base target="_blank">' + document
    images = REMOTE_IMAGES if req.arg('remote') == '1' else LOCAL_IMAGES
    return Response(document, content_type='text/html; charset=utf-8', headers=[
        ('Content-Security-Policy', VIEW_CSP.format(images=images))])


def view_text(app: InboxApp, req: Request, message_id: str) -> Response:
    """The message's Text (Mailpit's "render message text part")."""
    return Response(_message(app, req, message_id)['Text'])

