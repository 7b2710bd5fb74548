"""The inbox's fast reading of a message gives what the stdlib parser gave.

parse.py reads a message with mimesplit.py (the MIME tree), the compat32
policy and headerfields.py (the fields), where it used the email
package's `default` policy throughout. Every field the API shows must
come out as before (Mailpit's clients pin them): these tests hold the two
readings to the same answers, on a table of the hard cases (encoded
words, address lists with comments and groups, RFC 2231 file names,
folded MIME fields, broken multiparts) and on generated messages and
field values. `reference_fields` is the reading as it was (the inbox's
own code before the change, kept here as the oracle).
"""
from __future__ import annotations

import email.policy
import email.utils
import hashlib
import os
import re
from datetime import datetime, timezone
from email.message import EmailMessage, Message
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtp_stack.inbox import headerfields as hf
from smtp_stack.inbox import mimesplit
from smtp_stack.inbox.arrival import addresses_named, header_fields, stamped
from smtp_stack.inbox.parse import (_valid_text, html_to_text, iso_time, offset_time,
                                    parse_message, snippet, split_message)
from smtp_stack.inbox.unsubscribe import list_unsubscribe

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
SCALE = max(1, int(os.environ.get('SMTP_STACK_FUZZ', '1')))     # more examples: 10, 100
MANY = settings(max_examples=200 * SCALE, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the reading as it was: policy.default for the tree and every field --------------------

_DEFAULT = BytesParser(policy=email.policy.default)


def reference_fields(raw: bytes) -> dict:
    message = _DEFAULT.parsebytes(raw)
    to, cc, bcc = (_ref_addresses(message, n) for n in ('To', 'Cc', 'Bcc'))
    senders = _ref_addresses(message, 'From')
    text, html_body, attachments, inline = _ref_walk(message)
    text, html_body = _valid_text(text), _valid_text(html_body)    # then the snippet
    if not text and html_body:
        text = html_to_text(html_body)
    sender = senders[0] if senders else None
    return _valid_text({
        'MessageID': _ref_header(message, 'Message-ID').strip().strip('<>'),
        'From': sender, 'To': to, 'Cc': cc, 'Bcc': bcc,
        'ReplyTo': _ref_addresses(message, 'Reply-To'),
        'ReturnPath': (_ref_header(message, 'Return-Path').strip().strip('<>')
                       or (sender['Address'] if sender else '')),
        'Subject': _ref_header(message, 'Subject'),
        'Date': _ref_date(message),
        'Created': iso_time(RECEIVED), 'Size': len(raw), 'Text': text, 'HTML': html_body,
        'Attachments': attachments, 'Inline': inline, 'Snippet': snippet(text, html_body),
        'ListUnsubscribe': list_unsubscribe(_ref_header(message, 'List-Unsubscribe'),
                                            _ref_header(message, 'List-Unsubscribe-Post')),
    })


def _ref_safe(fn):
    try:
        return fn()
    except Exception:       # noqa: BLE001 - as the old reading did
        return None


def _ref_header(message, name: str) -> str:
    value = _ref_safe(lambda: message.get(name))
    return str(value) if value is not None else ''


def _ref_addresses(message, name: str) -> list:
    def parsed():
        header = message.get(name)
        if header is None:
            return []
        return [{'Name': a.display_name or '', 'Address': a.addr_spec or ''}
                for a in header.addresses]
    result = _ref_safe(parsed)
    if result is None:
        raw = [str(v) for v in (_ref_safe(lambda: message.get_all(name)) or [])]
        result = [{'Name': n, 'Address': a} for n, a in email.utils.getaddresses(raw) if a]
    return [a for a in result if a['Address'] or a['Name']]


def _ref_date(message) -> str:
    value = _ref_header(message, 'Date')
    moment = None
    if value:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            moment = None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return offset_time(moment) if moment is not None else iso_time(RECEIVED)


def _ref_numbered(message):
    if not message.is_multipart():
        yield '1', message, None
        return

    def walk(part, prefix):
        for i, child in enumerate(part.iter_parts(), 1):
            pid = f'{prefix}.{i}' if prefix else str(i)
            yield pid, child, part
            if child.is_multipart():
                yield from walk(child, pid)
    yield from walk(message, '')


def _ref_walk(message):
    text = html_body = ''
    attachments, inline = [], []
    for pid, part, parent in _ref_numbered(message):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or '').lower()
        filename = _ref_safe(part.get_filename) or ''
        content_id = (_ref_header(part, 'Content-ID') or '').strip().strip('<>')
        is_file = bool(filename) or disposition == 'attachment'
        related = parent is not None and parent.get_content_type() == 'multipart/related'
        if content_id and (related or disposition == 'inline') and not (
                ctype in ('text/plain', 'text/html') and not is_file):
            inline.append(_ref_file(pid, part, filename, content_id))
        elif is_file or not ctype.startswith('text/'):
            attachments.append(_ref_file(pid, part, filename, content_id))
        elif ctype == 'text/plain' and not text:
            text = _ref_text(part)
        elif ctype == 'text/html' and not html_body:
            html_body = _ref_text(part)
    return text, html_body, attachments, inline


def _ref_file(pid, part, filename, content_id):
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = part.as_bytes()
    return {'PartID': pid, 'FileName': filename or content_id,
            'ContentType': part.get_content_type(), 'ContentID': content_id, 'Size': len(data),
            'Checksums': {'MD5': hashlib.md5(data).hexdigest(),
                          'SHA1': hashlib.sha1(data).hexdigest(),
                          'SHA256': hashlib.sha256(data).hexdigest()}}


def _ref_text(part):
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode('utf-8', 'replace') if isinstance(payload, bytes) else ''


def same_as_before(raw: bytes) -> None:
    assert parse_message(raw, (), RECEIVED) == reference_fields(raw)


# -- the trees -------------------------------------------------------------------------

_FEEDPARSER = BytesParser(EmailMessage, policy=email.policy.compat32)


def shape(message: Message):
    """Everything of a tree the inbox reads, comparable with ==: the payload
    as stored (get_payload() would decode 8-bit bytes by the charset)."""
    payload = vars(message)['_payload']
    return (list(message.raw_items()), message.get_default_type(), message.get_unixfrom(),
            message.preamble, message.epilogue,
            [shape(p) for p in payload] if isinstance(payload, list) else payload)


def split_shape(part: mimesplit.Part):
    """shape() of mimesplit's tree (no digest in it: every default type is text/plain)."""
    return (part.raw_items(), 'text/plain', None, part.preamble, part.epilogue,
            [split_shape(p) for p in part.iter_parts()] if part.is_multipart() else part.body)


def split_parts(part: mimesplit.Part):
    yield part
    for child in part.iter_parts():
        yield from split_parts(child)


def assert_tree_is_the_feedparsers(raw: bytes) -> mimesplit.Part | None:
    """mimesplit's tree is the feedparser's, and what it reads of each part
    is what the default policy's methods answer."""
    try:
        tree = mimesplit.split(raw)
    except mimesplit.NotPlain:
        return None
    if tree is None:
        return None
    assert split_shape(tree) == shape(_FEEDPARSER.parsebytes(raw))
    for mine, theirs in zip(split_parts(tree), _DEFAULT.parsebytes(raw).walk(), strict=True):
        facts = mine.facts
        assert (facts.content_type, facts.disposition, facts.filename, facts.content_id) == (
            theirs.get_content_type(), theirs.get_content_disposition(),
            _ref_safe(theirs.get_filename), _ref_header(theirs, 'Content-ID'))
        assert facts.charset == theirs.get_param('charset', 'ASCII')
        assert facts.boundary == theirs.get_boundary()
        if not mine.is_multipart():
            assert mine.decoded() == theirs.get_payload(decode=True)
    return tree


# -- the hard cases --------------------------------------------------------------------

def mime(headers: str, body: str) -> bytes:
    return (headers.replace('\n', '\r\n') + '\r\n' + body.replace('\n', '\r\n')).encode(
        'utf-8', 'surrogateescape')


HARD_CASES = {
    'encoded words': mime(
        'From: =?utf-8?q?Andr=C3=A9?= <andre@example.com>\nSubject: =?utf-8?b?R3LDvMOfZQ==?=\n'
        'To: =?iso-8859-1?q?J=F6rg?= <j@example.com>, "=?utf-8?q?Z=C3=BC?=" <z@example.com>\n',
        'body\n'),
    'address lists with comments and groups': mime(
        'From: ann@example.com (Ann Example)\n'
        'To: "Doe, John" <john@example.com>, Team: a@example.com, b@example.com;, '
        '(just a comment) c@example.com\nCc: undisclosed-recipients:;\n'
        'Bcc: Mr. X <x@example.com>, <<<, "q\\"uote" <q@example.com>\n'
        'Reply-To: a@b.example,,c@d.example\n', 'body\n'),
    'RFC 2231 file names': mime(
        'Content-Type: multipart/mixed; boundary="b1"\n',
        '--b1\nContent-Type: text/plain\n\nhello\n'
        '--b1\nContent-Type: application/pdf\nContent-Disposition: attachment;\n'
        " filename*=utf-8''r%C3%A9sum%C3%A9.pdf\nContent-Transfer-Encoding: base64\n\n"
        'JVBERg==\n'
        '--b1\nContent-Type: text/plain; name*0="long "; name*1="name.txt"\n'
        'Content-Disposition: attachment\n\nx\n'
        '--b1\nContent-Type: application/octet-stream; name="=?utf-8?q?caf=C3=A9.bin?="\n\n'
        'y\n--b1--\n'),
    'folded MIME fields and a related HTML': mime(
        'Content-Type: multipart/alternative;\n boundary="alt"\nSubject: folded\n'
        ' subject line\n',
        'preamble\n--alt\nContent-Type: text/plain;\n\tcharset="utf-8"\n\nplain\n'
        '--alt\nContent-Type: multipart/related; boundary=rel\n\n'
        '--rel\nContent-Type: text/html; charset=utf-8\n\n<p>hi <img src="cid:logo@x"></p>\n'
        '--rel\nContent-Type: image/png\nContent-ID: <logo@x>\n'
        'Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--rel--\n\n--alt--\nepilogue\n'),
    'a missing close delimiter': mime(
        'Content-Type: multipart/mixed; boundary=x\n', '--x\n\nfirst\n--x\n\nsecond\n'),
    'no first delimiter': mime('Content-Type: multipart/mixed; boundary=x\n', 'just text\n'),
    'an attached message': mime(
        'Content-Type: multipart/mixed; boundary=x\n',
        '--x\nContent-Type: message/rfc822\n\nSubject: inner\n\ninner body\n--x--\n'),
    'a digest': mime('Content-Type: multipart/digest; boundary=d\n',
                     '--d\n\nSubject: one\n\nbody\n--d--\n'),
    'bare line feeds': b'Subject: lf\nContent-Type: text/plain\n\nbody\nmore\n',
    'no empty line': b'Subject: only headers\r\nX: y\r\n',
    'unknown charset and 8-bit fields': mime(
        'Subject: J\udcf6rg\nFrom: J\udcf6rg <j@example.com>\n'
        'Content-Type: text/plain; charset=x-unknown\n', 'caf\udce9\n'),
    'odd Message-ID and Date': mime(
        'Message-ID: <a..b@c> junk\nDate: 2 Jan 2026 10:00 -0000\n', 'x\n'),
    'nested delimiters that collide': mime(
        'Content-Type: multipart/mixed; boundary="b"\n',
        '--b\nContent-Type: multipart/alternative; boundary="b--"\n\n--b--\n\nin\n--b----\n'
        '--b\n\nlast\n--b--\n'),
    'a boundary in angle brackets (get_boundary unquotes twice)': mime(
        'Content-Type: multipart/mixed; boundary="<b>"\n',
        '--b\nContent-Type: text/plain\n\none\n--<b>\n--b\n\ntwo\n--b--\n'),
    'fields whose first line is blank, or empty': mime(
        'Subject: \t\n folded\nX-Empty:\nContent-Type:\n  text/html\nTo:  \n',
        '<p>x</p>\n'),
    'base64 and quoted-printable of unusual shapes': mime(
        'Content-Type: multipart/mixed; boundary=b\n',
        '--b\nContent-Transfer-Encoding: base64\n\nSGVsbG8\n--b\n'
        'Content-Transfer-Encoding: base64\n\nSGV sbG8=\n--b\n'
        'Content-Transfer-Encoding: base64\n\nSGVs\nbG8=\n\n--b\n'
        'Content-Transfer-Encoding: quoted-printable\n\nsoft=\nbreak =3D =XY\n--b--\n'),
    'an empty charset (decoded as UTF-8, the default policy\'s fallback)': mime(
        'Content-Type: multipart/mixed; boundary=b\n',
        '--b\nContent-Type: text/plain; charset=""\n\ncaf\u00e9\n--b--\n'),
    'a single-quoted parameter value (RFC 2231 to the default policy)': mime(
        "Content-Type: text/plain; charset='utf-8'\nContent-Disposition: inline; "
        "filename='a.txt'\n", 'caf\u00e9\n'),
    'a folded quoted boundary beside an attached message': mime(
        'Content-Type: multipart/mixed;\n boundary="one\n two"\n',
        '--one two\nContent-Type: text/plain\n\none\n--one two\n'
        'Content-Type: message/rfc822\n\nSubject: inner\n\nx\n--one two--\n'),
    'a lone surrogate from the charset (utf-7)': mime(
        'Content-Type: text/plain; charset=utf-7\n', '+2AA-\n'),
    'a uuencoded part': mime(
        'Content-Type: multipart/mixed; boundary=u\n',
        '--u\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n'
        '\nbegin 644 a.txt\n#86)C\n`\nend\n--u--\n'),
}


@pytest.mark.parametrize('name', HARD_CASES)
def test_hard_cases_read_as_before(name):
    raw = HARD_CASES[name]
    assert_tree_is_the_feedparsers(raw)
    same_as_before(raw)


def test_the_usual_message_takes_the_fast_reading():
    """A multipart with an attachment, as mail clients write it: split
    here (not by the feedparser), its fields plain."""
    m = EmailMessage()
    m['From'] = 'Shop <shop@example.org>'
    m['To'] = 'ann+signup@example.com, Bob <bob@example.com>'
    m['Subject'] = 'Your order'
    m.set_content('text\n')
    m.add_alternative('<p>html</p>', subtype='html')
    m.add_attachment(b'\x89PNG', maintype='image', subtype='png', filename='pixel.png')
    raw = m.as_bytes(policy=email.policy.SMTP)
    tree = assert_tree_is_the_feedparsers(raw)
    assert tree is not None and [p.facts.content_type for p in split_parts(tree)] == [
        'multipart/mixed', 'multipart/alternative', 'text/plain', 'text/html', 'image/png']
    assert isinstance(split_message(raw), mimesplit.Part)
    assert hf.addresses('To', [m['To']]) == [{'Name': '', 'Address': 'ann+signup@example.com'},
                                             {'Name': 'Bob', 'Address': 'bob@example.com'}]
    same_as_before(raw)


# -- generated fields -----------------------------------------------------------------------

PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
WORDS = st.sampled_from(['ann', 'Bob', 'O\'Brien', 'x.y', 'a+b', 'Doe,', '"Doe, J"', '""',
                         '"a  b"', '"q\\"x"', '(c)', 'Mr.', '=?utf-8?q?Z=C3=BC?=', '<', '>',
                         '@', ':', ';', ',', ' ', '\t', 'J\udcf6rg', '=?x?q?a?='])
ADDRESSES = st.sampled_from(['a@example.com', 'ann+signup@example.com', 'x.y@b.example',
                             '"q x"@example.com', 'a@[127.0.0.1]', 'a..b@c', 'nobody',
                             'a@b', 'É@example.com'])


@st.composite
def address_lists(draw) -> str:
    items = []
    for _ in range(draw(st.integers(0, 3))):
        address = draw(ADDRESSES)
        form = draw(st.integers(0, 4))
        name = ''.join(draw(st.lists(WORDS, max_size=3)))
        items.append([address, f'<{address}>', f'{name} <{address}>',
                      f'"{name}" <{address}>', f'{name} {address}'][form])
    return draw(st.sampled_from([', ', ',', ' , ', ',,'])).join(items) + draw(
        st.sampled_from(['', ' ', ',', ';']))


MIME_VALUE_LIST = [
    'text/plain', 'text/plain; charset=utf-8', 'text/plain; charset="utf-8"',
    'TEXT/HTML; CHARSET=ISO-8859-1', 'text/plain; charset=x-unknown', 'text',
    'text/plain;', ' image/png ; name = "a b.png" ', 'text/ plain', 'text /plain',
    'application/pdf; name="r.pdf"', "application/pdf; name*=utf-8''r%C3%A9sum%C3%A9.pdf",
    'application/octet-stream; name="=?utf-8?q?caf=C3=A9.pdf?="', 'text/plain (c); a=b',
    'text/plain; charset="utf-8', 'text/plain; name="a;b"; charset=utf-8',
    'text/plain; charset=a; charset=b', 'text/plain; Charset=a; charset=b', 'charset; charset=x',
    'filename; filename=a', 'text/plain; name="<a.pdf>"', 'text/plain; name=" a "',
    'attachment', 'inline', 'attachment; filename="a.pdf"', 'ATTACHMENT; FILENAME=x.txt',
    "attachment; filename*=utf-8''%E2%82%AC.txt", 'attachment; filename*0=lo; filename*1=ng',
    'attachment; filename="=?utf-8?b?w6k=?="', 'inline; filename=pic.png', 'attachment;',
    'base64', 'BASE64 ', ' quoted-printable', '7bit', 'x-uuencode', 'attachment; filename=',
    'text/plain; name=""', 'text/plain; =x', 'text/plain; a', 'text/plain;; charset=x',
    'text/plain; charset=""', "text/plain; charset='utf-8'", "attachment; filename='a.pdf'",
    "multipart/mixed; boundary=a'b"]
MIME_VALUES = st.sampled_from(MIME_VALUE_LIST)


@MANY
@given(st.sampled_from(['To', 'From', 'Cc', 'Reply-To']), address_lists())
@example('To', '"Doe, John" <john@example.com>, Team: a@example.com;')
@example('To', 'Shop  3 <a@b>')
def test_addresses_read_as_the_default_policy_reads_them(name, value):
    message = _DEFAULT.parsebytes(f'{name}: {value}\r\n\r\n'.encode('utf-8', 'surrogateescape'))
    stored = [v for k, v in message.raw_items()]
    assert hf.addresses(name, stored) == _ref_addresses(message, name)


@MANY
@given(st.sampled_from(['Subject', 'Message-ID', 'Content-ID', 'List-Unsubscribe',
                        'Return-Path', 'Date']),
       st.one_of(PRINTABLE, st.lists(WORDS, max_size=5).map(''.join),
                 st.sampled_from(['<a@b>', '<a.b@c.d> ', '<a@b> x', '<a@[1.2.3.4]>', '<a@b',
                                  'Fri, 02 Jan 2026 10:00:00 +0100', '2 Jan 26 10:00 GMT',
                                  'Fri, 02 Jan 2026 10:00:00 +9999', 'garbage', '=?utf-8?q?x?=',
                                  'Tue, 31 Feb 2026 10:00:00 +0000'])))
def test_unstructured_fields_message_ids_and_dates(name, value):
    message = _DEFAULT.parsebytes(f'{name}: {value}\r\n\r\n'.encode('utf-8', 'surrogateescape'))
    [stored] = [v for k, v in message.raw_items()] or [None]
    if name == 'Message-ID':
        assert hf.message_id(stored) == _ref_header(message, name)
    elif name == 'Date':
        moment = hf.date(stored)
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        expected = _ref_date(message)
        assert (offset_time(moment) if moment else iso_time(RECEIVED)) == expected
    else:
        assert hf.unstructured(name, stored) == _ref_header(message, name)


MIME_NAMES = ['Content-Type', 'Content-Disposition', 'Content-Transfer-Encoding', 'Content-ID']


@pytest.mark.parametrize('name', MIME_NAMES)
def test_each_mime_value_alone_is_read_as_the_default_policy_reads_it(name):
    for value in MIME_VALUE_LIST:
        for fold in (False, True):
            test_plain_mime_fields_read_by_compat32_as_by_the_default_policy.hypothesis.inner_test(
                [(name, value, fold)])


@MANY
@given(st.lists(st.tuples(st.sampled_from(MIME_NAMES), MIME_VALUES, st.booleans()), max_size=4))
def test_plain_mime_fields_read_by_compat32_as_by_the_default_policy(fields):
    head = ''.join(f'{n}: {v.replace(" ", chr(13) + chr(10) + " ", 1) if fold else v}\r\n'
                   for n, v, fold in fields)
    raw = (head + '\r\nSGVsbG8=\r\n').encode()
    fast = _FEEDPARSER.parsebytes(raw)
    if not hf.unfold_mime_fields(fast):
        return      # not plain: the default policy reads it
    slow = _DEFAULT.parsebytes(raw)
    for read in (lambda m: m.get_content_type(), lambda m: m.get_content_disposition(),
                 lambda m: _ref_safe(m.get_filename), lambda m: m.get_param('charset'),
                 lambda m: m.get_boundary(), lambda m: m.get_payload(decode=True),
                 lambda m: _ref_header(m, 'Content-ID')):
        assert read(fast) == read(slow)
    facts = hf.plain_mime_facts(fast)
    assert (facts.content_type, facts.disposition, facts.filename, facts.content_id) == (
        slow.get_content_type(), slow.get_content_disposition(), _ref_safe(slow.get_filename),
        _ref_header(slow, 'Content-ID'))
    if facts.charset is not None:
        assert facts.charset == slow.get_param('charset', 'ASCII')


# -- generated messages -----------------------------------------------------------------------

BOUNDARIES = st.sampled_from(['b', 'b1', 'b--', 'x y', '=_part', 'b1--'])
SAFE_LINES = st.sampled_from(['hello', '', '.', 'SGVsbG8=', '=C3=A9t=C3=A9', 'caf\udce9', 'café',
                              '<p>hi <b>there</b></p>', ' indented', 'Subject: no'])
TRICKY_LINES = st.sampled_from(['--b', '--b1', '--b--', '--b1--', '--b ', '--bb', '--x y',
                                '--b1-- x', '--=_part'])
# mostly text, sometimes a line that is (or nearly is) a delimiter
BODY_LINES = st.lists(st.one_of(SAFE_LINES, SAFE_LINES, SAFE_LINES, SAFE_LINES, TRICKY_LINES),
                      max_size=4)


@st.composite
def parts(draw, depth: int = 0, shaped: bool = False) -> tuple[list[tuple[str, str]], str]:
    """(header fields, body) of a part, maybe a multipart of more; `shaped`:
    of the shape mimesplit.py splits, mostly (a multipart at the top, with
    parts and its close delimiter; no digest)."""
    headers: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from(
            ['Content-Type', 'Content-Disposition', 'Content-Transfer-Encoding',
             'Content-ID']), max_size=3, unique=True)):
        headers.append((name, draw(MIME_VALUES)))
    if depth < 2 and ((shaped and depth == 0) or draw(st.booleans())):
        boundary = draw(BOUNDARIES)
        subtype = draw(st.sampled_from(['mixed', 'alternative', 'related']
                                       + ([] if shaped else ['digest'])))
        quoted = f'"{boundary}"' if ' ' in boundary or draw(st.booleans()) else boundary
        headers = [h for h in headers if h[0] != 'Content-Type']
        headers.append(('Content-Type', f'multipart/{subtype}; boundary={quoted}'))
        lines = draw(BODY_LINES)        # the preamble
        for _ in range(draw(st.integers(1 if shaped else 0, 3))):
            lines.append(f'--{boundary}' + draw(st.sampled_from(['', '', '  ', '\t'])))
            sub_headers, sub_body = draw(parts(depth + 1, shaped))
            lines += [f'{n}: {v}' for n, v in sub_headers] + ['', sub_body]
        if shaped or draw(st.integers(0, 9)):
            lines.append(f'--{boundary}--')
        lines += draw(BODY_LINES)       # the epilogue
        return headers, '\r\n'.join(lines)
    return headers, '\r\n'.join(draw(BODY_LINES))


@st.composite
def messages(draw, shaped: bool = False) -> bytes:
    headers, body = draw(parts(shaped=shaped))
    top = [(n, draw(address_lists())) for n in draw(st.lists(
        st.sampled_from(['From', 'To', 'Cc', 'Bcc', 'Reply-To']), max_size=3, unique=True))]
    top += [(n, draw(st.one_of(PRINTABLE, st.lists(WORDS, max_size=4).map(''.join))))
            for n in draw(st.lists(st.sampled_from(
                ['Subject', 'Message-ID', 'Date', 'List-Unsubscribe', 'Return-Path']),
                max_size=3, unique=True))]
    head = ''.join(f'{n}: {v}\r\n' for n, v in top + headers)
    text = head + '\r\n' + body + draw(st.sampled_from(['', '\r\n']))
    if not shaped and draw(st.integers(0, 9)) == 0:
        text = text.replace('\r\n', '\n', 1)        # a bare LF somewhere
    return text.encode('utf-8', 'surrogateescape')


@MANY
@given(messages())
def test_generated_messages_split_and_read_as_before(raw):
    assert_tree_is_the_feedparsers(raw)
    same_as_before(raw)


@MANY
@given(messages(shaped=True))
def test_generated_multiparts_split_and_read_as_before(raw):
    assert_tree_is_the_feedparsers(raw)
    same_as_before(raw)


@MANY
@given(address_lists())
@example('Shop 3 <shop3@example.org>, ann+signup@example.com')
def test_the_addresses_a_stamp_finds_named_are_getaddresses(value):
    """arrival.py decides which recipients are hidden (Bcc) by the addresses
    email.utils.getaddresses reads; the quick reading of plain lists agrees."""
    assert addresses_named(value) == [a for _n, a in email.utils.getaddresses([value]) if a]


@MANY
@given(messages(), st.sampled_from([None, '', 'bounce@example.com']),
       st.lists(ADDRESSES, max_size=3))
def test_a_stamped_messages_fields_are_where_they_are(raw, sender, rcpt):
    stored, fields = stamped(raw, sender, rcpt)
    assert fields == header_fields(stored)


@MANY
@given(st.text(st.characters(max_codepoint=0x3000), max_size=40))
def test_the_snippets_text_maps_unprintable_characters_to_spaces(text):
    """html_text's ASCII shortcut (a translate table) is the per-character rule."""
    from smtp_stack.inbox.parse import html_text
    markup = text.replace('<', ' ').replace('&', ' ')
    spaced = ''.join(c if c.isprintable() else ' ' for c in markup).replace('\ufeff', ' ')
    assert html_text(markup) == re.sub(r'\s+', ' ', spaced).strip()


def test_long_mime_fields_are_read_but_not_kept():
    """The reading of a part's MIME fields is kept for the parts that repeat
    them, but not for long fields: a kept key lives as long as the process."""
    mimesplit._mime_reading.cache_clear()
    long_id = 'x' * (mimesplit.CACHED_UP_TO + 1)
    raw = mime(f'Content-Type: text/plain\nContent-ID: <{long_id}@example.com>\n', 'hi\n')
    assert assert_tree_is_the_feedparsers(raw) is not None
    assert mimesplit._mime_reading.cache_info().currsize == 0
    assert_tree_is_the_feedparsers(mime('Content-Type: text/plain\n', 'hi\n'))
    assert mimesplit._mime_reading.cache_info().currsize == 1
    same_as_before(raw)
