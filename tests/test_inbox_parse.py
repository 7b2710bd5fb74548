"""smtp_stack.inbox.parse: a message into the API's fields (pure)."""
from __future__ import annotations

import base64
import email.policy
import tracemalloc
from datetime import datetime, timezone
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.inbox.parse import (canonical_name, find_part, header_map, html_to_text,
                                    iso_time, parse_message, part_payload, snippet)

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def rich() -> bytes:
    m = EmailMessage()
    m['From'] = '=?utf-8?q?Andr=C3=A9?= <andre@example.com>'
    m['To'] = 'Bob <bob@example.com>, carol@example.com'
    m['Reply-To'] = 'replies@example.com'
    m['Subject'] = '=?utf-8?b?R3LDvMOfZQ==?='
    m['Message-ID'] = '<abc.123@example.com>'
    m['Date'] = 'Fri, 02 Jan 2026 10:00:00 +0100'
    m.set_content('plain text\n')
    m.add_alternative('<p>html <img src="cid:logo@x"></p>', subtype='html')
    m.get_payload()[1].add_related(b'\x89PNG', 'image', 'png', cid='<logo@x>', filename='logo.png')
    m.add_attachment(b'%PDF', maintype='application', subtype='pdf', filename='r\u00e9sum\u00e9.pdf')
    return m.as_bytes()


def test_fields_of_a_rich_message():
    f = parse_message(rich(), ['bob@example.com', 'carol@example.com', 'hidden@example.com'],
                      RECEIVED)
    assert f['From'] == {'Name': 'André', 'Address': 'andre@example.com'}
    assert f['To'] == [{'Name': 'Bob', 'Address': 'bob@example.com'},
                       {'Name': '', 'Address': 'carol@example.com'}]
    assert f['Bcc'] == [{'Name': '', 'Address': 'hidden@example.com'}]
    assert f['ReplyTo'] == [{'Name': '', 'Address': 'replies@example.com'}]
    assert (f['Subject'], f['MessageID']) == ('Grüße', 'abc.123@example.com')
    assert f['Date'] == '2026-01-02T10:00:00+01:00' and f['Created'] == '2026-01-02T03:04:05.678Z'
    assert f['Text'] == 'plain text\n' and 'cid:logo@x' in f['HTML']
    assert [(p['PartID'], p['FileName'], p['ContentID']) for p in f['Inline']] == [
        ('1.2.2', 'logo.png', 'logo@x')]
    assert [(p['PartID'], p['FileName'], p['Size']) for p in f['Attachments']] == [
        ('2', 'résumé.pdf', 4)]
    assert set(f['Attachments'][0]['Checksums']) == {'MD5', 'SHA1', 'SHA256'}


def test_parts_by_id():
    raw = rich()
    assert part_payload(find_part(raw, '2')) == b'%PDF'
    assert part_payload(find_part(raw, '1.2.2')) == b'\x89PNG'
    assert find_part(raw, '7') is None


@pytest.mark.parametrize('raw, field, expected', [
    (b'Subject: only html\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b></p>\r\n',
     'Text', 'Hi  there'),
    (b'From: not an address at all <<<\r\nSubject: x\r\n\r\nbody\r\n', 'Subject', 'x'),
    (b'To: undisclosed-recipients:;\r\n\r\nbody\r\n', 'To', []),
    (b'Subject: no date\r\n\r\nbody\r\n', 'Date', '2026-01-02T03:04:05.678Z'),
    (b'Date: garbage\r\n\r\nbody\r\n', 'Date', '2026-01-02T03:04:05.678Z'),
    (b'Content-Type: text/plain; charset=x-unknown\r\n\r\nbody\r\n', 'Text', 'body\r\n'),
    (b'\r\n', 'From', None),
    (b'Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n',
     'Attachments', [{'PartID': '1', 'FileName': '', 'ContentType': 'application/pdf'}]),
])
def test_odd_messages_never_raise(raw, field, expected):
    value = parse_message(raw, (), RECEIVED)[field]
    if field == 'Attachments':
        value = [{k: p[k] for k in ('PartID', 'FileName', 'ContentType')} for p in value]
    assert value == expected


def test_header_map_is_canonical_unfolded_and_raw():
    raw = (b'Received: from a\r\n\tby b; Fri, 2 Jan 2026\r\nMESSAGE-ID: <x@y>\r\n'
           b'subject: =?utf-8?q?hi?=\r\nReceived: second\r\n\r\nBody: not a header\r\n')
    assert header_map(raw) == {'Received': ['from a by b; Fri, 2 Jan 2026', 'second'],
                               'Message-Id': ['<x@y>'], 'Subject': ['=?utf-8?q?hi?=']}


@pytest.mark.parametrize('name, canonical', [
    ('content-type', 'Content-Type'), ('X-SPAM-status', 'X-Spam-Status'), ('mime-version', 'Mime-Version')])
def test_canonical_names(name, canonical):
    assert canonical_name(name) == canonical


def test_snippet_and_text_helpers():
    assert snippet('a\n\n  b\tc ') == 'a b c'
    long = snippet('word ' * 100)
    assert len(long) <= 253 and long.endswith('...')
    assert html_to_text('<style>p{}</style><script>x()</script><p>a &amp; b</p>') == 'a & b'
    assert iso_time(datetime(2026, 5, 6, 7, 8, 9, 999999, tzinfo=timezone.utc)) == '2026-05-06T07:08:09.999Z'


@pytest.mark.parametrize('text, html_body, expected', [
    ('the text', '<html><head><title>T</title><style>p{}</style></head><body><p>From</p>'
                 '<p>the&nbsp;HTML &amp; more</p><br>x<img src="a">y</body></html>',
     'From the HTML & more x y'),        # a no-break space is no printable character
    ('the text', '   ', 'the text'),
    ('\ufeff spaced \n\n out ', '', 'spaced out'),
    ('', '<p>' + 'é' * 150 + '</p>', 'é' * 99 + '...'),     # 200 bytes, whole characters
    ('word ' * 50, '', ('word ' * 40) + '...'),               # Mailpit keeps the space
    ('', '<head><title>only a head', ''),
])
def test_snippet_is_mailpits(text, html_body, expected):
    assert snippet(text, html_body) == expected


@pytest.mark.parametrize('header, expected', [
    ('Fri, 02 Jan 2026 10:00:00 +0100', '2026-01-02T10:00:00+01:00'),
    ('Fri, 02 Jan 2026 10:00:00 -0530', '2026-01-02T10:00:00-05:30'),
    ('Fri, 02 Jan 2026 10:00:00 +0000', '2026-01-02T10:00:00Z'),
    ('Fri, 02 Jan 2026 10:00:00 GMT', '2026-01-02T10:00:00Z'),
])
def test_date_keeps_the_fields_offset(header, expected):
    raw = f'Date: {header}\r\n\r\nbody\r\n'.encode()
    assert parse_message(raw, (), RECEIVED)['Date'] == expected


def test_text_and_html_keep_their_line_ends():
    raw = (b'Content-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\n'
           b'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: '
           b'quoted-printable\r\n\r\nl=C3=A9ne one\r\nline two\r\n--B\r\nContent-Type: text/html'
           b'\r\n\r\n<p>a</p>\r\n<p>b</p>\r\n--B--\r\n')
    fields = parse_message(raw, (), RECEIVED)
    assert (fields['Text'], fields['HTML']) == ('léne one\r\nline two', '<p>a</p>\r\n<p>b</p>')
    assert fields['Snippet'] == 'a b'


def test_return_path_falls_back_to_from_and_a_nameless_inline_part_to_its_content_id():
    m = EmailMessage()
    m['From'] = 'Ann <ann@example.com>'
    m.set_content('text')
    m.add_alternative('<img src="cid:logo@x">', subtype='html')
    m.get_payload()[1].add_related(b'\x89PNG', 'image', 'png', cid='<logo@x>')
    fields = parse_message(m.as_bytes(), (), RECEIVED)
    assert fields['ReturnPath'] == 'ann@example.com'
    assert [(p['FileName'], p['ContentID']) for p in fields['Inline']] == [('logo@x', 'logo@x')]


def base64_part(body: str, policy=email.policy.compat32) -> EmailMessage:
    part = EmailMessage(policy=policy)
    part['Content-Type'] = 'application/octet-stream'
    part['Content-Transfer-Encoding'] = 'base64'
    part.set_payload(body)
    return part


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text('ABCxyz019+/=-\r\n \t.\u00e9', max_size=12), max_size=10),
       st.sampled_from(['\r\n', '\n', '']))
def test_a_base64_part_decodes_as_the_stdlib_decodes_it(pieces, end):
    """part_payload's one-call decoding of the usual base64 lines gives
    what get_payload(decode=True) gives, for any body (padding in the
    middle, a length that is not whole, other characters, bare line ends)."""
    body = '\r\n'.join(pieces) + end
    for policy in (email.policy.compat32, email.policy.default):
        part = base64_part(body, policy)
        assert part_payload(part) == part.get_payload(decode=True)


@pytest.mark.parametrize('body, charset', [
    (b'\xc1\xc2\xc3\xc4', 'cp037'),       # 'ABCD' in EBCDIC: no base64 to the stdlib
    (b'QUJD\xc1\r\nRA==', 'cp500'),
    (b'QUJD\xff', 'latin-1'),
])
def test_8bit_bytes_in_a_base64_body_decode_as_the_stdlib_decodes_them(body, charset):
    """The 8-bit bytes of a body arrive as surrogates; the stdlib decodes
    those by the part's charset before it decodes base64: so must we."""
    raw = (b'From: a@example.com\r\nMIME-Version: 1.0\r\n'
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b'--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
           b'--b\r\nContent-Type: application/octet-stream; charset=' + charset.encode()
           + b'\r\nContent-Transfer-Encoding: base64\r\n'
           b'Content-Disposition: attachment; filename="x.bin"\r\n\r\n' + body
           + b'\r\n--b--\r\n')
    part = find_part(raw, '2')
    expected = part.get_payload(decode=True)
    assert part_payload(part) == expected
    [attachment] = parse_message(raw)['Attachments']
    assert attachment['Size'] == len(expected)


def test_a_large_base64_attachment_decodes_without_copies_of_copies():
    data = bytes(range(256)) * 40_000           # 10 MB
    encoded = base64.encodebytes(data).decode().replace('\n', '\r\n')
    part = base64_part(encoded)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert part_payload(part) == data
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * len(data), peak     # the encoded bytes and the decoded ones (3.5x before)
