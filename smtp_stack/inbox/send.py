"""`POST /api/v1/send`: a message made from Mailpit's JSON send request.

Pure: the request's JSON object in, the message's bytes and its envelope
out; the handler stores it as if it had come over SMTP (the store writes
Return-Path, Message-ID and Bcc as for any arrival, arrival.py).

The request and its rules are Mailpit's (server/apiv1/send.go and the
enmime builder it uses):

    {"From": {"Email": "a@example.com", "Name": "Ann"},          required
     "To": [{"Email", "Name"}], "Cc": [...], "Bcc": ["b@example.com"],
     "ReplyTo": [{"Email", "Name"}], "Subject": "...",
     "Text": "...", "HTML": "...",
     "Attachments": [{"Content": BASE64, "Filename": "a.pdf",
                      "ContentType": "application/pdf", "ContentID": "logo"}],
     "Headers": {"X-Name": "value"}, "Tags": ["a", "b"]}

- At least one of To, Cc and Bcc; every address valid; the envelope
  sender is From's Email and the recipients are To, Cc and Bcc.
- The message is multipart/mixed (attachments) around multipart/related
  (attachments with a ContentID, referred to as `cid:` from the HTML)
  around multipart/alternative (Text, HTML), each level only when needed;
  there is always a text part, empty if no Text was given.
- `Tags` become an `X-Tags` field, which tags the message as it is stored.
- `Headers` may not set To, From, Cc, Bcc, Reply-To, Date, Subject,
  Content-Type, MIME-Version (nor X-Tags with Tags): Mailpit's list.
- `Content` may carry a `data:...;base64,` prefix; a ContentType left out
  is guessed from the file name, then from the first bytes.

Each mistake is a `SendError` with Mailpit's wording; the handler answers
it as `400 {"Error": "..."}`, as Mailpit does.
"""
from __future__ import annotations

import base64
import binascii
import email.policy
import mimetypes
import re
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import Any

RESTRICTED = {'to', 'from', 'cc', 'bcc', 'reply-to', 'date', 'subject', 'content-type',
              'mime-version'}
_FIELD_NAME = re.compile(r'[!-9;-~]+')      # RFC 5322 3.6.8: printable ASCII but ':'
_MAGIC = ((b'\x89PNG\r\n\x1a\n', 'image/png'), (b'\xff\xd8\xff', 'image/jpeg'),
          (b'GIF8', 'image/gif'), (b'%PDF-', 'application/pdf'), (b'PK\x03\x04', 'application/zip'))


class SendError(ValueError):
    """A send request Mailpit would refuse (the text is the 400's Error)."""


def build(request: dict[str, Any]) -> tuple[bytes, str, list[str]]:
    """(the message, the envelope sender, the envelope recipients)."""
    sender = _person(request.get('From'), 'From')
    if sender is None or not sender.addr_spec:
        raise SendError('error building message: from not set')
    to = _people(request, 'To')
    cc = _people(request, 'Cc')
    bcc = [_address(value, 'Bcc') for value in _list(request, 'Bcc')]
    if not to and not cc and not bcc:
        raise SendError('error building message: no recipients (to, cc, bcc) set')
    try:
        message = _body(request)
        _header_fields(message, request, sender, to, cc)
    except SendError:
        raise
    except (ValueError, TypeError) as exc:      # a header with a line end, say
        raise SendError(f'error building message: {exc}') from None
    recipients = [a.addr_spec for a in to + cc] + bcc
    return message.as_bytes(), sender.addr_spec, recipients


def _header_fields(message: EmailMessage, request: dict[str, Any], sender: Address,
                   to: list[Address], cc: list[Address]) -> None:
    message['MIME-Version'] = '1.0'
    message['From'] = sender
    message['Subject'] = _text(request, 'Subject')
    if to:
        message['To'] = to
    if cc:
        message['Cc'] = cc
    reply_to = _people(request, 'ReplyTo')
    if reply_to:
        message['Reply-To'] = reply_to
    message['Date'] = format_datetime(datetime.now().astimezone())
    restricted = set(RESTRICTED)
    tags = [str(tag) for tag in _list(request, 'Tags')]
    if tags:
        message['X-Tags'] = ', '.join(tags)
        restricted.add('x-tags')
    headers = request.get('Headers') or {}
    if not isinstance(headers, dict):
        raise SendError('Headers must be an object of names and values')
    for name, value in headers.items():
        if name.lower() in restricted:
            raise SendError(f'cannot overwrite header: "{name}"')
        if not _FIELD_NAME.fullmatch(name) or not isinstance(value, str):
            raise SendError(f'invalid header: "{name}"')
        message[name] = value


def _body(request: dict[str, Any]) -> EmailMessage:
    """The MIME tree, in Mailpit's order (so parts get the IDs they get there):
    mixed(related(alternative(text, html), inline files), attachments)."""
    files = [_attachment(item) for item in _list(request, 'Attachments')]
    inline = [_file(*f) for f in files if f[3]]
    attached = [_file(*f) for f in files if not f[3]]
    html = _text(request, 'HTML')
    levels = [('alternative', [_file_text(html, 'html')] if html else []),
              ('related', inline), ('mixed', attached)]
    root = _file_text(_text(request, 'Text'), 'plain')
    for subtype, siblings in levels:
        if siblings:
            container = MIMEPart(policy=email.policy.SMTP)
            container['Content-Type'] = f'multipart/{subtype}'
            container.set_payload([root, *siblings])
            root = container
    message = EmailMessage(policy=email.policy.SMTP)
    for name, value in root.items():
        message[name] = value
    message.set_payload(root.get_payload())
    return message


def _file_text(text: str, subtype: str) -> MIMEPart:
    """A text part in base64, so its text comes back exactly as it was sent."""
    part = MIMEPart(policy=email.policy.SMTP)
    part.set_content(text.encode('utf-8'), 'text', subtype, cte='base64',
                     params={'charset': 'utf-8'})
    return part


def _file(data: bytes, ctype: str, name: str, content_id: str) -> MIMEPart:
    part = MIMEPart(policy=email.policy.SMTP)
    main, _, sub = ctype.partition('/')
    if content_id:
        part.set_content(data, main, sub, disposition='inline', filename=name,
                         cid=f'<{content_id}>')
    else:
        part.set_content(data, main, sub, disposition='attachment', filename=name)
    return part


def _attachment(item: object) -> tuple[bytes, str, str, str]:
    """(bytes, content type, file name, content ID) of one Attachments entry."""
    if not isinstance(item, dict):
        raise SendError('each attachment must be an object')
    name = item.get('Filename')
    content = item.get('Content')
    if not isinstance(name, str) or not isinstance(content, str):
        raise SendError('an attachment needs Filename and Content (base64)')
    try:
        data = base64.b64decode(content.split(',')[-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SendError(f'error decoding base64 attachment "{name}": {exc}') from None
    ctype = item.get('ContentType') or mimetypes.guess_type(name)[0] or _sniff(data)
    content_id = item.get('ContentID') or ''
    if not isinstance(ctype, str) or '/' not in ctype or not isinstance(content_id, str):
        raise SendError(f'attachment "{name}": ContentType must be type/subtype')
    return data, ctype.lower(), name, content_id


def _sniff(data: bytes) -> str:
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    try:
        data[:512].decode('utf-8')
    except UnicodeDecodeError:
        return 'application/octet-stream'
    return 'text/plain'


def _person(value: object, field: str) -> Address | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SendError(f'{field} must be an object with Email and Name')
    name = value.get('Name') or ''
    if not isinstance(name, str):
        raise SendError(f'{field}: Name must be a string')
    return Address(display_name=name, addr_spec=_address(value.get('Email'), field))


def _people(request: dict[str, Any], field: str) -> list[Address]:
    out = []
    for value in _list(request, field):
        person = _person(value, field)
        if person is not None:
            out.append(person)
    return out


def _address(value: object, field: str) -> str:
    """An addr-spec (local@domain), else SendError 'invalid To address: ...'."""
    text = value if isinstance(value, str) else ''
    try:
        parsed = Address(addr_spec=text.strip())
    except (ValueError, IndexError, TypeError):
        parsed = None
    if parsed is None or not parsed.username or not parsed.domain:
        label = 'Reply-To' if field == 'ReplyTo' else field
        raise SendError(f'invalid {label} address: {value}')
    return parsed.addr_spec


def _list(request: dict[str, Any], field: str) -> list[Any]:
    value = request.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SendError(f'{field} must be a list')
    return value


def _text(request: dict[str, Any], field: str) -> str:
    value = request.get(field)
    if value is None:
        return ''
    if not isinstance(value, str):
        raise SendError(f'{field} must be a string')
    return value
