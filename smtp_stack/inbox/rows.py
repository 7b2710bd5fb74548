"""A new message's rows, shaped from its fields (parse.py): the list entry
stored as `messages.summary`, the words of its search index row, and the
time it arrived.

Pure: dicts in, dicts and strings out.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .parse import html_to_text

Json = dict[str, Any]


def list_item(uid: str, fields: Json, username: str | None) -> Json:
    """The list fields as stored (`messages.summary`); render.list_item shapes them."""
    item = {
        'ID': uid,
        'MessageID': fields['MessageID'],
        'From': fields['From'],
        'To': fields['To'],
        'Cc': fields['Cc'],
        'Bcc': fields['Bcc'],
        'ReplyTo': fields['ReplyTo'],
        'Subject': fields['Subject'],
        'Created': fields['Created'],
        'Tags': [],
        'Size': fields['Size'],
        'Attachments': len(fields['Attachments']),
        'Snippet': fields['Snippet'],
    }
    if username:
        item['Username'] = username
    return item


def people(addresses: Iterable[Json | None] | None) -> str:
    return ' '.join(f'{a["Name"]} <{a["Address"]}>' for a in addresses or () if a)


def index_row(fields: Json) -> tuple[str, ...]:
    files = ' '.join(p['FileName'] for p in fields['Attachments'] + fields['Inline'])
    body = fields['Text'] + '\n' + html_to_text(fields['HTML'])
    return (fields['Subject'], people([fields['From']] if fields['From'] else []),
            people(fields['To']), people(fields['Cc']), people(fields['Bcc']),
            people(fields['ReplyTo']), fields['MessageID'], body, files)


def arrival_time(moment: datetime | None) -> datetime | None:
    """A Date field's moment as an arrival time, None when UTC cannot hold it
    (year 9999 at a negative offset): the arrival is then the time it came."""
    try:
        return moment.astimezone(timezone.utc) if moment is not None else None
    except OverflowError:
        return None
