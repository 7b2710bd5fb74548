"""Forged Authentication-Results (RFC 8601 5): a field that a message
arrives with and that names our authserv-id is left out by every delivery,
beside the one `authenticate` adds; fields of other authserv-ids stay.

Sent with smtplib (or a raw client for BDAT) to servers on 127.0.0.1 using
`authenticate` against a real dnsmasq, then read where each delivery puts
the message: the Maildir file, a real upstream smtp_stack server behind the
relay, the callable's body, MailSink's messages, the inbox's store.
"""
from __future__ import annotations

import email.policy
import os
import smtplib
from email.parser import BytesParser

import pytest

from smtp_stack.delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from smtp_stack.policies import authenticate
from smtp_stack.policies.authresults import authserv_id, claims
from smtp_stack.testing import MailSink

from conftest import WAIT
from inbox_helpers import Http, InboxThread
from policy_services import dns_server, keys, resolver  # noqa: F401 (fixtures)

OTHER = b'Authentication-Results: relay.example.net; spf=pass smtp.mailfrom=example.test\r\n'
KEPT = (OTHER + b'From: Alice <alice@example.test>\r\nTo: bob@mx.test\r\nSubject: forged\r\n'
        b'Message-ID: <forged@example.test>\r\n\r\n'
        b'Authentication-Results: mx.test; dmarc=pass (body text, not a header)\r\n')
# Ours as it is written, as another case writes it, and folded; then the
# field of another authserv-id, which stays, and the message.
FORGED = (b'Authentication-Results: mx.test; dmarc=pass header.from=example.test\r\n'
          + KEPT[:len(OTHER)]
          + b'Authentication-Results: (looks real) MX.Test;\r\n'
          b'\tdkim=pass header.d=example.test;\r\n'
          b'  dmarc=pass header.from=example.test\r\n'
          + KEPT[len(OTHER):])


def send(address, message=FORGED, login=None):
    with smtplib.SMTP(*address, timeout=WAIT) as c:
        if login:
            c.login(*login)
        c.sendmail('alice@example.test', ['bob@mx.test'], message)


def results_fields(raw: bytes) -> list:
    message = BytesParser(policy=email.policy.default).parsebytes(raw.replace(b'\r\n', b'\n'))
    return [str(value) for value in message.get_all('Authentication-Results') or ()]


def assert_forged_left_out(raw: bytes) -> None:
    """Ours on top (added by authenticate), the other one kept, and the
    message otherwise as sent, its body untouched."""
    values = results_fields(raw)
    assert len(values) == 2, values
    assert values[0].startswith('mx.test; spf=')
    assert values[1] == OTHER[len(b'Authentication-Results: '):-2].decode()
    assert raw.replace(b'\r\n', b'\n').endswith(KEPT.replace(b'\r\n', b'\n'))


# -- the authserv-id of a field (pure) -----------------------------------------------

@pytest.mark.parametrize('value, expected', [
    ('mx.test; spf=pass', 'mx.test'),
    ('mx.test 1; spf=pass', 'mx.test'),                     # with a version
    ('mx.test', 'mx.test'),                                 # no result: still names it
    ('  (a (nested) \\) comment)\tmx.test(c); x', 'mx.test'),
    ('"mx.test"; spf=pass', 'mx.test'),                     # a quoted-string value
    ('"m\\"x"; x', 'm"x'),
    ('münchen.example; x', 'münchen.example'),
    ('', None),
    ('; none', None),
    ('(unclosed mx.test; x', None),
    ('"unclosed; x', None),
    ('mx.test/x; y', None),                                 # not one value: not ours
    ('mx.test@x; y', None),
])
def test_authserv_id_is_read_or_none(value, expected):
    assert authserv_id(value) == expected


@pytest.mark.parametrize('value, is_ours', [
    ('mx.test; dmarc=pass', True),
    ('MX.TEST; dmarc=pass', True),                          # case-insensitive
    ('mx.test.; dmarc=pass', True),                         # the root dot
    ('"Mx.Test"; dmarc=pass', True),
    ('mx.test.example; dmarc=pass', False),
    ('relay.example.net; spf=pass', False),
    ('mx.test/x; dmarc=pass', False),                       # cannot be parsed: not ours
    ('(mx.test', False),
])
def test_claims_compares_authserv_ids(value, is_ours):
    assert claims('mx.test')(value) is is_ours
    assert claims('MX.test.')(value) is is_ours


# -- every delivery, over sockets -------------------------------------------------

def via_maildir(serve, tmp_path, resolver):
    maildir = tmp_path / 'Maildir'
    server = serve(middleware=[MaildirDelivery(str(maildir)), authenticate(resolver=resolver)])
    send(server.address)
    [name] = os.listdir(maildir / 'new')
    return (maildir / 'new' / name).read_bytes()


def via_relay(serve, tmp_path, resolver):
    with MailSink() as upstream:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        server = serve(middleware=[relay, authenticate(resolver=resolver)],
                       on_close=relay.session_closed)
        send(server.address)
        [message] = upstream.wait_for(1)
    return message.raw


def via_callable(serve, tmp_path, resolver):
    bodies = []
    delivery = CallableDelivery(lambda session, envelope, body: bodies.append(body.read()))
    send(serve(middleware=[delivery, authenticate(resolver=resolver)]).address)
    return bodies[0]


def via_mailsink(serve, tmp_path, resolver):
    with MailSink(name='mx.test') as sink:
        sink.server.use(authenticate(resolver=resolver))
        send(sink.address)
        [message] = sink.wait_for(1)
    return message.raw


def via_inbox(serve, tmp_path, resolver):
    runner = InboxThread(tmp_path / 'inbox.db', name='mx.test')
    runner.inbox.smtp.use(authenticate(resolver=resolver))
    with runner:
        send(runner.smtp)
        web = Http(runner.url)
        try:
            return web.get('/api/v1/message/latest/raw').body
        finally:
            web.close()


@pytest.mark.parametrize('deliver', [via_maildir, via_relay, via_callable, via_mailsink, via_inbox],
                         ids=['maildir', 'relay', 'callable', 'mailsink', 'inbox'])
def test_forged_authentication_results_are_left_out(deliver, serve, tmp_path, resolver):
    assert_forged_left_out(deliver(serve, tmp_path, resolver))


def test_relayed_binarymime_in_bdat_chunks_loses_the_forged_fields_too(serve, client, resolver):
    """The BDAT path upstream (RFC 3030), byte for byte otherwise."""
    with MailSink() as upstream:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        server = serve(middleware=[relay, authenticate(resolver=resolver)],
                       on_close=relay.session_closed)
        c = client(server)
        c.expect(250, 'EHLO x')
        c.expect(250, 'MAIL FROM:<alice@example.test> BODY=BINARYMIME')
        c.expect(250, 'RCPT TO:<bob@mx.test>')
        body = FORGED + b'\x00\xff bare\rCR\n' * 5000
        cut = len(FORGED) // 2          # a chunk ends inside the header section
        c.send(b'BDAT %d\r\n' % cut + body[:cut])
        assert c.reply()[0] == 250
        c.send(b'BDAT %d LAST\r\n' % (len(body) - cut) + body[cut:])
        assert c.reply()[0] == 250
        [message] = upstream.wait_for(1)
    assert message.raw.endswith(KEPT + b'\x00\xff bare\rCR\n' * 5000)
    assert len(results_fields(message.raw)) == 2


def test_remove_forged_false_keeps_every_field(resolver):
    from smtp_stack.policies.authentication import Authenticate
    with MailSink(name='mx.test') as sink:
        sink.server.use(Authenticate(resolver=resolver, remove_forged=False))
        send(sink.address)
        [message] = sink.wait_for(1)
    assert message.raw.endswith(FORGED) and len(results_fields(message.raw)) == 4


def test_the_authserv_id_option_decides_what_is_ours(resolver):
    """With authserv_id set, that is the id that is ours: fields naming the
    host name are then someone else's and stay."""
    forged = b'Authentication-Results: auth.example.test; dmarc=pass\r\n' + FORGED
    with MailSink(name='mx.test') as sink:
        sink.server.use(authenticate(resolver=resolver, authserv_id='Auth.Example.Test'))
        send(sink.address, forged)
        [message] = sink.wait_for(1)
    values = results_fields(message.raw)
    assert values[0].startswith('Auth.Example.Test; spf=')
    assert message.raw.endswith(FORGED) and len(values) == 4


def test_submission_is_not_checked_but_its_forged_fields_go(resolver):
    """An authenticated client is no trusted MTA: its message gets no
    Authentication-Results of ours, and cannot carry one either."""
    options = dict(name='mx.test', auth_methods=['PLAIN'], allow_insecure_auth=True,
                   on_auth=lambda session: {'name': session.auth.username})
    with MailSink(**options) as sink:
        sink.server.use(authenticate(resolver=resolver))
        send(sink.address, login=('alice', 'secret'))
        [message] = sink.wait_for(1)
    assert message.raw == KEPT
    assert not hasattr(message.envelope, 'auth_results')


def test_the_arc_seal_never_vouches_for_a_forged_field(resolver, keys):
    """dkimpy builds ARC-Authentication-Results from every field of our
    authserv-id: a forged dmarc=pass must not be sealed with our key. The
    seal still validates on the message as delivered."""
    from smtp_stack.policies.dkimcheck import verify_arc
    seal = {'selector': 'rsa1', 'domain': 'example.test', 'key': keys.rsa.private_pem}
    with MailSink(name='mx.test') as sink:
        sink.server.use(authenticate(resolver=resolver, arc_seal=seal))
        send(sink.address)              # from 127.0.0.1: SPF, so DMARC, fails
        [message] = sink.wait_for(1)
    aar = str(message['ARC-Authentication-Results'])
    assert 'dmarc=fail' in aar and 'dmarc=pass' not in aar and 'dkim=pass' not in aar
    assert verify_arc(resolver, message.raw).result == 'pass'
    assert_forged_left_out(message.raw)


def test_the_public_factory_stays_callable_after_its_module_is_imported(resolver):
    """policies.authenticate is a function however often it is called and
    whatever imported its module (it once became the module after a call)."""
    import smtp_stack.policies.authentication  # noqa: F401
    from smtp_stack import policies
    first = policies.authenticate(resolver=resolver)
    second = policies.authenticate(resolver=resolver, remove_forged=False)
    assert callable(first) and callable(second) and callable(policies.authenticate)
    with MailSink(name='mx.test') as sink:
        sink.server.use(second)
        send(sink.address)
        [message] = sink.wait_for(1)
    assert message.raw.endswith(FORGED) and len(results_fields(message.raw)) == 4
