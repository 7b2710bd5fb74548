"""Header fields read as `email.policy.default` reads them, at a fraction of its cost.

Pure. The default policy parses a field into a token tree on every read
(RFC 5322 and RFC 2047 in pure Python: a quarter of a millisecond for one
address field) and makes a new header class each time. The inbox reads a
dozen fields of each message once, at arrival, and wants exactly what
the default policy answers: so each reader here answers a *plain* value
itself and hands anything else to the default policy's own parser.

Plain: printable ASCII and tabs, no encoded word (`=?`, RFC 2047), no
quoted pair (`\\`), no comment (`(`), quotes in pairs; for the MIME
fields, the RFC 2045 shape `type/subtype; name=value` with no RFC 2231
parameter (`name*=`). For such a value the default policy's answer is the
value itself (unstructured fields), or what a regular expression reads of
its common form (addresses, Message-ID), or what the compat32 reading of
the same field gives (Content-Type, -Disposition, -Transfer-Encoding).
tests/test_inbox_parse_same.py holds both readings to the same answers
on generated values and messages.

`POLICY` is `email.policy.default` with each header class made once:
`HeaderRegistry` builds a new class per read, always an equal one.
"""
from __future__ import annotations

import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email import headerregistry
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime, unquote
from typing import Any, TypeVar

T = TypeVar('T')


class _Registry(headerregistry.HeaderRegistry):
    """HeaderRegistry with one class per field name instead of one per read."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[headerregistry.BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[headerregistry.BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


POLICY = email.policy.default.clone(header_factory=_Registry())

_LINE_ENDS = re.compile(r'[\r\n]')
_PRINTABLE = re.compile(r'[\t\x20-\x7e]*')
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf'{_ATEXT}+(?:\.{_ATEXT}+)*'
_ADDR_SPEC = rf'{_DOT_ATOM}@{_DOT_ATOM}'
# One mailbox of the common forms: addr-spec, <addr-spec>, phrase <addr-spec>,
# "quoted phrase" <addr-spec> (RFC 5322 3.4), with the spaces around it.
_MAILBOX = re.compile(
    rf'[ \t]*(?:(?P<bare>{_ADDR_SPEC})'
    rf'|(?:(?P<phrase>{_ATEXT}+(?:[ \t]+{_ATEXT}+)*)|"(?P<quoted>[^"]*)")?'
    rf'[ \t]*<(?P<angled>{_ADDR_SPEC})>)[ \t]*')
_MESSAGE_ID = re.compile(rf'[ \t]*<{_ADDR_SPEC}>[ \t]*')
# RFC 2045 token without '*' and "'" (the default policy reads a'b as RFC 2231's)
_TOKEN = r"[!#$%&+\-.^_`|~0-9A-Za-z]+"
_PARAMETER = rf';[ \t]*({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|"[^"]*")[ \t]*'
_MIME = re.compile(rf'[ \t]*({_TOKEN}(?:/{_TOKEN})?)[ \t]*((?:{_PARAMETER})*)')
_PARAMETERS = re.compile(_PARAMETER)
# the fields that decide a part's type, file name, charset and transfer
# encoding, read through the compat32 methods of `Message` when plain
MIME_FIELDS = frozenset({'content-type', 'content-disposition',
                         'content-transfer-encoding', 'content-id'})


def unfold(value: str) -> str:
    """What the default policy reads of a stored value: CR and LF taken out."""
    return _LINE_ENDS.sub('', value) if '\r' in value or '\n' in value else value


def plain(value: str) -> bool:
    """Printable ASCII without encoded words, quoted pairs, comments or an odd quote."""
    return (_PRINTABLE.fullmatch(value) is not None and '=?' not in value
            and '\\' not in value and '(' not in value and value.count('"') % 2 == 0)


def plain_mime(name: str, value: str) -> bool:
    """Whether compat32's reading of this MIME field is the default policy's."""
    if not plain(value):
        return False
    if name == 'content-id':
        return True
    return _MIME.fullmatch(value) is not None


@dataclass(frozen=True)
class MimeFacts:
    """What the inbox reads of a part's MIME fields, as `Message`'s methods
    give it: get_content_type(), get_content_disposition(), get_filename(),
    the Content-ID, and (a text part's) get_param('charset', 'ASCII')
    and get_boundary(), None where the part's own methods are to be asked."""
    content_type: str
    disposition: str | None
    filename: str | None
    content_id: str
    charset: str | None = None
    boundary: str | None = None


def mime_facts(part: Message) -> MimeFacts:
    """A part's facts through its methods (either policy)."""
    value = safe(lambda: part.get('Content-ID'))
    return MimeFacts(part.get_content_type(), part.get_content_disposition(),
                     safe(part.get_filename), str(value) if value is not None else '')


def plain_mime_facts(part: Message) -> MimeFacts:
    """The facts of a part whose MIME fields are plain and unfolded
    (unfold_mime_fields), read here as compat32's methods read them, in one
    pass: those methods scan the fields and split the parameters on every
    call (a dozen per part)."""
    facts = facts_of_fields(first_fields(part.raw_items()), part.get_default_type())
    return facts if facts is not None else mime_facts(part)


def facts_of_fields(first: dict[str, str], default_type: str) -> MimeFacts | None:
    """A part's facts from {lower-case name: first value} of its plain,
    unfolded MIME fields, as compat32's methods read them; None for a part
    whose type or disposition is itself named like a parameter asked for
    (`Content-Type: charset; ...`): the methods' answer then depends on the
    default asked, so ask them."""
    kind = first.get('content-type')
    disposition = first.get('content-disposition')
    type_head, type_params = _mime(kind) if kind is not None else ('', {})
    disposition_head, disposition_params = _mime(disposition) if disposition is not None \
        else ('', {})
    if {type_head, disposition_head} & {'filename', 'name', 'charset', 'boundary'}:
        return None
    if kind is None:
        content_type = default_type
    else:
        content_type = type_head if type_head.count('/') == 1 else 'text/plain'
    filename = disposition_params.get('filename')
    if filename is None:
        filename = type_params.get('name')
    boundary = type_params.get('boundary')
    return MimeFacts(content_type, disposition_head if disposition is not None else None,
                     unquote(filename).strip() if filename is not None else None,
                     first.get('content-id', ''), type_params.get('charset', 'ASCII'),
                     # get_boundary() unquotes get_param's value once more
                     unquote(boundary).rstrip() if boundary is not None else None)


def _mime(value: str) -> tuple[str, dict[str, str]]:
    """(the value before its parameters, lower case; {name: value}) of a
    plain MIME field, each parameter's first value unquoted as get_param
    gives it."""
    match = _MIME.fullmatch(value)
    if match is None:
        raise ValueError(f'not a plain MIME field: {value!r}')
    params: dict[str, str] = {}
    for name, found in _PARAMETERS.findall(match[2]):
        params.setdefault(name.lower(), unquote(found))
    return match[1].lower(), params


def unfold_mime_fields(part: Message) -> bool:
    """Unfold the MIME fields of `part` in place (as the default policy
    unfolds what it reads); whether they are all plain."""
    fields: list[tuple[str, Any]] = vars(part)['_headers']
    every_plain = True
    for i, (name, value) in enumerate(fields):
        lower = name.lower()
        if lower in MIME_FIELDS:
            if not isinstance(value, str):
                return False
            if lower == 'content-type' and '"' in value and ('\r' in value or '\n' in value):
                return False    # compat32 split by it with the line break inside the quotes
            value = unfold(value)
            fields[i] = (name, value)
            every_plain = every_plain and plain_mime(lower, value)
    return every_plain


def first_fields(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{lower-case name: the first such field's stored value} of a part's
    `raw_items()`."""
    found: dict[str, str] = {}
    for name, value in fields:
        found.setdefault(name.lower(), value)
    return found


def safe(fn: Callable[[], T]) -> T | None:
    """Headers of real-world mail can be broken in ways the parser raises on."""
    try:
        return fn()
    except Exception:        # noqa: BLE001 - a broken header is an empty one here
        return None


def parsed(name: str, value: str) -> Any:
    """The default policy's header object for a stored value (may raise)."""
    return POLICY.header_fetch_parse(name, value)


def unstructured(name: str, value: str | None) -> str:
    """`str(msg[name])` under the default policy ('' when absent or broken)."""
    if value is None:
        return ''
    value = unfold(value)
    if plain(value):
        return value
    header = safe(lambda: parsed(name, value))
    return str(header) if header is not None else ''


def message_id(value: str | None) -> str:
    """`str(msg['Message-ID'])` under the default policy."""
    if value is not None and _MESSAGE_ID.fullmatch(unfold(value)):
        return unfold(value)
    if value is None:
        return ''
    header = safe(lambda: parsed('Message-ID', value))
    return str(header) if header is not None else ''


def addresses(name: str, values: list[str]) -> list[dict[str, str]]:
    """The addresses of the first field `name` of `values` (every such
    field, in order), as the default policy's `msg[name].addresses` give
    them; when it cannot read them, the lenient parser's reading of all
    of them (email.utils.getaddresses), as the inbox always did. Those
    without name and address are left out."""
    if not values:
        return []
    first = unfold(values[0])
    found = mailboxes(first) if plain(first) else None
    if found is None:
        found = safe(lambda: _parsed_addresses(name, values[0]))
    if found is None:
        raw = [str(v) for v in (safe(lambda: [parsed(name, v) for v in values]) or [])]
        found = [{'Name': n, 'Address': a} for n, a in getaddresses(raw) if a]
    return [a for a in found if a['Address'] or a['Name']]


def _parsed_addresses(name: str, value: str) -> list[dict[str, str]]:
    return [{'Name': a.display_name or '', 'Address': a.addr_spec or ''}
            for a in parsed(name, value).addresses]


def mailboxes(value: str) -> list[dict[str, str]] | None:
    """A plain list of mailboxes of the common forms, or None (not one)."""
    if not value.strip():
        return []
    found = []
    for item in value.split(','):
        match = _MAILBOX.fullmatch(item)
        if match is None:
            return None
        if match['bare']:
            found.append({'Name': '', 'Address': match['bare']})
            continue
        quoted = match['quoted']
        if quoted is not None and (',' in quoted or quoted != quoted.strip()):
            return None     # the parser's own reading (a comma split it here)
        name = quoted if quoted is not None else ' '.join((match['phrase'] or '').split())
        found.append({'Name': name, 'Address': match['angled']})
    return found


def date(value: str | None) -> datetime | None:
    """The moment of a Date field as `parsedate_to_datetime(str(msg['Date']))`
    gives it under the default policy, None when there is none. (Its
    DateHeader writes the parsed date out again with format_datetime,
    which parsedate_to_datetime reads back as the same moment and offset.)"""
    if not value:
        return None
    try:
        return parsedate_to_datetime(unfold(value))
    except Exception:       # noqa: BLE001 - an unreadable Date is none
        return None
