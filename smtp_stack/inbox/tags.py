"""Tags on messages, with Mailpit's rules (internal/storage/tags.go, internal/tools/tags.go).

- A tag is 1 to 100 of `a-z A-Z 0-9 - _ . @` and spaces; other characters
  become spaces, runs of spaces one, the ends are trimmed. Names are
  unique without regard to case: `Urgent` and `urgent` are one tag, which
  keeps the casing it was first given.
- A message gets tags as it arrives from its `X-Tags` field (a comma list;
  `POST /api/v1/send` writes its `Tags` there) and from plus-addresses in
  From, To, Cc and Bcc (`ann+signup+eu@example.com` gives `signup` and
  `eu`): both on by default, as in Mailpit, and turned off by Mailpit's
  `--tags-disable x-tags,plus-addresses`. `--tags-username` adds the SMTP
  user's name.
- Rules (`TagRule`): Mailpit's `--tag 'tag1,tag2=query ...'` (arguments
  split as a shell would, each `tags=query`, the query lower-cased) and
  `--tags-config FILE` (YAML `filters: [{match: query, tags: "a,b"}]`):
  a new message that the search `query` finds gets those tags, checked
  in the transaction that stores it, after its other tags are applied.
  The search is run on the new message alone, never on the index: asked
  of the whole index, a term reads every message it matches, a cost that
  grew with the number stored. Its words and text filters are decided in
  Python when the term and the texts are ASCII (the trigram MATCH and
  the LIKE of search.py are then a substring test with A-Z folded), else
  against a one-row FTS table of the connection's temp schema holding the
  new message's words (the same tokenizer: the same matches); its flags,
  tags, sizes and dates by the message's row id.
- `PUT /api/v1/tags` replaces a message's tags; a tag no message carries
  any more is gone (a trigger of the schema deletes it), as Mailpit prunes.
- Tags are a mailbox's own (mailboxes.py): the same name in two mailboxes
  is two tags, renamed or deleted apart; the default mailbox's are ''s.

The pure rules come first; the SQL helpers take a connection inside one
of the store's transactions.
"""
from __future__ import annotations

import re
import shlex
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .search import (FTS_COLUMNS, QueryError, Term, term_columns, term_condition,
                     tokenize)

MAX_TAG = 100
# the temp FTS table holding the new message's words while the rules are checked
ARRIVAL_INDEX = 'arrival_index'


class TagError(ValueError):
    """A tag change refused (Mailpit's text: unknown tag, bad or taken name)."""

_INVALID = re.compile(r'[^a-zA-Z0-9\- _.@]')
_SPACES = re.compile(r'\s+')
_PLUS = re.compile(r'[^+]*\+(.*?)@')
# a word of a tag, as Unicode word breaks (UAX #29) split the characters a tag
# may hold: letters, digits and `_` run on, a `.` between two of them too
_WORD = re.compile(r'[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*')


def clean_tag(name: str) -> str:
    """Mailpit's CleanTag: invalid characters to spaces, spaces collapsed."""
    return _SPACES.sub(' ', _INVALID.sub(' ', name)).strip()[:MAX_TAG]


def unique_tags(names: Iterable[str]) -> list[str]:
    """Clean names, empty ones dropped, the first of each case-insensitive name kept."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        tag = clean_tag(name)
        if tag and tag.lower() not in seen:
            seen.add(tag.lower())
            out.append(tag)
    return out


def arrival_tags(x_tags: str | None, addresses: Iterable[str],
                 title_case: bool = False) -> list[str]:
    """The tags a message gets as it arrives, sorted (Mailpit sorts them);
    `title_case` (Mailpit's --tags-title-case): each word of these tags
    begins with a capital, the rest of it as written."""
    names = x_tags.strip().split(',') if x_tags and x_tags.strip() else []
    for address in addresses:
        match = _PLUS.match(address)
        if match:
            names.extend(match.group(1).split('+'))
    if title_case:
        names = [_WORD.sub(lambda word: word[0][:1].upper() + word[0][1:], name)
                 for name in names]
    return sorted(unique_tags(names))


@dataclass(frozen=True)
class RuleTerm:
    """One term of a rule's search: the FTS columns a text term looks in
    (else ()), and its condition on one message `m` whose words are in
    ARRIVAL_INDEX (search.term_condition, its negation left out)."""
    term: Term
    columns: tuple[str, ...]
    sql: str
    params: tuple[str | float, ...]


@dataclass(frozen=True)
class TagRule:
    """Tags for the new messages a search finds (Mailpit's tag filters)."""
    tags: tuple[str, ...]
    query: str
    terms: tuple[RuleTerm, ...]

    @classmethod
    def of(cls, tags: Iterable[str], query: str) -> TagRule:
        """ValueError for a rule without tags or a query the search refuses."""
        names = tuple(unique_tags(tags))
        if not names or not query.strip():
            raise ValueError(f'a tag rule needs tags and a query: {",".join(tags)}={query}')
        try:
            terms = []
            for term in tokenize(query):
                sql, params = term_condition(term, one_row=ARRIVAL_INDEX)
                terms.append(RuleTerm(term, term_columns(term), sql, tuple(params)))
        except QueryError as exc:
            raise ValueError(f'tag rule {query!r}: {exc}') from None
        return cls(names, query, tuple(terms))


def parse_tag_rules(text: str) -> list[TagRule]:
    """Mailpit's `--tag`: 'urgent,ops="subject:alert" signup=to:signup@example.com'."""
    rules = []
    for arg in shlex.split(text):
        tags, sep, query = arg.partition('=')
        if not sep:
            raise ValueError(f'error parsing tags ({arg})')
        rules.append(TagRule.of(tags.split(','), query.strip().lower()))
    return rules


def load_tag_rules(path: str) -> list[TagRule]:
    """Mailpit's `--tags-config`: YAML `filters:`, a list of {match, tags}."""
    import yaml
    with open(path, encoding='utf-8') as f:
        conf = yaml.safe_load(f)
    filters = conf.get('filters') if isinstance(conf, dict) else None
    if not isinstance(filters, list):
        raise ValueError(f'missing filters: list in {path}')
    rules = []
    for entry in filters:
        if not isinstance(entry, dict) or not isinstance(entry.get('match'), str) \
                or not isinstance(entry.get('tags'), str):
            raise ValueError(f'{path}: each filter needs match: and tags: strings')
        rules.append(TagRule.of(entry['tags'].split(','), entry['match']))
    return rules


TAGS_DISABLE = {'x-tags': 'x-tags', 'xtags': 'x-tags', 'plus-addresses': 'plus-addresses',
                'plus-addressing': 'plus-addresses'}


def parse_tags_disable(text: str) -> frozenset[str]:
    """Mailpit's `--tags-disable x-tags,plus-addresses` -> those two names."""
    found = set()
    for part in text.lower().split(','):
        if part.strip():
            if part.strip() not in TAGS_DISABLE:
                raise ValueError(f'invalid --tags-disable option: {part.strip()}')
            found.add(TAGS_DISABLE[part.strip()])
    return frozenset(found)


def rule_tags(db: sqlite3.Connection, row_id: int, rules: Sequence[TagRule],
              words: Mapping[str, str]) -> list[str]:
    """The tags of the rules whose query finds the message `row_id`, whose
    index row (FTS column -> text) is `words`."""
    checker = _OneMessage(db, row_id, words)
    found: list[str] = []
    for rule in rules:
        if all(checker.holds(part) for part in rule.terms):
            found.extend(rule.tags)
    return found


class _OneMessage:
    """Terms checked against one new message (see the module's docstring)."""

    def __init__(self, db: sqlite3.Connection, row_id: int, words: Mapping[str, str]):
        self.db = db
        self.row_id = row_id
        self.words = words
        self.indexed = False        # its words in ARRIVAL_INDEX

    def holds(self, part: RuleTerm) -> bool:
        found = _ascii_match(part, self.words)
        if found is None:
            if part.columns and not self.indexed:
                self._index()
            found = self.db.execute(f'SELECT 1 FROM messages m WHERE m.id = ? AND ({part.sql})',
                                    (self.row_id, *part.params)).fetchone() is not None
        return found != part.term.negated

    def _index(self) -> None:
        self.db.execute(f'CREATE VIRTUAL TABLE IF NOT EXISTS temp.{ARRIVAL_INDEX} USING fts5('
                        f'{", ".join(FTS_COLUMNS)}, tokenize = \'trigram\')')
        self.db.execute(f'DELETE FROM temp.{ARRIVAL_INDEX}')
        self.db.execute(f'INSERT INTO temp.{ARRIVAL_INDEX} (rowid, {", ".join(FTS_COLUMNS)})'
                        f' VALUES (?{", ?" * len(FTS_COLUMNS)})',
                        (self.row_id, *(self.words[c] for c in FTS_COLUMNS)))
        self.indexed = True


def _ascii_match(part: RuleTerm, words: Mapping[str, str]) -> bool | None:
    """Whether a text term finds the words, when Python can say exactly as
    SQLite would (None: ask SQLite). For ASCII text without NUL both the
    trigram MATCH (three characters or more) and the LIKE (fewer) are a
    substring test with A-Z folded to a-z: FTS5's folding of other
    characters and LIKE's NUL-terminated view are what only SQLite knows."""
    if not part.columns:
        return None
    value = part.term.value
    texts = [words[column] for column in part.columns]
    if not all(text.isascii() and '\0' not in text for text in (value, *texts)):
        return None
    wanted = value.lower()
    return any(wanted in text.lower() for text in texts)


def message_addresses(fields: dict[str, Any]) -> list[str]:
    """The addresses plus-address tags come from: To, Cc, Bcc, then From."""
    found = [a['Address'] for key in ('To', 'Cc', 'Bcc') for a in fields[key]]
    if fields.get('From'):
        found.append(fields['From']['Address'])
    return found


# -- in the database (inside one transaction of the store) ---------------------------------

def set_message_tags(db: sqlite3.Connection, row_id: int, names: Iterable[str],
                     mailbox: str = '', *, untagged: bool = False) -> list[str]:
    """Make the message's tags exactly `names` (cleaned), tags of its
    `mailbox`; the names applied. `untagged`: the caller knows it has
    none yet (a message being stored), so they are not looked up.

    Tags it keeps are left alone (their casing too); tags no message
    carries any more are deleted by the schema's trigger."""
    wanted = unique_tags(names)
    current = {} if untagged else {name.lower(): tag_id for tag_id, name in db.execute(
        'SELECT t.id, t.name FROM message_tags mt JOIN tags t ON t.id = mt.tag'
        ' WHERE mt.message = ?', (row_id,))}
    keep = {name.lower() for name in wanted}
    for lowered, tag_id in current.items():
        if lowered not in keep:
            db.execute('DELETE FROM message_tags WHERE message = ? AND tag = ?', (row_id, tag_id))
    for name in wanted:
        if name.lower() in current:
            continue
        db.execute('INSERT OR IGNORE INTO tags (mailbox, name) VALUES (?, ?)', (mailbox, name))
        db.execute('INSERT OR IGNORE INTO message_tags (message, tag)'
                   ' SELECT ?, id FROM tags WHERE mailbox = ? AND name = ?',
                   (row_id, mailbox, name))
    return wanted


def tags_of(db: sqlite3.Connection, row_ids: Sequence[int]) -> dict[int, list[str]]:
    """{message row id: its tags, by name}; messages without tags are left out."""
    out: dict[int, list[str]] = {}
    for start in range(0, len(row_ids), 500):       # SQLite's variable limit
        chunk = row_ids[start:start + 500]
        marks = ','.join('?' * len(chunk))
        for message, name in db.execute(
                f'SELECT mt.message, t.name FROM message_tags mt JOIN tags t ON t.id = mt.tag'
                f' WHERE mt.message IN ({marks}) ORDER BY t.name', chunk):
            out.setdefault(message, []).append(name)
    return out


def all_tags(db: sqlite3.Connection, mailbox: str = '') -> list[str]:
    return [name for (name,) in db.execute('SELECT name FROM tags WHERE mailbox = ?'
                                           ' ORDER BY name', (mailbox,))]


def tag_counts(db: sqlite3.Connection, mailbox: str = '') -> dict[str, int]:
    """{tag: how many messages carry it} (`Tags` of /api/v1/info)."""
    return dict(db.execute('SELECT t.name, count(mt.message) FROM tags t LEFT JOIN'
                           ' message_tags mt ON mt.tag = t.id WHERE t.mailbox = ?'
                           ' GROUP BY t.id ORDER BY t.name', (mailbox,)))


def rename_tag(db: sqlite3.Connection, old: str, new: str, mailbox: str = '') -> bool:
    """Rename a tag of a mailbox on its messages; False when nothing changed.
    TagError (Mailpit's texts) for a bad new name, an unknown tag or a name in use."""
    name = clean_tag(new)
    if not name:
        raise TagError(f'invalid tag name: {name}')
    if old == name:
        return False
    row = db.execute('SELECT id FROM tags WHERE mailbox = ? AND name = ?',
                     (mailbox, old)).fetchone()
    if row is None:
        raise TagError(f'tag not found: {old}')
    if db.execute('SELECT 1 FROM tags WHERE mailbox = ? AND name = ? AND id != ?',
                  (mailbox, name, row[0])).fetchone():
        raise TagError(f'tag already exists: {name}')
    db.execute('UPDATE tags SET name = ? WHERE id = ?', (name, row[0]))
    return True


def delete_tag(db: sqlite3.Connection, name: str, mailbox: str = '') -> None:
    """Take a tag off a mailbox's messages (they stay); TagError if unknown."""
    row = db.execute('SELECT id FROM tags WHERE mailbox = ? AND name = ?',
                     (mailbox, name)).fetchone()
    if row is None:
        raise TagError(f'tag not found: {name}')
    db.execute('DELETE FROM message_tags WHERE tag = ?', row)
    db.execute('DELETE FROM tags WHERE id = ?', row)
