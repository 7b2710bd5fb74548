"""Relay delivery: two servers in one test, the upstream's verdict reaches the client."""
import gc
import smtplib
import socket
import threading

import pytest

from smtp_stack import SmtpError
from smtp_stack.delivery import RelayDelivery
from smtp_stack.delivery.relay import xforward_lines
from smtp_stack.session import Session
from smtp_stack.testing import MailSink

from conftest import WAIT

BODY = (b'From: a@b.example\r\nSubject: relayed\r\n\r\n.dot line\r\nbody\r\n')


@pytest.fixture
def upstream():
    """upstream(**options) -> a running MailSink with an on_close event."""
    sinks = []

    def start(middleware=(), **options):
        closed = threading.Event()
        options.setdefault('on_close', lambda session: closed.set())
        sink = MailSink(**options)
        for fn in middleware:
            sink.server.use(fn)
        sink.closed = closed
        sinks.append(sink.start())
        return sink

    yield start
    for sink in sinks:
        sink.stop()


def relay_to(serve, sink, **kwargs):
    server_options = kwargs.pop('server_options', {})
    relay = RelayDelivery('127.0.0.1', sink.address[1], **kwargs)
    return serve(middleware=[relay], on_close=relay.session_closed, **server_options)


def start_transaction(c, rcpts=('c@d.example',), hello='EHLO x'):
    c.expect(250, hello)
    c.expect(250, 'MAIL FROM:<a@b.example>')
    for rcpt in rcpts:
        c.expect(250, f'RCPT TO:<{rcpt}>')
    c.expect(354, 'DATA')


def test_accepted_upstream_before_the_client_hears_250(serve, upstream):
    sink = upstream()
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        assert c.sendmail('a@b.example', ['c@d.example', 'e@f.example'], BODY) == {}
    assert len(sink.messages) == 1          # there already: no waiting needed
    msg = sink.messages[0]
    assert msg.envelope.mail_from.address == 'a@b.example'
    assert [r.address for r in msg.envelope.rcpt_to] == ['c@d.example', 'e@f.example']
    assert msg.raw.startswith(b'Received: from ')
    assert msg.raw.endswith(BODY)           # dot-stuffed on the way, unstuffed again
    assert 'by mx.test with ESMTP' in msg['Received']


def test_large_body_streams_through_unchanged(serve, upstream, client):
    sink = upstream()
    c = client(relay_to(serve, sink))
    start_transaction(c)
    body = b''.join(b'.%06d' % i + b'x' * 70 + b'\r\n' for i in range(20000))
    c.send(body.replace(b'\r\n.', b'\r\n..').replace(b'.', b'..', 1) + b'y' * 100000 + b'\r\n.\r\n')
    assert c.reply()[0] == 250
    raw = sink.messages[0].raw
    after_trace = raw[raw.index(b'\r\n', raw.index(b'\tfor <')) + 2:]
    assert after_trace == body + b'y' * 100000 + b'\r\n'


def test_upstream_refusing_a_recipient_refuses_it_for_the_client(serve, upstream):
    def busy(session, address):
        if address.address.startswith('busy'):
            raise SmtpError(450, 'mailbox busy', '4.2.1')
        if address.address.startswith('nobody'):
            raise SmtpError(550, 'no such user', '5.1.1')
    sink = upstream(on_rcpt_to=busy)
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        refused = c.sendmail('a@b.example', ['busy@d.example', 'ok@d.example', 'nobody@d.example'], BODY)
    assert refused == {'busy@d.example': (450, b'4.2.1 mailbox busy'),
                       'nobody@d.example': (550, b'5.1.1 no such user')}
    assert [r.address for r in sink.messages[0].envelope.rcpt_to] == ['ok@d.example']


def test_upstream_refusing_the_sender_leaves_the_client_free_to_retry(serve, upstream, client):
    def picky(session, address):
        if address.address == 'spammer@b.example':
            raise SmtpError(553, 'sender refused', '5.7.1')
    sink = upstream(on_mail_from=picky)
    c = client(relay_to(serve, sink))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<spammer@b.example>') == (553, '5.7.1 sender refused')
    c.expect(250, 'MAIL FROM:<a@b.example>')       # no "nested MAIL": no trace left


@pytest.mark.parametrize('code, enhanced', [(554, '5.7.1'), (452, '4.3.1')])
def test_upstream_verdict_after_data_is_passed_back(serve, upstream, code, enhanced):
    def verdict(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()
            ctx.send(code, 'upstream says no', enhanced)
    sink = upstream(middleware=[verdict])
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert (err.value.smtp_code, err.value.smtp_error) == (code, f'{enhanced} upstream says no'.encode())


def test_upstream_down_gives_451(serve, client):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]      # closed again: nobody listens there
    c = client(serve(middleware=[RelayDelivery('127.0.0.1', port, timeout=5)]))
    c.expect(250, 'EHLO x')
    code, text = c.cmd('MAIL FROM:<a@b.example>')
    assert code == 451 and text.startswith('4.4.1')
    assert c.cmd('RCPT TO:<c@d.example>')[0] == 503   # the MAIL left no trace


def test_upstream_greeting_with_554_gives_451(serve, upstream, client):
    def refuse(session):
        raise SmtpError(554, 'go away')
    sink = upstream(on_connect=refuse)
    c = client(relay_to(serve, sink))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example>')[0] == 451


@pytest.mark.parametrize('options, body, code', [
    ({'size': 1000}, b'x' * 5000 + b'\r\n', 552),
    ({}, b'bare\nnewline\r\n', 554),
])
def test_refused_bodies_never_reach_the_upstream(serve, upstream, client, options, body, code):
    sink = upstream()
    c = client(relay_to(serve, sink, server_options=options))
    start_transaction(c)
    c.send(body + b'.\r\n')
    assert c.reply()[0] == code
    assert sink.closed.wait(WAIT)       # the relay hung up without the final dot
    assert sink.messages == []
    assert c.cmd('NOOP')[0] == 250


def test_client_vanishing_closes_its_upstream_connection_without_on_close(serve, upstream, client):
    """Without the on_close hook the upstream link still closes as the
    session ends: the session is freed at once (reference counting, no
    garbage collection needed), and the link with it."""
    sink = upstream()
    relay = RelayDelivery('127.0.0.1', sink.address[1])
    c = client(serve(middleware=[relay]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')     # the upstream link is open now
    gc.disable()
    try:
        c.close()
        assert sink.closed.wait(WAIT)
    finally:
        gc.enable()
    assert sink.messages == []


def test_client_vanishing_mid_data_delivers_nothing(serve, upstream, client):
    sink = upstream()
    c = client(relay_to(serve, sink))
    start_transaction(c)
    c.send(b'Subject: half\r\n\r\n' + b'z' * 50000)
    c.close()
    assert sink.closed.wait(WAIT)
    assert sink.messages == []


def test_one_upstream_connection_serves_a_whole_session(serve, upstream):
    connects = []
    sink = upstream(on_connect=lambda session: connects.append(session.id))
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
        c.rset()
        c.sendmail('a@b.example', ['e@d.example'], BODY)
    sink.wait_for(2)
    assert len(connects) == 1


def test_a_kept_connection_the_upstream_closed_is_replaced(serve, upstream):
    def hang_up_after_data(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.close()
    sink = upstream(middleware=[hang_up_after_data])
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
        c.sendmail('a@b.example', ['e@d.example'], BODY)
    assert len(sink.wait_for(2)) == 2


def lmtp_verdicts(replies):
    def verdicts(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()
            ctx.send(replies)
    return verdicts


def test_lmtp_upstream_per_recipient_results_reach_an_lmtp_client(serve, upstream, client):
    sink = upstream(lmtp=True, middleware=[lmtp_verdicts([(250, 'ok one'), (452, 'full', '4.2.2')])])
    c = client(relay_to(serve, sink, lmtp=True, server_options={'lmtp': True}))
    start_transaction(c, rcpts=('one@d.example', 'two@d.example'), hello='LHLO x')
    c.send(BODY + b'.\r\n')
    assert c.reply() == (250, '2.0.0 ok one')
    assert c.reply() == (452, '4.2.2 full')


def test_lmtp_upstream_partial_failure_makes_an_smtp_client_retry(serve, upstream):
    sink = upstream(lmtp=True, middleware=[lmtp_verdicts([(250, 'ok'), (452, 'full')])])
    relay = relay_to(serve, sink, lmtp=True)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail('a@b.example', ['one@d.example', 'two@d.example'], BODY)
    assert err.value.smtp_code == 452


def test_xforward_reaches_an_upstream_that_offers_it(serve, upstream):
    """The upstream here implements XFORWARD in middleware (public API only)."""
    seen = []

    def xforward(ctx, next):
        if ctx.command_name == 'XFORWARD':
            seen.append(ctx.command_args)
            ctx.send(250, 'Ok')
            return
        next()
        if ctx.command_name == 'EHLO':
            code, lines, enhanced = ctx.reply
            ctx.send(code, list(lines) + ['XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE'], enhanced)
    sink = upstream(middleware=[xforward])
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.ehlo('client.example')
        c.sendmail('a@b.example', ['c@d.example'], BODY)
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert len(seen) == 2           # before each MAIL: Postfix forgets them after each message
    attrs = dict(arg.split('=', 1) for arg in seen[0])
    assert attrs['ADDR'] == '127.0.0.1' and attrs['HELO'] == 'client.example'
    assert attrs['NAME'] == '[UNAVAILABLE]' and attrs['PROTO'] == 'ESMTP'
    assert attrs['SOURCE'] == 'REMOTE' and int(attrs['PORT']) > 0


def test_xforward_off_sends_none(serve, upstream):
    seen = []

    def xforward(ctx, next):
        if ctx.command_name == 'XFORWARD':
            seen.append(ctx.command)
            ctx.send(250, 'Ok')
            return
        next()
        if ctx.command_name == 'EHLO':
            code, lines, enhanced = ctx.reply
            ctx.send(code, list(lines) + ['XFORWARD NAME ADDR'], enhanced)
    sink = upstream(middleware=[xforward])
    relay = relay_to(serve, sink, xforward=False)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert seen == []


def test_xforward_reaches_an_smtp_stack_upstream(serve, upstream):
    seen = []

    def capture(ctx, next):
        if ctx.command_name == 'DATA':
            seen.append(dict(ctx.session.xforward))     # reset after the message
        next()
    sink = upstream(use_xforward=True, middleware=[capture])
    relay = relay_to(serve, sink)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.ehlo('client.example')
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert seen[0]['ADDR'] == '127.0.0.1' and seen[0]['HELO'] == 'client.example'
    assert seen[0]['NAME'] is None and seen[0]['SOURCE'] == 'REMOTE'


def test_starttls_to_the_upstream(serve, upstream):
    sink = upstream()
    relay = relay_to(serve, sink, starttls=True, tls_verify=False)
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert sink.messages[0].session.secure


def test_required_starttls_missing_upstream_gives_451(serve, upstream, client):
    sink = upstream(disabled_commands=['STARTTLS'])
    c = client(relay_to(serve, sink, starttls=True, tls_verify=False))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example>')[0] == 451


def test_xforward_lines_stay_short_and_encode_values():
    session = Session('127.0.0.1', 25, '2001:db8::1', 4242)
    session.helo = 'h' * 249 + '+=' + 'é' * 10
    session.client_hostname = 'n' * 240 + '.example'
    session.greeting = 'EHLO'
    lines = xforward_lines(session, 'NAME ADDR PORT PROTO HELO IDENT SOURCE')
    assert all(len(line) <= 510 for line in lines) and len(lines) == 2
    joined = ' '.join(lines)
    assert 'ADDR=IPV6:2001:db8::1' in joined and 'NAME=' + 'n' * 240 + '.example' in joined
    assert 'HELO=' + 'h' * 249 + '+2B+3D ' in joined     # cut before the 'é' (+C3+A9)
    assert xforward_lines(session, 'ADDR') == ['XFORWARD ADDR=IPV6:2001:db8::1']


def test_relay_logs_in_to_the_upstream(serve, upstream):
    def on_auth(session):
        return {'name': 'relay'} if session.auth.validate('pw') else None
    sink = upstream(allow_insecure_auth=True, on_auth=on_auth, auth_optional=False)
    relay = relay_to(serve, sink, username='relay', password='pw')
    with smtplib.SMTP(*relay.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert sink.messages[0].session.user == {'name': 'relay'}


def test_upstream_refusing_our_login_gives_451(serve, upstream, client):
    sink = upstream(allow_insecure_auth=True, auth_optional=False,
                    users={'relay': 'not the password the relay sends'})
    c = client(relay_to(serve, sink, username='relay', password='wrong'))
    c.expect(250, 'EHLO x')
    code, text = c.cmd('MAIL FROM:<a@b.example>')
    assert code == 451 and text.startswith('4.7.0')


def test_bdat_client_is_relayed_with_data(serve, upstream, client):
    sink = upstream()
    c = client(relay_to(serve, sink))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    first, last = b'Subject: chunks\r\n\r\n.one\r\n', b'two\r\n'
    c.send(b'BDAT %d\r\n' % len(first) + first)
    assert c.reply()[0] == 250
    c.send(b'BDAT %d LAST\r\n' % len(last) + last)
    assert c.reply()[0] == 250
    assert sink.messages[0].raw.endswith(b'\r\n\r\n.one\r\ntwo\r\n')


BINARY = b'Subject: bin\r\n\r\n\x00\xff.\rbare CR\nbare LF\r\n.\r\n\x00' * 3000   # ~90 KB


def send_binary(c, body, chunk=40000):
    """MAIL with BODY=BINARYMIME, one RCPT, then `body` in BDAT chunks;
    returns the reply to the LAST one."""
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> BODY=BINARYMIME')
    c.expect(250, 'RCPT TO:<c@d.example>')
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    for piece in pieces[:-1]:
        c.send(b'BDAT %d\r\n' % len(piece) + piece)
        assert c.reply()[0] == 250
    c.send(b'BDAT %d LAST\r\n' % len(pieces[-1]) + pieces[-1])
    return c.reply()


def test_binarymime_is_relayed_in_bdat_chunks_byte_for_byte(serve, upstream, client):
    seen = []

    def commands(ctx, next):
        seen.append(ctx.command_name)
        next()
    sink = upstream(middleware=[commands])
    c = client(relay_to(serve, sink))
    code, _ = send_binary(c, BINARY)
    assert code == 250
    msg = sink.messages[0]
    assert msg.envelope.mail_from.args['BODY'] == 'BINARYMIME'
    assert msg.raw.startswith(b'Received: ') and msg.raw.endswith(BINARY)   # not a byte changed
    assert 'DATA' not in seen and 'BDAT' in seen
    c.expect(250, 'MAIL FROM:<a@b.example>')        # and the session goes on


def test_binarymime_needs_an_upstream_that_takes_it(serve, upstream, client):
    c = client(relay_to(serve, upstream(disabled_commands=['BINARYMIME'])))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example> BODY=BINARYMIME') == \
        (555, '5.5.4 Error: upstream server does not support BINARYMIME')
    c.expect(250, 'MAIL FROM:<a@b.example>')


def test_binarymime_chunk_refused_upstream_refuses_the_message(serve, upstream, client):
    sink = upstream(size=50000)         # the relay's first 64 KiB chunk is too big
    c = client(relay_to(serve, sink))
    code, text = send_binary(c, BINARY)
    assert code == 552, text
    assert sink.messages == []
    c.expect(250, 'MAIL FROM:<a@b.example>')
