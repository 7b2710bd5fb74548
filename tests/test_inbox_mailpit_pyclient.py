"""PyPI's `mailpit-api-client` (1.0.0, the `mailpit` package: httpx and
dataclasses-json) drives the inbox over HTTP: every public method of its
`API`, its unittest `EMailTestCase` helpers and its pytest fixture.

The client was written in July 2023 against Mailpit 1.7. Two of its models
no longer fit Mailpit's own answers, and so not ours either; the tests pin
that we fail exactly where Mailpit does (and why), and work where it works:
- `get_message` needs a `Read` key, which Mailpit dropped from the message
  in 1.9 (its commit 9af04f8, "Remove redundant `Read` status");
- `get_message_headers` needs `Content-Type`, `Date`, `Delivered-To`,
  `From` and `Message-Id` headers: Mailpit adds none of them to a message.
`put_messages` and `delete_messages` send a form, not JSON: Mailpit answers
400 to the one and deletes every message on the other; here both do what
the client asked (docs/inbox.md).
"""
from __future__ import annotations

import datetime
import types
import unittest

import pytest

import peers
from inbox_helpers import InboxThread, make_mail, send

# Mailpit's null Bcc, which the client's MessageSummary types as a list.
pytestmark = pytest.mark.filterwarnings('ignore:.*non-optional type bcc:RuntimeWarning')


@pytest.fixture(scope='module')
def mailpit():
    """The client's package; a missing one fails in CI (the test extra)."""
    peers.python_module('httpx')
    return types.SimpleNamespace(api=peers.python_module('mailpit.client.api'),
                                 models=peers.python_module('mailpit.client.models'),
                                 unittest=peers.python_module('mailpit.testing.unittest'),
                                 pytest=peers.python_module('mailpit.testing.pytest'))


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


def client(mailpit, inbox):
    """The URL as the client's docs write it (`http://localhost:8025`): it
    appends `/api/v1/...` itself."""
    return mailpit.api.API(inbox.url.rstrip('/'), timeout=10)


def mail(subject, **kwargs):
    msg = make_mail(subject=subject, **kwargs)
    msg['Date'] = 'Tue, 01 Dec 2026 10:20:30 +0100'
    return msg


def test_get_messages_reads_summaries_pages_and_counts(mailpit, inbox):
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    send(inbox.smtp, mail('First', cc='Carol <carol@example.com>'))
    send(inbox.smtp, mail('Second', attachments=[('a.csv', 'text/csv', b'a,b\n')]))
    api = client(mailpit, inbox)

    listing = api.get_messages()
    assert isinstance(listing, mailpit.models.Messages)
    assert (listing.total, listing.unread, listing.count, listing.start) == (2, 2, 2, 0)
    second, first = listing.messages
    assert (second.subject, first.subject) == ('Second', 'First')
    assert second.from_ == mailpit.models.Contact(name='Alice', address='alice@example.com')
    assert second.to == [mailpit.models.Contact(name='', address='bob@example.com')]
    assert first.cc == [mailpit.models.Contact(name='Carol', address='carol@example.com')]
    assert second.cc is None and second.bcc is None          # Mailpit's null
    assert (second.attachments, first.attachments) == (1, 0)
    assert second.read is False and second.size > 0 and second.message_id
    assert before <= second.created <= datetime.datetime.now(datetime.timezone.utc)

    page = api.get_messages(limit=1, start=1)
    assert (page.total, page.count, page.start) == (2, 1, 1)
    assert [m.subject for m in page.messages] == ['First']
    assert api.last_response.status_code == 200


def test_get_message_attachment_returns_the_decoded_part(mailpit, inbox):
    send(inbox.smtp, mail('Report', attachments=[('r.csv', 'text/csv', b'x,y\r\n1,2\r\n')]))
    api = client(mailpit, inbox)
    [summary] = api.get_messages().messages
    assert api.get_message_attachment(summary.id, '2') == 'x,y\r\n1,2\r\n'
    with pytest.raises(mailpit.api.httpx.HTTPStatusError) as refused:
        api.get_message_attachment(summary.id, '9')
    assert refused.value.response.status_code == 404


def test_get_message_headers_as_textproto_keys(mailpit, inbox):
    send(inbox.smtp, mail('Headers', extra_headers={'Delivered-To': 'bob@example.com'}))
    send(inbox.smtp, mail('No Delivered-To'))
    api = client(mailpit, inbox)
    bare, delivered = api.get_messages().messages

    headers = api.get_message_headers(delivered.id)
    assert headers.delivered_to == ['bob@example.com']
    assert headers.from_ == ['Alice <alice@example.com>']
    assert headers.message_id == [f'<{delivered.message_id}>']     # Go's "Message-Id"
    assert headers.date == [datetime.datetime(2026, 12, 1, 10, 20, 30, tzinfo=datetime.timezone(
        datetime.timedelta(hours=1)))]
    assert headers.content_type[0].startswith('text/plain')
    assert headers.additional['Subject'] == ['Headers']
    assert headers.additional['Return-Path'] == ['<alice@example.com>']

    # Mailpit adds no Delivered-To, so the client's model cannot read it there either.
    with pytest.raises(KeyError, match='delivered_to'):
        api.get_message_headers(bare.id)
    assert api.last_response.status_code == 200


def test_get_message_fails_on_read_as_against_mailpit(mailpit, inbox):
    send(inbox.smtp, mail('Full', html='<p>Hi</p>'))
    api = client(mailpit, inbox)
    [summary] = api.get_messages().messages
    with pytest.raises(KeyError, match='read'):
        api.get_message(summary.id)
    answer = api.last_response.json()
    assert api.last_response.status_code == 200 and 'Read' not in answer
    # With the key Mailpit 1.7 still sent, the rest of the shape is the client's.
    message = mailpit.models.Message.from_dict({**answer, 'Read': True})
    assert (message.subject, message.html) == ('Full', '<p>Hi</p>\r\n')
    assert message.date == datetime.datetime.fromisoformat('2026-12-01T10:20:30+01:00')
    assert message.from_ == summary.from_ and message.to == summary.to


def test_put_messages_sets_read_from_its_form(mailpit, inbox):
    send(inbox.smtp, mail('One'))
    send(inbox.smtp, mail('Two'))
    api = client(mailpit, inbox)
    two, one = api.get_messages().messages

    api.put_messages([one.id], 'Read', True)
    listing = api.get_messages()
    assert listing.unread == 1
    assert {m.subject: m.read for m in listing.messages} == {'One': True, 'Two': False}
    assert api.last_response.status_code == 200

    api.put_messages([], 'Read', True)          # no IDs: every message, as in Mailpit
    assert api.get_messages().unread == 0
    api.put_messages([two.id], 'Read', False)
    assert [m.subject for m in api.get_messages().messages if not m.read] == ['Two']

    with pytest.raises(mailpit.api.httpx.HTTPStatusError) as refused:
        api.put_messages([one.id], 'Read', 'maybe')
    assert refused.value.response.status_code == 400


def test_delete_messages_deletes_the_ids_of_its_form(mailpit, inbox):
    for subject in ('Keep', 'Drop 1', 'Drop 2'):
        send(inbox.smtp, mail(subject))
    api = client(mailpit, inbox)
    drop2, drop1, keep = api.get_messages().messages

    api.delete_messages([drop1.id, drop2.id])     # Mailpit: every message
    assert [m.subject for m in api.get_messages().messages] == ['Keep']
    api.delete_messages([])                       # documented: all
    assert api.get_messages().total == 0
    assert keep.id


def test_unittest_helpers_find_and_compare_messages(mailpit, inbox):
    sent = send(inbox.smtp, mail('Unittest'))
    message_id = sent['Message-ID'].strip('<>')
    base = mailpit.unittest.EMailTestCase
    outcomes: dict[str, object] = {}

    class Received(base):
        api_url = inbox.url.rstrip('/')

        def test_received(self):
            self.assertMessageReceived(message_id)
            outcomes['received'] = True

        def test_not_received(self):
            with self.assertRaises(self.failureException):
                self.assertMessageReceived('nobody@nowhere')
            outcomes['not received'] = True

        def test_equal(self):
            [summary] = self.mailpit_api.get_messages().messages
            with self.assertRaises(KeyError):          # no Read, as in Mailpit
                self.mailpit_api.get_message(summary.id)
            answer = {**self.mailpit_api.last_response.json(), 'Read': True}
            stored = mailpit.models.Message.from_dict(answer)
            # Equal ignores Mailpit's database ID and the size, not the subject.
            self.assertEqual(stored, mailpit.models.Message.from_dict(
                {**answer, 'ID': 'other', 'Size': 1}))
            with self.assertRaises(self.failureException):
                self.assertEqual(stored, mailpit.models.Message.from_dict(
                    {**answer, 'Subject': 'Other'}))
            outcomes['equal'] = stored.subject

    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(Received).run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    assert outcomes == {'received': True, 'not received': True, 'equal': 'Unittest'}


def test_pytest_fixture_yields_the_api_and_cleans_up(mailpit, inbox):
    send(inbox.smtp, mail('Fixture'))
    fixture = mailpit.pytest.mailpit_api.__wrapped__(
        types.SimpleNamespace(param=inbox.url.rstrip('/')))
    api = next(fixture)
    assert [m.subject for m in api.get_messages().messages] == ['Fixture']
    with pytest.raises(StopIteration):
        next(fixture)                            # its teardown deletes what it listed
    assert api.get_messages().total == 0
