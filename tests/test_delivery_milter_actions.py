"""End to end: a real milter (pymilter, Debian python3-milter) called
through policies.milter replaces the body, discards or quarantines, and
the built-in deliveries apply it (docs/delivery.md, "Dropped, replaced and
quarantined messages"). The milter and its fixture are those of
tests/test_policies_milter.py: what it does is chosen by words in the
Subject."""
from __future__ import annotations

import smtplib

import pytest

from smtp_stack import SmtpError, policies
from smtp_stack.delivery import MaildirDelivery, RelayDelivery
from smtp_stack.testing import MailSink

from test_policies_milter import WAIT, message, test_milter  # noqa: F401 (a fixture)


def send(server, data, rcpts=('bob@mx.test',)):
    with smtplib.SMTP(*server.address, timeout=WAIT) as client:
        return client.sendmail('alice@example.test', list(rcpts), data)


def files(folder):
    return sorted((folder / 'new').iterdir()) if (folder / 'new').exists() else []


@pytest.fixture
def maildir_with_milter(serve, test_milter, tmp_path):  # noqa: F811
    box = tmp_path / 'box'
    server = serve([MaildirDelivery(str(box)), policies.milter(test_milter.address, name='one')])
    return server, box


def test_the_milters_new_body_is_what_the_maildir_stores(maildir_with_milter):
    server, box = maildir_with_milter
    assert send(server, message(subject='replbody', body='The body the client sent.')) == {}
    [stored] = files(box)
    raw = stored.read_bytes()
    head, _, body = raw.partition(b'\n\n')
    assert body == b'The body one wrote.\n'
    assert b'\nX-Seen-one: ' in head and b'\nSubject: replbody\n' in head
    assert b'The body the client sent.' not in raw


def test_a_message_the_milter_discards_gets_250_and_is_not_stored(maildir_with_milter):
    server, box = maildir_with_milter
    assert send(server, message(subject='discard')) == {}
    assert files(box) == [] and list((box / 'tmp').iterdir()) == []


def test_a_message_the_milter_quarantines_goes_to_the_quarantine_folder(maildir_with_milter):
    server, box = maildir_with_milter
    assert send(server, message(subject='quarantine')) == {}
    assert files(box) == []
    [held] = files(box / '.Quarantine')
    assert held.read_bytes().startswith(
        b'Return-Path: <alice@example.test>\nX-Quarantine-Reason: held by one\n')


def test_the_relay_passes_the_milters_body_and_refuses_its_quarantine(serve, test_milter):  # noqa: F811
    sink = MailSink(name='upstream.test', tls='off').start()
    try:
        relay = RelayDelivery('127.0.0.1', sink.address[1])
        server = serve([relay, policies.milter(test_milter.address, name='one')],
                       on_close=relay.session_closed)
        assert send(server, message(subject='replbody')) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server, message(subject='quarantine'))
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b'4.7.1')
        assert send(server, message(subject='discard')) == {}
        [relayed] = sink.wait_for(1, timeout=WAIT)
        assert relayed.raw.endswith(b'\r\n\r\nThe body one wrote.\r\n')
        assert relayed['Subject'] == 'replbody'
    finally:
        sink.stop()


# -- the milter's envelope changes reach the relay's upstream --------------------------------

@pytest.fixture
def relay_with_milter(serve, test_milter):  # noqa: F811
    """serve(upstream options) -> (our server, the upstream MailSink)."""
    sinks = []

    def start(**upstream_options):
        sink = MailSink(name='upstream.test', tls='off', **upstream_options).start()
        sinks.append(sink)
        relay = RelayDelivery('127.0.0.1', sink.address[1])
        server = serve([relay, policies.milter(test_milter.address, name='one')],
                       on_close=relay.session_closed)
        return server, sink

    yield start
    for sink in sinks:
        sink.stop()


def test_chgfrom_addrcpt_and_delrcpt_reach_the_upstream(relay_with_milter):
    server, upstream = relay_with_milter()
    assert send(server, message(subject='chgfrom addrcpt delrcpt'),
                rcpts=['bob@mx.test', 'carol@mx.test']) == {}
    [relayed] = upstream.wait_for(1, timeout=WAIT)
    assert relayed.envelope.mail_from.address == 'changed@example.test'
    assert [r.address for r in relayed.envelope.rcpt_to] == ['carol@mx.test', 'added@mx.test']
    # An envelope nobody changed goes as the client sent it.
    assert send(server, message(subject='plain')) == {}
    _, plain = upstream.wait_for(2, timeout=WAIT)
    assert plain.envelope.mail_from.address == 'alice@example.test'
    assert [r.address for r in plain.envelope.rcpt_to] == ['bob@mx.test']


@pytest.mark.parametrize('code, enhanced', [(550, '5.1.1'), (450, '4.2.1')])
def test_a_recipient_the_milter_added_that_the_upstream_refuses(relay_with_milter, code,
                                                                enhanced):
    """All or nothing: the client was told 250 for its recipients and hears the
    upstream's refusal at DATA; nothing is relayed, so nobody gets it twice."""
    def refuse_added(session, address):
        if address.address == 'added@mx.test':
            raise SmtpError(code, 'No such mailbox upstream', enhanced)

    server, upstream = relay_with_milter(on_rcpt_to=refuse_added)
    with smtplib.SMTP(*server.address, timeout=WAIT) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail('alice@example.test', ['bob@mx.test'], message(subject='addrcpt'))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            code, f'{enhanced} No such mailbox upstream'.encode())
        assert upstream.messages == []
        # The session's next message goes through, on the same upstream connection.
        assert client.sendmail('alice@example.test', ['bob@mx.test'],
                               message(subject='plain')) == {}
    [relayed] = upstream.wait_for(1, timeout=WAIT)
    assert relayed['Subject'] == 'plain'


def test_a_message_left_without_recipients_is_discarded(relay_with_milter):
    server, upstream = relay_with_milter()
    assert send(server, message(subject='delrcpt')) == {}     # bob was the only one
    assert send(server, message(subject='plain')) == {}
    [relayed] = upstream.wait_for(1, timeout=WAIT)
    assert relayed['Subject'] == 'plain'
