"""Tags on messages, with Mailpit's rules (internal/storage/tags.go, internal/tools/tags.go).

- A tag is 1 to 100 of `a-z A-Z 0-9 - _ . @` and spaces; other characters
  become spaces, runs of spaces one, the ends are trimmed. Names are
  unique without regard to case: `Urgent` and `urgent` are one tag, which
  keeps the casing it was first given.
- A message gets tags as it arrives from its `X-Tags` field (a comma list;
  `POST /api/v1/send` writes its `Tags` there) and from plus-addresses in
  From, To, Cc and Bcc (`ann+signup+eu@example.com` gives `signup` and
  `eu`): both are on by default in Mailpit, and here they are always on.
  Mailpit's `--tag` rules and its options to turn these off are not here.
- `PUT /api/v1/tags` replaces a message's tags; a tag no message carries
  any more is gone (a trigger of the schema deletes it), as Mailpit prunes.

The pure rules come first; the SQL helpers take a connection inside one
of the store's transactions.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

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


def message_addresses(fields: dict[str, Any]) -> list[str]:
    """The addresses plus-address tags come from: To, Cc, Bcc, then From."""
    found = [a['Address'] for key in ('To', 'Cc', 'Bcc') for a in fields[key]]
    if fields.get('From'):
        found.append(fields['From']['Address'])
    return found


# -- in the database (inside one transaction of the store) ---------------------------------

def set_message_tags(db: sqlite3.Connection, row_id: int, names: Iterable[str]) -> list[str]:
    """Make the message's tags exactly `names` (cleaned); the names applied.

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
        db.execute('INSERT OR IGNORE INTO tags (name) VALUES (?)', (name,))
        db.execute('INSERT OR IGNORE INTO message_tags (message, tag)'
                   ' SELECT ?, id FROM tags WHERE name = ?', (row_id, name))
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


def all_tags(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute('SELECT name FROM tags ORDER BY name')]


def tag_counts(db: sqlite3.Connection) -> dict[str, int]:
    """{tag: how many messages carry it} (`Tags` of /api/v1/info)."""
    return dict(db.execute('SELECT t.name, count(mt.message) FROM tags t LEFT JOIN'
                           ' message_tags mt ON mt.tag = t.id GROUP BY t.id ORDER BY t.name'))


def rename_tag(db: sqlite3.Connection, old: str, new: str) -> bool:
    """Rename a tag on every message; False when nothing changed. TagError
    (Mailpit's texts) for a bad new name, an unknown tag or a name in use."""
    name = clean_tag(new)
    if not name:
        raise TagError(f'invalid tag name: {name}')
    if old == name:
        return False
    row = db.execute('SELECT id FROM tags WHERE name = ?', (old,)).fetchone()
    if row is None:
        raise TagError(f'tag not found: {old}')
    if db.execute('SELECT 1 FROM tags WHERE name = ? AND id != ?', (name, row[0])).fetchone():
        raise TagError(f'tag already exists: {name}')
    db.execute('UPDATE tags SET name = ? WHERE id = ?', (name, row[0]))
    return True


def delete_tag(db: sqlite3.Connection, name: str) -> None:
    """Take a tag off every message (the messages stay); TagError if unknown."""
    row = db.execute('SELECT id FROM tags WHERE name = ?', (name,)).fetchone()
    if row is None:
        raise TagError(f'tag not found: {name}')
    db.execute('DELETE FROM message_tags WHERE tag = ?', row)
    db.execute('DELETE FROM tags WHERE id = ?', row)
