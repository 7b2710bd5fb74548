"""An LMTP server calling a milter that deletes or adds recipients
(RFC 2033 4.2): after the body the client gets one reply per RCPT it was
told 250, in its order, while the message goes to the envelope as the
milter left it. A libmilter milter (pymilter) on a loopback port, an
SmtpServer with lmtp=True storing into a Maildir per recipient, and
smtplib.LMTP reading the replies one by one."""
from __future__ import annotations

import smtplib

import pytest

from smtp_stack import policies
from smtp_stack.delivery import MaildirDelivery, RelayDelivery
from smtp_stack.testing import MailSink

from test_policies_milter import DOMAIN, WAIT, PyMilter, message, smtp_server


@pytest.fixture(scope='module')
def test_milter(tmp_path_factory):
    running = PyMilter(tmp_path_factory.mktemp('pymilter-lmtp'), 'one')
    yield running
    running.stop()


@pytest.fixture
def lmtp(tmp_path, test_milter):
    """An LMTP server storing into tmp_path/<local part>, behind the milter."""
    delivery = MaildirDelivery(str(tmp_path / '{local}'))
    with smtp_server(delivery, policies.milter(test_milter.address, name='one'),
                     lmtp=True) as server:
        yield server


def stored(box, local):
    new = box / local / 'new'
    return [path.read_bytes() for path in new.iterdir()] if new.exists() else []


def transaction(server, rcpts, subject):
    """MAIL, each RCPT (all told 250), DATA: the replies after the body,
    one read per RCPT, and then a NOOP's (the connection still in step)."""
    with smtplib.LMTP('127.0.0.1', server.address[1], timeout=WAIT) as client:
        client.ehlo('client.example')
        assert client.mail(f'alice@{DOMAIN}')[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        replies = [client.data(message(subject=subject))]
        replies += [client.getreply() for _ in rcpts[1:]]
        noop = client.noop()
    return replies, noop


def in_step(noop):
    """The NOOP got its own reply, not one left over from the body."""
    assert noop[0] == 250 and b'queued' not in noop[1], noop


def test_a_deleted_recipient_still_gets_its_reply(lmtp, tmp_path):
    replies, noop = transaction(lmtp, ['bob@mx.test', 'carol@mx.test'], 'delrcpt')
    assert [code for code, _ in replies] == [250, 250]
    in_step(noop)
    assert stored(tmp_path, 'bob') == [] and len(stored(tmp_path, 'carol')) == 1


def test_an_added_recipient_gets_the_message_and_no_reply(lmtp, tmp_path):
    replies, noop = transaction(lmtp, ['bob@mx.test', 'carol@mx.test'], 'addrcpt')
    assert [code for code, _ in replies] == [250, 250]
    in_step(noop)
    for local in ('bob', 'carol', 'added'):
        assert len(stored(tmp_path, local)) == 1, local


def test_a_redirect_is_answered_for_the_recipient_sent(lmtp, tmp_path):
    """DELRCPT of the one recipient and ADDRCPT of another: one reply, 250."""
    replies, noop = transaction(lmtp, ['bob@mx.test'], 'delrcpt addrcpt')
    assert [code for code, _ in replies] == [250]
    in_step(noop)
    assert stored(tmp_path, 'bob') == [] and len(stored(tmp_path, 'added')) == 1


def test_an_added_recipients_failure_is_told_to_the_recipients_sent(lmtp, tmp_path):
    """Its delivery failed and it has no RCPT to answer: the client is
    told the failure for the recipients it sent, so it tries again."""
    (tmp_path / 'added').write_bytes(b'a file where its Maildir would go')
    replies, noop = transaction(lmtp, ['bob@mx.test', 'carol@mx.test'], 'addrcpt')
    assert [code // 100 for code, _ in replies] == [4, 4], replies
    assert replies[0] == replies[1]
    in_step(noop)


def test_a_refusal_after_the_body_goes_to_every_recipient(lmtp, tmp_path):
    replies, noop = transaction(lmtp, ['bob@mx.test', 'carol@mx.test'], 'reject-eom')
    assert replies == [(554, b'5.7.0 Content refused by one')] * 2
    in_step(noop)
    assert stored(tmp_path, 'bob') == stored(tmp_path, 'carol') == []


def test_bdat_gets_the_same_replies(lmtp, tmp_path):
    """CHUNKING (RFC 3030): the recipients are noted at the first BDAT."""
    data = message(subject='delrcpt')
    half = len(data) // 2
    with smtplib.LMTP('127.0.0.1', lmtp.address[1], timeout=WAIT) as client:
        client.ehlo('client.example')
        client.mail(f'alice@{DOMAIN}')
        for rcpt in ('bob@mx.test', 'carol@mx.test'):
            assert client.rcpt(rcpt)[0] == 250
        client.send(b'BDAT %d\r\n' % half + data[:half])
        assert client.getreply()[0] == 250
        client.send(b'BDAT %d LAST\r\n' % (len(data) - half) + data[half:])
        replies = [client.getreply(), client.getreply()]
        noop = client.noop()
    assert [code for code, _ in replies] == [250, 250]
    in_step(noop)
    assert stored(tmp_path, 'bob') == [] and len(stored(tmp_path, 'carol')) == 1


def test_a_relay_behind_the_milter_gets_the_changed_envelope(test_milter):
    """The relay sends the envelope as the milter left it upstream; the
    LMTP client still gets one reply per RCPT it sent."""
    with MailSink(name='upstream.test', tls='off') as upstream:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        with smtp_server(relay, policies.milter(test_milter.address, name='one'),
                         lmtp=True) as server:
            replies, noop = transaction(server, ['bob@mx.test', 'carol@mx.test'], 'delrcpt')
        [stored] = upstream.wait_for(1, timeout=WAIT)
    assert [code for code, _ in replies] == [250, 250]
    in_step(noop)
    assert [a.address for a in stored.envelope.rcpt_to] == ['carol@mx.test']
