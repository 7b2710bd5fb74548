"""`GET /api/v1/message/{ID}/link-check`: each link of a message asked for its status.

Mailpit's link check (internal/linkcheck), with its answer: `{"Errors": n,
"Links": [{"URL", "StatusCode", "Status"}]}`, where an error is a status
of 400 or more, or 0 when no answer came (Status then says why).

- The links: in the HTML, `a[href]`, `link[rel=stylesheet][href]` and
  `img[src]` that hold an http(s) URL, then the http(s) URLs of the text
  (bare, or in angle brackets), each once, at most 100.
- Each is asked with HEAD (nothing is downloaded), 10 s at most, redirects
  not followed unless `follow=1` (then three at most), as Mailpit asks.
  What is read of an answer is bounded: its header section only, at most
  100 fields of 64 KiB (http.client's limits); an https link's
  certificate is verified against the system's authorities.
- Addresses that are not public (loopback, private, link-local, reserved:
  RFC 6890) are not asked unless `allow_internal` (Mailpit's
  `--allow-internal-http-requests`): a mail must not make the inbox probe
  the network it runs in. As in Mailpit, a name is refused when any of
  the addresses it resolves to is not public, and such a link is `451
  Blocked private/reserved address`. An IPv6 address that carries an IPv4
  one (mapped or compatible, RFC 4291 2.5.5; 6to4, RFC 3056; NAT64,
  RFC 6052) is judged by that one too, as it reaches it. The name is
  resolved once and the connection made to the addresses that were
  checked, so a DNS answer that changes in between cannot slip past.

Everything runs on gevent sockets in the request's greenlet, at most
`CONCURRENCY` links at a time, so the hub is never blocked.
"""
from __future__ import annotations

import http.client
import ipaddress
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlsplit

import gevent
import gevent.pool
import gevent.socket
import gevent.ssl

MAX_LINKS = 100
TIMEOUT = 10.0
MAX_REDIRECTS = 3
CONCURRENCY = 10
BLOCKED = (451, 'Blocked private/reserved address')

_URL = r"https?://[-\w@:%_+'!.~#?,&/=;]+"
_IS_LINK = re.compile(r'\b' + _URL, re.IGNORECASE)
_TEXT_LINK = re.compile(r'(?:^|[^<])\b(' + _URL + ')', re.IGNORECASE | re.MULTILINE)
_BRACKETED = re.compile(r"<(https?://[-\w@:%_+'!.~#?,&/=;][^>]+)>", re.IGNORECASE)


def extract_links(html_body: str, text: str) -> list[str]:
    """The links Mailpit checks, in its order: the HTML's, then the text's."""
    reader = _Links()
    reader.feed(html_body)
    reader.close()
    found = reader.anchors + reader.styles + reader.images
    found += [m.group(1) for m in _TEXT_LINK.finditer(text)]
    found += [m.group(1).replace('\n', '') for m in _BRACKETED.finditer(text)]
    return list(dict.fromkeys(link for link in found if link))[:MAX_LINKS]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[str] = []
        self.styles: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or '' for name, value in attrs}
        if tag == 'a' and 'href' in values:
            self._keep(self.anchors, values['href'])
        elif tag == 'link' and values.get('rel', '').lower() == 'stylesheet':
            self._keep(self.styles, values.get('href', ''))
        elif tag == 'img' and 'src' in values:
            self._keep(self.images, values['src'])

    @staticmethod
    def _keep(into: list[str], value: str) -> None:
        if _IS_LINK.search(value):
            into.append(value)


class LinkChecker:
    """Asks links for their status; `allow_internal` lets it ask private addresses."""

    def __init__(self, allow_internal: bool = False, timeout: float = TIMEOUT):
        self.allow_internal = allow_internal
        self.timeout = timeout

    def check(self, links: Iterable[str], follow: bool = False) -> dict[str, Any]:
        """Mailpit's link-check response for these links."""
        pool = gevent.pool.Pool(CONCURRENCY)
        results = pool.map(lambda link: self.status(link, follow), list(links))
        errors = sum(1 for r in results if r['StatusCode'] >= 400 or r['StatusCode'] == 0)
        return {'Errors': errors, 'Links': results}

    def status(self, link: str, follow: bool = False) -> dict[str, Any]:
        """{"URL", "StatusCode", "Status"} of one link."""
        code, text = 0, ''
        try:
            with gevent.Timeout(self.timeout, TimeoutError('timed out')):
                code, text = self._ask(link, follow)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            code, text = 0, _reason(exc)
        return {'URL': link, 'StatusCode': code, 'Status': text}

    def _ask(self, link: str, follow: bool) -> tuple[int, str]:
        url = link
        for _hop in range(MAX_REDIRECTS + 1):
            code, location = self._head(url)
            if code < 0:
                return BLOCKED
            if not (follow and 300 <= code < 400 and location):
                return code, _phrase(code)
            url = urljoin(url, location)
        raise ValueError('too many redirects')

    def _head(self, url: str) -> tuple[int, str]:
        """(status, Location) of a HEAD request; (-1, '') for a blocked address."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ('http', 'https') or not parts.hostname:
            raise ValueError(f'invalid URL: {url}')
        secure = parts.scheme.lower() == 'https'
        port = parts.port or (443 if secure else 80)
        infos = gevent.socket.getaddrinfo(parts.hostname, port, type=gevent.socket.SOCK_STREAM)
        addresses = [info[4] for info in infos]
        if not self.allow_internal and any(is_internal(address[0]) for address in addresses):
            return -1, ''
        connection = _Connection(parts.hostname, port, addresses, secure, self.timeout)
        try:
            target = (parts.path or '/') + (f'?{parts.query}' if parts.query else '')
            connection.request('HEAD', target, headers={'User-Agent': 'smtp-stack-inbox'})
            response = connection.getresponse()
            return response.status, response.getheader('Location') or ''
        finally:
            connection.close()


class _Connection(http.client.HTTPConnection):
    """http.client on a gevent socket, to the addresses already checked
    (each in the resolver's order until one answers)."""

    def __init__(self, host: str, port: int, addresses: list[Any], secure: bool,
                 timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._secure = secure

    def connect(self) -> None:
        failure: OSError | None = None
        for address in self._addresses:
            try:
                sock = gevent.socket.create_connection(address[:2], self.timeout)
                break
            except OSError as exc:
                failure = exc
        else:
            raise failure or OSError('no address')
        if self._secure:
            context = gevent.ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


NAT64 = ipaddress.ip_network('64:ff9b::/96')               # RFC 6052 2.1
NAT64_LOCAL = ipaddress.ip_network('64:ff9b:1::/48')        # RFC 8215: local use
IPV4_COMPATIBLE = ipaddress.ip_network('::/96')             # RFC 4291 2.5.5.1


def is_internal(address: str) -> bool:
    """Whether a link to this address (text, a zone allowed) would reach a
    network that is not the public Internet: not global (RFC 6890's
    registries, as Python's `ipaddress` keeps them) or multicast, or an
    IPv6 address whose IPv4 inside is one of those."""
    ip = ipaddress.ip_address(address.split('%')[0])
    if not ip.is_global or ip.is_multicast:
        return True
    inner = _carried_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return inner is not None and (not inner.is_global or inner.is_multicast)


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through: mapped (`::ffff:a.b.c.d`),
    compatible (`::a.b.c.d`), 6to4 (`2002:AABB:CCDD::`), NAT64's well-known
    prefix (`64:ff9b::a.b.c.d`); the local-use NAT64 prefix is a private
    network whatever it carries (0.0.0.0 here: never global)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64_LOCAL:
        return ipaddress.IPv4Address(0)
    return None


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ''


def _reason(exc: BaseException) -> str:
    """The last part of an error's text, as Mailpit shortens them."""
    text = getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__
    return text.rsplit(': ', 1)[-1]
