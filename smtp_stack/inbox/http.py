"""The small HTTP vocabulary of the inbox's WSGI side: requests, replies, errors.

Every failure is an `HttpError` carrying its status and a one-line plain
text reason, which is what Mailpit answers too (`400 Bad Request` with a
text body). Nothing a client sends can turn into a stack trace: the app
catches everything else, logs it and answers 500 with a fixed text.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias, overload
from urllib.parse import parse_qs

# WSGI (PEP 3333): the environ, and start_response's headers.
Environ: TypeAlias = Mapping[str, Any]
Headers: TypeAlias = list[tuple[str, str]]
# start_response(status, headers) returns the write() callable.
StartResponse: TypeAlias = Callable[[str, Headers], Callable[[bytes], object]]

MAX_BODY = 1 << 20          # request bodies: a JSON list of IDs is far smaller

STATUS = {
    200: 'OK', 101: 'Switching Protocols', 204: 'No Content', 301: 'Moved Permanently',
    304: 'Not Modified', 308: 'Permanent Redirect',
    400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
    405: 'Method Not Allowed', 411: 'Length Required', 413: 'Content Too Large',
    414: 'URI Too Long', 415: 'Unsupported Media Type', 426: 'Upgrade Required',
    500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway',
    503: 'Service Unavailable',
}

# Sent with every reply: nothing of ours is framed elsewhere or sniffed,
# and nothing is kept by the browser unless the handler says otherwise
# (the page's static files: pages.py).
COMMON_HEADERS = [
    ('X-Content-Type-Options', 'nosniff'),
    ('Referrer-Policy', 'no-referrer'),
]
NO_STORE = ('Cache-Control', 'no-store')


class HttpError(Exception):
    """A reply for what the client got wrong: `reason` as plain text, or
    (`as_json`) as `{"Error": reason}`, which is how Mailpit answers its
    send endpoint and the checks."""

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = (),
                 *, as_json: bool = False):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.as_json = as_json


class Request:
    """What a handler needs of a WSGI environ, and who asks for what: the
    mailbox it is about (the default one, '', unless the path named one),
    the app's own root (SCRIPT_NAME before a mailbox's prefix) and the
    basic-auth user (None without UI auth); the app sets the last three."""

    def __init__(self, environ: Environ):
        self.environ = environ
        self.method = environ.get('REQUEST_METHOD', 'GET').upper()
        self.path = environ.get('PATH_INFO', '') or '/'
        self.query = parse_qs(environ.get('QUERY_STRING', ''), keep_blank_values=True)
        self.mailbox = ''
        self.root: str = environ.get('SCRIPT_NAME', '')
        self.user: str | None = None

    def arg(self, name: str, default: str = '') -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def lenient_int(self, name: str, default: int, minimum: int = 0) -> int:
        """An integer parameter as Mailpit reads `start` and `limit`: one that
        is malformed or below `minimum` is the default, not an error."""
        text = self.arg(name, '')
        if not re.fullmatch(r'[-+]?[0-9]{1,18}', text):
            return default      # not Go's strconv.Atoi syntax, or beyond a 64-bit int
        value = int(text)
        return value if value >= minimum else default

    def header(self, name: str) -> str:
        value: str = self.environ.get('HTTP_' + name.upper().replace('-', '_'), '')
        return value

    def body(self, max_size: int = MAX_BODY) -> bytes:
        """The request body, at most `max_size` bytes (else 413)."""
        length = self.environ.get('CONTENT_LENGTH') or ''
        if length:
            try:
                size = int(length)
            except ValueError:
                raise HttpError(400, 'bad Content-Length') from None
            if size > max_size:
                raise HttpError(413, f'request body over {max_size} bytes')
            body: bytes = self.environ['wsgi.input'].read(size) if size > 0 else b''
            return body
        if self.header('Transfer-Encoding').lower() == 'chunked':
            data: bytes = self.environ['wsgi.input'].read(max_size + 1)
            if len(data) > max_size:
                raise HttpError(413, f'request body over {max_size} bytes')
            return data
        return b''

    @overload
    def json(self, default: dict[str, Any], max_size: int = MAX_BODY) -> dict[str, Any]: ...

    @overload
    def json(self, default: None = None, max_size: int = MAX_BODY) -> dict[str, Any] | None: ...

    def json(self, default: dict[str, Any] | None = None,
             max_size: int = MAX_BODY) -> dict[str, Any] | None:
        """The JSON body (an object), or `default` when there is none."""
        data = self.body(max_size)
        if not data.strip():
            return default
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, 'the body is not valid JSON') from None
        if not isinstance(value, dict):
            raise HttpError(400, 'the body must be a JSON object')
        return value

    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) from an Authorization: Basic header, or None."""
        value = self.header('Authorization')
        scheme, _, token = value.partition(' ')
        if scheme.lower() != 'basic' or not token:
            return None
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode(
                'utf-8').partition(':')
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None


class Response:
    def __init__(self, body: bytes | str = b'', status: int = 200,
                 content_type: str = 'text/plain; charset=utf-8',
                 headers: Iterable[tuple[str, str]] = ()):
        self.body = body.encode('utf-8') if isinstance(body, str) else body
        self.status = status
        self.headers = [('Content-Type', content_type)] + list(headers)

    def __call__(self, start_response: StartResponse) -> list[bytes]:
        headers = self.headers + COMMON_HEADERS
        if not any(name == 'Cache-Control' for name, _ in self.headers):
            headers.append(NO_STORE)
        if self.status != 304:      # a 304's length would be the stored reply's (RFC 9110 8.6)
            headers.append(('Content-Length', str(len(self.body))))
        start_response(f'{self.status} {STATUS.get(self.status, "Unknown")}', headers)
        return [self.body]


def json_response(value: object, status: int = 200) -> Response:
    return Response(json.dumps(value, ensure_ascii=False), status,
                    'application/json; charset=utf-8')


def ok() -> Response:
    """Mailpit's plain-text success reply."""
    return Response('ok')


def error_response(error: HttpError) -> Response:
    if error.as_json:
        reply = json_response({'Error': error.reason}, error.status)
        reply.headers += error.headers
        return reply
    return Response(error.reason + '\n', error.status, headers=error.headers)
