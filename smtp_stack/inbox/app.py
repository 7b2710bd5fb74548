"""The inbox's WSGI application: a route table, basic auth, and errors as data.

Routes are one table of (method, path template, handler), as the SMTP
command table is: a path that matches with another method is a 405 with
`Allow`, one that matches nothing a 404. The templates name their
parameters as Mailpit's API documentation does (`{ID}`, `{PartID}`,
`{Tag}`), and swagger.json is made from the same table, so the two cannot
disagree. Handlers raise `HttpError` for what the client got wrong;
anything else is logged with its traceback and answered with a fixed 500
text, so no request can make the server show a trace.

Mailboxes (mailboxes.py): the paths above are the default mailbox's;
another mailbox's are the same paths under `/mailbox/NAME/` (the page,
the API, `/view`, `/api/events`), served as if the app were mounted
there, with the request's `mailbox` set. A prefix rather than a query
parameter, because Mailpit's clients take a base URL and build every path
and query themselves: given `http://host:8025/mailbox/ann`, each of them
works unchanged on ann's mailbox, and so does the page, whose links are
relative. With UI users (basic auth) and mailboxes by user, a user may
read the default mailbox and their own, and gets a 403 for any other
name, whether it holds mail or not (so the answer tells no one which
mailboxes exist).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import quote, urlsplit

from ..offload import offload
from . import api, api_extra, pages
from .chaos import Chaos
from .events import Broker, websocket_app
from .linkcheck import LinkChecker
from .http import Environ, HttpError, Request, Response, StartResponse, error_response
from .mailboxes import BY_USER, DEFAULT, PATH_SAFE, Routing, mailbox_name
from .store import Store

if TYPE_CHECKING:
    from .release import Relay
    from .rspamd_check import RspamdChecker
    from .spamd import SpamdClient

# handler(app, request, **path parameters) -> Response
Handler: TypeAlias = Callable[..., Response]

log = logging.getLogger('smtp_stack.inbox')

MAX_URL = 8192

ROUTES: list[tuple[str, str, Handler]] = [
    ('GET', '/', pages.index),
    ('GET', '/static/{name}', pages.static),
    ('GET', '/view/{ID}.html', pages.view_html),
    ('GET', '/view/{ID}.txt', pages.view_text),
    ('GET', '/api/v1/messages', api.list_messages),
    ('DELETE', '/api/v1/messages', api.delete_messages),
    ('PUT', '/api/v1/messages', api.set_read),
    ('GET', '/api/v1/search', api.search),
    ('DELETE', '/api/v1/search', api.delete_search),
    ('POST', '/api/v1/send', api_extra.send),
    ('GET', '/api/v1/tags', api_extra.get_tags),
    ('PUT', '/api/v1/tags', api_extra.set_tags),
    ('PUT', '/api/v1/tags/{Tag}', api_extra.rename_tag),
    ('DELETE', '/api/v1/tags/{Tag}', api_extra.delete_tag),
    ('GET', '/api/v1/message/{ID}', api.message),
    ('GET', '/api/v1/message/{ID}/raw', api.raw),
    ('GET', '/api/v1/message/{ID}/headers', api.headers),
    ('GET', '/api/v1/message/{ID}/part/{PartID}', api.part),
    ('GET', '/api/v1/message/{ID}/part/{PartID}/thumb', api_extra.thumbnail),
    ('POST', '/api/v1/message/{ID}/release', api.release),
    ('GET', '/api/v1/message/{ID}/html-check', api_extra.html_check),
    ('GET', '/api/v1/message/{ID}/link-check', api_extra.link_check),
    ('GET', '/api/v1/message/{ID}/sa-check', api_extra.spam_check),
    ('GET', '/api/v1/chaos', api_extra.get_chaos),
    ('PUT', '/api/v1/chaos', api_extra.set_chaos),
    ('GET', '/api/v1/info', api.info),
    ('GET', '/api/v1/mailboxes', api.mailboxes),
    ('GET', '/api/v1/webui', api.webui),
    ('GET', '/api/v1/swagger.json', api_extra.swagger),
    ('GET', '/livez', api.livez),
    ('GET', '/readyz', api.readyz),
    ('GET', '/metrics', lambda app, req: app.metrics(req)),
]
# A template's parameters: the handler's keyword, and what the path segment may hold.
PARAMETERS = {
    'ID': ('message_id', r'[^/]{1,64}'),
    'PartID': ('part_id', r'[^/]{1,64}'),
    'Tag': ('tag', r'[^/]{1,300}'),
    'name': ('name', r'[A-Za-z0-9._-]{1,64}'),
}


def compile_template(template: str) -> re.Pattern[str]:
    """'/view/{ID}.html' -> the regex of the whole path, with named groups."""
    pattern = ''
    for literal, name in re.findall(r'([^{]*)(?:\{(\w+)\})?', template):
        pattern += re.escape(literal)
        if name:
            keyword, allowed = PARAMETERS[name]
            pattern += f'(?P<{keyword}>{allowed})'
    return re.compile(pattern + r'\Z')


_COMPILED = [(method, compile_template(path), handler) for method, path, handler in ROUTES]
# Health checks answer without credentials (orchestrators probe them), as Mailpit's do.
OPEN_PATHS = frozenset({'/livez', '/readyz'})
# Another mailbox than the default one: its name, and the app's path after it.
MAILBOX_PATH = re.compile(r'/mailbox/([^/]+)(/.*)?\Z', re.DOTALL)


class InboxApp:
    """`app(environ, start_response)`: the web page, the API and the events."""

    def __init__(self, store: Store, *, relay: Relay | None = None,
                 users: dict[str, str] | None = None, broker: Broker | None = None,
                 stats: dict[str, int] | None = None, chaos: Chaos | None = None,
                 allow_internal_http_requests: bool = False):
        self.store = store
        self.relay = relay
        self.users = users          # {name: password hash} for basic auth, or None
        self.broker = broker or Broker(store)
        self.stats = stats if stats is not None else {'accepted': 0, 'accepted_size': 0,
                                                      'rejected': 0,
                                                      'ignored': 0}
        self.started = time.monotonic()
        self.chaos = chaos or Chaos()       # its ChaosMiddleware fails the SMTP side
        # link-check: links to non-public addresses are asked only when allowed
        # (Mailpit's --allow-internal-http-requests; link_checker.allow_internal)
        self.link_checker = LinkChecker(allow_internal=allow_internal_http_requests)
        # sa-check: spamd.SpamdClient with --enable-spamassassin, rspamd_check's
        # RspamdChecker with --enable-rspamd, else a 501
        self.spam_checker: SpamdClient | RspamdChecker | None = None
        self.hide_delete_all_button = False     # Mailpit's --hide-delete-all-button
        # POST /api/v1/send's own users (Mailpit's --send-api-auth-file), or
        # anyone (--send-api-auth-accept-any); else the web side's users
        self.send_users: dict[str, str] | None = None
        self.send_accept_any = False
        # Mailpit's --enable-prometheus: 'true' (/metrics here), HOST:PORT (a
        # listener of its own: service.py) or None
        self.prometheus: str | None = None
        self.routes = ROUTES
        self._verified: set[bytes] = set()
        # host names the Host header may carry (None: any)
        self.allowed_hosts: Collection[str] | None = None
        pages.load_static()

    @property
    def routing(self) -> Routing:
        """Which mailboxes there are (the store's routing of new mail)."""
        return self.store.routing

    def may_see(self, user: str | None, mailbox: str) -> bool:
        """Whether a UI user may read a mailbox: with UI users and mailboxes
        by user, the default one and their own only; otherwise any."""
        if user is None or self.users is None or self.routing.mode != BY_USER:
            return True
        return mailbox in (DEFAULT, mailbox_name(user))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if len(environ.get('PATH_INFO', '')) + len(environ.get('QUERY_STRING', '')) > MAX_URL:
                raise HttpError(414, 'URL too long')
            moved = clean_path_redirect(environ)
            if moved is not None:
                return moved(start_response)
            root = environ.get('SCRIPT_NAME', '')
            mailbox, environ = _in_mailbox(environ)
            req = Request(environ)
            check_cross_site(environ, self.allowed_hosts)
            if req.path == '/api/v1/send' and req.method == 'POST' and (
                    self.send_accept_any or self.send_users is not None):
                if not self.send_accept_any:
                    req.user = self._authenticate(req, self.send_users or {}, 'send')
            elif self.users is not None and req.path not in OPEN_PATHS:
                req.user = self._authenticate(req, self.users)
            if mailbox is not None:
                self._enter(req, mailbox, root)
            if req.path == '/api/events':
                return websocket_app(environ, start_response, self.broker, req.mailbox)
            if not environ.get('PATH_INFO') and environ.get('SCRIPT_NAME'):
                # Mounted at /inbox: relative links of the page need /inbox/.
                location = environ['SCRIPT_NAME'] + '/'
                return Response('', 301, headers=[('Location', location)])(start_response)
            return self._dispatch(req)(start_response)
        except HttpError as error:
            return error_response(error)(start_response)
        except Exception:       # noqa: BLE001 - logged; the client sees no trace
            log.exception('inbox: %s %s failed', environ.get('REQUEST_METHOD'),
                          environ.get('PATH_INFO'))
            return Response('internal error\n', 500)(start_response)

    def _dispatch(self, req: Request) -> Response:
        allowed: list[str] = []
        for method, pattern, handler in _COMPILED:
            match = pattern.match(req.path)
            if match is None:
                continue
            if method == req.method or (method == 'GET' and req.method == 'HEAD'):
                return handler(self, req, **match.groupdict())
            allowed.append(method)
        if allowed:
            raise HttpError(405, 'method not allowed', [('Allow', ', '.join(sorted(set(allowed))))])
        raise HttpError(404, 'not found')

    def metrics(self, req: Request) -> Response:
        """GET /metrics: Mailpit's metrics with `--enable-prometheus true`, else 404."""
        if self.prometheus != 'true':
            raise HttpError(404, 'not found')
        from .prometheus import exposition    # the metrics extra, asked for by the option
        return exposition(self)

    def _enter(self, req: Request, mailbox: str, root: str) -> None:
        """Make `req` one of `mailbox` (a name from the path): 404 without
        mailboxes or for a name that is none, 403 for another user's."""
        name = mailbox_name(mailbox) if self.routing.on else None
        if name is None:
            raise HttpError(404, 'no such mailbox')
        if not self.may_see(req.user, name):
            raise HttpError(403, 'this mailbox is not yours')
        req.mailbox = name
        req.root = root

    def _authenticate(self, req: Request, users: dict[str, str], realm: str = 'ui') -> str:
        """HTTP basic auth against a users file (the user's name, else 401);
        a verified pair is remembered (by a digest, with the `realm` of the
        file it was verified against) so the page's many requests do not
        each pay for a slow password hash."""
        from ..users import verify_password
        credentials = req.basic_auth()
        challenge = [('WWW-Authenticate', 'Basic realm="smtp-stack inbox", charset="UTF-8"')]
        if credentials is None:
            raise HttpError(401, 'authentication required', challenge)
        user, password = credentials
        digest = hashlib.sha256(f'{realm}\0{user}\0{password}'.encode()).digest()
        if any(hmac.compare_digest(digest, known) for known in self._verified):
            return user
        stored = users.get(user)
        if stored is None or not offload(verify_password, stored, password):
            raise HttpError(401, 'bad credentials', challenge)
        self._verified.add(digest)
        return user


def clean_path(path: str) -> str:
    """The path without empty, '.' and '..' segments, its trailing slash
    kept: what Mailpit's router (gorilla/mux's cleanPath, Go's path.Clean)
    makes of `//view/ID.html` or `/api/v1/../v1/info`."""
    segments: list[str] = []
    for segment in path.split('/'):
        if segment == '..':
            if segments:
                segments.pop()
        elif segment not in ('', '.'):
            segments.append(segment)
    cleaned = '/' + '/'.join(segments)
    if path.endswith('/') and cleaned != '/':
        cleaned += '/'
    return cleaned


def clean_path_redirect(environ: Environ) -> Response | None:
    """A redirect to the cleaned path (query kept) when the path is not
    clean, as Mailpit answers: cypress-mailpit asks for `//view/{ID}.html`.
    GET and HEAD get Mailpit's 301. Other methods get a 308 (RFC 7538),
    which clients follow with the same method and body: after a 301 they
    may send a POST again as a GET, and `requests` drops a DELETE's body,
    which for `DELETE /api/v1/messages` means every message."""
    path = environ.get('PATH_INFO', '') or '/'
    cleaned = clean_path(path)
    if cleaned == path:
        return None
    # PATH_INFO and SCRIPT_NAME are decoded (as latin-1, PEP 3333): encoded
    # again; the query string never was
    location = quote((environ.get('SCRIPT_NAME', '') + cleaned).encode('latin-1'),
                     safe="/:@!$&'()*+,;=~")
    if environ.get('QUERY_STRING'):
        location += '?' + environ['QUERY_STRING']
    status = 301 if environ.get('REQUEST_METHOD', 'GET') in ('GET', 'HEAD') else 308
    return Response('', status, headers=[('Location', location)])


def _in_mailbox(environ: Environ) -> tuple[str | None, Environ]:
    """(the mailbox a `/mailbox/NAME/...` path names, the environ of the app
    mounted there), or (None, environ) for a path of the default mailbox.
    `/mailbox/NAME` alone becomes an empty PATH_INFO under that mount, which
    the app redirects to `/mailbox/NAME/` as it does for any mount."""
    match = MAILBOX_PATH.match(environ.get('PATH_INFO', ''))
    if match is None:
        return None, environ
    prefix = f'/mailbox/{quote(match[1], safe=PATH_SAFE)}'
    return match[1], {**environ, 'SCRIPT_NAME': environ.get('SCRIPT_NAME', '') + prefix,
                      'PATH_INFO': match[2] or ''}


def check_cross_site(environ: Environ, allowed_hosts: Collection[str] | None = None) -> None:
    """403 for what another site's page could make a browser do here.

    - The Host header must name an allowed host (DNS rebinding: a page
      whose name resolves to 127.0.0.1 is same-origin with us otherwise).
    - A websocket handshake and every request that changes something (not
      GET/HEAD) must come from our own origin: browsers apply neither the
      same-origin policy nor a CORS preflight to websockets or to "simple"
      POSTs, and they send cached basic-auth credentials with both.
      Clients that are not browsers send no Origin and pass.
    """
    host = environ.get('HTTP_HOST', '')
    if allowed_hosts is not None and _host_name(host) not in allowed_hosts:
        raise HttpError(403, 'unknown Host')
    changes = environ.get('REQUEST_METHOD', 'GET') not in ('GET', 'HEAD', 'OPTIONS')
    if not changes and environ.get('PATH_INFO') != '/api/events':
        return
    if environ.get('HTTP_SEC_FETCH_SITE') in ('cross-site', 'same-site'):
        raise HttpError(403, 'cross-site request')
    origin = environ.get('HTTP_ORIGIN')
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        raise HttpError(403, 'cross-origin request')


def _host_name(host: str) -> str:
    """'127.0.0.1:8025' -> '127.0.0.1', '[::1]:8025' -> '::1'."""
    host = host.strip().lower()
    if host.startswith('['):
        return host[1:host.find(']')] if ']' in host else host
    return host.rsplit(':', 1)[0] if host.count(':') == 1 else host


def load_users(path: str) -> dict[str, str]:
    """A users file for the web side: `name:hash` a line, the hashes made by
    `smtp-stack hash-password`; blank lines and `#` comments are skipped."""
    from ..users import parse_hash
    users = {}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            name, sep, hashed = line.partition(':')
            if not sep or not name:
                raise ValueError(f'{path}:{number}: expected name:hash')
            try:
                parse_hash(hashed)
            except ValueError as exc:
                raise ValueError(f'{path}:{number}: {exc}') from None
            users[name] = hashed
    return users
