"""The rest of the outage story: a relay upstream that never greets (its
breaker), `on_store_error` read from YAML (top level and per policy, and
`smtp-stack serve` answering 451 4.3.5 with Redis stopped), and the
server's own store-backed limits under either mode."""
from __future__ import annotations

import os
import queue
import signal
import smtplib
import socket

import pytest

from smtp_stack import SmtpServer
from smtp_stack.config import ConfigError, parse
from smtp_stack.delivery import RelayDelivery
from smtp_stack.errors import SmtpError
from smtp_stack.state import SharedConnections, SharedFailures, store
from smtp_stack.testing import ServerThread

from clirunner import Serve
from outage_helpers import sessions, tracebacks
from policy_services import RedisServer

TIMEOUT = 1.0
SLACK = 0.5
FAST = 0.5


# -- the relay's upstream ------------------------------------------------------------

def test_an_upstream_that_never_greets_costs_one_connect_timeout(capfd):
    """32 sessions at once wait one timeout together (451 4.4.1); the next
    32 get their 451 at once instead of each waiting it again."""
    upstream = socket.socket()
    upstream.bind(('127.0.0.1', 0))
    upstream.listen(128)            # the kernel completes the handshakes; nobody greets
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, use_xclient=True,
                        log_level='silent')
    server.use(RelayDelivery('127.0.0.1', upstream.getsockname()[1], timeout=TIMEOUT))
    try:
        with ServerThread(server) as running:
            first = sessions(running.address, 32, 'a', first_ip=10)
            after = sessions(running.address, 32, 'b', first_ip=60)
    finally:
        upstream.close()
    assert {(o.mail, o.mail_text[:5]) for o in first + after} == {(451, '4.4.1')}
    assert max(o.mail_time for o in first) < TIMEOUT + SLACK
    assert max(o.mail_time for o in after) < FAST
    assert tracebacks(capfd.readouterr().err) == []


# -- YAML ----------------------------------------------------------------------------------

def test_yaml_takes_on_store_error_at_the_top_and_per_policy(tmp_path):
    config = parse({'deliver': {'maildir': str(tmp_path / 'md')}, 'on_store_error': 'tempfail',
                    'policies': [{'greylist': {'on_store_error': 'accept'}},
                                 {'rate_limit': {'messages': 5}}]}, str(tmp_path))
    assert config.options['on_store_error'] == 'tempfail'
    greylist, rate_limit = config.policies.build()
    assert (greylist.on_store_error, rate_limit.on_store_error) == ('accept', None)


def test_yaml_names_a_bad_on_store_error_by_its_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse({'deliver': {'maildir': str(tmp_path / 'md')}, 'on_store_error': 'reject',
               'policies': [{'dnsbl': {'zones': ['bl.test'], 'on_store_error': 'defer'}}]},
              str(tmp_path))
    assert err.value.lines() == ["on_store_error: must be 'accept' or 'tempfail'",
                                 'policies[0].dnsbl.on_store_error: must be accept or tempfail']


@pytest.fixture
def redis(tmp_path):
    workdir = tmp_path / 'redis'
    workdir.mkdir()
    server = RedisServer(str(workdir))
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def test_serve_tempfails_a_policy_that_says_so_while_redis_is_stopped(tmp_path, redis):
    """Top level accept, greylist's own tempfail: with Redis stopped the
    rate limit lets MAIL through and the greylist answers 451 4.3.5."""
    (tmp_path / 'smtp.yaml').write_text(
        f'name: mx.test\nlisten: [{{host: 127.0.0.1, port: 0}}]\ndeliver: {{maildir: md}}\n'
        f'use_xclient: true\ndisable_reverse_lookup: true\nstore: {redis.url}\n'
        'on_store_error: accept\npolicies:\n  - rate_limit: {messages: 1000}\n'
        '  - greylist: {on_store_error: tempfail}\n')
    serve = Serve(tmp_path, '--config', 'smtp.yaml')
    try:
        os.kill(redis.proc.pid, signal.SIGSTOP)
        outcomes = sessions(serve.address, 8, 's', first_ip=10)
    finally:
        serve.close()
    assert {(o.mail, o.rcpt, o.rcpt_text[:5]) for o in outcomes} == {(250, 451, '4.3.5')}
    assert max(o.mail_time + o.rcpt_time for o in outcomes) < 2 * TIMEOUT + SLACK
    assert tracebacks('\n'.join(_drain(serve.stderr))) == []


def _drain(lines: queue.Queue) -> list[str]:
    """What the process wrote on stderr up to its end (closed: None)."""
    out = []
    while (line := lines.get(timeout=10)) is not None:
        out.append(line)
    return out


# -- the server's own limits in a store ------------------------------------------------

@pytest.fixture
def dead_store():
    """A Redis URL where nothing listens: every call is refused at once."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    shared = store(f'redis://127.0.0.1:{port}/0')
    yield shared
    shared.close()


def test_auth_failures_in_a_dead_store_fail_open_or_refuse_auth(dead_store):
    assert SharedFailures(dead_store, 3, 60).blocked('192.0.2.1') is False
    strict = SharedFailures(dead_store, 3, 60, on_store_error='tempfail')
    with pytest.raises(SmtpError) as refused:
        strict.blocked('192.0.2.1')
    assert (refused.value.reply.code, refused.value.reply.enhanced) == (454, '4.3.5')
    assert strict.add('192.0.2.1') is False         # nothing to count in: nothing raised


def test_connections_in_a_dead_store_count_per_process_or_are_refused(dead_store):
    lenient = SharedConnections(dead_store)
    assert [lenient.claim('192.0.2.1', 2) for _ in range(3)] == [True, True, False]
    assert SharedConnections(dead_store, on_store_error='tempfail').claim('192.0.2.1', 2) is False


def test_the_servers_option_reaches_its_auth_failure_limit(dead_store):
    server = SmtpServer(name='mx.test', store=dead_store, max_auth_failures_per_ip=3,
                        on_store_error='tempfail', allow_insecure_auth=True,
                        on_auth=lambda session: None)
    with ServerThread(server) as running:
        client = smtplib.SMTP(*running.address, timeout=10)
        try:
            client.ehlo('client.test')
            code, text = client.docmd('AUTH', 'PLAIN AGFsaWNlAHNlY3JldA==')
        finally:
            client.close()
    assert (code, text[:5]) == (454, b'4.3.5')
