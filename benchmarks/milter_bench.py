"""Postfix -> milter -> Maildir: smtp_stack's MilterServer against pymilter, one run.

    python benchmarks/milter_bench.py [--messages 2000] [--sessions 20] [--size 4000]
        [--rounds 1] [--before TREE ...] [--profile FILE]

Each milter adds one header field to every message (smtp_stack: a
middleware calling add_header; pymilter: Debian's python3-milter, libmilter's
threads, calling addheader in eom). For each, a private Postfix
(tests/postfix_private.py: own directories, loopback ports, the system's
instance untouched) calls it as its smtpd_milters and delivers into a
Maildir; Postfix's smtp-source sends the messages, one per SMTP session,
`--sessions` at a time. Measured per milter: messages/s until the last is
delivered, the milter process's CPU seconds (user + system, from /proc) and
so messages per milter CPU-second, its peak RSS, its RSS when loaded and
listening, and what the sessions added to it (peak - idle, per concurrent
session). Compare the ratios of one run, never figures from two.

--before TREE adds a row: smtp_stack from another source tree (a `git
worktree add --detach /tmp/before main`), run first, so that a change is
measured against its parent in the same run; given more than once, a row
per tree, in the order given. --profile FILE profiles this
tree's milter over the measured messages (cProfile: milter_smtp_stack.py
--profile) and prints the top of it; profiling costs CPU, so a profiled
run's figures are not the ones to compare. The load average at the start
and the end is printed: on a shared machine, read only the ratios, and
with --rounds N the milters take turns N times (each round's ratio is
printed; the table sums the rounds), so that a burst of load elsewhere
does not fall on one milter only.

Needs: postfix (smtp-source), python3-milter for the system's /usr/bin/python3.
"""
import argparse
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / 'tests')]

from postfix_private import PrivatePostfix, free_port  # noqa: E402

TICKS = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    """(user, system) CPU seconds of `pid` and its children that were reaped."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + cutime) / TICKS, (stime + cstime) / TICKS


def rss_kib(pid, field='VmHWM'):
    """The peak RSS (VmHWM) of `pid`, or its RSS now (VmRSS)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    return 0


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f'nothing listens on {port}')


def count_delivered(postfix):
    return sum(1 for _ in (postfix.maildir / 'new').iterdir()) \
        if (postfix.maildir / 'new').is_dir() else 0


def run_one(name, command, port, args, tree=None, profile=None):
    env = dict(os.environ, PYTHONPATH=str(tree)) if tree is not None else None
    milter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env)
    try:
        wait_port(port)
        idle = rss_kib(milter.pid, 'VmRSS')    # loaded and listening, before any session
        postfix = PrivatePostfix(f'inet:127.0.0.1:{port}', default_process_limit='200')
        postfix.start()
        try:
            source = shutil.which('smtp-source') or '/usr/sbin/smtp-source'
            target = f'127.0.0.1:{postfix.smtp_port}'

            def send(count):
                subprocess.run([source, '-s', str(args.sessions), '-m', str(count),
                                '-l', str(args.size), '-f', 'sender@example.org',
                                '-t', 'rcpt@test.example', target], check=True, timeout=600)

            send(50)                            # warm-up: processes forked, caches filled
            deadline = time.monotonic() + 60
            while count_delivered(postfix) < 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            if profile is not None:
                milter.send_signal(signal.SIGUSR1)
            cpu0, started = cpu_seconds(milter.pid), time.monotonic()
            send(args.messages)
            total = 50 + args.messages
            deadline = time.monotonic() + 900
            while count_delivered(postfix) < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f'{name}: {count_delivered(postfix)} of {total} delivered')
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            user, system = (after - before for after, before in
                            zip(cpu_seconds(milter.pid), cpu0, strict=True))
            cpu = user + system
            sample = next((postfix.maildir / 'new').iterdir()).read_bytes()
            assert b'X-Milter: seen' in sample, f'{name} did not add its header'
            return {'name': name, 'rate': args.messages / elapsed, 'cpu': cpu,
                    'user': user, 'system': system, 'messages': args.messages,
                    'elapsed': elapsed,
                    'per_cpu': args.messages / cpu if cpu else float('inf'),
                    'rss': rss_kib(milter.pid), 'idle': idle,
                    'per_session': (rss_kib(milter.pid) - idle) / args.sessions}
        finally:
            postfix.remove()
    finally:
        milter.terminate()
        try:
            milter.wait(15)
        except subprocess.TimeoutExpired:
            milter.kill()
            milter.wait(10)
        milter.stderr.close()


def combine(rounds):
    """One row from a milter's rounds: messages over the sum of their
    elapsed times and CPU seconds, the highest peak RSS."""
    first = rounds[0]
    messages = sum(row['messages'] for row in rounds)
    cpu = sum(row['cpu'] for row in rounds)
    return {**first, 'cpu': cpu, 'user': sum(row['user'] for row in rounds),
            'system': sum(row['system'] for row in rounds),
            'rate': messages / sum(row['elapsed'] for row in rounds),
            'per_cpu': messages / cpu if cpu else float('inf'),
            'rss': max(row['rss'] for row in rounds),
            'per_session': max(row['per_session'] for row in rounds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--messages', type=int, default=2000)
    parser.add_argument('--sessions', type=int, default=20)
    parser.add_argument('--size', type=int, default=4000, help='body bytes per message')
    parser.add_argument('--rounds', type=int, default=1,
                        help='run the milters this many times, taking turns')
    parser.add_argument('--before', type=Path, action='append', default=[],
                        help='also run smtp_stack from this tree (repeatable)')
    parser.add_argument('--profile', type=Path, help="profile this tree's milter into FILE")
    args = parser.parse_args()
    load = os.getloadavg()
    milters = []        # (name, command for a port, source tree)
    for before in (tree.resolve() for tree in args.before):
        milters.append((f'smtp_stack ({before.name})', lambda port, before=before: [
            sys.executable, str(before / 'benchmarks/milter_smtp_stack.py'),
            '--listen', f'inet:127.0.0.1:{port}'], before))
    profile = ['--profile', str(args.profile.resolve())] if args.profile else []
    milters.append(('smtp_stack', lambda port: [
        sys.executable, str(HERE / 'milter_smtp_stack.py'),
        '--listen', f'inet:127.0.0.1:{port}', *profile], HERE.parent))
    milters.append(('pymilter', lambda port: [
        '/usr/bin/python3', str(HERE / 'milter_pymilter.py'),
        '--listen', f'inet:{port}@127.0.0.1'], None))
    runs = {name: [] for name, _, _ in milters}
    for _ in range(args.rounds):
        for name, command, tree in milters:
            port = free_port()
            runs[name].append(run_one(name, command(port), port, args, tree=tree,
                                      profile=args.profile if name == 'smtp_stack' else None))
    rows = [combine(runs[name]) for name, _, _ in milters]
    ours = rows[-2]
    if args.profile is not None:
        print()
        pstats.Stats(str(args.profile)).sort_stats('tottime').print_stats(40)
    rounds = f', {args.rounds} rounds taking turns' if args.rounds > 1 else ''
    print(f'\n{args.messages} messages of {args.size} bytes, {args.sessions} sessions at once, '
          f'Postfix -> milter -> Maildir{rounds}; load average {load[0]:.2f} at the start, '
          f'{os.getloadavg()[0]:.2f} at the end\n')
    if args.rounds > 1:
        for index in range(args.rounds):
            mine, theirs = runs['smtp_stack'][index], runs['pymilter'][index]
            print(f'round {index + 1}: smtp_stack {mine["per_cpu"]:.0f}, pymilter '
                  f'{theirs["per_cpu"]:.0f} messages per CPU-second: '
                  f'{mine["per_cpu"] / theirs["per_cpu"]:.2f}x')
        print()
    print('| milter | messages/s | milter CPU s (user + system) | messages per CPU-second '
          '| peak RSS KiB | idle RSS KiB | (peak - idle) / sessions KiB |')
    print('|---|---|---|---|---|---|---|')
    for row in rows:
        ratio = '' if row is ours else (
            f' (smtp_stack {ours["rate"] / row["rate"]:.2f}x, '
            f'{ours["per_cpu"] / row["per_cpu"]:.2f}x per CPU-s)')
        print(f'| {row["name"]} | {row["rate"]:.0f} | {row["cpu"]:.2f} '
              f'({row["user"]:.2f} + {row["system"]:.2f}) | '
              f'{row["per_cpu"]:.0f}{ratio} | {row["rss"]} | {row["idle"]} '
              f'| {row["per_session"]:.0f} |')


if __name__ == '__main__':
    main()
