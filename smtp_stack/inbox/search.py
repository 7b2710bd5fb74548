"""Mailpit's search syntax, compiled to an SQL condition over the store.

Pure: a query string in, `(sql, params)` out. The syntax (Mailpit's
"search filters"):

    words and "quoted phrases"       anywhere: subject, addresses, body, file names
    from: to: cc: bcc: reply-to:     in that header's names and addresses
    addressed:                       in From, To, Cc, Bcc or Reply-To
    subject: message-id: filename:   in that field
    is:read  is:unread  is:tagged  has:attachment(s)  has:inline(s)
    tag:NAME                         carries that tag (any case)
    larger:SIZE  smaller:SIZE        10, 2.5k, 1mb (k = 1024 bytes)
    after:YYYY-MM-DD  before:YYYY-MM-DD   received on/after, before that day
                                     (UTC, or in the time zone `tz`)
    -term  !term                     negation of any of the above

Every term must hold (AND), as in Mailpit. Values may be quoted
(`subject:"two words"`). Matching is case-insensitive and by substring, as
Mailpit's is: the index is an FTS5 table with the trigram tokenizer, so a
term of three or more characters is an indexed MATCH; shorter ones fall
back to LIKE on the same table. An unterminated quote runs to the end
(Mailpit is lenient too). As in Mailpit, a `name:` that is no filter, an
`is:` or `has:` of an unknown value and a size that is not one are
ordinary words (`is:flagged` finds that text), so a client waiting for a
message never gets an error for them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_QUERY = 1000            # characters; longer queries are a 400
MAX_TERMS = 32

# filter name -> columns of the FTS table it searches (None, no filter: all of them)
TEXT_FIELDS: dict[str | None, tuple[str, ...]] = {
    'from': ('sender',),
    'to': ('to_',),
    'cc': ('cc',),
    'bcc': ('bcc',),
    'reply-to': ('reply_to',),
    'addressed': ('sender', 'to_', 'cc', 'bcc', 'reply_to'),
    'subject': ('subject',),
    'message-id': ('message_id',),
    'filename': ('filenames',),
}
FTS_COLUMNS = ('subject', 'sender', 'to_', 'cc', 'bcc', 'reply_to', 'message_id',
               'body', 'filenames')
FLAGS = {
    ('is', 'read'): 'm.read = 1',
    ('is', 'unread'): 'm.read = 0',
    ('has', 'attachment'): 'm.attachments > 0',
    ('has', 'attachments'): 'm.attachments > 0',
    ('has', 'inline'): 'm.inline > 0',
    ('has', 'inlines'): 'm.inline > 0',
    ('is', 'tagged'): 'm.id IN (SELECT message FROM message_tags)',
}
FILTERS = ('is', 'has', 'tag', 'after', 'before', 'larger', 'smaller')
_SIZE = re.compile(r'(\d+(?:\.\d+)?) ?(k|kb|m|mb)?', re.IGNORECASE)
_UNITS = {None: 1, 'k': 1024, 'kb': 1024, 'm': 1 << 20, 'mb': 1 << 20}


class QueryError(ValueError):
    """A query this inbox cannot run (the API answers 400 with the text)."""


@dataclass(frozen=True)
class Term:
    field: str | None       # None: anywhere
    value: str
    negated: bool = False


_TOKEN = re.compile(r'''
    (?P<neg>[-!])?
    (?:(?P<field>[a-z][a-z-]*):)?
    (?: "(?P<quoted>[^"]*)"? | (?P<bare>[^\s"]+) )
''', re.VERBOSE | re.IGNORECASE)


def tokenize(query: str) -> list[Term]:
    """The terms of a query, in order."""
    if len(query) > MAX_QUERY:
        raise QueryError(f'query longer than {MAX_QUERY} characters')
    if '\0' in query:
        raise QueryError('a NUL character in the query')     # FTS5 and LIKE end at it
    terms: list[Term] = []
    pos = 0
    while True:
        while pos < len(query) and query[pos].isspace():
            pos += 1
        if pos >= len(query):
            break
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:     # a lone '-' or '"'
            pos += 1
            continue
        pos = match.end()
        field = (match.group('field') or '').lower() or None
        value = match.group('quoted') if match.group('quoted') is not None else match.group('bare')
        if field and not _is_filter(field, value):
            value = f'{match.group("field")}:{value}'   # "http://x", "is:flagged": words
            field = None
        if field is None and (not value.strip() or value in ('-', '!')):
            continue        # nothing to look for: a lone '-' or an empty phrase
        terms.append(Term(field, value, bool(match.group('neg'))))
    if len(terms) > MAX_TERMS:
        raise QueryError(f'more than {MAX_TERMS} search terms')
    return terms


def _is_filter(field: str, value: str) -> bool:
    """Whether `field:value` is a filter, or else a word."""
    if field in ('is', 'has'):
        return (field, value.lower()) in FLAGS
    if field in ('larger', 'smaller'):
        return size_in_bytes(value) > 0
    return field in TEXT_FIELDS or field in FILTERS


def size_in_bytes(value: str) -> int:
    """Mailpit's sizes: '10' bytes, '2.5k' or '2.5kb', '1m' or '1mb'; 0 if not one."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        return 0
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _UNITS[unit])


def compile_query(query: str, tz: str | None = None, *,
                  one_row: str | None = None) -> tuple[str, list[str | float]]:
    """(`sql`, params): a condition on `messages m`; '1' for an empty query.
    `tz` (an IANA name) is the zone of after:/before: days; unknown: UTC.

    `one_row`: the condition for a single message, the index being the
    FTS table of that name holding the message's row (a tag rule checks
    the new message so, tags.py): each term is a lookup by `m.id`, where
    the list's form reads every match of the term (for `m.id IN (...)`),
    which grows with the number stored."""
    zone = _zone(tz)
    parts: list[str] = []
    params: list[str | float] = []
    for term in tokenize(query):
        sql, values = term_condition(term, zone, one_row)
        parts.append(f'NOT ({sql})' if term.negated else f'({sql})')
        params.extend(values)
    return (' AND '.join(parts) or '1'), params


def term_columns(term: Term) -> tuple[str, ...]:
    """The FTS columns a word or text filter looks in; () for other filters."""
    if term.field is None or term.field in TEXT_FIELDS:
        return TEXT_FIELDS.get(term.field, FTS_COLUMNS)
    return ()


def term_condition(term: Term, zone: tzinfo = timezone.utc,
                   one_row: str | None = None) -> tuple[str, list[str | float]]:
    """One term's condition (its negation left to the caller); `one_row`
    as for compile_query."""
    if term.field in ('is', 'has'):
        if one_row is not None and (term.field, term.value.lower()) == ('is', 'tagged'):
            return 'EXISTS (SELECT 1 FROM message_tags WHERE message = m.id)', []
        return FLAGS[(term.field, term.value.lower())], []
    if term.field == 'tag':
        if one_row is not None:
            return ('EXISTS (SELECT 1 FROM message_tags mt JOIN tags t ON t.id = mt.tag'
                    ' WHERE mt.message = m.id AND t.name = ?)'), [term.value.strip()]
        return ('m.id IN (SELECT mt.message FROM message_tags mt JOIN tags t'
                ' ON t.id = mt.tag WHERE t.name = ?)'), [term.value.strip()]
    if term.field in ('larger', 'smaller'):
        return f'm.size {">" if term.field == "larger" else "<"} ?', [size_in_bytes(term.value)]
    if term.field in ('after', 'before'):
        day = _day(term.value, zone)
        if term.field == 'after':
            return 'm.created_ts >= ?', [day.timestamp()]
        return 'm.created_ts < ?', [day.timestamp()]
    if not term.value:
        return '1', []
    columns = TEXT_FIELDS.get(term.field, FTS_COLUMNS)
    index = one_row or 'search'
    if len(term.value) >= 3:
        # An FTS5 string: double quotes doubled; a column filter in braces.
        phrase = '"' + term.value.replace('"', '""') + '"'
        target = '{' + ' '.join(columns) + '} : ' + phrase
        if one_row is not None:
            return (f'EXISTS (SELECT 1 FROM {index} WHERE {index} MATCH ?'
                    ' AND rowid = m.id)'), [target]
        return 'm.id IN (SELECT rowid FROM search WHERE search MATCH ?)', [target]
    pattern = '%' + re.sub(r'([\\%_])', r'\\\1', term.value) + '%'
    likes = ' OR '.join(f"{c} LIKE ? ESCAPE '\\'" for c in columns)
    if one_row is not None:
        return (f'EXISTS (SELECT 1 FROM {index} WHERE rowid = m.id AND ({likes}))',
                [pattern] * len(columns))
    return f'm.id IN (SELECT rowid FROM search WHERE {likes})', [pattern] * len(columns)


def _day(value: str, zone: tzinfo) -> datetime:
    try:
        return datetime.strptime(value, '%Y-%m-%d').replace(tzinfo=zone)
    except ValueError:
        raise QueryError(f'{value!r} is not a date (YYYY-MM-DD)') from None


def _zone(name: str | None) -> tzinfo:
    """The zone named `tz`; UTC without one, or for a name that is none
    (Mailpit ignores a bad `tz` too)."""
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return timezone.utc

