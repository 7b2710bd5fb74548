"""`ListUnsubscribe` of a message: its List-Unsubscribe links, checked as Mailpit checks them.

Pure: header values in, Mailpit's `ListUnsubscribe` object out.

RFC 2369 3.2: the header is a list of angle-bracketed URIs separated by
commas, with optional comments; RFC 8058 adds `List-Unsubscribe-Post:
List-Unsubscribe=One-Click`, which a one-click test reads beside the HTTPS
link. Mailpit (internal/tools/listunsubscribeparser.go) is stricter than
RFC 2369 in the way a mail developer wants to hear about: at most one
`mailto:` and one `http(s)://` link, no spaces inside a link, nothing but
commas between them. Each rule broken is one text in `Errors` (joined with
", "); the links that pass are in `Links`. The texts are Mailpit's, so a
test that asserts on them reads the same here.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

_COMMENT = re.compile(r'\(.*?\)', re.DOTALL)
_LINK = re.compile(r'<(.*?)>')
_BETWEEN = re.compile(r'>(.*?)<', re.DOTALL)
_JOIN = re.compile(r'\s*,\s*')
_MAILTO = re.compile(r'mailto:[a-zA-Z0-9]')
_HTTP = re.compile(r'https?://[a-zA-Z0-9]', re.IGNORECASE)


def list_unsubscribe(header: str, post: str) -> dict[str, Any]:
    """Mailpit's ListUnsubscribe: Header, Links, Errors, HeaderPost.

    Without a List-Unsubscribe header everything is empty (HeaderPost too,
    as Mailpit reports it only beside a List-Unsubscribe)."""
    if not header:
        return {'Header': '', 'Links': [], 'Errors': '', 'HeaderPost': ''}
    links, errors = parse_links(header)
    return {'Header': header, 'Links': links, 'Errors': ', '.join(errors), 'HeaderPost': post}


def parse_links(value: str) -> tuple[list[str], list[str]]:
    """(links that pass, the rules broken) for one List-Unsubscribe value."""
    value = value.strip()
    for comment in _COMMENT.findall(value):
        value = value.replace(comment, '').strip()
    if not _LINK.search(value):
        return [], [f'"{value}" no valid unsubscribe links found']
    if not (value.startswith('<') and value.endswith('>')):
        return [], [f'"{value}" should be enclosed in <>']
    found = _LINK.findall(value)
    if len(found) > 2:
        return [], [f'"{value}" should include a maximum of one email and one HTTP link']
    if any(not _JOIN.fullmatch(gap) for gap in _BETWEEN.findall(value)):
        return [], [f'"{value}" <> should be split with a comma and optional spaces']
    links: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    for link in found:
        problem = _problem(link, seen)
        if problem:
            errors.append(problem)
        else:
            links.append(link)
    return links, errors


def _problem(link: str, seen: set[str]) -> str | None:
    """What is wrong with one link (None: nothing); `seen` notes its kind."""
    if re.search(r'\s', link):
        return f'"{link}" should not contain spaces'
    if _MAILTO.match(link):
        kind = 'mailto'
    elif _HTTP.match(link):
        kind = 'http'
    else:
        return f'"{link}" should start with either http(s):// or mailto:'
    if kind in seen:
        return (f'"{link}" should only contain one mailto:' if kind == 'mailto'
                else f'"{link}" should only contain one HTTP link')
    seen.add(kind)
    try:
        urlsplit(link)
    except ValueError as exc:       # a broken [IPv6] host, say
        return f'parse "{link}": {exc}'
    return None
