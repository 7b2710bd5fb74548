"""Mailpit's search syntax, compiled to an SQL condition over the store.

Pure: a query string in, `(sql, params)` out. The syntax (Mailpit's
"search filters"):

    words and "quoted phrases"       anywhere: subject, addresses, body, file names
    from: to: cc: bcc: reply-to:     in that header's names and addresses
    addressed:                       in To, Cc or Bcc
    subject: message-id: filename:   in that field
    is:read  is:unread  has:attachment  has:inline  is:tagged  tag:NAME
    after:YYYY-MM-DD  before:YYYY-MM-DD   received (UTC) on/after, before that day
    -term  !term                     negation of any of the above

Every term must hold (AND), as in Mailpit. Values may be quoted
(`subject:"two words"`). Matching is case-insensitive and by substring, as
Mailpit's is: the index is an FTS5 table with the trigram tokenizer, so a
term of three or more characters is an indexed MATCH; shorter ones fall
back to LIKE on the same table. An unterminated quote runs to the end
(Mailpit is lenient too); an unknown `name:` is an ordinary word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

MAX_QUERY = 1000            # characters; longer queries are a 400
MAX_TERMS = 32

# filter name -> columns of the FTS table it searches (None, no filter: all of them)
TEXT_FIELDS: dict[str | None, tuple[str, ...]] = {
    'from': ('sender',),
    'to': ('to_',),
    'cc': ('cc',),
    'bcc': ('bcc',),
    'reply-to': ('reply_to',),
    'addressed': ('to_', 'cc', 'bcc'),
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
    ('is', 'tagged'): '0',          # no tags here: nothing is tagged
}


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
        if field and field not in TEXT_FIELDS and field not in ('is', 'has', 'tag', 'after',
                                                                 'before'):
            value = f'{match.group("field")}:{value}'   # "http://x" is a word
            field = None
        if field is None and (not value.strip() or value in ('-', '!')):
            continue        # nothing to look for: a lone '-' or an empty phrase
        terms.append(Term(field, value, bool(match.group('neg'))))
    if len(terms) > MAX_TERMS:
        raise QueryError(f'more than {MAX_TERMS} search terms')
    return terms


def compile_query(query: str) -> tuple[str, list[str | float]]:
    """(`sql`, params): a condition on `messages m`; '1' for an empty query."""
    parts: list[str] = []
    params: list[str | float] = []
    for term in tokenize(query):
        sql, values = _condition(term)
        parts.append(f'NOT ({sql})' if term.negated else f'({sql})')
        params.extend(values)
    return (' AND '.join(parts) or '1'), params


def _condition(term: Term) -> tuple[str, list[str | float]]:
    if term.field in ('is', 'has'):
        sql = FLAGS.get((term.field, term.value.lower()))
        if sql is None:
            raise QueryError(f'unknown filter {term.field}:{term.value}')
        return sql, []
    if term.field == 'tag':
        return '0', []
    if term.field in ('after', 'before'):
        day = _day(term.value)
        if term.field == 'after':
            return 'm.created_ts >= ?', [day.timestamp()]
        return 'm.created_ts < ?', [day.timestamp()]
    if not term.value:
        return '1', []
    columns = TEXT_FIELDS.get(term.field, FTS_COLUMNS)
    if len(term.value) >= 3:
        # An FTS5 string: double quotes doubled; a column filter in braces.
        phrase = '"' + term.value.replace('"', '""') + '"'
        target = '{' + ' '.join(columns) + '} : ' + phrase
        return 'm.id IN (SELECT rowid FROM search WHERE search MATCH ?)', [target]
    pattern = '%' + re.sub(r'([\\%_])', r'\\\1', term.value) + '%'
    likes = ' OR '.join(f"{c} LIKE ? ESCAPE '\\'" for c in columns)
    return f'm.id IN (SELECT rowid FROM search WHERE {likes})', [pattern] * len(columns)


def _day(value: str) -> datetime:
    try:
        return datetime.strptime(value, '%Y-%m-%d').replace(tzinfo=timezone.utc)
    except ValueError:
        raise QueryError(f'{value!r} is not a date (YYYY-MM-DD)') from None

