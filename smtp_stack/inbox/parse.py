"""A stored message, read once at arrival into the fields Mailpit's API returns.

Pure: bytes in, plain dicts out, no I/O. The fields are what the stdlib
`email` package gives with its `default` policy (headers decoded per
RFC 2047, addresses parsed per RFC 5322), read at a fraction of its cost:
the MIME tree is split with the `compat32` policy, which keeps header
values as text, and each field the API shows is read once by
headerfields.py, which answers plain values itself and gives the rest to
the default policy's parser. A message whose MIME fields are not all
plain (an encoded word or RFC 2231 parameter in a Content-Type, say) is
parsed again with the default policy, whole, so its tree and parts are
the default policy's too. What the API serves later comes from these
fields, never from re-parsing, except the part downloads.

Part IDs follow the MIME tree as Mailpit numbers it: the children of the
top multipart are "1", "2", ...; their children "2.1", "2.2" ... A message
that is not multipart has one part, "1".

Attachments and inline parts (Mailpit's split): a part with a Content-ID
inside a multipart/related, or `inline` with a Content-ID, is inline (an
image the HTML refers to as `cid:`); any other part with a file name,
`Content-Disposition: attachment` or a non-text type is an attachment.
The first text/plain and text/html parts that are neither are the
message's Text and HTML, with their line ends as they came (CRLF over
SMTP), as Mailpit returns them: a test may compare them byte for byte.

Where Mailpit's fields are computed a particular way, so are these: the
Snippet from the HTML when there is one (Mailpit's html2text: the text
outside head, script, style ..., block ends as spaces, at most 200 bytes
of UTF-8, then "..."), `Date` in the Date field's own offset, ReturnPath
falling back to the From address, a file without a name named by its
Content-ID, and `ListUnsubscribe` (unsubscribe.py).
"""
from __future__ import annotations

import binascii
import email.policy
import hashlib
import html
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from email.contentmanager import raw_data_manager
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any, cast

from . import headerfields as hf
from . import mimesplit
from .unsubscribe import list_unsubscribe

# A JSON object of the API (Mailpit's field names).
Json = dict[str, Any]
# A message as read: mimesplit's tree, or the email package's
Tree = MIMEPart | mimesplit.Part

SNIPPET_BYTES = 200         # Mailpit's CreateSnippet: 200 bytes, whole characters, then "..."

_PARSER = BytesParser(policy=hf.POLICY)       # the default policy
# the tree only: header values kept as text (EmailMessage for iter_parts)
_SPLITTER = BytesParser(EmailMessage, policy=email.policy.compat32)
_SPACES = re.compile(r'\s+')
_ASCII_UNPRINTABLE = {c: ' ' for c in range(128) if not chr(c).isprintable()}
_TAGS = re.compile(r'<(script|style|head)\b.*?</\1\s*>|<[^>]*>', re.IGNORECASE | re.DOTALL)


def parse_message(raw: bytes, envelope_to: Iterable[str] = (),
                  received: datetime | None = None) -> Json:
    """Every field the list, the summary and the search index need.

    Bcc is the Bcc field (the store writes one for envelope-only
    recipients, arrival.py) and any of `envelope_to` (the RCPT TO
    addresses) that no To, Cc or Bcc field names.
    """
    received = received or datetime.now(timezone.utc)
    message = split_message(raw)
    every: dict[str, list[str]] = {}        # {lower-case name: its values in order}
    for name, value in message.raw_items():
        every.setdefault(name.lower(), []).append(value)
    first = {name: values[0] for name, values in every.items()}

    def addresses(name: str) -> list[dict[str, str]]:
        return hf.addresses(name, every.get(name.lower(), []))

    def unstructured(name: str) -> str:
        return hf.unstructured(name, first.get(name.lower()))

    to = addresses('To')
    cc = addresses('Cc')
    bcc = addresses('Bcc')
    named = {a['Address'].lower() for a in to + cc + bcc}
    bcc += [{'Name': '', 'Address': a} for a in dict.fromkeys(envelope_to)
            if a.lower() not in named]
    senders = addresses('From')
    text, html_body, attachments, inline = _walk(message)
    # lone surrogates (utf-7, unicode-escape ...) would stop the snippet's encode
    text, html_body = _valid_text(text), _valid_text(html_body)
    if not text and html_body:
        text = html_to_text(html_body)
    sender = senders[0] if senders else None
    return_path = unstructured('Return-Path').strip().strip('<>')
    fields: Json = _valid_text({
        'MessageID': hf.message_id(first.get('message-id')).strip().strip('<>'),
        'From': sender,
        'To': to,
        'Cc': cc,
        'Bcc': bcc,
        'ReplyTo': addresses('Reply-To'),
        'ReturnPath': return_path or (sender['Address'] if sender else ''),
        'Subject': unstructured('Subject'),
        'Date': _date_text(field_date(first.get('date')), received),
        'Created': iso_time(received),
        'Size': len(raw),
        'Text': text,
        'HTML': html_body,
        'Attachments': attachments,
        'Inline': inline,
        'Snippet': snippet(text, html_body),
        'ListUnsubscribe': list_unsubscribe(unstructured('List-Unsubscribe'),
                                            unstructured('List-Unsubscribe-Post')),
    })
    return fields


def html_body(raw: bytes) -> str:
    """The message's HTML part, as `parse_message` picks it ('' if none)."""
    return _walk(split_message(raw))[1]


def split_message(raw: bytes) -> Tree:
    """The MIME tree as the default policy splits it, cheaply: mimesplit.py's
    tree of the usual shape, each part's MIME fields read once; else split
    with compat32 (no header objects) and MIME fields unfolded in place;
    parsed with the default policy when a MIME field is not plain."""
    try:
        tree = mimesplit.split(raw)
    except mimesplit.NotPlain:
        return message_from_bytes(raw)
    if tree is not None:
        return tree
    message = cast(EmailMessage, _SPLITTER.parsebytes(raw))
    if all(hf.unfold_mime_fields(part) for part in message.walk()):
        return message
    return message_from_bytes(raw)


def message_from_bytes(raw: bytes) -> EmailMessage:
    """Parsed as stored: a text part keeps its line ends (CRLF from SMTP)."""
    return _PARSER.parsebytes(raw)


def iso_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Mailpit's JSON times look."""
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec='milliseconds') + 'Z'


def offset_time(moment: datetime) -> str:
    """RFC 3339 in the moment's own offset, as Go writes a time.Time in
    JSON: '2026-01-02T10:00:00+01:00', 'Z' for +00:00, fractions only
    when there are any."""
    text = moment.isoformat()
    if moment.microsecond:
        seconds, _, rest = text.partition('.')
        digits = rest[:6].rstrip('0')
        text = f'{seconds}.{digits}{rest[6:]}'
    return text[:-6] + 'Z' if text.endswith('+00:00') else text


def snippet(text: str, html_body: str = '') -> str:
    """Mailpit's snippet: from the HTML when there is some, else the text."""
    if html_body.strip():
        return _cut(html_text(html_body))
    flat = _SPACES.sub(' ', (text or '').strip().replace('\ufeff', ' ')).strip()
    return _cut(flat)


def _cut(text: str) -> str:
    """At most SNIPPET_BYTES of UTF-8, ending on a whole character, then '...'."""
    data = text.encode('utf-8')
    if len(data) <= SNIPPET_BYTES:
        return text
    end = SNIPPET_BYTES
    while end > 0 and data[end - 1] & 0xC0 == 0x80:     # inside a character: back up
        end -= 1
    if end > 0 and data[end - 1] & 0xC0 == 0xC0:        # its first byte too
        end -= 1
    return data[:end].decode('utf-8', 'ignore') + '...'


def html_to_text(markup: str) -> str:
    """Good enough for word search and for Text when there is only HTML;
    never shown as HTML."""
    return html.unescape(_TAGS.sub(' ', markup or '')).strip()


def html_text(markup: str) -> str:
    """Mailpit's html2text.Strip (for the snippet): the text outside head,
    script, style ... with block ends, <br> and images as spaces, every run
    of spaces and unprintable characters one space."""
    reader = _TextOfHtml()
    if not _read_plain_html(markup, reader):
        reader = _TextOfHtml()
        reader.feed(markup)
        reader.close()
    text = ''.join(reader.out)
    if text.isascii():      # the unprintable ASCII characters are the C0 controls and DEL
        text = text.translate(_ASCII_UNPRINTABLE)
    else:
        text = ''.join(c if c.isprintable() else ' ' for c in text)
    return _SPACES.sub(' ', text.replace('\ufeff', ' ')).strip()


# A tag as html.parser reads it when it is plain: a name of its `tagfind`
# shape, then attributes of the usual forms (no `<` or `>` in a value).
_PLAIN_TAG = re.compile(r'<(/?)([a-zA-Z][-.a-zA-Z0-9:_]*)([^<>]*)>')
_PLAIN_ATTRIBUTES = re.compile(
    r"""(?:[ \t\n\r\f]+[^\s"'<>/=]+"""
    r"""(?:[ \t\n\r\f]*=[ \t\n\r\f]*(?:"[^"]*"|'[^']*'|[^\s"'=<>`/]+))?)*[ \t\n\r\f]*/?""")
_SPACE_ONLY = re.compile(r'[ \t\n\r\f]*')


def _read_plain_html(markup: str, reader: _TextOfHtml) -> bool:
    """Feed `reader` the events html.parser would give it for plain markup
    (tags of the usual form, text with character references; no comment,
    declaration, processing instruction, script or style, whose contents
    the parser reads by rules of their own), as `feed` and `close` would,
    at a tenth of the parser's cost; False, having fed nothing, when the
    markup is not plain. tests/test_inbox_htmltext.py holds the two equal."""
    if '<!' in markup or '<?' in markup:
        return False
    lowered = markup.lower()
    if '<script' in lowered or '<style' in lowered:
        return False
    events: list[tuple[int, str]] = []      # (0 text | 1 start | 2 end, text or tag name)
    pos = 0
    for tag in _PLAIN_TAG.finditer(markup):
        text = markup[pos:tag.start()]
        if '<' in text:
            return False
        if text:
            events.append((0, text))
        name, rest = tag[2].lower(), tag[3]
        if tag[1]:
            if _SPACE_ONLY.fullmatch(rest) is None:
                return False
            events.append((2, name))
        else:
            if rest and (rest[0] not in ' \t\n\r\f/' or rest.startswith('/') and rest != '/'
                         or _PLAIN_ATTRIBUTES.fullmatch(rest) is None):
                return False
            if rest.endswith('/') and rest != '/' and rest[-2] not in ' \t\n\r\f"\'':
                return False            # `a=x/>`: the parser reads the value as `x/`
            events.append((1, name))
            if rest.endswith('/'):      # `<br/>`: handle_startendtag, a start then an end
                events.append((2, name))
        pos = tag.end()
    rest_text = markup[pos:]
    if '<' in rest_text:
        return False
    if rest_text:
        events.append((0, rest_text))
    for kind, value in events:
        if kind == 0:
            reader.handle_data(html.unescape(value))
        elif kind == 1:
            reader.handle_starttag(value, [])
        else:
            reader.handle_endtag(value)
    return True


class _TextOfHtml(HTMLParser):
    SKIP = frozenset({'script', 'title', 'head', 'link', 'meta', 'style', 'noscript'})
    BLOCKS = frozenset({'div', 'p', 'td', 'th', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul',
                        'ol', 'li', 'address', 'article', 'aside', 'blockquote', 'dl', 'dt',
                        'footer', 'header', 'hr', 'main', 'nav', 'pre', 'table', 'thead',
                        'tfoot', 'video'})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ('br', 'img'):
            self.out.append(' ')
        elif tag == 'body':
            self.skipping.clear()       # a head left open ends here (HTML5 does the same)
        elif tag in self.SKIP and tag not in ('link', 'meta'):
            self.skipping.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and tag == self.skipping[-1]:
            self.skipping.pop()
        elif tag in self.BLOCKS:
            self.out.append(' ')

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(data)


def find_part(raw: bytes, part_id: str) -> MIMEPart | None:
    """The MIME part with this ID, or None."""
    for pid, part, _parent in _numbered(message_from_bytes(raw)):
        if pid == part_id:
            return cast(MIMEPart, part)
    return None


def part_payload(part: MIMEPart) -> bytes:
    """The decoded bytes of a leaf part (base64 and quoted-printable undone),
    as `get_payload(decode=True)` gives them. Base64 lines of the usual
    shape are decoded in one call: the stdlib splits the body into a list
    of lines and joins them before decoding, 3-4 times an attachment's size
    at once; for these lines its answer is the same (tests/test_inbox_parse.py).
    The payload is looked at as stored: `get_payload()` would first decode
    8-bit bytes by the part's charset (an EBCDIC one makes letters of them)."""
    body = vars(part).get('_payload')
    if (isinstance(body, str)
            and str(part.get('content-transfer-encoding', '')).lower() == 'base64'
            and mimesplit.base64_shaped(body)):
        return binascii.a2b_base64(body.encode('ascii'))
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):      # None: a multipart, or a message/rfc822 part
        return part.as_bytes()
    return payload


def header_map(raw: bytes) -> dict[str, list[str]]:
    """{Canonical-Name: [values]} in order, unfolded and undecoded, as
    Mailpit's /headers returns them (Go's textproto canonical keys)."""
    out: dict[str, list[str]] = {}
    head = raw.split(b'\r\n\r\n', 1)[0].split(b'\n\n', 1)[0]
    text = head.decode('utf-8', 'replace').replace('\r\n', '\n')
    for field in re.split(r'\n(?![ \t])', text):
        name, sep, value = field.partition(':')
        if not sep or not name.strip() or ' ' in name.strip():
            continue
        value = _SPACES.sub(' ', value.replace('\n', ' ')).strip()
        out.setdefault(canonical_name(name.strip()), []).append(value)
    return out


def canonical_name(name: str) -> str:
    return '-'.join(word[:1].upper() + word[1:].lower() for word in name.split('-'))


# -- inside ------------------------------------------------------------------------

# (part ID, part, its parent: None for the top of a single-part message)
Numbered = tuple[str, Tree, 'Tree | None']


def _numbered(message: Tree) -> Iterator[Numbered]:
    """(part ID, part, parent) for every part below the top, depth first."""
    if not message.is_multipart():
        yield '1', message, None
        return

    def walk(part: Tree, prefix: str) -> Iterator[Numbered]:
        for i, child in enumerate(cast('Iterator[Tree]', part.iter_parts()), 1):
            pid = f'{prefix}.{i}' if prefix else str(i)
            yield pid, child, part
            if child.is_multipart():
                yield from walk(child, pid)
    yield from walk(message, '')


def _walk(message: Tree) -> tuple[str, str, list[Json], list[Json]]:
    text = html_body = ''
    attachments: list[Json] = []
    inline: list[Json] = []
    known: dict[int, hf.MimeFacts] = {}

    def facts_of(part: Tree) -> hf.MimeFacts:
        if isinstance(part, mimesplit.Part):
            return part.facts
        if id(part) not in known:
            plain = part.policy is email.policy.compat32
            known[id(part)] = hf.plain_mime_facts(part) if plain else hf.mime_facts(part)
        return known[id(part)]
    for pid, part, parent in _numbered(message):
        if part.is_multipart():
            continue
        about = facts_of(part)
        ctype = about.content_type
        disposition = (about.disposition or '').lower()
        filename = about.filename or ''
        content_id = about.content_id.strip().strip('<>')
        is_file = bool(filename) or disposition == 'attachment'
        related = parent is not None and facts_of(parent).content_type == 'multipart/related'
        if content_id and (related or disposition == 'inline') and not (
                ctype in ('text/plain', 'text/html') and not is_file):
            inline.append(_file(pid, part, ctype, filename, content_id))
        elif is_file or not ctype.startswith('text/'):
            attachments.append(_file(pid, part, ctype, filename, content_id))
        elif ctype == 'text/plain' and not text:
            text = _text(part, about.charset)
        elif ctype == 'text/html' and not html_body:
            html_body = _text(part, about.charset)
    return text, html_body, attachments, inline


def _file(pid: str, part: Tree, ctype: str, filename: str, content_id: str) -> Json:
    data = part.decoded() if isinstance(part, mimesplit.Part) else part_payload(part)
    return {
        'PartID': pid,
        'FileName': filename or content_id,       # as Mailpit names a nameless inline part
        'ContentType': ctype,
        'ContentID': content_id,
        'Size': len(data),
        'Checksums': {'MD5': hashlib.md5(data).hexdigest(),
                      'SHA1': hashlib.sha1(data).hexdigest(),
                      'SHA256': hashlib.sha256(data).hexdigest()},
    }


def _text(part: Tree, charset: str | None = None) -> str:
    """A text part decoded as `part.get_content()` decodes it (its charset,
    errors replaced); `charset`: its charset parameter, already read."""
    if isinstance(part, mimesplit.Part):
        data = part.decoded()
        try:
            charset = part.facts.charset
            return data.decode(charset if charset is not None else 'ASCII', 'replace')
        except (LookupError, ValueError, AssertionError):     # an unknown charset
            return data.decode('utf-8', 'replace')
    try:
        if charset is None:
            content: str = raw_data_manager.get_content(part)     # part.get_content()
            return content
        payload = part.get_payload(decode=True)
        return payload.decode(charset, 'replace') if isinstance(payload, bytes) else ''
    except (LookupError, ValueError, AssertionError):   # unknown charset, bad encoding
        payload = part.get_payload(decode=True)
        return payload.decode('utf-8', 'replace') if isinstance(payload, bytes) else ''


def _valid_text(value: Any) -> Any:
    """Every string of the fields made valid UTF-8. The parser keeps 8-bit
    header bytes of an undeclared charset (a name like J\\xf6rg) as lone
    surrogates, which neither SQLite nor a JSON reply can carry: such bytes
    become U+FFFD, so the message is still stored and listed."""
    return value if _all_valid(value) else _made_valid(value)


def _all_valid(value: Any) -> bool:
    """Whether every string in `value` (dicts, lists, strings) encodes as UTF-8."""
    waiting = [value]
    while waiting:
        item = waiting.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode('utf-8')
                except UnicodeEncodeError:
                    return False
        elif kind is dict:
            waiting.extend(item.values())
        elif kind is list:
            waiting.extend(item)
    return True


def _made_valid(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode('utf-8')
            return value
        except UnicodeEncodeError:
            try:
                data = value.encode('utf-8', 'surrogateescape')
            except UnicodeEncodeError:
                data = value.encode('utf-8', 'replace')
            return data.decode('utf-8', 'replace')
    if isinstance(value, dict):
        return {key: _made_valid(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_made_valid(item) for item in value]
    return value


def _date_text(moment: datetime | None, received: datetime) -> str:
    """The Date field's moment in its own offset; without a usable one, the
    time of arrival (in UTC), as Mailpit falls back to it."""
    return offset_time(moment) if moment is not None else iso_time(received)


def field_date(value: str | None) -> datetime | None:
    """The moment of a Date field's stored value (a naive one in UTC), None
    when there is none or it cannot be read."""
    moment = hf.date(value)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment
