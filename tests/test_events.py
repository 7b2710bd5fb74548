"""The facts of a session as named events, and the lines the default
observer (events.LogEvents) writes for them: over loopback, with real
clients, read back from the records a Logger gets (message and fields)."""
from __future__ import annotations

import itertools
import logging
import smtplib
import ssl
import threading

import pytest

from smtp_stack import LogLevels, SmtpError, SmtpServer, policies
from smtp_stack.delivery import MaildirDelivery, RelayDelivery
from smtp_stack.events import Fanout, summary
from smtp_stack.testing import ServerThread

from conftest import WAIT, RawClient, wait_until

_names = itertools.count()
BODY = b'Subject: events\r\n\r\nbody\r\n'


class Records(logging.Handler):
    """Every record a logger gets, kept for the test to read."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record):
        with self._lock:
            self.records.append(record)

    def events(self, name: str) -> list[logging.LogRecord]:
        return [r for r in list(self.records) if getattr(r, 'event', None) == name]

    def wait(self, name: str, count: int = 1) -> list[logging.LogRecord]:
        assert wait_until(lambda: len(self.events(name)) >= count, WAIT), \
            f'no {count} {name!r} record(s) in {[r.getMessage() for r in self.records]}'
        return self.events(name)


@pytest.fixture
def logged():
    """logged(**options) -> (server, Records): a started server logging at
    INFO into a logger of its own (its delivery lines into `.delivery`)."""
    started = []

    def start(middleware=(), **options):
        logger = logging.getLogger(f'smtp_stack.test_events.{next(_names)}')
        kept = Records()
        logger.handlers[:] = [kept]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        options.setdefault('name', 'mx.test')
        options.setdefault('disable_reverse_lookup', True)
        options.setdefault('log_level', LogLevels.INFO)
        server = SmtpServer(log_backend=logger, **options)
        for fn in middleware:
            server.use(fn)
        started.append(ServerThread(server).start())
        return server, kept

    yield start
    for runner in started:
        runner.stop(timeout=2)


def test_an_accepted_message_its_delivery_and_the_session_summary(logged, tmp_path):
    server, kept = logged([MaildirDelivery(str(tmp_path / 'mail'))])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example')
        smtp.sendmail('a@example.org', ['b@example.com', 'c@example.com'], BODY)
        code, text = smtp.noop()
    [connect] = kept.wait('connect')
    assert connect.getMessage() == (f'{connect.session}: connect from unknown[127.0.0.1]:'
                                    f'{connect.client_port}')
    sid = connect.session
    first, second = kept.wait('delivery', 2)
    [accepted] = kept.wait('accepted')
    assert accepted.getMessage() == (
        f'{sid}-1: accepted: from=<a@example.org>, size={len(BODY)}, nrcpt=2, '
        'client=unknown[127.0.0.1], helo=<client.example>, proto=ESMTP')
    assert (accepted.queue_id, accepted.mail_from, accepted.size, accepted.nrcpt,
            accepted.client, accepted.helo, accepted.proto, accepted.tls, accepted.user) == (
        f'{sid}-1', 'a@example.org', len(BODY), 2, '127.0.0.1', 'client.example', 'ESMTP',
        None, None)
    [stored] = (tmp_path / 'mail' / 'new').iterdir()
    assert [r.getMessage() for r in (first, second)] == [
        f'{sid}-1: to=<{rcpt}>, relay=maildir, status=sent ({stored})'
        for rcpt in ('b@example.com', 'c@example.com')]
    assert first.name.endswith('.delivery') and (first.status, first.rcpt) == (
        'sent', 'b@example.com')
    [gone] = kept.wait('disconnect')
    assert gone.getMessage() == (f'{sid}: disconnect from unknown[127.0.0.1] '
                                 'ehlo=1 mail=1 rcpt=2 data=1 noop=1 quit=1 commands=7')
    assert gone.commands == {'ehlo': 1, 'mail': 1, 'rcpt': 2, 'data': 1, 'noop': 1, 'quit': 1}
    assert gone.failed == {}


def test_the_queue_id_the_client_was_given_is_the_one_logged(logged, tmp_path):
    server, kept = logged([MaildirDelivery(str(tmp_path / 'mail'))])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example')
        smtp.mail('a@example.org')
        smtp.rcpt('b@example.com')
        code, text = smtp.data(BODY)
    assert code == 250
    [accepted] = kept.wait('accepted')
    assert text.decode().endswith(f'queued as {accepted.queue_id}')


class Refuse550:
    """A middleware answering RCPT with ctx.send(): 'middleware' refused."""

    def __call__(self, ctx, next):
        if ctx.command_name == 'RCPT' and ctx.address.address.startswith('send'):
            ctx.send(550, 'Not here', '5.1.1')
            return
        next()


def no_hooked(session, address):
    if address.address.startswith('hook'):
        raise SmtpError(550, 'Hook says no', '5.7.1')


@pytest.mark.parametrize(('rcpt', 'reply', 'by'), [
    ('x@elsewhere.test', '554 5.7.1 Relay access denied', 'recipients'),
    ('send@example.com', '550 5.1.1 Not here', 'middleware'),
    ('hook@example.com', '550 5.7.1 Hook says no', 'on_rcpt_to'),
    ('four@example.com', '452 4.5.3 Error: too many recipients', 'limit'),
])
def test_a_refused_recipient_names_who_refused(logged, rcpt, reply, by):
    server, kept = logged([policies.recipients(domains=['example.com']), Refuse550()],
                          max_recipients=1, on_rcpt_to=no_hooked)
    client = RawClient(server.address)
    client.expect(220)
    client.expect(250, 'EHLO client.example')
    client.expect(250, 'MAIL FROM:<a@example.org>')
    if by == 'limit':
        client.expect(250, 'RCPT TO:<one@example.com>')
    assert client.cmd(f'RCPT TO:<{rcpt}>')[0] == int(reply[:3])
    client.expect(221, 'QUIT')
    client.close()
    [refused] = kept.wait('reject')
    code, enhanced, text = reply.split(' ', 2)
    assert refused.getMessage() == (
        f'{refused.session}: reject: RCPT from unknown[127.0.0.1]: {reply}; '
        f'from=<a@example.org>, to=<{rcpt}>, helo=<client.example>, proto=ESMTP, by={by}')
    assert (refused.command, refused.code, refused.enhanced, refused.reason, refused.by,
            refused.mail_from, refused.rcpt) == ('RCPT', int(code), enhanced, text, by,
                                                 'a@example.org', rcpt)
    [gone] = kept.wait('disconnect')
    assert gone.failed == {'rcpt': 1}
    assert gone.getMessage().endswith(' rcpt=' + ('1/2' if by == 'limit' else '0/1')
                                      + ' quit=1 commands=' + ('4/5' if by == 'limit' else '3/4'))


def test_what_the_engine_refuses_and_what_is_no_command(logged):
    server, kept = logged()
    client = RawClient(server.address)
    client.expect(220)
    client.expect(503, 'RCPT TO:<b@example.com>')       # before HELO: sequence
    client.expect(500, 'BOGUS')
    client.expect(221, 'QUIT')
    client.close()
    first, second = kept.wait('reject', 2)
    assert first.getMessage().startswith(
        f'{first.session}: reject: RCPT from unknown[127.0.0.1]: 503 5.5.1 Error: send '
        'HELO/EHLO first; to=<b@example.com>, helo=<>, proto=SMTP, by=engine')
    assert (second.command, second.code, second.by) == ('UNKNOWN', 500, 'engine')
    [gone] = kept.wait('disconnect')
    assert gone.getMessage().endswith('rcpt=0/1 unknown=0/1 quit=1 commands=1/3')


def test_a_message_too_big_is_refused_by_the_limit_with_its_queue_id(logged):
    server, kept = logged(size=100)
    client = RawClient(server.address)
    client.expect(220)
    client.expect(250, 'EHLO client.example')
    client.expect(250, 'MAIL FROM:<a@example.org>')      # no SIZE=: found out in DATA
    client.expect(250, 'RCPT TO:<b@example.com>')
    client.expect(354, 'DATA')
    assert client.cmd('x' * 500 + '\r\n.')[0] == 552
    client.close()
    [refused] = kept.wait('reject')
    assert refused.queue_id == f'{refused.session}-1'
    assert refused.getMessage().startswith(
        f'{refused.session}-1: reject: DATA from unknown[127.0.0.1]: 552 5.3.4 ')
    assert (refused.by, refused.mail_from) == ('limit', 'a@example.org')
    assert not kept.events('accepted')


def test_a_refusing_upstream_is_the_delivery(logged):
    def no_bob(ctx, next):
        if ctx.command_name == 'RCPT' and ctx.address.address == 'bob@example.com':
            raise SmtpError(550, 'No bob here', '5.1.1')
        next()
    upstream, _ = logged([no_bob])
    relay = RelayDelivery('127.0.0.1', upstream.address[1])
    server, kept = logged([relay])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        refused = smtp.sendmail('a@example.org', ['bob@example.com', 'ann@example.com'], BODY)
    assert list(refused) == ['bob@example.com']
    [reject] = kept.wait('reject')
    assert (reject.by, reject.code, reject.reason) == ('delivery', 550, 'No bob here')
    [sent] = kept.wait('delivery')
    assert sent.getMessage().startswith(
        f'{sent.session}-1: to=<ann@example.com>, relay=127.0.0.1:{upstream.address[1]}, '
        'status=sent (250 2.0.0 ')
    assert (sent.relay, sent.status) == (f'127.0.0.1:{upstream.address[1]}', 'sent')


def test_an_unreachable_upstream_defers_and_says_why(logged):
    with _closed_port() as port:
        server, kept = logged([RelayDelivery('127.0.0.1', port, timeout=2)])
        client = RawClient(server.address)
        client.expect(220)
        client.expect(250, 'EHLO client.example')
        assert client.cmd('MAIL FROM:<a@example.org>')[0] == 451
        client.close()
    [refused] = kept.wait('reject')
    assert (refused.command, refused.by, refused.enhanced) == ('MAIL', 'delivery', '4.4.1')
    assert wait_until(lambda: any('unreachable' in r.getMessage() for r in kept.records))


class _closed_port:
    """A loopback port nothing listens on (bound, never listening)."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def test_auth_success_and_failure_name_mechanism_user_and_client(logged):
    server, kept = logged(allow_insecure_auth=True,
                          on_auth=lambda s: s.auth.username if s.auth.password == 'right'
                          else None)
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example')
        smtp.user, smtp.password = 'bad\x1b[31muser', 'wrong'
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.auth('PLAIN', smtp.auth_plain, initial_response_ok=True)
        smtp.user, smtp.password = 'alice', 'right'
        assert smtp.auth('LOGIN', smtp.auth_login, initial_response_ok=False)[0] == 235
    [failed] = kept.wait('auth_failed')
    assert failed.levelno == logging.WARNING
    assert failed.getMessage() == (
        f'{failed.session}: auth failed from unknown[127.0.0.1]: mechanism=PLAIN, '
        r'user=bad\x1b[31muser: 535 5.7.8 Error: authentication failed')
    assert (failed.client, failed.mechanism, failed.user, failed.code) == (
        '127.0.0.1', 'PLAIN', r'bad\x1b[31muser', 535)
    [ok] = kept.wait('auth')
    assert ok.getMessage() == (f'{ok.session}: auth ok from unknown[127.0.0.1]: '
                               'mechanism=LOGIN, user=alice')
    [gone] = kept.wait('disconnect')
    assert 'auth=1/2' in gone.getMessage()
    assert not kept.events('reject')        # a failed login is told once, as such


def test_tls_established_and_proto(logged):
    server, kept = logged([])
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.starttls(context=context)
        smtp.sendmail('a@example.org', ['b@example.com'], BODY)
    [tls] = kept.wait('tls')
    assert tls.getMessage() == (f'{tls.session}: TLS established from unknown[127.0.0.1]: '
                                f'{tls.tls} {tls.cipher}')
    assert tls.tls.startswith('TLSv1.')
    [accepted] = kept.wait('accepted')
    assert (accepted.proto, accepted.tls) == ('ESMTPS', tls.tls)
    assert accepted.getMessage().endswith(f', proto=ESMTPS, tls={tls.tls}')


def test_debug_shows_each_reply_line_as_sent(logged):
    server, kept = logged(log_level=LogLevels.DEBUG)
    client = RawClient(server.address)
    client.expect(220)
    client.send('EHLO client.example\r\n')
    sent = []
    while True:
        line = client._line().decode()
        sent.append(line)
        if line[3] == ' ':
            break
    client.expect(503, 'RCPT TO:<b@example.com>')
    client.expect(221, 'QUIT')
    client.close()
    assert wait_until(lambda: kept.events('disconnect'))
    lines = [r.getMessage().split(': ', 1)[1] for r in kept.records
             if r.levelno == logging.DEBUG]
    assert lines[0] == 'S: 220 mx.test ESMTP'
    assert lines[1] == 'C: EHLO client.example'
    assert lines[2:2 + len(sent)] == [f'S: {line}' for line in sent]
    assert 'S: 503 5.5.1 Error: need MAIL command' in lines


def test_a_refused_connection_is_one_line(logged):
    server, kept = logged(max_connections_per_ip=1)
    first = RawClient(server.address)
    first.expect(220)
    second = RawClient(server.address)
    assert second.reply()[0] == 421
    [refused] = kept.wait('reject')
    assert (refused.command, refused.code, refused.by) == ('CONNECT', 421, 'limit')
    first.close()
    second.close()
    assert len(kept.wait('connect')) == 1


def test_a_backend_that_is_no_logger_gets_the_text():
    lines = []

    class Print:
        def log(self, level, msg, *args):
            lines.append(msg % args)

    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_backend=Print())
    with ServerThread(server):
        with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
            smtp.sendmail('a@example.org', ['b@example.com'], BODY)
        assert wait_until(lambda: any(' disconnect from ' in line for line in lines))
    assert any(': accepted: from=<a@example.org>, size=' in line for line in lines)


def test_fanout_tells_every_observer_and_survives_a_broken_one(logged):
    seen = []

    class Count:
        def __getattr__(self, name):
            return lambda *args: seen.append(name)

    class Broken:
        def __getattr__(self, name):
            def fail(*args):
                raise RuntimeError(name)
            return fail

    server, kept = logged()
    server.events = Fanout(Broken(), server.events, Count())
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.sendmail('a@example.org', ['b@example.com'], BODY)
    kept.wait('disconnect')
    assert seen == ['connected', 'accepted', 'disconnected']


def test_summary_is_postfix_notation():
    assert summary({'ehlo': 1, 'mail': 1, 'rcpt': 2, 'data': 1, 'quit': 1}, {'rcpt': 1}) == \
        'ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6'
    assert summary({}, {}) == 'commands=0'


def test_an_observer_failing_at_the_end_keeps_the_cleanup(logged):
    closed = []

    class Failing:
        def __getattr__(self, name):
            return lambda *args: None

        def disconnected(self, *args):
            raise RuntimeError('observer bug')

    server, kept = logged(on_close=closed.append)
    server.events = Failing()
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.noop()
    assert wait_until(lambda: closed)
    assert wait_until(lambda: any('failed on disconnected' in r.getMessage()
                                  for r in kept.records))
