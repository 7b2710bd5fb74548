#!/usr/bin/env python3
"""smtp_stack against its peers, side by side, from one run.

Starts each server in turn on a free port of 127.0.0.1, drives the same
load against each with the same client (Postfix's smtp-source for (a)-(c),
our own clients for (d) and (e)), and prints one table with the absolute
figures and, in each peer's cells, smtp_stack's figure divided by the
peer's. Only ratios from one run mean anything: the machine is shared.

    python benchmarks/run.py                    # everything, medians of 3
    python benchmarks/run.py --quick            # small counts, under a minute
    python benchmarks/run.py --scenarios a,e --servers smtp_stack,aiosmtpd
    python benchmarks/run.py --json results.json
    python benchmarks/run.py --scenarios durable,durable-conn \
        --servers smtp_stack,smtp_stack-w2,aiosmtpd,nodemailer
    python benchmarks/run.py --scenarios mx,mx-conn       # every MX row, Haraka

See benchmarks/README.md for what each scenario measures and the caveats.
"""

import argparse
import atexit
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

from benchlib import procs
from benchlib.mx import MxWorld
from benchlib.report import METRICS, Results, render_policy_costs, render_table, write_json
from benchlib.scenarios import (DEFAULT_SCENARIOS, FULL, MAILDIR_ROOT, QUICK, SCENARIOS,
                                ScenarioError, run_one)
from benchlib.servers import BENCH_DIR, all_servers, find_postfix_tool


def parse_args(argv):
    servers = [s.name for s in all_servers()]
    p = argparse.ArgumentParser(
        description='Benchmark smtp_stack against aiosmtpd, nodemailer '
                    'smtp-server and Postfix smtp-sink.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='scenarios:\n' + '\n'.join(
            f'  {k:4} {s.title}' for k, s in SCENARIOS.items())
        + '\n  (c50, durable, durable-conn, mx and mx-conn are not in the default set)'
        + '\nservers:\n  ' + ', '.join(servers)
        + ', and smtp_stack@NAME for each --tree')
    p.add_argument('--scenarios', default=','.join(DEFAULT_SCENARIOS),
                   help='comma-separated scenario keys (default: %(default)s)')
    p.add_argument('--servers', default=','.join(servers),
                   help='comma-separated server names (default: all)')
    p.add_argument('--quick', action='store_true',
                   help='small counts, one repeat: a smoke run under a minute')
    p.add_argument('--repeat', type=int,
                   help='measurements per server and scenario; the table shows '
                        'medians (default 3, or 1 with --quick)')
    p.add_argument('--scale', type=float, default=1.0,
                   help='multiply message and session counts by this')
    p.add_argument('--baseline', default='smtp_stack',
                   help='server whose figures the ratios divide (default: %(default)s)')
    p.add_argument('--tls-key', choices=('p256', 'rsa2048'), default='p256',
                   help='key of the self-signed certificate of (e) (default: %(default)s)')
    p.add_argument('--tree', dest='trees', action='append', default=[], type=_tree,
                   metavar='NAME=PATH',
                   help='also run smtp_stack from the checkout at PATH, as server '
                        'smtp_stack@NAME, in (a) and (b): an A/B in one run')
    p.add_argument('--maildir-root', metavar='DIR',
                   help='where the durable scenarios make their Maildirs (default: '
                        'benchmarks/results/maildirs; the file system is named in the notes)')
    p.add_argument('--json', metavar='FILE', help='also write every figure here')
    p.add_argument('--logs', metavar='DIR',
                   help='server logs (default: benchmarks/results/logs)')
    args = p.parse_args(argv)
    trees = [f'smtp_stack@{name}' for name, _ in args.trees]
    args.scenarios = [s.strip() for s in args.scenarios.split(',') if s.strip()]
    args.servers = [s.strip() for s in args.servers.split(',') if s.strip()] + trees
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    bad += [s for s in args.servers if s not in servers + trees]
    if bad:
        p.error(f"unknown scenario or server: {', '.join(bad)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or args.scale <= 0:
        p.error('--repeat must be >= 1 and --scale > 0')
    return args


def _tree(value: str) -> tuple:
    """--tree NAME=PATH -> (name, path) of a checkout."""
    name, sep, path = value.partition('=')
    if not sep or not name or not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f'NAME=PATH of a checkout, not {value!r}')
    return name, path


def say(text):
    print(text, file=sys.stderr, flush=True)


def make_certificate(folder, kind):
    """A self-signed certificate for (e), made with openssl (or with
    cryptography when openssl is absent): ``kind`` is 'p256' (ECDSA) or
    'rsa2048'. Returns (key_path, cert_path)."""
    os.makedirs(folder, exist_ok=True)
    key = os.path.join(folder, f'{kind}-key.pem')
    cert = os.path.join(folder, f'{kind}-cert.pem')
    if shutil.which('openssl'):
        newkey = (['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
                  if kind == 'p256' else ['-newkey', 'rsa:2048'])
        subprocess.run(['openssl', 'req', '-x509', *newkey, '-nodes',
                        '-keyout', key, '-out', cert, '-days', '7',
                        '-subj', '/CN=bench.example',
                        '-addext', 'subjectAltName=DNS:bench.example'],
                       check=True, capture_output=True, timeout=60)
        return key, cert
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    if kind == 'p256':
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'bench.example')])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=7))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.DNSName('bench.example')]), critical=False)
                   .sign(private, hashes.SHA256()))
    with open(key, 'wb') as f:
        f.write(private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with open(cert, 'wb') as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


def describe_filesystem(path):
    """`df -T` of `path`, on one line: the file system the durable scenarios
    fsync on decides their figures."""
    try:
        out = subprocess.run(['df', '-T', path], capture_output=True, text=True,
                             timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return 'unknown'
    if len(out) < 2:
        return 'unknown'
    fields = out[-1].split()
    return f'{fields[0]} {fields[1]} mounted on {fields[-1]}' if len(fields) >= 7 else out[-1]


def load_average():
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return 'unknown'


def missing_for_mx():
    """What the MX scenarios need and this machine lacks, with how to get
    it; None when nothing is missing."""
    import importlib.util
    missing = [f'{program} (Debian package {package})'
               for program, package in (('redis-server', 'redis-server'),
                                        ('dnsmasq', 'dnsmasq-base'))
               if not shutil.which(program) and not os.access(f'/usr/sbin/{program}', os.X_OK)]
    if importlib.util.find_spec('dkim') is None:
        missing.append("dkimpy (pip install -e '.[policies]')")
    return ', '.join(missing) or None


def postfix_daemon_running():
    try:
        with open('/var/spool/postfix/pid/master.pid') as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def summarize(figures, scenario):
    shown = [m for m in METRICS if m.scenario == scenario and m.key in figures]
    return ', '.join(f'{m.header.split(") ", 1)[1]} {figures[m.key]:,.1f}' for m in shown)


def turn_order(servers: list, rep: int) -> list:
    """The servers in the order repeat `rep` (from 1) runs them: each repeat
    starts one server later, so that no server always runs first (or right
    after the same one) while the machine drifts."""
    shift = (rep - 1) % len(servers) if servers else 0
    return servers[shift:] + servers[:shift]


def main(argv=None):
    args = parse_args(argv)
    counts = (QUICK if args.quick else FULL).scaled(args.scale)
    nofile = procs.raise_nofile_limit()
    atexit.register(procs.kill_all)
    logdir = args.logs or os.path.join(BENCH_DIR, 'results', 'logs')
    os.makedirs(logdir, exist_ok=True)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    if postfix_daemon_running():
        say('warning: a Postfix daemon is running and competes for the CPU '
            '(postfix stop)')
    if nofile < counts.d_conns + 100 and 'd' in args.scenarios:
        say(f'warning: RLIMIT_NOFILE is {nofile}: (d) may not open '
            f'{counts.d_conns} connections')

    # Which servers and scenarios can run here; say why the others cannot.
    notes = []
    servers = []
    for spec in all_servers(args.trees):
        if spec.name not in args.servers:
            continue
        problem = spec.check()
        if problem:
            say(f'skipping {spec.label}: {problem}')
            notes.append(f'{spec.label} skipped: {problem}')
        else:
            servers.append(spec)
    scenarios = list(args.scenarios)
    needs_source = [s for s in scenarios if SCENARIOS[s].needs == 'smtp-source']
    if needs_source and not find_postfix_tool('smtp-source'):
        msg = (f"scenarios {','.join(needs_source)} skipped: smtp-source not found "
               '(DEBIAN_FRONTEND=noninteractive apt-get install -y postfix; postfix stop)')
        say(msg)
        notes.append(msg)
        scenarios = [s for s in scenarios if s not in needs_source]
    needs_mx = [s for s in scenarios if SCENARIOS[s].needs == 'mx']
    problem = missing_for_mx() if needs_mx else None
    if problem:
        msg = f"scenarios {','.join(needs_mx)} skipped: {problem} not found"
        say(msg)
        notes.append(msg)
        scenarios = [s for s in scenarios if s not in needs_mx]
    if not servers or not scenarios:
        say('nothing to run')
        return 2
    baseline = args.baseline if any(s.name == args.baseline for s in servers) else None
    if baseline is None:
        msg = f'no ratios: the baseline {args.baseline} is not among the servers run'
        say(msg)
        notes.append(msg)

    if any(SCENARIOS[k].maildir for k in scenarios):
        if args.maildir_root:
            MAILDIR_ROOT[0] = os.path.abspath(args.maildir_root)
        os.makedirs(MAILDIR_ROOT[0], exist_ok=True)
        notes.append(f'Maildirs in {MAILDIR_ROOT[0]}: {describe_filesystem(MAILDIR_ROOT[0])}')
    notes.append(f'load average at the start: {load_average()}')

    tls_paths = None
    if 'e' in scenarios and any('e' in s.scenarios for s in servers):
        tls_paths = make_certificate(os.path.join(BENCH_DIR, 'results', 'certs'),
                                     args.tls_key)

    results = Results()
    started = time.monotonic()
    interrupted = False
    mx_world = None
    if any(SCENARIOS[k].needs == 'mx' for k in scenarios):
        try:
            mx_world = MxWorld().__enter__()
        except (OSError, RuntimeError) as exc:
            msg = f'scenarios mx, mx-conn skipped: {exc}'
            say(msg)
            notes.append(msg)
            scenarios = [s for s in scenarios if SCENARIOS[s].needs != 'mx']
        else:
            notes.append(f'MX scenarios: {mx_world.versions()}, private, on 127.0.0.1 '
                         '(Redis+DNS CPU: what they spent during the measured part)')
    try:
        for rep in range(1, args.repeat + 1):
            for key in scenarios:
                scenario = SCENARIOS[key]
                for spec in turn_order(servers, rep):
                    if key not in spec.scenarios:
                        continue
                    t0 = time.monotonic()
                    try:
                        figures, bound = run_one(scenario, spec, counts, logdir,
                                                 f'r{rep}', tls_paths, mx_world)
                    except ScenarioError as exc:
                        results.fail(spec.name, key, str(exc))
                        say(f'[{rep}/{args.repeat}] ({key}) {spec.label}: FAILED: {exc}')
                        continue
                    except Exception as exc:     # a harness bug: report, go on
                        procs.kill_all()
                        results.fail(spec.name, key, f'harness error: {exc!r}')
                        say(f'[{rep}/{args.repeat}] ({key}) {spec.label}: '
                            f'HARNESS ERROR: {exc!r}')
                        continue
                    results.add(spec.name, key, figures, bound)
                    notes += [f'{spec.label} ({key}): {v}' for k, v in figures.items()
                              if k.endswith('_note')]
                    say(f'[{rep}/{args.repeat}] ({key}) {spec.label}: '
                        f'{summarize(figures, key)}{" (client-bound)" if bound else ""}'
                        f'  [{time.monotonic() - t0:.1f} s]')
    except KeyboardInterrupt:
        say('interrupted: stopping every server and client')
        interrupted = True
        notes.append('interrupted: the table holds what was measured before')
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)   # a second Ctrl-C must not cut the clean-up
        if mx_world is not None:
            mx_world.__exit__(None, None, None)
        procs.kill_all()
        if any(SCENARIOS[k].maildir for k in scenarios):
            shutil.rmtree(MAILDIR_ROOT[0], ignore_errors=True)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    elapsed = time.monotonic() - started
    notes.append(f'load average at the end: {load_average()}')

    rows = [s for s in servers if any((s.name, k) in results.runs or
                                      (s.name, k) in results.errors for k in scenarios)]
    table = render_table(results, rows, scenarios, baseline)
    print(table)
    print()
    costs = render_policy_costs(results, rows, scenarios)
    if costs:
        print(costs)
        print()
    if baseline:
        print(f'(N×) = {baseline} figure ÷ this server\'s figure. For msg/s, MiB/s and '
              'sessions/s above 1 means smtp_stack is faster; for RSS and KB/conn '
              'below 1 means it uses less.')
    if '†' in table:
        print('† the client, or client and server together, kept the CPUs busy '
              'while the server had cores to spare: a lower bound for that server.')
    c = counts
    loads = {
        'a': f'(a) {c.a_msgs:,} messages over 50 sessions',
        'b': f'(b) {c.b_msgs:,} connections, 50 at a time',
        'c': f'(c) {c.c_msgs} x 5 MiB over 4 sessions',
        'c50': f'(c50) {c.c50_msgs} x 50 MiB over 4 sessions',
        'd': f'(d) {c.d_conns:,} idle connections',
        'e': (f'(e) {c.e_sessions:,} TLS sessions, {args.tls_key} certificate, '
              f'{c.e_procs} procs x {c.e_concurrency} sessions at a time'),
        'durable': f'(durable) {c.durable_msgs:,} messages over 20 sessions, each fsync\'d',
        'durable-conn': f'(durable-conn) {c.dconn_msgs:,} connections, 20 at a time, '
                        'each message fsync\'d',
        'mx': f'(mx) {c.mx_msgs:,} DKIM-signed 4 KB messages over 20 XCLIENT sessions',
        'mx-conn': f'(mx-conn) {c.mxconn_msgs:,} connections, 20 at a time, one '
                   'DKIM-signed 4 KB message each',
    }
    print('Load: ' + '; '.join(loads[k] for k in scenarios) + '. '
          + (f'Median of {args.repeat} runs' if args.repeat > 1 else 'One run')
          + f', {elapsed:.0f} s, {os.cpu_count()} CPUs, Python {platform.python_version()}.')
    for (server, key), messages in sorted(results.errors.items()):
        print(f'ERR {server} ({key}): {messages[-1]}')
    for note in notes:
        print(f'note: {note}')

    if args.json:
        meta = {
            'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'argv': sys.argv[1:], 'cpus': os.cpu_count(),
            'python': platform.python_version(), 'platform': platform.platform(),
            'repeat': args.repeat, 'counts': vars(counts), 'baseline': baseline,
            'tls_key': args.tls_key,
            'versions': {s.name: s.version() for s in servers},
            'seconds': elapsed, 'notes': notes,
        }
        write_json(args.json, meta, results)
        say(f'wrote {args.json}')
    if interrupted:
        return 130
    return 1 if results.errors else 0


if __name__ == '__main__':
    sys.exit(main())
