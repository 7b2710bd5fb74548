"""The loads. Each measurement starts a fresh server (so peak RSS and the RSS
baseline belong to that load alone), warms it up with the same load, then
measures, then stops the server by its process group.

(a)   smtp-source -d -s 50: 1 KB messages, 50 parallel sessions, many
      messages per session. messages/s, and messages per server CPU-second.
(b)   smtp-source -s 50 without -d: one message per connection. messages/s.
(c)   smtp-source -d -s 4 -l 5 MiB. MiB/s of message payload, server peak
      RSS (VmHWM, MiB).
(c50) the same with 50 MiB messages (peak RSS should not grow with size).
(d)   2,000 connections that said EHLO and stay idle (clients/idle_client.py).
      Server RSS growth per connection, KB.
(e)   STARTTLS + AUTH PLAIN + one 1 KB message per connection
      (clients/tls_client.py). sessions/s.
durable       smtp-source -d -s 20: 1 KB messages over 20 sessions, many per
              session, each stored in a Maildir and fsync'd before its 250
              (write, fsync, rename into new/, fsync of new/). messages/s,
              messages per server CPU-second, the server's system time per
              message, peak RSS.
durable-conn  the same with one message per connection, 20 at a time.
mx            clients/mx_client.py: DKIM-signed 4 KB messages from 20 sessions,
              many per session, each session first saying XCLIENT with a
              client address of its own; every server runs an inbound MX's
              policy stack against the run's redis-server and dnsmasq
              (benchlib/mx.py) and stores into a Maildir as in `durable`.
              messages/s, per server CPU-second, CPU-ms per message, the
              server's system time per message, peak RSS, and the CPU the
              server made redis-server and dnsmasq spend per message.
mx-conn       the same with one message per connection (XCLIENT each time,
              100 client addresses in turn), 20 at a time.
"""

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from . import procs
from .servers import BENCH_DIR, HOSTNAME, find_postfix_tool

CLIENTS = os.path.join(BENCH_DIR, 'clients')
KIB = 1024
MIB = 1024 * 1024


@dataclass
class Counts:
    a_msgs: int
    a_warm: int
    b_msgs: int
    b_warm: int
    c_msgs: int
    c_warm: int
    c50_msgs: int
    d_conns: int
    e_sessions: int
    e_warm: int
    durable_msgs: int = 10000
    durable_warm: int = 1000
    dconn_msgs: int = 4000
    dconn_warm: int = 400
    mx_msgs: int = 6000
    mx_warm: int = 600
    mxconn_msgs: int = 3000
    mxconn_warm: int = 300
    e_procs: int = 2
    e_concurrency: int = 16

    def scaled(self, factor):
        """Multiply the message and session counts (not the idle
        connections of (d), nor the warm-ups) by ``factor``."""
        def s(n, least):
            return max(least, int(round(n * factor)))
        return Counts(a_msgs=s(self.a_msgs, 100), a_warm=self.a_warm,
                      b_msgs=s(self.b_msgs, 100), b_warm=self.b_warm,
                      c_msgs=s(self.c_msgs, 4), c_warm=self.c_warm,
                      c50_msgs=s(self.c50_msgs, 4), d_conns=self.d_conns,
                      e_sessions=s(self.e_sessions, 20), e_warm=self.e_warm,
                      durable_msgs=s(self.durable_msgs, 100), durable_warm=self.durable_warm,
                      dconn_msgs=s(self.dconn_msgs, 100), dconn_warm=self.dconn_warm,
                      mx_msgs=s(self.mx_msgs, 100), mx_warm=self.mx_warm,
                      mxconn_msgs=s(self.mxconn_msgs, 100), mxconn_warm=self.mxconn_warm,
                      e_procs=self.e_procs, e_concurrency=self.e_concurrency)


FULL = Counts(a_msgs=40000, a_warm=4000, b_msgs=10000, b_warm=1000,
              c_msgs=120, c_warm=8, c50_msgs=12, d_conns=2000,
              e_sessions=2000, e_warm=100)
QUICK = Counts(a_msgs=3000, a_warm=300, b_msgs=1000, b_warm=100,
               c_msgs=16, c_warm=4, c50_msgs=4, d_conns=2000,
               e_sessions=400, e_warm=32, durable_msgs=1500, durable_warm=300,
               dconn_msgs=600, dconn_warm=100, mx_msgs=600, mx_warm=100,
               mxconn_msgs=300, mxconn_warm=60)

# Where the durable scenarios' Maildirs are made (one per measurement);
# run.py may point it elsewhere (--maildir-root). They are removed at the
# end of the run, not after each measurement: on ext4 without a journal
# (this machine's root) a new inode skips every one deleted in the last
# minute or so (ext4's recently_deleted), so the 10,000 files one server
# left would slow the file creation of the next.
MAILDIR_ROOT = [os.path.join(BENCH_DIR, 'results', 'maildirs')]


class ScenarioError(Exception):
    """The measurement failed; the message says why (shown under the table)."""


class ServerRun:
    """A fresh server process for one measurement, stopped on exit."""

    def __init__(self, spec, logdir, tag, tls=None, maildir=False, mx=None):
        self.spec = spec
        self.tls = tls
        self.mx = mx            # the MX scenarios' world (benchlib.mx.MxWorld)
        self.port = procs.free_port()
        self.log_path = os.path.join(logdir, f'{spec.name}-{tag}.log')
        self.proc = None
        self.maildir = None
        if maildir:
            self.maildir = os.path.join(MAILDIR_ROOT[0], f'{spec.name}-{tag}')
            shutil.rmtree(self.maildir, ignore_errors=True)
            for sub in ('tmp', 'new', 'cur'):
                os.makedirs(os.path.join(self.maildir, sub), mode=0o700)

    def __enter__(self):
        self.log = open(self.log_path, 'wb')
        try:
            command = self.spec.command(self.port, self.tls, self.maildir,
                                        mx=self.mx.env if self.mx else None)
            self.proc = procs.spawn(command, env=self.spec.env(), stdout=self.log,
                                    stderr=subprocess.STDOUT)
        except OSError as exc:
            self.log.close()
            raise ScenarioError(f'cannot start the server: {exc}') from None
        problem = procs.wait_smtp_ready(self.port, self.proc, timeout=30)
        if problem:
            self.__exit__(None, None, None)
            raise ScenarioError(f'server {problem}: {self.last_log_line()}')
        return self

    def last_log_line(self):
        return f'{procs.tail(self.log_path, 1) or "(empty log)"} [log: {self.log_path}]'

    def __exit__(self, *exc):
        leader = self._leader()
        if self.proc is not None:
            procs.stop_group(self.proc)
        if leader is not None:
            procs.stop_pgid(leader)
        if hasattr(self.spec, 'cleanup'):
            self.spec.cleanup(self.port)
        self.log.close()

    def _leader(self):
        """The process group of a server that leaves the harness's group
        (Postfix's master makes a session of its own), or None."""
        find = getattr(self.spec, 'leader', None)
        pid = find(self.port) if find else None
        try:
            return os.getpgid(pid) if pid else None
        except OSError:
            return None

    def stored(self):
        """How many messages are in the Maildir's new/."""
        return len(os.listdir(os.path.join(self.maildir, 'new')))

    @property
    def pgid(self):
        return self._leader() or self.proc.pid

    def check_alive(self):
        if self.proc.poll() is not None:
            raise ScenarioError(f'server exited with code {self.proc.returncode}: '
                                + self.last_log_line())


def _smtp_source(port, messages, sessions, length, per_session):
    cmd = [find_postfix_tool('smtp-source'), '-M', HOSTNAME,
           '-f', f'sender@{HOSTNAME}', '-t', f'rcpt@{HOSTNAME}',
           '-s', str(sessions), '-m', str(messages), '-l', str(length)]
    if per_session:
        cmd.append('-d')
    cmd.append(f'127.0.0.1:{port}')
    # Bounded: generous for a slow server (200 msg/s, 5 MiB/s), then killed.
    timeout = 60 + messages / 200 + messages * length / (5 * MIB)
    return procs.run_bounded(cmd, timeout)


def _client_bound(run, server_cpu, server_cores_max, client_cores_max=1.0, machine_busy=None):
    """True when the rate may be the client's or the machine's limit rather
    than the server's: the client used >= 90% of the cores it can use, or
    client and server together kept >= 90% of all cores busy while the
    server stayed below 90% of the cores it can use. `machine_busy` (the
    share of all cores busy with anyone's work, when measured) counts in
    place of client and server together: on a shared machine other
    programs may have set the rate. The rate is then a lower bound for the
    server."""
    if run.wall <= 0:
        return False
    client = run.cpu / run.wall
    server = server_cpu / run.wall
    ncpu = os.cpu_count() or 1
    busy = max(client + server, (machine_busy or 0.0) * ncpu)
    return (client >= 0.9 * client_cores_max
            or (busy >= 0.9 * ncpu and server < 0.9 * server_cores_max))


def _source_load(server, key, messages, warm, sessions, length, per_session, split=False,
                 settle=None):
    """Warm up, then one measured smtp-source run. Returns that run, the
    server's CPU seconds during it, the figures every load reports, and
    whether the client (or the machine) may have set the rate. `settle(n)`,
    when given, waits after each load until the server has finished the
    first n messages (a queueing MTA delivers after its 250): the measured
    wall time then runs to that point."""
    done = [0]

    def load(count, what):
        started = time.monotonic()
        run = _smtp_source(server.port, count, sessions, length, per_session)
        server.check_alive()
        if not run.ok:
            raise ScenarioError(f'{what}: smtp-source {run.error_text()}')
        done[0] += count
        if settle is not None:
            settle(done[0])
            run.wall = time.monotonic() - started
        return run

    load(warm, 'warm-up')
    user0, sys0 = procs.group_cpu_split(server.pgid)
    run = load(messages, 'run')
    user1, sys1 = procs.group_cpu_split(server.pgid)
    cpu = max(user1 + sys1 - user0 - sys0, 1.0 / procs.CLK_TCK)
    figures = {f'{key}_seconds': run.wall, f'{key}_server_cpu': cpu,
               f'{key}_server_cores': cpu / run.wall,
               f'{key}_client_cores': run.cpu / run.wall}
    if split:
        figures[f'{key}_server_sys'] = sys1 - sys0
    return run, cpu, figures, _client_bound(run, cpu, server.spec.workers)


def measure_a(server, counts):
    n = counts.a_msgs
    run, cpu, figures, bound = _source_load(server, 'a', n, counts.a_warm, 50, 1024, True)
    figures.update(a_rate=n / run.wall, a_per_cpu=n / cpu)
    return figures, bound


def measure_b(server, counts):
    n = counts.b_msgs
    run, cpu, figures, bound = _source_load(server, 'b', n, counts.b_warm, 50, 1024, False)
    figures.update(b_rate=n / run.wall, b_per_cpu=n / cpu)
    return figures, bound


def _measure_big(server, key, messages, warm, length):
    run, cpu, figures, bound = _source_load(server, key, messages, warm, 4, length, True)
    figures[f'{key}_mibps'] = messages * length / MIB / run.wall
    figures[f'{key}_rss'] = procs.group_hwm_kb(server.pgid) / KIB
    return figures, bound


def measure_c(server, counts):
    return _measure_big(server, 'c', counts.c_msgs, counts.c_warm, 5 * MIB)


def measure_c50(server, counts):
    return _measure_big(server, 'c50', counts.c50_msgs, 1, 50 * MIB)


def _measure_durable(server, key, messages, warm, per_session):
    def settle(count):      # every message in new/ (at once, but for Postfix)
        deadline = time.monotonic() + 60 + count / 100
        while server.stored() < count and time.monotonic() < deadline:
            server.check_alive()
            time.sleep(0.02)
    run, cpu, figures, bound = _source_load(server, key, messages, warm, 20, 1024,
                                            per_session, split=True, settle=settle)
    stored = server.stored()
    if stored < warm + messages:
        raise ScenarioError(f'{stored} messages in new/ after {warm + messages} were sent')
    figures.update({f'{key}_rate': messages / run.wall, f'{key}_per_cpu': messages / cpu,
                    f'{key}_sys_us': figures[f'{key}_server_sys'] / messages * 1e6,
                    f'{key}_rss': procs.group_hwm_kb(server.pgid) / KIB})
    return figures, bound


def measure_durable(server, counts):
    return _measure_durable(server, 'durable', counts.durable_msgs, counts.durable_warm, True)


def measure_durable_conn(server, counts):
    return _measure_durable(server, 'durable-conn', counts.dconn_msgs, counts.dconn_warm,
                            False)


MX_SESSIONS = 20
MX_CONN_CLIENTS = 100     # client addresses mx-conn's connections take in turn


def _mx_client(server, *args):
    """clients/mx_client.py against the server, bounded; its JSON report."""
    cmd = [sys.executable, os.path.join(CLIENTS, 'mx_client.py'), '--port', str(server.port),
           '--message', server.mx.env['message'], '--sessions', str(MX_SESSIONS), *args]
    run = procs.run_bounded(cmd, 600)
    server.check_alive()
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ScenarioError(f'MX client {run.error_text()}') from None
    return run, report


def _mx_prime(server, clients):
    """Every client's triplets through the greylist (a 451, then a retry
    after the delay, accepted), and a message tried as the DNSBL-listed
    client, which must be refused (5xx) exactly by the servers that check
    the DNSBL."""
    from .mx import LISTED_CLIENT
    _, report = _mx_client(server, '--prime', '--clients', str(clients),
                           '--listed', LISTED_CLIENT, '--delay', '2.5')
    if report['errors']:
        raise ScenarioError(f"priming the greylist: {report['errors']} errors, first: "
                            f"{report['first_error']}")
    listed = report.get('listed') or ''
    if listed.startswith('5') != server.spec.mx_dnsbl:   # a greylist's 451 is no refusal
        raise ScenarioError(f'the DNSBL-listed client got {listed or "its RCPT accepted"}'
                            + (' (is the DNSBL check live?)' if server.spec.mx_dnsbl else ''))


def _mx_results_of(server):
    """The header section of the newest message in new/ (what the server
    added above the signed message: Authentication-Results ...)."""
    folder = os.path.join(server.maildir, 'new')
    newest = max(os.listdir(folder), key=lambda n: os.stat(os.path.join(folder, n)).st_mtime)
    with open(os.path.join(folder, newest), 'rb') as f:
        head = f.read(64 * KIB).split(b'\nDKIM-Signature:', 1)[0]
    return ' '.join(head.decode(errors='replace').split())


def _measure_mx(server, key, messages, warm, per_session):
    clients = MX_SESSIONS if per_session else MX_CONN_CLIENTS
    _mx_prime(server, clients)
    load = (['--per-session'] if per_session else ['--clients', str(clients)])

    def send(count, what):
        run, report = _mx_client(server, '--messages', str(count), *load)
        if report['errors'] or not report['messages']:
            raise ScenarioError(f"{what}: {report['errors']} errors in {count} messages, "
                                f"first: {report['first_error']}")
        return run, report

    send(warm, 'warm-up')
    user0, sys0 = procs.group_cpu_split(server.pgid)
    helpers0 = server.mx.helpers_cpu()
    busy0, total0 = procs.machine_busy_seconds()
    run, report = send(messages, 'run')
    busy1, total1 = procs.machine_busy_seconds()
    user1, sys1 = procs.group_cpu_split(server.pgid)
    helpers = server.mx.helpers_cpu() - helpers0
    # Of all the machine's cores, the share busy (anyone's work): on a
    # shared machine other programs may set the rate, not the client.
    machine = (busy1 - busy0) / max(total1 - total0, 1e-9)
    stored = server.stored()
    if stored < warm + messages:
        raise ScenarioError(f'{stored} messages in new/ after {warm + messages} were sent')
    results = _mx_results_of(server)
    missing = [r for r in server.spec.mx_results if r not in results]
    if missing:
        raise ScenarioError(f"the stored message lacks {', '.join(missing)}: {results[:300]}")
    cpu = max(user1 + sys1 - user0 - sys0, 1.0 / procs.CLK_TCK)
    seconds = report['seconds']
    return {f'{key}_rate': messages / seconds, f'{key}_per_cpu': messages / cpu,
            f'{key}_cpu_ms': cpu / messages * 1e3,
            f'{key}_sys_us': (sys1 - sys0) / messages * 1e6,
            f'{key}_rss': procs.group_hwm_kb(server.pgid) / KIB,
            f'{key}_helpers_ms': helpers / messages * 1e3,
            f'{key}_seconds': seconds, f'{key}_server_cpu': cpu,
            f'{key}_server_cores': cpu / run.wall,
            f'{key}_client_cores': run.cpu / run.wall,
            f'{key}_machine_busy': machine}, _client_bound(run, cpu, server.spec.workers,
                                                          machine_busy=machine)


def measure_mx(server, counts):
    return _measure_mx(server, 'mx', counts.mx_msgs, counts.mx_warm, True)


def measure_mx_conn(server, counts):
    return _measure_mx(server, 'mx-conn', counts.mxconn_msgs, counts.mxconn_warm, False)


def _idle_cmd(port, count, hold):
    return [sys.executable, os.path.join(CLIENTS, 'idle_client.py'),
            '--port', str(port), '--count', str(count), '--hold', str(hold),
            '--timeout', '90']


def measure_d(server, counts):
    # Warm-up: 20 connections through EHLO and closed, so lazily built code
    # paths and buffers are not charged to the 2,000.
    warm = procs.run_bounded(_idle_cmd(server.port, 20, 0), 120)
    server.check_alive()
    if not warm.ok:
        raise ScenarioError(f'warm-up: idle client {warm.error_text()}')
    time.sleep(0.5)
    before = procs.group_rss_kb(server.pgid)
    client = procs.spawn(_idle_cmd(server.port, counts.d_conns, 150),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([client.stdout], [], [], 120)
        line = client.stdout.readline() if ready else ''
        if not line:
            raise ScenarioError('idle client did not report (timed out or died): '
                                + (client.stderr.read() if client.poll() is not None else ''))
        try:
            report = json.loads(line)
        except ValueError:
            raise ScenarioError(f'idle client said {line.strip()[:200]!r}') from None
        time.sleep(1.0)          # let the server settle after the last EHLO
        server.check_alive()
        after = procs.group_rss_kb(server.pgid)
    finally:
        try:
            client.stdin.close()
        except OSError:
            pass
        try:
            client.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        procs.stop_group(client, grace=1.0)
    if not report['ready']:
        raise ScenarioError(f"no connection reached EHLO: {report['first_error']}")
    result = {'d_kb_per_conn': (after - before) / report['ready'],
              'd_rss_before_kb': before, 'd_rss_after_kb': after,
              'd_ready': report['ready'], 'd_failed': report['failed']}
    if report['failed']:
        result['d_note'] = (f"only {report['ready']} of {counts.d_conns} connections "
                            f"held ({report['first_error']})")
    return result, False


def _tls_run(server, counts, sessions):
    cmd = [sys.executable, os.path.join(CLIENTS, 'tls_client.py'),
           '--port', str(server.port), '--sessions', str(sessions),
           '--procs', str(counts.e_procs), '--concurrency', str(counts.e_concurrency),
           '--timeout', str(60 + sessions / 10)]
    run = procs.run_bounded(cmd, 120 + sessions / 10)
    server.check_alive()
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ScenarioError(f'TLS client {run.error_text()}') from None
    if report['errors'] or not report['sessions']:
        raise ScenarioError(f"TLS client: {report['errors']} failed sessions "
                            f"of {sessions}, first: {report['first_error']}")
    return run, report


def measure_e(server, counts):
    _tls_run(server, counts, counts.e_warm)
    cpu0 = procs.group_cpu_seconds(server.pgid)
    run, report = _tls_run(server, counts, counts.e_sessions)
    cpu = max(procs.group_cpu_seconds(server.pgid) - cpu0, 1.0 / procs.CLK_TCK)
    n = report['sessions']
    ncpu = os.cpu_count() or 2
    # The client may use what one server process leaves, and at most a core
    # per client process.
    bound = _client_bound(run, cpu, server.spec.workers,
                          client_cores_max=max(1, min(counts.e_procs, ncpu - 1)))
    return {'e_rate': n / report['seconds'], 'e_per_cpu': n / cpu,
            'e_seconds': report['seconds'], 'e_server_cpu': cpu,
            'e_server_cores': cpu / run.wall,
            'e_client_cores': run.cpu / run.wall}, bound


@dataclass
class Scenario:
    key: str
    title: str
    measure: object
    needs: str      # 'smtp-source', 'tls', 'mx' (redis-server, dnsmasq, dkimpy) or ''
    maildir: bool = False   # the server stores into a Maildir made for the run


SCENARIOS = {
    'a': Scenario('a', '1 KB messages, 50 parallel sessions, many per session',
                  measure_a, 'smtp-source'),
    'b': Scenario('b', '1 KB message, one per connection, 50 in parallel',
                  measure_b, 'smtp-source'),
    'c': Scenario('c', '5 MiB messages over 4 sessions', measure_c, 'smtp-source'),
    'c50': Scenario('c50', '50 MiB messages over 4 sessions', measure_c50, 'smtp-source'),
    'd': Scenario('d', 'idle connections after EHLO', measure_d, ''),
    'e': Scenario('e', 'STARTTLS + AUTH PLAIN + 1 KB message per connection',
                  measure_e, 'tls'),
    'durable': Scenario('durable', '1 KB messages stored and fsync\'d in a Maildir before '
                        'the 250, 20 sessions, many per session', measure_durable,
                        'smtp-source', maildir=True),
    'durable-conn': Scenario('durable-conn', 'the same, one message per connection, '
                             '20 at a time', measure_durable_conn, 'smtp-source',
                             maildir=True),
    'mx': Scenario('mx', 'an inbound MX\'s policy stack (XCLIENT, DKIM-signed 4 KB, Redis, '
                   'DNS), Maildir, 20 sessions, many per session', measure_mx, 'mx',
                   maildir=True),
    'mx-conn': Scenario('mx-conn', 'the same, one message per connection, 20 at a time',
                        measure_mx_conn, 'mx', maildir=True),
}
DEFAULT_SCENARIOS = ('a', 'b', 'c', 'd', 'e')


def run_one(scenario, spec, counts, logdir, tag, tls_paths, mx_world=None):
    """Measure one server under one scenario. Returns (figures, client_bound)
    or raises ScenarioError. The MX scenarios empty Redis first, so every
    server primes the same state."""
    tls = tls_paths if scenario.needs == 'tls' else None
    mx = mx_world if scenario.needs == 'mx' else None
    if mx is not None:
        try:
            mx.reset()
        except OSError as exc:
            raise ScenarioError(f'redis-server: {exc}') from None
    with ServerRun(spec, logdir, f'{scenario.key}-{tag}', tls, scenario.maildir,
                   mx) as server:
        return scenario.measure(server, counts)
