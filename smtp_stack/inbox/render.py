"""The stored fields of a message, as the JSON objects of Mailpit's API.

Pure. The store keeps what parse.py computed at arrival (the list fields as
`summary`, the rest as `detail`); these functions give them the shapes
Mailpit's handlers write, field for field and in its order, so a client
comparing with Mailpit sees the same JSON. Shaping at read time, not at
arrival, also serves messages stored by an earlier version unchanged.

Mailpit's shapes differ by where an object is seen, and clients test them:

- in a list (`MessageSummary` of /api/v1/messages and /search): an empty
  To, Cc or Bcc is `null` (Mailpit keeps them with `omitempty`), ReplyTo
  `[]`, `Username` always there ("" without AUTH), no `ListUnsubscribe`;
- in the `new` websocket event: the same object with every list `[]`;
- the message itself (`Message` of /api/v1/message/{ID}): every list `[]`,
  no `Read` and no `Created` (reading it marks it read), `Date`,
  `ReturnPath`, `Text`, `HTML`, parts and `ListUnsubscribe`.

A message without a From has `{"Name": "", "Address": ""}`, as Mailpit's.
"""
from __future__ import annotations

from typing import Any

from .parse import list_unsubscribe

Json = dict[str, Any]
NOBODY = {'Name': '', 'Address': ''}


def list_item(summary: Json, read: bool, tags: list[str], *, event: bool = False) -> Json:
    """Mailpit's MessageSummary (an element of `messages`, or a `new` event's Data)."""
    def people(key: str, empty: Any) -> Any:
        return summary.get(key) or empty
    lists_empty: Any = [] if event else None
    return {
        'ID': summary['ID'],
        'MessageID': summary['MessageID'],
        'Read': read,
        'From': summary.get('From') or dict(NOBODY),
        'To': people('To', lists_empty),
        'Cc': people('Cc', lists_empty),
        'Bcc': people('Bcc', lists_empty),
        'ReplyTo': people('ReplyTo', []),
        'Subject': summary['Subject'],
        'Created': summary['Created'],
        'Username': summary.get('Username') or '',
        'Tags': tags,
        'Size': summary['Size'],
        'Attachments': summary['Attachments'],
        'Snippet': summary['Snippet'],
    }


def message(summary: Json, detail: Json, tags: list[str]) -> Json:
    """Mailpit's Message (GET /api/v1/message/{ID})."""
    unsubscribe = detail.get('ListUnsubscribe') or list_unsubscribe('', '')
    return {
        'ID': summary['ID'],
        'MessageID': summary['MessageID'],
        'From': summary.get('From') or dict(NOBODY),
        'To': summary.get('To') or [],
        'Cc': summary.get('Cc') or [],
        'Bcc': summary.get('Bcc') or [],
        'ReplyTo': summary.get('ReplyTo') or [],
        'ReturnPath': detail.get('ReturnPath') or (summary.get('From') or NOBODY)['Address'],
        'Subject': summary['Subject'],
        'ListUnsubscribe': unsubscribe,
        'Date': detail['Date'],
        'Tags': tags,
        'Username': summary.get('Username') or '',
        'Text': detail['Text'],
        'HTML': detail['HTML'],
        'Size': summary['Size'],
        'Inline': detail['Inline'],
        'Attachments': detail['Attachments'],
    }
