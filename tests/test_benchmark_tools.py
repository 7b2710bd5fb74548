"""The benchmark helpers that use session internals still run (they are
tools, not tests of speed: no figure is asserted beyond being measured)."""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys

import pytest

import peers
from conftest import readable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_session_cpu_measures_both_loads():
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'session_cpu.py'),
                          '--messages', '200'],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    figures = re.findall(r'^\((a|b)\)\s+([0-9.]+) µs', run.stdout, re.M)
    assert [load for load, _ in figures] == ['a', 'b']
    assert all(float(value) > 0 for _, value in figures)


def test_each_repeat_starts_with_the_next_server():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        from run import turn_order
    finally:
        sys.path.pop(0)
    servers = ['smtp_stack', 'aiosmtpd', 'nodemailer']
    orders = [turn_order(servers, rep) for rep in (1, 2, 3, 4)]
    assert orders[0] == servers and orders[3] == servers
    assert [order[0] for order in orders[:3]] == servers
    assert all(sorted(order) == sorted(servers) for order in orders)
    assert turn_order([], 2) == []


def test_tls_client_runs_whole_sessions_and_reports_refusals(serve):
    """The client of scenario (e), against a real server: every session
    counted, and a refused step reported as an error, not a session."""
    def run(server):
        client = subprocess.run(
            [sys.executable, os.path.join(ROOT, 'benchmarks', 'clients', 'tls_client.py'),
             '--port', str(server.address[1]), '--sessions', '12', '--procs', '2',
             '--concurrency', '3', '--session-timeout', '10', '--timeout', '30'],
            capture_output=True, text=True, timeout=60)
        return client.returncode, json.loads(client.stdout.strip().splitlines()[-1])

    delivered = []

    def keep(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            delivered.append(ctx.session.envelope.data_stream.read())

    accepting = serve(auth_methods=['PLAIN'], on_auth=lambda session: session.auth.username,
                      middleware=[keep])
    code, report = run(accepting)
    assert code == 0 and report['sessions'] == 12 and report['errors'] == 0, report
    assert len(delivered) == 12 and len(set(delivered)) == 1        # whole, the same each time
    assert delivered[0].endswith(b'XX\r\n') and len(delivered[0]) > 1024

    refusing = serve(auth_methods=['PLAIN'])        # AUTH fails closed by default
    code, report = run(refusing)
    assert code == 1 and report['sessions'] == 0 and report['errors'] == 12, report
    assert report['first_error'].startswith('SessionError: AUTH PLAIN: 535')


def test_the_featureless_gevent_sink_takes_mail_from_smtplib():
    """The floor the benchmark compares with must speak enough SMTP for the
    benchmark clients (smtplib here: EHLO, MAIL, RCPT, DATA, RSET, QUIT)."""
    import smtplib
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'benchmarks', 'servers',
                                                          'gevent_sink.py'), '--port', '0'],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert readable(proc.stdout, 10), 'the sink did not start within 10 s'
        port = int(re.search(r'listening on [0-9.]+:(\d+)', proc.stdout.readline())[1])
        with smtplib.SMTP('127.0.0.1', port, timeout=10) as client:
            for _ in range(3):
                assert client.sendmail('a@b.example', ['c@d.example'],
                                       b'Subject: x\r\n\r\n.dot\r\nbody\r\n') == {}
            assert client.rset()[0] == 250
    finally:
        proc.terminate()
        proc.wait(10)


# -- the MX scenarios (benchmarks/benchlib/mx.py, clients/mx_client.py) -------

def _bench_import(name):
    """A module of benchmarks/ (benchlib.*) or of benchmarks/clients/."""
    import importlib
    for folder in ('benchmarks', os.path.join('benchmarks', 'clients')):
        sys.path.insert(0, os.path.join(ROOT, folder))
    try:
        return importlib.import_module(name)
    finally:
        del sys.path[:2]


def _dnsmasq_txt(config, name):
    """The character-strings of the txt-record for `name` in a dnsmasq
    configuration."""
    for line in config.splitlines():
        if line.startswith(f'txt-record={name},'):
            return re.findall(r'"([^"]*)"', line.split(',', 1)[1])
    return None


def test_mx_zone_publishes_what_the_checks_ask():
    mx = _bench_import('benchlib.mx')
    public = bytes(range(256)) * 2             # a key's DER: 512 bytes, 684 in base64
    config = mx.zone_config(public)
    lines = config.splitlines()
    assert {'no-resolv', 'no-hosts', 'local=/sender.example/', 'local=/bench.example/',
            f'local-ttl={mx.RECORD_TTL}'} <= set(lines)
    key = _dnsmasq_txt(config, 'bench._domainkey.sender.example')
    assert all(len(s) <= 255 for s in key) and len(key) == 3
    assert ''.join(key) == 'v=DKIM1; k=rsa; p=' + base64.b64encode(public).decode()
    for name in ('sender.example', 'mail.sender.example'):       # MAIL FROM and HELO
        assert _dnsmasq_txt(config, name) == ['v=spf1 ip4:198.18.0.0/15 -all']
    assert _dnsmasq_txt(config, '_dmarc.sender.example') == ['v=DMARC1; p=reject']
    # RFC 5782 5: the test entry 127.0.0.2 is listed; so is the listed client.
    assert 'host-record=2.0.0.127.bl.bench.example,127.0.0.2' in lines
    assert 'host-record=200.255.19.198.bl.bench.example,127.0.0.2' in lines
    assert mx.txt_strings('') == [''] and mx.txt_strings('x' * 256) == ['x' * 255, 'x']


def test_mx_client_plan_varies_the_keys_and_never_is_the_listed_client():
    mx = _bench_import('benchlib.mx')
    client = _bench_import('mx_client')
    addresses = [ipaddress.ip_address(client.client_address(k))
                 for k in range(client.MAX_CLIENTS)]
    networks = {ipaddress.ip_network(f'{a}/24', strict=False) for a in addresses}
    assert len(networks) == client.MAX_CLIENTS              # one greylist network each
    assert all(a in ipaddress.ip_network(mx.CLIENT_NETWORK) for a in addresses)
    assert ipaddress.ip_address(mx.LISTED_CLIENT) not in addresses
    with pytest.raises(ValueError):
        client.client_address(client.MAX_CLIENTS)
    pairs = [client.triplet(3, j) for j in range(2 * client.TRIPLETS)]
    assert len(set(pairs)) == client.TRIPLETS and pairs[:client.TRIPLETS] == pairs[client.TRIPLETS:]
    assert {client.triplet(k, 0) for k in range(10)} != {client.triplet(0, 0)}
    assert client.dot_stuffed(b'.a\r\n.b\r\nc') == b'..a\r\n..b\r\nc\r\n.\r\n'


def test_mx_world_serves_its_zone_and_redis_and_its_message_verifies():
    """The run's own dnsmasq and redis-server: the signed message passes
    DKIM with the key they serve, the DNSBL lists exactly the test entry and
    the listed client, and both daemons are gone after the world ends."""
    peers.program('dnsmasq', 'dnsmasq-base', '/usr/sbin/dnsmasq')
    peers.program('redis-server', 'redis-server')
    dkim = peers.python_module('dkim', 'policies')
    resolver_module = peers.python_module('dns.resolver', 'policies')
    mx = _bench_import('benchlib.mx')
    with mx.MxWorld() as world:
        resolver = resolver_module.Resolver(configure=False)
        resolver.nameservers, resolver.port = ['127.0.0.1'], world.dns_port
        resolver.lifetime = 5

        def txt(name, timeout=5):
            answer = resolver.resolve(name.decode().rstrip('.'), 'TXT')
            return b''.join(s for record in answer for s in record.strings)

        with open(world.env['message'], 'rb') as f:
            message = f.read()
        assert len(message) == mx.MESSAGE_SIZE
        assert dkim.verify(message, dnsfunc=txt)
        assert not dkim.verify(message.replace(b'lazy dog', b'lazy cat', 1), dnsfunc=txt)
        listed = resolver.resolve(f'200.255.19.198.{mx.DNSBL_ZONE}', 'A')
        assert [r.to_text() for r in listed] == ['127.0.0.2']
        with pytest.raises(resolver_module.NXDOMAIN):
            resolver.resolve(f'7.0.18.198.{mx.DNSBL_ZONE}', 'A')
        assert world.redis_command(b'SET', b'k', b'v') == b'+OK'
        world.reset()
        assert world.redis_command(b'EXISTS', b'k') == b':0'
        daemons = [world.redis.pid, world.dnsmasq.pid]
    for pid in daemons:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(world.dir)


def test_mx_client_says_xclient_primes_the_greylist_and_varies_the_envelope(serve):
    """The client against a real smtp_stack: XCLIENT sets the client
    address, the first priming round is greylisted and the second passes,
    the listed client's refusal is reported, and the load's envelopes come
    from the plan."""
    from smtp_stack import SmtpError, policies
    client = _bench_import('mx_client')
    mx = _bench_import('benchlib.mx')
    seen = []

    def refuse_listed(ctx, next):
        if ctx.command_name == 'RCPT' and ctx.session.remote_address == mx.LISTED_CLIENT:
            raise SmtpError(554, 'listed')
        next()

    def record(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            envelope = ctx.session.envelope
            body = envelope.data_stream.read()
            seen.append((ctx.session.remote_address, envelope.mail_from.address,
                         envelope.rcpt_to[0].address, body))

    server = serve(use_xclient=['127.0.0.1'], max_messages=0,
                   middleware=[refuse_listed, policies.greylist(delay=1), record])
    message = os.path.join(ROOT, 'benchmarks', 'results', f'mx-test-{os.getpid()}.eml')
    os.makedirs(os.path.dirname(message), exist_ok=True)
    with open(message, 'wb') as f:
        f.write(b'Subject: s\r\n\r\n.leading dot\r\nbody\r\n')
    try:
        def run(*args):
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, 'benchmarks', 'clients', 'mx_client.py'),
                 '--port', str(server.address[1]), '--message', message, '--sessions', '3',
                 '--session-timeout', '20', '--timeout', '30', *args],
                capture_output=True, text=True, timeout=60)
            return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])

        code, report = run('--prime', '--clients', '4', '--delay', '1.5',
                           '--listed', mx.LISTED_CLIENT)
        assert code == 0, report
        assert report['greylisted'] == [4 * client.TRIPLETS, 0]
        assert report['listed'].startswith('554')
        code, report = run('--per-session', '--messages', '12')
        assert code == 0 and report['messages'] == 12, report
        code, report = run('--messages', '8', '--clients', '4')
        assert code == 0 and report['messages'] == 8, report
    finally:
        os.unlink(message)
    assert len(seen) == 20
    assert all(body == b'Subject: s\r\n\r\n.leading dot\r\nbody\r\n' for *_, body in seen)
    per_session, per_conn = seen[:12], seen[12:]
    assert {a for a, *_ in per_session} == {client.client_address(k) for k in range(3)}
    assert {a for a, *_ in per_conn} == {client.client_address(k) for k in range(4)}
    clients = {client.client_address(k): k for k in range(4)}
    for address, sender, rcpt, _ in seen:           # each client's own triplets
        assert (sender, rcpt) in {client.triplet(clients[address], j)
                                  for j in range(client.TRIPLETS)}
    assert len({(a, s, r) for a, s, r, _ in seen}) >= 12          # the keys vary


def test_haraka_resolvers_ask_the_runs_dns_server():
    """benchmarks/servers/haraka/bench_dns.js: the default resolvers and
    every Resolver a plugin makes (dns-list's) ask $BENCH_DNS."""
    node = peers.program('node', 'nodejs')
    script = ("const dns = require('node:dns');"
              "console.log(JSON.stringify([dns.getServers(), dns.promises.getServers(),"
              " new dns.promises.Resolver({timeout: 1000}).getServers(),"
              " new (require('node:dns/promises').Resolver)().getServers(),"
              " new dns.Resolver().getServers()]));")
    done = subprocess.run(
        [node, '--require', os.path.join(ROOT, 'benchmarks', 'servers', 'haraka', 'bench_dns.js'),
         '-e', script], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, BENCH_DNS='127.0.0.1:5399'))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [['127.0.0.1:5399']] * 5


def test_policy_costs_are_counted_over_the_row_without_policies():
    report = _bench_import('benchlib.report')

    class Spec:
        def __init__(self, name, label, base):
            self.name, self.label, self.mx_base = name, label, base
    results = report.Results()
    for name, cpu, helpers in (('none', 1.0, 0.0), ('grey', 1.25, 0.1), ('grey', 1.5, 0.3),
                               ('grey', 1.3, 0.2)):
        results.add(name, 'mx', {'mx_cpu_ms': cpu, 'mx_helpers_ms': helpers}, False)
    table = report.render_policy_costs(
        results, [Spec('none', 'no policy', None), Spec('grey', 'greylist alone', 'none'),
                  Spec('other', 'not measured', 'none')], ['mx'])
    rows = table.splitlines()
    assert len(rows) == 3 and 'greylist alone' in rows[2]
    assert [c.strip() for c in rows[2].split('|')[2:4]] == ['+0.30', '+0.20']   # medians - none's
    assert report.render_policy_costs(results, [Spec('none', 'x', None)], ['mx']) == ''


@pytest.mark.parametrize('client_cpu, server_cpu, machine, bound', [
    (0.95, 0.5, None, True),        # the client used its core
    (0.3, 0.5, None, False),        # nobody was short of CPU
    (0.9, 0.95, None, True),        # client + server: the machine
    (0.3, 0.95, None, False),       # the server had its core
    (0.1, 0.35, 0.95, True),        # other programs kept the machine busy
    (0.1, 0.35, 0.5, False),
    (0.1, 0.92, 0.95, False),       # busy, but the server had its core
])
def test_a_rate_is_marked_when_the_client_or_the_machine_may_have_set_it(
        client_cpu, server_cpu, machine, bound):
    scenarios = _bench_import('benchlib.scenarios')
    procs = _bench_import('benchlib.procs')
    run = procs.RunResult(0, '', '', 10.0, client_cpu * 10.0, False)
    assert scenarios._client_bound(run, server_cpu * 10.0, 1, machine_busy=machine) is bound
    busy, total = procs.machine_busy_seconds()
    assert 0 <= busy <= total
