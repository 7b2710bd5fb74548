"""The caniemail data set: which HTML and CSS features each mail client supports.

`data/caniemail.json` is the npm package `caniemail`'s data (MIT, its
LICENSE beside it), refreshed by scripts/refresh_caniemail.py and never
edited by hand. Each feature (a `slug` such as `css-display-flex`) has
`stats[family][platform][version]`: `y`, `n`, `a` (partial) or `u`
(unknown), optionally followed by ` #N`, a note in `notes_by_num`.

A warning is built as Mailpit's htmlcheck builds it, so its numbers mean
the same: a result is `yes` for exactly `y`, `no` for exactly `n`, and
`partial` for anything else (a noted `y #1`, `a`, `u`), with the note's
number; the score is the share of the results in each class, in percent.
"""
from __future__ import annotations

import functools
import html
import json
import re
from importlib import resources
from typing import Any

Json = dict[str, Any]

_NOTE = re.compile(r' #(\d+)$')
_CODE = re.compile(r'`([^`]+)`')
_LINK = re.compile(r'\[([^\]]+)\]\((https?://[^)\s]+)\)')
_STRONG = re.compile(r'\*\*([^*]+)\*\*')


@functools.lru_cache(maxsize=1)
def data() -> Json:
    """The data set, read once per process (650 kB of JSON)."""
    where = resources.files(__package__).joinpath('data').joinpath('caniemail.json')
    text = where.read_text('utf-8')
    loaded: Json = json.loads(text)
    return loaded


@functools.lru_cache(maxsize=1)
def features() -> dict[str, Json]:
    return {feature['slug']: feature for feature in data()['data']}


@functools.lru_cache(maxsize=1)
def platforms() -> dict[str, list[str]]:
    """{platform: [the nice names of the client families on it], sorted}, over
    every feature, as Mailpit's `Platforms` (the page's client filter)."""
    family_names = data()['nicenames']['family']
    found: dict[str, set[str]] = {}
    for feature in data()['data']:
        for family, by_platform in feature['stats'].items():
            for platform in by_platform:
                found.setdefault(platform, set()).add(family_names.get(family, family))
    return {platform: sorted(names) for platform, names in found.items()}


def markdown_html(text: str) -> str:
    """caniemail's Markdown (code, links, bold: all its texts use) as HTML,
    escaped first; links open in a new window, as Mailpit renders them."""
    out = html.escape(text.strip(), quote=False)
    out = _CODE.sub(r'<code>\1</code>', out)
    out = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}" target="_blank">'
                              f'{m.group(1)}</a>', out)
    return _STRONG.sub(r'<strong>\1</strong>', out)


def warning(slug: str, found: int) -> Json:
    """Mailpit's `HTMLCheckWarning` for a feature found `found` times."""
    feature = features()[slug]
    names = data()['nicenames']
    results = []
    counts = {'yes': 0, 'no': 0, 'partial': 0}
    for family, by_platform in feature['stats'].items():
        for platform, by_version in by_platform.items():
            for version, support in by_version.items():
                verdict = {'y': 'yes', 'n': 'no'}.get(support, 'partial')
                note = _NOTE.search(support) if verdict == 'partial' else None
                counts[verdict] += 1
                results.append({
                    'Name': f"{names['family'].get(family, family)} "
                            f"{names['platform'].get(platform, platform)} ({version})",
                    'Platform': platform, 'Family': family, 'Version': version,
                    'Support': verdict, 'NoteNumber': note.group(1) if note else '',
                })
    total = sum(counts.values()) or 1
    return {
        'Slug': slug,
        'Title': feature['title'],
        'Description': markdown_html(feature.get('description') or ''),
        'URL': feature.get('url') or '',
        'Category': feature['category'],
        'Tags': feature.get('tags') or [],
        'Keywords': '',
        'Results': results,
        'NotesByNumber': {number: markdown_html(note)
                          for number, note in (feature.get('notes_by_num') or {}).items()},
        'Score': {'Found': found,
                  'Supported': counts['yes'] / total * 100,
                  'Partial': counts['partial'] / total * 100,
                  'Unsupported': counts['no'] / total * 100},
    }


def script_warning(found: int) -> Json:
    """Mailpit's own warning for <script>, which caniemail does not list."""
    return {
        'Slug': 'html-script', 'Title': '<script> element', 'Category': 'html',
        'Description': 'JavaScript is not supported in any email client.',
        'URL': '', 'Tags': [], 'Keywords': '', 'Results': [], 'NotesByNumber': {},
        'Score': {'Found': found, 'Supported': 0.0, 'Partial': 0.0, 'Unsupported': 100.0},
    }
