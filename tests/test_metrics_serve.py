"""`smtp-stack serve` with `metrics:`, as an admin runs it: a real Prometheus
scrapes it with two workers (one of them killed half-way, so its counts
must outlive it) and its HTTP API gives exactly the messages sent and
refused; /readyz follows a redis-server stopped with SIGSTOP and
continued with SIGCONT, while /livez keeps answering at once.
"""
from __future__ import annotations

import http.client
import os
import re
import signal
import smtplib
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import peers
from clirunner import Serve
from conftest import WAIT, wait_until
from policy_services import RedisServer
from prometheus_private import Prometheus

from smtp_stack.state.breaker import PERIOD

METRICS_AT = re.compile(r'metrics on http://(127\.0\.0\.1:\d+)/metrics')
ACCEPTED_BY = re.compile(r'smtp_stack\[(\d+)\] worker=\d+: \S+: accepted: ')
BODY = b'Subject: counted\r\n\r\nHello.\r\n'


def serve(tmp_path, *lines: str, workers: int = 1) -> tuple[Serve, str]:
    """`smtp-stack serve` with metrics on a port of the system's choice:
    the process, and where its metrics are (host:port)."""
    peers.python_module('prometheus_client', 'metrics')
    config = tmp_path / 'smtp.yaml'
    config.write_text(textwrap.dedent('''\
        name: mx.example.com
        listen: {host: 127.0.0.1, port: 0}
        disable_reverse_lookup: true
        close_timeout: 2
        metrics: 127.0.0.1:0
    ''') + f'workers: {workers}\n' + f'deliver: {{maildir: {tmp_path / "maildir"}}}\n'
        + ''.join(f'{line}\n' for line in lines))
    proc = Serve(tmp_path, '--config', str(config))
    found = METRICS_AT.search(proc.line)
    assert found, proc.line
    return proc, found[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def send(address, size: int = 0) -> int:
    """One message (a body of `size` bytes when given): the DATA reply's code."""
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example.org')
        smtp.mail('alice@example.org')
        smtp.rcpt('bob@example.com')
        return smtp.data(b'x' * size if size else BODY)[0]


def accepted_per_pid(proc: Serve, count: int) -> Counter:
    """Wait for `count` accepted lines on stderr; how many each pid wrote."""
    pids: Counter = Counter()
    for _ in range(count):
        pids[int(proc.wait_line(ACCEPTED_BY.pattern)[1])] += 1
    return pids


def test_prometheus_scrapes_exact_counts_from_two_workers(tmp_path):
    proc, metrics_at = serve(tmp_path, 'size: 1000', workers=2)
    prometheus = None
    try:
        prometheus = Prometheus(str(tmp_path), [metrics_at])
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: send(proc.address), range(10))) == [250] * 10
            # The worker that took the most of them is killed: what it counted stays.
            busiest = accepted_per_pid(proc, 10).most_common(1)[0][0]
            os.kill(busiest, signal.SIGKILL)
            assert list(pool.map(lambda _: send(proc.address), range(10))) == [250] * 10
            assert list(pool.map(lambda _: send(proc.address, 2000), range(3))) == [552] * 3
        queries = {
            'accepted': 'sum(smtp_stack_messages_accepted_total)',
            'refused': 'sum(smtp_stack_messages_refused_total)',
            'refused over size': 'sum(smtp_stack_messages_refused_total{by="limit",class="5xx"})',
            'delivered': 'sum(smtp_stack_deliveries_total{kind="maildir",status="sent"})',
            'connections': 'sum(smtp_stack_connections_total)',
            'workers': 'smtp_stack_workers',
            'up': 'up{job="smtp-stack"}',
        }
        prometheus.wait_for_values(queries, {
            'accepted': 20.0, 'refused': 3.0, 'refused over size': 3.0, 'delivered': 20.0,
            'connections': 23.0, 'workers': 2.0, 'up': 1.0})
        assert prometheus.value(
            'sum(smtp_stack_message_size_bytes_count)') == 20.0
        assert prometheus.value(
            'sum(smtp_stack_received_bytes_total)') == 20.0 * len(BODY)
    finally:
        if prometheus is not None:
            prometheus.stop()
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.close()


def test_readyz_follows_a_stopped_redis(tmp_path):
    redis = RedisServer(str(tmp_path))
    proc = None
    try:
        proc, metrics_at = serve(tmp_path, f'store: {redis.url}', 'policies:',
                                 '  - greylist: {delay: 1}')
        base = f'http://{metrics_at}'
        assert get(base + '/readyz') == (200, 'ready\n')
        os.kill(redis.proc.pid, signal.SIGSTOP)
        answers: list[tuple[int, str]] = []

        def not_ready() -> bool:
            started = time.monotonic()
            answers.append(get(base + '/readyz'))
            assert time.monotonic() - started < 2, 'a stalled store held /readyz'
            return answers[-1][0] == 503

        assert wait_until(not_ready), answers
        assert answers[-1][1].startswith(f'store {redis.url}: ')

        def failed() -> bool:   # the probe's own answer: its timeout, which opens the breaker
            return not_ready() and 'no answer within' not in answers[-1][1]

        assert wait_until(failed), answers
        started = time.monotonic()          # the hub is free while the store stalls
        assert get(base + '/livez') == (200, 'ok\n')
        assert time.monotonic() - started < 0.5
        os.kill(redis.proc.pid, signal.SIGCONT)
        # Its breaker lets a probe through PERIOD seconds after it opened.
        assert wait_until(lambda: get(base + '/readyz') == (200, 'ready\n'), PERIOD + WAIT)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        redis.stop()
        if proc is not None:
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
            proc.close()


def test_the_command_line_flag_serves_metrics(tmp_path):
    peers.python_module('prometheus_client', 'metrics')
    proc = Serve(tmp_path, '--port', '0', '--maildir', str(tmp_path / 'md'),
                 '--metrics', '127.0.0.1:0')
    try:
        found = METRICS_AT.search(proc.line)
        assert found, proc.line
        send(proc.address)
        status, text = get(f'http://{found[1]}/metrics')
        assert status == 200
        assert 'smtp_stack_messages_accepted_total 1.0' in text.splitlines()
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.close()


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds open."""
    found = set()
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if target.startswith('socket:['):
            found.add(target[8:-1])
    return found


def listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp)."""
    with open('/proc/net/tcp') as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if fields[1] == f'0100007F:{port:04X}' and fields[3] == '0A':
                return fields[9]
    raise AssertionError(f'nothing listens on 127.0.0.1:{port}')


def children(pid: int) -> list[int]:
    with open(f'/proc/{pid}/task/{pid}/children') as listed:
        return [int(child) for child in listed.read().split()]


def test_workers_do_not_hold_the_metrics_port(tmp_path):
    """Only the master serves /metrics: a worker holding the listening
    socket would keep the port bound after the master is gone."""
    proc, metrics_at = serve(tmp_path, workers=2)
    try:
        assert send(proc.address) == 250      # both have forked and serve
        assert wait_until(lambda: len(children(proc.pid)) == 2, WAIT)
        metrics = listening_inode(int(metrics_at.rsplit(':', 1)[1]))
        smtp = listening_inode(proc.address[1])
        assert metrics in socket_inodes(proc.pid)
        for worker in children(proc.pid):
            held = socket_inodes(worker)
            assert smtp in held
            assert metrics not in held
        assert get(f'http://{metrics_at}/livez')[0] == 200
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.close()


def connection_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's side of an established 127.0.0.1 connection."""
    with open('/proc/net/tcp') as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if (fields[1] == f'0100007F:{server_port:04X}'
                    and fields[2] == f'0100007F:{client_port:04X}' and fields[3] == '01'):
                return fields[9]
    raise AssertionError(f'no connection from port {client_port} to {server_port}')


def test_a_worker_forked_while_a_scrape_connection_is_open_does_not_hold_it(tmp_path):
    """A kept-alive /metrics connection the master serves when it forks new
    workers (a reload) stays the master's alone: a worker holding it would
    keep it open after the master closed it, and the scraper's next
    request on it would wait for an answer nobody gives."""
    proc, metrics_at = serve(tmp_path, workers=2)
    host, port = metrics_at.rsplit(':', 1)
    scrape = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        assert wait_until(lambda: len(children(proc.pid)) == 2, WAIT)
        before = set(children(proc.pid))
        scrape.request('GET', '/livez')
        assert scrape.getresponse().read() == b'ok\n'      # HTTP/1.1: the connection stays
        accepted = connection_inode(int(port), scrape.sock.getsockname()[1])
        assert accepted in socket_inodes(proc.pid)
        proc.signal(signal.SIGHUP)          # workers > 1: fresh workers forked
        assert wait_until(lambda: len(set(children(proc.pid)) - before) == 2, WAIT)
        for worker in set(children(proc.pid)) - before:     # once it let go of the master's
            assert wait_until(lambda worker=worker: accepted not in socket_inodes(worker), WAIT)
    finally:
        scrape.close()
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        proc.close()
