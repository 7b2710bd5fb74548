"""smtp_stack as the milter of a real Sendmail 8.17 (a private instance:
sendmail_private.py) that relays every message to a MailSink, driven by
smtplib: the middleware's refusals reach the client through Sendmail, its
changes reach what Sendmail relays, and quarantine() is Sendmail's
quarantine (the queue file kept as hf*, not delivered)."""
from __future__ import annotations

import pytest

from milter_filters import DOMAIN, FORGED_AR, change, client, message, refusals, wait_for
from postfix_private import milter_address, milter_thread
from sendmail_private import private_sendmail
from smtp_stack import SmtpError
from smtp_stack.milter import MilterServer
from smtp_stack.testing import MailSink

WAIT = 20.0


def filters(ctx, next):
    """A refusal per stage, and the changes, chosen by the addresses and the Subject."""
    refusals(ctx)
    next()
    if ctx.command_name != 'DATA':
        return
    envelope = ctx.session.envelope
    with envelope.spool().open() as body:
        text = body.read()
    if b'BUY NOW' in text:
        raise SmtpError(554, 'Spam refused by the milter', '5.7.1')
    if b'Subject: hold' in text:
        envelope.quarantine('held for review by the milter')
    change(envelope, [('X-Milter', f'seen {len(text)} bytes')])


@pytest.fixture(scope='module')
def sendmail():
    server = MilterServer(name='milter.test')
    server.use(filters)
    with MailSink(name='upstream.test', tls='off') as upstream, milter_thread(server) as milter, \
            private_sendmail(milter_address(milter), upstream.address[1]) as instance:
        instance.upstream = upstream
        yield instance


def relayed(sendmail, subject):
    """The message Sendmail relayed whose Subject is `subject` (waits for it)."""
    def find():
        return next((found for found in sendmail.upstream.messages
                     if found['Subject'] == subject), None)

    return wait_for(find, WAIT,
                    lambda: f'{subject!r} not relayed:\n{sendmail.transcript()[-3000:]}')


def test_a_refused_recipient_sees_our_reply_through_sendmail(sendmail):
    with client(sendmail, WAIT) as smtp:
        smtp.ehlo()
        smtp.mail('sender@example.org')
        code, text = smtp.rcpt(f'unknown@{DOMAIN}')
        assert code == 550 and text.startswith(b'5.1.1 ')
        assert text.endswith(b'No such user here (the milter says)')
        assert smtp.rcpt(f'rcpt@{DOMAIN}')[0] == 250
        assert smtp.data(message('one refused'))[0] == 250
    assert [a.address for a in relayed(sendmail, 'one refused').envelope.rcpt_to] == \
        [f'rcpt@{DOMAIN}']


def test_a_tempfail_at_mail_and_a_body_refused_by_its_content(sendmail):
    with client(sendmail, WAIT) as smtp:
        smtp.ehlo()
        code, text = smtp.mail('later@example.org')
        assert code == 451 and text.endswith(b'Greylisted by the milter, come back later')
        assert smtp.mail('sender@example.org')[0] == 250
        assert smtp.rcpt(f'rcpt@{DOMAIN}')[0] == 250
        code, text = smtp.data(message('spam', 'Please BUY NOW.\r\n'))
    assert (code, text) == (554, b'5.7.1 Spam refused by the milter')
    assert not any(m['Subject'] == 'spam' for m in sendmail.upstream.messages)


def test_headers_and_recipients_changed_in_what_sendmail_relays(sendmail):
    with client(sendmail, WAIT) as smtp:
        smtp.sendmail('sender@example.org', [f'change-me@{DOMAIN}'],
                      message('changes', headers=[FORGED_AR, 'Authentication-Results: '
                                                             'other.example; dkim=pass']))
    found = relayed(sendmail, 'changes')
    assert found['X-Milter'].startswith('seen ')
    assert found.get_all('Authentication-Results') == ['other.example; dkim=pass']
    assert [a.address for a in found.envelope.rcpt_to] == [f'changed@{DOMAIN}']
    # Inserted at index 0: on top, above Sendmail's own Received field.
    assert found.raw.index(b'X-Milter:') < found.raw.index(b'Received:')


def test_quarantine_is_sendmails_quarantine(sendmail):
    with client(sendmail, WAIT) as smtp:
        smtp.ehlo()
        smtp.mail('sender@example.org')
        smtp.rcpt(f'rcpt@{DOMAIN}')
        code, text = smtp.data(message('hold'))
    assert code == 250
    queue_id = text.split()[1].decode()
    held = sendmail.queue / f'hf{queue_id}'      # Sendmail's name for a quarantined qf
    assert held.exists(), sorted(p.name for p in sendmail.queue.iterdir())
    assert 'qheld for review by the milter' in held.read_text(errors='replace')
    assert not any(m['Subject'] == 'hold' for m in sendmail.upstream.messages)
