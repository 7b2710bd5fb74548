"""The web page and what it frames: static files, and a message's HTML.

The page (static/) is plain HTML, CSS and JS shipped in the package: no
build step, no CDN. It runs under a Content-Security-Policy that allows
only its own scripts and styles, and it builds every element from mail
values with `textContent`, never with HTML strings.

A message's HTML is served by `/view/{ID}.html` for an
`<iframe sandbox>` without `allow-scripts` or `allow-same-origin`, and
with its own CSP: `sandbox` (so even opened directly, the document gets an
opaque origin and runs nothing: the mail never reaches the page's origin
as HTML), no scripts, no connections, styles inline only, and images from
the message itself (`cid:` parts, rewritten to part URLs) or `data:` only;
`?remote=1` also allows remote images, as Mailpit's toggle does (they
are trackers as often as pictures).
"""
from __future__ import annotations

import functools
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
STATIC_FILES = {'index.html', 'app.js', 'app.css', 'favicon.svg'}

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
VIEW_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
            "style-src 'unsafe-inline'; font-src data:; img-src {images}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
LOCAL_IMAGES = "'self' data:"
REMOTE_IMAGES = "'self' data: https: http:"

_CID = re.compile(r'''(["'(\s=])cid:([^"')\s>]+)''', re.IGNORECASE)


def index(app: InboxApp, req: Request) -> Response:
    return static(app, req, 'index.html')


@functools.cache
def _static_bytes(name: str) -> bytes:
    """Read once per process, by load_static() when the app is made: a file
    read while serving would be I/O on the hub."""
    with open(os.path.join(STATIC, name), 'rb') as f:
        return f.read()


def load_static() -> None:
    """Read the page's files now (InboxApp calls it when it is made, before serving)."""
    for name in STATIC_FILES:
        _static_bytes(name)


def static(app: InboxApp, req: Request, name: str) -> Response:
    if name not in STATIC_FILES:
        raise HttpError(404, 'not found')
    data = _static_bytes(name)
    ctype = mimetypes.guess_type(name)[0] or 'application/octet-stream'
    if ctype.startswith('text/') or ctype.endswith('javascript'):
        ctype += '; charset=utf-8'
    return Response(data, content_type=ctype, headers=[('Content-Security-Policy', PAGE_CSP),
                                                       ('X-Frame-Options', 'DENY')])


def view_html(app: InboxApp, req: Request, message_id: str) -> Response:
    """The message's HTML for the sandboxed frame (see the module doc)."""
    uid = resolve(app, message_id)
    found: dict[str, Any] | None = offload(app.store.summary, uid, False)
    if found is None:
        raise HttpError(404, 'message not found')
    parts = {p['ContentID']: p['PartID'] for p in found['Inline'] + found['Attachments']
             if p['ContentID']}

    def to_part(match: re.Match[str]) -> str:
        cid = match.group(2)
        part_id = parts.get(cid)
        if part_id is None:
            return match.group(1) + 'about:blank'
        return f'{match.group(1)}../api/v1/message/{uid}/part/{part_id}'
    markup = _CID.sub(to_part, found['HTML'] or '')
    # Links open outside the frame, in a new tab (the frame may not navigate its parent).
    document = '<!DOCTYPE html><base target="_blank">' + markup
    images = REMOTE_IMAGES if req.arg('remote') == '1' else LOCAL_IMAGES
    return Response(document, content_type='text/html; charset=utf-8', headers=[
        ('Content-Security-Policy', VIEW_CSP.format(images=images))])

