"""What the inbox writes into a message as it stores it, as Mailpit does.

Pure: the message's bytes and its envelope in, the bytes to store out.
Mailpit (internal/smtpd/main.go, SaveToDatabase) stores every message,
whether it came over SMTP or through `POST /api/v1/send`, with:

- `Return-Path: <MAIL FROM>` (RFC 5321 4.4: the delivering server records
  the envelope sender; `<>` for a bounce). A Return-Path the client sent
  that says otherwise is replaced where it stands; none is added on top.
- a generated `Message-ID` when the message has none, so that every stored
  message has one to show and search (`message-id:`).
- `Bcc:` naming the envelope recipients that no To, Cc or Bcc field
  names: the only record of a blind copy once the envelope is gone
  (Laravel and other senders put no Bcc field in the message).

Each new field goes on top, in that order, so the stored message starts
`Bcc`, `Message-ID`, `Return-Path`, then what the SMTP side added
(Received) and the message as sent. Only the header section is searched
and edited: a line of the body that looks like a header is never touched.
Where a Bcc field is present, the missing recipients are added to its
value (Mailpit means to, but writes ", " and the old value only).
"""
from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Iterable
from email.utils import getaddresses

from .headerfields import mailboxes, plain

ID_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
ID_LENGTH = 22              # as long as Mailpit's IDs; 131 bits of randomness
MESSAGE_ID_DOMAIN = 'smtp-stack'
_ADDRESS = re.compile(r'[^\s@<>()",;:]+@[^\s@<>()",;:]+')
# a field's lines: a name (up to its first colon), its value, its folded lines
_FIELD_LINES = re.compile(rb'([^ \t\r\n:][^\r\n:]*):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*')
# a field's value after its name: the colon, the value, its folded lines (CRLF)
_VALUE = rb'[ \t]*:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)'
# (lower-case name, start, end) of each field of a header section: header_fields
Fields = list[tuple[bytes, int, int]]


def stamp(raw: bytes, mail_from: str | None, rcpt: Iterable[str] = (),
          message_id: str | None = None) -> bytes:
    """The message as stored. `mail_from` None (no envelope): no Return-Path."""
    return stamped(raw, mail_from, rcpt, message_id)[0]


def stamped(raw: bytes, mail_from: str | None, rcpt: Iterable[str] = (),
            message_id: str | None = None) -> tuple[bytes, Fields]:
    """`stamp`, and the header_fields of the message as stored (the fields
    are found once and moved with each edit, not searched for again).
    Every edit is in the header section: it is edited alone and joined
    with the body once, so a large message is copied once, not per edit."""
    fields = header_fields(raw)
    head_end = fields[-1][2] if fields else 0
    whole = raw
    raw = head = raw[:head_end]
    if mail_from is not None:
        current = field_value(raw, fields, b'return-path')
        if current is None or current.strip().strip('<>') != mail_from:
            raw, fields = _set(raw, fields, b'Return-Path', f'<{mail_from}>')
    if not (field_value(raw, fields, b'message-id') or '').strip().strip('<>'):
        generated = message_id or f'{new_id()}@{MESSAGE_ID_DOMAIN}'
        raw, fields = _set(raw, fields, b'Message-ID', f'<{generated}>', on_top=True)
    missing = hidden_recipients(raw, fields, rcpt)
    if missing:
        present = field_value(raw, fields, b'bcc')
        value = ', '.join(missing)
        if present is not None and present.strip():
            value = present.strip() + ', ' + value
        raw, fields = _set(raw, fields, b'Bcc', value)
    if raw is head:         # nothing added or replaced
        return whole, fields
    return b''.join((raw, memoryview(whole)[head_end:])), fields


def _set(raw: bytes, fields: Fields, name: bytes, value: str,
         on_top: bool = False) -> tuple[bytes, Fields]:
    """set_field (or, `on_top`, a new field on top), and the fields moved to
    where they are in the new message."""
    line = name + b': ' + value.encode('utf-8') + b'\r\n'
    lower = name.lower()
    at = None if on_top else next((i for i, f in enumerate(fields) if f[0] == lower), None)
    if at is None:
        return line + raw, [(lower, 0, len(line))] + [(n, s + len(line), e + len(line))
                                                      for n, s, e in fields]
    _name, start, end = fields[at]
    moved = len(line) - (end - start)
    return raw[:start] + line + raw[end:], (
        fields[:at] + [(lower, start, start + len(line))]
        + [(n, s + moved, e + moved) for n, s, e in fields[at + 1:]])


def new_id() -> str:
    """A random ID (a stored message's, and a generated Message-ID's left part):
    ID_LENGTH characters of ID_ALPHABET, each equally likely. Random bytes
    below 248 (4 x 62) taken modulo 62; the others dropped, so none is
    likelier (`secrets.choice` per character costs ten times as much)."""
    chosen = b''
    while len(chosen) < ID_LENGTH:
        chosen += _random_bytes(32).translate(_MODULO_62, _ABOVE_247)
    return chosen[:ID_LENGTH].decode('ascii')


# byte b -> ID_ALPHABET[b % 62], the bytes from 248 up dropped (bytes.translate)
_MODULO_62 = bytes(ord(ID_ALPHABET[b % 62]) for b in range(256))
_ABOVE_247 = bytes(range(248, 256))


class _RandomPool:
    """Bytes of `secrets.token_bytes` fetched 4 KiB at a time: one system
    call (which lets go of the GIL, so another thread takes it) per 128
    IDs instead of one per ID. A forked child starts a pool of its own,
    never reusing its parent's bytes."""

    SIZE = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.pool = bytearray()

    def take(self, count: int) -> bytes:
        with self.lock:
            if self.pid != os.getpid() or len(self.pool) < count:
                self.pool = bytearray(secrets.token_bytes(self.SIZE))
                self.pid = os.getpid()
            taken = bytes(self.pool[:count])
            del self.pool[:count]
        return taken


_random_bytes = _RandomPool().take


def hidden_recipients(raw: bytes, fields: Fields, rcpt: Iterable[str]) -> list[str]:
    """The envelope recipients (each valid address once) no To, Cc or Bcc names."""
    named: set[str] = set()
    for name in (b'to', b'cc', b'bcc'):
        for start, end in ((s, e) for n, s, e in fields if n == name):
            value = raw[start:end].split(b':', 1)[1].decode('utf-8', 'replace')
            named.update(a.lower() for a in addresses_named(_unfold(value)))
    missing: list[str] = []
    for address in rcpt:
        if _ADDRESS.fullmatch(address) and address.lower() not in named:
            named.add(address.lower())
            missing.append(address)
    return missing


def addresses_named(value: str) -> list[str]:
    """The addresses `email.utils.getaddresses` reads in a field's value
    (empty ones left out); a plain list of the common forms read by a
    regular expression instead (headerfields.py; tests/test_inbox_parse_same.py
    holds the two equal)."""
    quick = mailboxes(value) if plain(value) else None
    if quick is not None:
        return [box['Address'] for box in quick]
    return [address for _name, address in getaddresses([value]) if address]


def header_fields(raw: bytes) -> Fields:
    """(lower-case name, start, end) of each field of the header section;
    `end` is past the field's last line end (its folded lines included)."""
    fields = _plain_header_fields(raw)
    if fields is not None:
        return fields
    fields = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b'\n', pos)
        end = len(raw) if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b'\r\n', b'\n'):
            break       # the blank line: the body follows
        if line[:1] in (b' ', b'\t') and fields:
            name, start, _ = fields[-1]
            fields[-1] = (name, start, end)
        elif b':' in line:
            fields.append((line.split(b':', 1)[0].strip().lower(), pos, end))
        pos = end
    return fields


def _plain_header_fields(raw: bytes) -> Fields | None:
    """header_fields of a header section that is only `Name: value` lines
    and their folded lines, each ending CRLF (as SMTP delivers them), read
    by a regular expression a field at a time instead of a Python loop a
    line at a time; None for any other shape."""
    blank = raw.find(b'\r\n\r\n')
    if blank < 0:
        return None
    fields: Fields = []
    pos = 0
    for found in _FIELD_LINES.finditer(raw, 0, blank + 2):
        if found.start() != pos:
            return None
        pos = found.end()
        fields.append((found[1].strip().lower(), found.start(), pos))
    return fields if pos == blank + 2 else None


def field_value(raw: bytes, fields: Fields, name: bytes) -> str | None:
    """The first field `name`'s value, unfolded, or None when absent."""
    for found, start, end in fields:
        if found == name:
            return _unfold(raw[start:end].split(b':', 1)[1].decode('utf-8', 'replace'))
    return None


def set_field(raw: bytes, fields: Fields, name: bytes,
              value: str) -> bytes:
    """The first field `name` replaced by `Name: value`, or one added on top."""
    line = name + b': ' + value.encode('utf-8') + b'\r\n'
    for found, start, end in fields:
        if found == name.lower():
            return raw[:start] + line + raw[end:]
    return line + raw


def field_within(raw: bytes, name: bytes, within: int) -> str:
    """The first field `name`'s value, unfolded ('' when none), looked for in
    the header section's first `within` bytes by one expression: cheap on
    any message, where header_fields reads an unusual header section a line
    at a time (for a line on the SMTP hub, not for what is stored)."""
    blank = raw.find(b'\r\n\r\n', 0, within)
    found = re.compile(rb'^' + re.escape(name) + _VALUE, re.IGNORECASE | re.MULTILINE).search(
        raw, 0, blank + 2 if blank >= 0 else within)
    return _unfold(found[1].decode('utf-8', 'replace')) if found else ''


def _unfold(value: str) -> str:
    return re.sub(r'\r?\n(?=[ \t])', '', value).strip()
