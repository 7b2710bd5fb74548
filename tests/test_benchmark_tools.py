"""The benchmark helpers that use session internals still run (they are
tools, not tests of speed: no figure is asserted beyond being measured)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
    import select
    import smtplib
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'benchmarks', 'servers',
                                                          'gevent_sink.py'), '--port', '0'],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, 'the sink did not start within 10 s'
        port = int(re.search(r'listening on [0-9.]+:(\d+)', proc.stdout.readline())[1])
        with smtplib.SMTP('127.0.0.1', port, timeout=10) as client:
            for _ in range(3):
                assert client.sendmail('a@b.example', ['c@d.example'],
                                       b'Subject: x\r\n\r\n.dot\r\nbody\r\n') == {}
            assert client.rset()[0] == 250
    finally:
        proc.terminate()
        proc.wait(10)
