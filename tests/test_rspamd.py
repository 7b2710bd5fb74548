"""policies.rspamd against a real rspamd (tests/rspamd_private.py): the real
server over loopback, smtplib as the client, each action of rspamd's reply
mapped to the client's reply and to the delivered message; rspamd killed
and stopped (SIGSTOP); connections counted by rspamd's log and by a real
haproxy that keeps them alive."""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import smtplib
import subprocess
import time
import urllib.request

import gevent
import pytest

from smtp_stack.config import ConfigError, parse
from smtp_stack.policies import rspamd as rspamd_policy
from smtp_stack.policies.rspamd_http import HttpPool, RspamdError
from smtp_stack.testing import MailSink

import peers
from policy_services import HubPauses
from rspamd_private import SETTINGS_ID, SOFT_REJECT_TEXT, PrivateRspamd, free_port

GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'
WAIT = 10.0


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('rspamd-cache')


@pytest.fixture(scope='module')
def rspamd(tmp_path_factory, cache_dir):
    running = PrivateRspamd(tmp_path_factory.mktemp('rspamd'), cache_dir=cache_dir)
    yield running
    running.stop()


@pytest.fixture
def own_rspamd(tmp_path, cache_dir):
    """One for a test that stops it."""
    running = PrivateRspamd(tmp_path, cache_dir=cache_dir)
    yield running
    running.stop()


@pytest.fixture(scope='module')
def pausable_rspamd(tmp_path_factory, cache_dir):
    """One for the tests that stop it with SIGSTOP (and SIGCONT it after)."""
    running = PrivateRspamd(tmp_path_factory.mktemp('pausable'), cache_dir=cache_dir)
    yield running
    running.stop()


@pytest.fixture
def serve():
    sinks = []

    def start(policy, **options):
        sink = MailSink(name='mx.test', tls='off', **options)
        sink.server.use(policy)
        sinks.append(sink.start())
        return sink

    yield start
    for sink in sinks:
        sink.stop()


def message(subject='Hello', body='Hi there.', extra=''):
    return (f'From: Alice <alice@example.test>\r\nTo: bob@mx.test\r\nSubject: {subject}\r\n'
            f'Message-ID: <{time.monotonic_ns()}@example.test>\r\n'
            f'Date: Thu, 03 Dec 2026 08:00:00 +0000\r\n{extra}\r\n{body}\r\n').encode()


def send(sink, msg, sender='alice@example.test', rcpts=('bob@mx.test',)):
    """(code, text) of the reply to the message."""
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        client.ehlo('client.example.test')
        assert client.mail(sender)[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(msg)
        return code, text.decode()


# -- rspamd's actions ----------------------------------------------------------------------

def test_gtube_is_refused_with_rspamds_reply(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    assert send(sink, message(body=GTUBE)) == (554, '5.7.1 Gtube pattern')
    assert sink.messages == []


def test_a_clean_message_passes_with_rspamds_headers_and_the_envelope_reached_it(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    forged = 'X-Spam-Status: No, score=-100\r\nX-Spam: No\r\n'
    code, text = send(sink, message(extra=forged), rcpts=('bob@mx.test', 'carol@mx.test'))
    assert code == 250
    [stored] = sink.wait_for(1)
    queue_id = stored['X-Rspamd-Queue-Id']
    assert re.fullmatch(rf'{stored.session.id}-\d+', queue_id)       # events.queue_id's
    assert stored.get_all('X-Spam-Status') == [stored['X-Spam-Status']]     # the forged one went
    assert re.fullmatch(r'No, score=-?\d+\.\d+', stored['X-Spam-Status'])
    assert stored['X-Spam-Status'] != 'No, score=-100'
    assert 'default: False' in stored['X-Spamd-Result']
    assert stored['Authentication-Results'].startswith('mx.test;')          # MTA-Name
    assert stored['X-Spam'] is None
    assert stored.get_content().strip() == 'Hi there.'
    # What rspamd logged of the envelope it was given (IP, From, Rcpt, Queue-Id).
    line = next(line for line in rspamd.log().splitlines() if f'qid: <{queue_id}>' in line)
    assert 'ip: 127.0.0.1' in line and 'from: <alice@example.test>' in line
    assert 'rcpts: <bob@mx.test,carol@mx.test>' in line
    verdict = stored.envelope.rspamd
    assert verdict.action == 'no action' and verdict.reply is None


def test_the_null_sender_and_an_authenticated_user_reach_rspamd(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        client.ehlo('client.example.test')
        client.login('dave', 'secret')
        assert client.mail('<>')[0] == 250
        assert client.rcpt('bob@mx.test')[0] == 250
        assert client.data(message())[0] == 250
    [stored] = sink.wait_for(1)
    queue_id = stored['X-Rspamd-Queue-Id']
    line = next(line for line in rspamd.log().splitlines() if f'qid: <{queue_id}>' in line)
    assert 'user: dave' in line


def test_the_envelope_fields_after_starttls_and_auth(rspamd):
    """What rspamd is told of a TLS, authenticated session (request_headers,
    read by a middleware of the test as the policy sends them)."""
    import ssl
    policy = rspamd_policy(rspamd.url, settings_id='inbound')
    sent = []

    def record(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            sent.append(policy.request_headers(ctx))

    with MailSink(name='mx.test') as sink:
        sink.server.use(policy)
        sink.server.use(record)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
            client.ehlo('client.example.test')
            client.starttls(context=ssl.create_default_context(cafile=sink.ca_file))
            client.ehlo('client.example.test')
            client.login('dave@example.test', 'secret')
            assert client.mail('dave@example.test')[0] == 250
            assert client.rcpt('bob@mx.test')[0] == 250
            assert client.rcpt('carol@mx.test')[0] == 250
            assert client.data(message())[0] == 250
        [stored] = sink.wait_for(1)
    fields = dict(sent[0])
    assert [value for name, value in sent[0] if name == 'Rcpt'] == ['bob@mx.test', 'carol@mx.test']
    assert fields['IP'] == '127.0.0.1' and fields['Helo'] == 'client.example.test'
    assert fields['From'] == 'dave@example.test' and fields['User'] == 'dave@example.test'
    assert fields['Queue-Id'] == stored['X-Rspamd-Queue-Id']
    assert fields['MTA-Name'] == 'mx.test' and fields['Settings-ID'] == 'inbound'
    assert fields['TLS-Version'].startswith('TLSv1.') and fields['TLS-Cipher']
    assert 'Hostname' not in fields         # no reverse lookup here: rspamd is not told '[ip]'


def test_add_header(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    assert send(sink, message(subject='rspamd-test:add-header'))[0] == 250
    [stored] = sink.wait_for(1)
    assert stored['X-Spam'] == 'Yes'
    assert stored['X-Spam-Status'].startswith('Yes, score=')
    assert stored['Subject'] == 'rspamd-test:add-header'


def test_add_header_under_another_name(rspamd, serve):
    """rspamd asks to remove X-Spam (its proxy's spam_header); another name,
    the message's own fields of it go too: a sender cannot forge the verdict."""
    sink = serve(rspamd_policy(rspamd.url, spam_header='X-Spam-Flag'))
    forged = 'X-Spam-Flag: No\r\n'
    assert send(sink, message(subject='rspamd-test:add-header', extra=forged))[0] == 250
    assert send(sink, message(extra=forged))[0] == 250
    spam, ham = sink.wait_for(2)
    assert spam.get_all('X-Spam-Flag') == ['Yes'] and spam['X-Spam'] is None
    assert ham.get_all('X-Spam-Flag') is None


def test_rewrite_subject(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    assert send(sink, message(subject='rspamd-test:rewrite'))[0] == 250
    [stored] = sink.wait_for(1)
    assert stored.get_all('Subject') == ['*** SPAM *** rspamd-test:rewrite']
    assert stored['X-Spam'] is None             # as rspamd's milter: only the Subject changes


def test_soft_reject_is_451_with_rspamds_text(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url))
    assert send(sink, message(subject='rspamd-test:soft-reject')) == \
        (451, f'4.7.1 {SOFT_REJECT_TEXT}')
    assert sink.messages == []


def test_greylist_without_rspamds_greylist_module_is_accepted(rspamd, serve):
    """The module (it needs Redis) turns a greylisted message into soft
    reject; 'greylist' itself is a score, accepted as rspamd's milter does."""
    sink = serve(rspamd_policy(rspamd.url))
    assert send(sink, message(subject='rspamd-test:greylist'))[0] == 250
    [stored] = sink.wait_for(1)
    assert stored.envelope.rspamd.action == 'greylist'
    assert stored['X-Spam'] is None and stored['X-Spam-Status'].startswith('No, score=4')


def test_settings_id_reaches_rspamd(rspamd, serve):
    sink = serve(rspamd_policy(rspamd.url, settings_id=SETTINGS_ID))
    assert send(sink, message())[0] == 250
    [stored] = sink.wait_for(1)
    assert stored['X-Spam'] == 'Yes'        # its add_header threshold is below any score


# -- rspamd down --------------------------------------------------------------------------

def rspamd_warnings(caplog):
    return [r for r in caplog.records
            if r.name == 'smtp_stack.policies' and r.levelno == logging.WARNING
            and 'rspamd' in r.getMessage()]


def test_killed_rspamd_fails_open_with_one_warning_or_tempfails(own_rspamd, serve, caplog):
    open_sink = serve(rspamd_policy(own_rspamd.url, timeout=2))
    closed_sink = serve(rspamd_policy(own_rspamd.url, fail_open=False))
    assert send(open_sink, message())[0] == 250
    assert send(closed_sink, message())[0] == 250
    own_rspamd.stop()
    caplog.set_level(logging.WARNING, 'smtp_stack.policies')
    for _ in range(3):
        assert send(open_sink, message(subject='rspamd-test:add-header'))[0] == 250
    stored = open_sink.wait_for(4)[1:]
    assert all(m['X-Spam'] is None and m['X-Spamd-Result'] is None for m in stored)
    [warning] = rspamd_warnings(caplog)
    assert 'failing open' in warning.getMessage()
    assert f'127.0.0.1:{own_rspamd.port}' in warning.getMessage()
    assert send(closed_sink, message()) == (451, '4.7.1 Service unavailable - try again later')
    assert len(closed_sink.messages) == 1
    assert len(rspamd_warnings(caplog)) == 1        # one per cause and period


def test_a_stopped_rspamd_costs_one_timeout_then_fails_fast(pausable_rspamd, serve, caplog):
    sink = serve(rspamd_policy(pausable_rspamd.url, timeout=1.0, fail_open=False))
    caplog.set_level(logging.WARNING, 'smtp_stack.policies')
    pausable_rspamd.pause()
    try:
        began = time.monotonic()
        assert send(sink, message())[0] == 451
        first = time.monotonic() - began
        began = time.monotonic()
        assert send(sink, message())[0] == 451        # the breaker is open: not asked
        second = time.monotonic() - began
    finally:
        pausable_rspamd.resume()
    assert 1.0 <= first <= 1.5, first
    assert second < 0.5, second
    [warning] = rspamd_warnings(caplog)
    assert 'no answer in 1 s' in warning.getMessage()


def test_waiting_for_rspamd_never_blocks_the_hub(pausable_rspamd):
    """In this process (not monkey-patched): the client's sockets are gevent's."""
    pool = HttpPool('127.0.0.1', pausable_rspamd.port, timeout=0.5)
    pausable_rspamd.pause()
    ticker = HubPauses().start()
    try:
        began = time.monotonic()
        with pytest.raises(RspamdError, match='no answer in 0.5 s'):
            pool.post('/checkv2', [], lambda: io.BytesIO(message()), len(message()))
        waited = time.monotonic() - began
    finally:
        ticker.stop()
        pausable_rspamd.resume()
    assert 0.5 <= waited < 1.0
    assert ticker.longest < 0.2, ticker.longest


# -- connections ----------------------------------------------------------------------------

def test_rspamd_34_closes_each_connection_and_so_do_we(rspamd, serve):
    """rspamd's workers answer `Connection: close`: one connection per message,
    none left open on our side."""
    policy = rspamd_policy(rspamd.url)
    sink = serve(policy)
    before = rspamd.connections()
    for _ in range(3):
        assert send(sink, message())[0] == 250
    assert rspamd.connections() - before == 3
    assert policy.pool.opened == 3 and policy.pool.idle == 0


HAPROXY = """
global
    maxconn 50
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend rspamd_in
    bind 127.0.0.1:{front}
    default_backend rspamd
backend rspamd
    server r1 127.0.0.1:{rspamd}
frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"""


def haproxy_counts(port: int) -> dict[str, int]:
    """The frontend's connections and requests, from HAProxy's own statistics."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/stats;csv', timeout=WAIT) as r:
        rows = csv.DictReader(io.StringIO(r.read().decode().lstrip('# ')))
        row = next(row for row in rows if row['pxname'] == 'rspamd_in')
    return {'connections': int(row['conn_tot']), 'requests': int(row['req_tot'])}


class Haproxy:
    """A real HAProxy in front of rspamd, keeping its clients' connections."""

    def __init__(self, rspamd_port: int, workdir):
        self.binary = peers.program('haproxy', 'haproxy', '/usr/sbin/haproxy')
        self.ports = {'front': free_port(), 'stats': free_port(), 'rspamd': rspamd_port}
        self.config = workdir / 'haproxy.cfg'
        self.config.write_text(HAPROXY.format(**self.ports))
        self.url = f'http://127.0.0.1:{self.ports["front"]}'
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, '-db', '-f', str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.counts()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read()
                assert time.monotonic() < deadline, 'haproxy did not answer'
                time.sleep(0.02)        # a poll step, bounded by the deadline

    def counts(self) -> dict[str, int]:
        return haproxy_counts(self.ports['stats'])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(WAIT)


@pytest.fixture
def haproxy(rspamd, tmp_path):
    running = Haproxy(rspamd.port, tmp_path)
    yield running
    running.stop()


def test_connections_are_kept_alive_where_the_server_allows(rspamd, haproxy, serve):
    policy = rspamd_policy(haproxy.url)
    sink = serve(policy)
    for subject in ('Hello', 'rspamd-test:add-header', 'Again'):
        assert send(sink, message(subject=subject))[0] == 250
    stored = sink.wait_for(3)
    assert [m['X-Spam'] for m in stored] == [None, 'Yes', None]
    assert send(sink, message(body=GTUBE))[0] == 554
    assert haproxy.counts() == {'connections': 1, 'requests': 4}
    assert policy.pool.opened == 1 and policy.pool.idle == 1


def test_a_kept_connection_the_server_closed_is_replaced(rspamd, haproxy, serve):
    policy = rspamd_policy(haproxy.url, fail_open=False)
    sink = serve(policy)
    assert send(sink, message())[0] == 250
    haproxy.stop()              # the kept connection is closed by the server
    haproxy.start()
    assert send(sink, message(subject='rspamd-test:add-header'))[0] == 250
    assert sink.wait_for(2)[1]['X-Spam'] == 'Yes'
    assert policy.pool.opened == 2 and haproxy.counts()['connections'] == 1


def test_concurrent_sessions_use_their_own_connections(rspamd, haproxy, serve):
    policy = rspamd_policy(haproxy.url, connections=2)
    sink = serve(policy)
    jobs = [gevent.spawn(send, sink, message()) for _ in range(4)]
    gevent.joinall(jobs, timeout=WAIT, raise_error=True)
    assert [job.value[0] for job in jobs] == [250] * 4
    assert policy.pool.idle <= 2
    counts = haproxy.counts()
    assert counts['requests'] == 4 and counts['connections'] == policy.pool.opened


def test_the_private_rspamd_speaks_milter_too(tmp_path, cache_dir):
    """tests/rspamd_private.py with milter=True (for policies.milter): its
    proxy answers a milter option negotiation (SMFIC_OPTNEG, version 6)."""
    import socket
    import struct
    running = PrivateRspamd(tmp_path, milter=True, cache_dir=cache_dir)
    try:
        host, port = running.milter_address.removeprefix('inet:').rsplit(':', 1)
        with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
            body = b'O' + struct.pack('!III', 6, 0x1ff, 0x1fffff)
            sock.sendall(struct.pack('!I', len(body)) + body)
            reply = b''
            while len(reply) < 5:
                reply += sock.recv(64)
        assert reply[4:5] == b'O'           # SMFIC_OPTNEG answered
    finally:
        running.stop()


# -- parameters: the library call and the YAML entry check the same -------------------------

@pytest.mark.parametrize('kwargs, error', [
    ({'url': 'https://127.0.0.1:11333'}, 'url must be http://HOST[:PORT]'),
    ({'url': 'http://127.0.0.1:11333/checkv2'}, 'url must be http://HOST[:PORT]'),
    ({'url': 'http://127.0.0.1:99999'}, 'Port out of range'),
    ({'timeout': 0}, 'timeout must be a positive number'),
    ({'settings_id': 'two words'}, 'settings_id must be a word'),
    ({'spam_header': 'X-Spam:'}, 'spam_header must be a field name'),
    ({'connections': 0}, 'connections must be an integer, 1 or more'),
])
def test_bad_parameters(kwargs, error, tmp_path):
    with pytest.raises(ValueError, match=re.escape(error)):
        rspamd_policy(**kwargs)
    with pytest.raises(ConfigError) as err:
        parse({'deliver': {'maildir': str(tmp_path / 'md')}, 'policies': [{'rspamd': kwargs}]},
              str(tmp_path))
    assert any(line.startswith('policies[0].rspamd') for line in err.value.lines()), \
        err.value.lines()


def test_the_yaml_entry_builds_the_policy(tmp_path):
    config = parse({'deliver': {'maildir': str(tmp_path / 'md')},
                    'policies': [{'rspamd': {'url': 'http://127.0.0.1:11999', 'timeout': 3,
                                             'fail_open': False, 'settings_id': 'inbound'}}]},
                   str(tmp_path))
    [built] = config.policies.build()
    assert (built.url, built.timeout, built.fail_open, built.settings_id) == \
        ('http://127.0.0.1:11999', 3.0, False, 'inbound')


@pytest.fixture
def many_descriptors():
    """Descriptors 0-1100 taken, as a busy server's sessions take them: a
    socket opened now has a number select() cannot watch."""
    taken = []
    try:
        while len(taken) < 1100:
            taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)


def test_a_kept_connection_past_descriptor_1023_is_reused(rspamd, haproxy, serve,
                                                           many_descriptors):
    """Whether a kept connection is still good is asked with poll(): with
    select() every message after the first failed (ValueError) once the
    process had 1,024 descriptors open."""
    policy = rspamd_policy(haproxy.url, fail_open=False)
    sink = serve(policy)
    for subject in ('Hello', 'Again'):
        assert send(sink, message(subject=subject))[0] == 250
    assert haproxy.counts() == {'connections': 1, 'requests': 2}
