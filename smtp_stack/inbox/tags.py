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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .search import QueryError, compile_query

MAX_TAG = 100


class TagError(ValueError):
    """A tag change refused (Mailpit's text: unknown tag, bad or taken name)."""

_INVALID = re.compile(r'[^a-zA-Z0-9\- _.@]')
_SPACES = re.compile(r'\s+')
_PLUS = re.compile(r'[^+]*\+(.*?)@')


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


def arrival_tags(x_tags: str | None, addresses: Iterable[str]) -> list[str]:
    """The tags a message gets as it arrives, sorted (Mailpit sorts them)."""
    names = x_tags.strip().split(',') if x_tags and x_tags.strip() else []
    for address in addresses:
        match = _PLUS.match(address)
        if match:
            names.extend(match.group(1).split('+'))
    return sorted(unique_tags(names))


@dataclass(frozen=True)
class TagRule:
    """Tags for the new messages a search finds (Mailpit's tag filters)."""
    tags: tuple[str, ...]
    query: str
    where: str
    params: tuple[str | float, ...]

    @classmethod
    def of(cls, tags: Iterable[str], query: str) -> TagRule:
        """ValueError for a rule without tags or a query the search refuses."""
        names = tuple(unique_tags(tags))
        if not names or not query.strip():
            raise ValueError(f'a tag rule needs tags and a query: {",".join(tags)}={query}')
        try:
            where, params = compile_query(query)
        except QueryError as exc:
            raise ValueError(f'tag rule {query!r}: {exc}') from None
        return cls(names, query, where, tuple(params))


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


def rule_tags(db: sqlite3.Connection, row_id: int, rules: Sequence[TagRule]) -> list[str]:
    """The tags of the rules whose query finds the message `row_id`."""
    found: list[str] = []
    for rule in rules:
        if db.execute(f'SELECT 1 FROM messages m WHERE m.id = ? AND ({rule.where})',
                      (row_id, *rule.params)).fetchone():
            found.extend(rule.tags)
    return found


def message_addresses(fields: dict[str, Any]) -> list[str]:
    """The addresses plus-address tags come from: To, Cc, Bcc, then From."""
    found = [a['Address'] for key in ('To', 'Cc', 'Bcc') for a in fields[key]]
    if fields.get('From'):
        found.append(fields['From']['Address'])
    return found


# -- in the database (inside one transaction of the store) ---------------------------------

def set_message_tags(db: sqlite3.Connection, row_id: int, names: Iterable[str],
                     mailbox: str = '') -> list[str]:
    """Make the message's tags exactly `names` (cleaned), tags of its
    `mailbox`; the names applied.

    Tags it keeps are left alone (their casing too); tags no message
    carries any more are deleted by the schema's trigger."""
    wanted = unique_tags(names)
    current = {name.lower(): tag_id for tag_id, name in db.execute(
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
