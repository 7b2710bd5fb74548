"""What the inbox writes into a message as it stores it (inbox/arrival.py),
List-Unsubscribe as Mailpit checks it (inbox/unsubscribe.py), and the
message made from a JSON send request (inbox/send.py): pure, table-driven."""
from __future__ import annotations

import base64
import re
import tracemalloc

import pytest

from smtp_stack.inbox.arrival import header_fields, stamp
from smtp_stack.inbox.parse import message_from_bytes, parse_message
from smtp_stack.inbox.send import SendError, build
from smtp_stack.inbox.unsubscribe import list_unsubscribe, parse_links

MESSAGE = (b'Received: from client\r\nFrom: Ann <ann@example.com>\r\nTo: bob@example.com\r\n'
           b'Message-ID: <kept@example.com>\r\nSubject: hi\r\n\r\nReturn-Path: <body@x>\r\n'
           b'Bcc: not a header\r\n')


def head(raw: bytes) -> list[bytes]:
    return raw.split(b'\r\n\r\n', 1)[0].split(b'\r\n')


def test_return_path_is_added_on_top_and_the_body_is_untouched():
    stored = stamp(MESSAGE, 'bounce@example.com', ['bob@example.com'])
    assert stored == b'Return-Path: <bounce@example.com>\r\n' + MESSAGE


def test_a_return_path_that_says_otherwise_is_replaced_where_it_stands():
    raw = b'X-A: 1\r\nReturn-Path: <forged@example.com>\r\n\tfolded\r\n' + MESSAGE
    stored = stamp(raw, '', ['bob@example.com'])
    assert head(stored)[:3] == [b'X-A: 1', b'Return-Path: <>', b'Received: from client']
    assert stamp(stored, '', ['bob@example.com']) == stored      # already right: left as is


def test_no_envelope_no_return_path():
    assert stamp(MESSAGE, None) == MESSAGE


def test_a_message_id_is_generated_only_when_there_is_none():
    raw = MESSAGE.replace(b'Message-ID: <kept@example.com>\r\n', b'Message-ID: <>\r\n')
    stored = stamp(raw, None)
    assert re.match(rb'Message-ID: <[0-9A-Za-z]{22}@smtp-stack>\r\n', stored)
    assert parse_message(stored)['MessageID'].endswith('@smtp-stack')
    assert stamp(MESSAGE, None) == MESSAGE


def test_envelope_only_recipients_become_a_bcc_field_in_mailpits_order():
    raw = MESSAGE.replace(b'Message-ID: <kept@example.com>\r\n', b'')
    stored = stamp(raw, 'ann@example.com', ['bob@example.com', 'Eve@Example.com',
                                             'eve@example.com', 'not an address'])
    lines = head(stored)
    assert lines[0] == b'Bcc: Eve@Example.com'
    assert lines[1].startswith(b'Message-ID: <') and lines[2] == b'Return-Path: <ann@example.com>'
    assert lines[3] == b'Received: from client'
    assert parse_message(stored)['Bcc'] == [{'Name': '', 'Address': 'Eve@Example.com'}]


def test_a_bcc_field_present_gets_the_missing_recipients_added():
    raw = b'Bcc: carol@example.com\r\n' + MESSAGE
    stored = stamp(raw, None, ['bob@example.com', 'carol@example.com', 'dave@example.com'])
    assert head(stored)[0] == b'Bcc: carol@example.com, dave@example.com'
    assert [n for n, _s, _e in header_fields(stored)].count(b'bcc') == 1


@pytest.mark.parametrize('value, links, errors', [
    ('<mailto:u@example.com>, <https://example.com/u>',
     ['mailto:u@example.com', 'https://example.com/u'], []),
    ('<https://example.com/u> (click here)', ['https://example.com/u'], []),
    ('https://example.com/u', [], ['"https://example.com/u" no valid unsubscribe links found']),
    ('x <https://example.com/u>', [], ['"x <https://example.com/u>" should be enclosed in <>']),
    ('<mailto:a@x.com> <https://x.com/u>', [],
     ['"<mailto:a@x.com> <https://x.com/u>" <> should be split with a comma and optional '
      'spaces']),
    ('<mailto:a@x.com>,<mailto:b@x.com>', ['mailto:a@x.com'],
     ['"mailto:b@x.com" should only contain one mailto:']),
    ('<https://x.com/a b>', [], ['"https://x.com/a b" should not contain spaces']),
    ('<ftp://x.com/u>', [], ['"ftp://x.com/u" should start with either http(s):// or mailto:']),
    ('<mailto:a@x.com>, <https://x.com/1>, <https://x.com/2>', [],
     ['"<mailto:a@x.com>, <https://x.com/1>, <https://x.com/2>" should include a maximum of '
      'one email and one HTTP link']),
])
def test_list_unsubscribe_links_and_their_errors(value, links, errors):
    assert parse_links(value) == (links, errors)


def test_list_unsubscribe_object():
    assert list_unsubscribe('', 'List-Unsubscribe=One-Click') == {
        'Header': '', 'Links': [], 'Errors': '', 'HeaderPost': ''}
    found = list_unsubscribe('<ftp://a>, <https://x.com/u>', 'List-Unsubscribe=One-Click')
    assert found == {'Header': '<ftp://a>, <https://x.com/u>', 'Links': ['https://x.com/u'],
                     'Errors': '"ftp://a" should start with either http(s):// or mailto:',
                     'HeaderPost': 'List-Unsubscribe=One-Click'}


def test_a_folded_list_unsubscribe_is_read_unfolded():
    raw = (b'List-Unsubscribe: <mailto:u@example.com>,\r\n <https://example.com/u>\r\n'
           b'List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n')
    assert parse_message(raw)['ListUnsubscribe']['Links'] == ['mailto:u@example.com',
                                                              'https://example.com/u']


# -- POST /api/v1/send --------------------------------------------------------------------

PNG = b'\x89PNG\r\n\x1a\n0000'


def test_a_send_request_becomes_mailpits_mime_tree():
    raw, sender, rcpt = build({
        'From': {'Email': 'shop@example.com', 'Name': 'Shöp'},
        'To': [{'Email': 'ann@example.com', 'Name': 'Ann'}], 'Cc': [{'Email': 'c@example.com'}],
        'Bcc': ['audit@example.com'], 'ReplyTo': [{'Email': 'help@example.com'}],
        'Subject': 'Order', 'Text': 'one\ntwo', 'HTML': '<img src="cid:logo">',
        'Attachments': [{'Content': base64.b64encode(PNG).decode(), 'Filename': 'logo.png',
                         'ContentID': 'logo'},
                        {'Content': 'data:application/pdf;base64,' +
                                    base64.b64encode(b'%PDF-1.4').decode(),
                         'Filename': 'bill'}],
        'Headers': {'X-Order': '42'}, 'Tags': ['a', 'b c']})
    assert (sender, rcpt) == ('shop@example.com',
                              ['ann@example.com', 'c@example.com', 'audit@example.com'])
    message = message_from_bytes(raw)
    assert message.get_content_type() == 'multipart/mixed'
    related, attachment = message.get_payload()
    assert related.get_content_type() == 'multipart/related'
    assert [p.get_content_type() for p in related.get_payload()[0].get_payload()] == [
        'text/plain', 'text/html']
    assert attachment.get_content_type() == 'application/pdf'     # sniffed: %PDF-
    assert (message['X-Tags'], message['X-Order'], message['Bcc']) == ('a, b c', '42', None)
    fields = parse_message(raw)
    assert fields['Text'] == 'one\ntwo'           # exactly as sent
    assert [(p['PartID'], p['ContentID']) for p in fields['Inline']] == [('1.2', 'logo')]
    assert fields['From'] == {'Name': 'Shöp', 'Address': 'shop@example.com'}
    assert fields['ReplyTo'] == [{'Name': '', 'Address': 'help@example.com'}]


def test_a_text_only_request_is_one_text_part():
    raw, _, _ = build({'From': {'Email': 'a@example.com'}, 'Bcc': ['b@example.com']})
    message = message_from_bytes(raw)
    assert message.get_content_type() == 'text/plain' and message.get_content() == ''
    assert message['Subject'] == '' and message['Date']


@pytest.mark.parametrize('request_, error', [
    ({'To': [{'Email': 'b@example.com'}]}, 'error building message: from not set'),
    ({'From': {'Email': 'a@example.com'}},
     'error building message: no recipients (to, cc, bcc) set'),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'not-an-address'}]},
     'invalid To address: not-an-address'),
    ({'From': {'Email': 'a@example.com'}, 'Bcc': ['b@']}, 'invalid Bcc address: b@'),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'b@example.com'}],
      'ReplyTo': [{'Email': 'x'}]}, 'invalid Reply-To address: x'),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'b@example.com'}],
      'Headers': {'subject': 'x'}}, 'cannot overwrite header: "subject"'),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'b@example.com'}], 'Tags': ['t'],
      'Headers': {'X-Tags': 'x'}}, 'cannot overwrite header: "X-Tags"'),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'b@example.com'}],
      'Headers': {'X-Evil': 'a\r\nBcc: victim@example.com'}}, 'error building message: '),
    ({'From': {'Email': 'a@example.com'}, 'To': [{'Email': 'b@example.com'}],
      'Attachments': [{'Content': 'not base64!', 'Filename': 'f.bin'}]},
     'error decoding base64 attachment "f.bin": '),
    ({'From': 'a@example.com', 'To': [{'Email': 'b@example.com'}]},
     'From must be an object with Email and Name'),
])
def test_send_requests_mailpit_refuses(request_, error):
    with pytest.raises(SendError) as refused:
        build(request_)
    assert str(refused.value).startswith(error)


def test_the_links_a_link_check_asks():
    from smtp_stack.inbox.linkcheck import MAX_LINKS, extract_links
    html = ('<a href="https://a.example/1">1</a><img src="https://a.example/img.png">'
            '<link rel="stylesheet" href="https://a.example/s.css"><link rel="icon" '
            'href="https://a.example/i.ico"><a href="mailto:x@example.com">m</a>'
            '<a href="/relative">r</a><a href="https://a.example/1">again</a>')
    text = 'Go to https://b.example/x?y=1, or <https://c.example/\nwrapped>.'
    assert extract_links(html, text) == [
        'https://a.example/1', 'https://a.example/s.css', 'https://a.example/img.png',
        'https://b.example/x?y=1,', 'https://c.example/wrapped']
    many = ''.join(f'<a href="https://a.example/{i}">' for i in range(150))
    assert len(extract_links(many, '')) == MAX_LINKS


def test_a_large_message_is_stamped_and_read_with_few_copies_of_it():
    """Stamping copies a message once (its header section is edited alone),
    and reading it into its fields peaks near three times its size (the
    text, a part's slice, the decoded attachment): 6.5 times before, for
    this 13.7 MB message."""
    attachment = bytes(range(256)) * 40_000        # 10 MB, 13.7 MB in base64
    raw = (b'From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\n'
           b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b'--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
           b'--b\r\nContent-Type: application/octet-stream\r\n'
           b'Content-Transfer-Encoding: base64\r\n'
           b'Content-Disposition: attachment; filename="big.bin"\r\n\r\n'
           + base64.encodebytes(attachment).replace(b'\n', b'\r\n') + b'--b--\r\n')
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stored = stamp(raw, 'a@example.com', ['b@example.com', 'hidden@example.com'])
        stamping = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.reset_peak()
        fields = parse_message(stored)
        reading = tracemalloc.get_traced_memory()[1] - before - len(stored)
    finally:
        tracemalloc.stop()
    assert stored.endswith(raw[raw.index(b'\r\n\r\n'):]) and b'Bcc: hidden' in stored
    assert fields['Attachments'][0]['Size'] == len(attachment)
    assert stamping < 1.2 * len(raw), stamping
    assert reading < 3.2 * len(raw), reading
