"""The CPU cost of one policy decision against a real redis-server (issue 25).

A private redis-server (no persistence, a free loopback port) serves the
store; the decisions run in one greenlet of a process that gevent did not
monkey-patch, as `smtp-stack serve` runs them. CPU is this process's own
(user + system, every thread counted), per decision; the Redis server's
CPU is not in it.

    python benchmarks/policy_cpu.py                    # the work tree
    python benchmarks/policy_cpu.py --tree /tmp/old    # another checkout, to compare
    python benchmarks/policy_cpu.py --url unix:///PATH/redis.sock

Loads:
- greylist: the RCPT of a triplet that passed before (a network not yet
  auto-allowed: what most recipients of a busy MX cost; three calls before);
- greylist-new: first sight of a triplet (the 451);
- rate_limit: one sliding-window hit (MAIL with `messages=`);
- get: one plain store call, the floor of any decision.
Best of 5 rounds of `--n` decisions each.
"""

import argparse
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def use_checkout(tree: str) -> None:
    sys.path.insert(0, os.path.abspath(tree))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(['redis-server', '--port', str(port), '--bind', '127.0.0.1',
                             '--save', '', '--appendonly', 'no', '--dir', workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
            return proc, f'redis://127.0.0.1:{port}/0'
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit('redis-server did not start')


def cpu_per_call(fn, n: int, rounds: int = 5) -> float:
    """Best of `rounds`: process CPU seconds per call of fn(i)."""
    best = float('inf')
    for r in range(rounds):
        start = time.process_time()
        for i in range(n):
            fn(r * n + i)
        best = min(best, (time.process_time() - start) / n)
    return best


def loads(url: str, n: int) -> dict[str, float]:
    from smtp_stack.policies import Greylist, store
    from smtp_stack.policies.ratelimit import RateLimit
    shared = store(url)
    now = [1_000_000.0]
    grey = Greylist(delay=300, store=shared, auto_allow=1_000_000, clock=lambda: now[0])
    base = int(ipaddress.ip_address('10.0.0.0'))

    def ip(i: int) -> ipaddress.IPv4Address:
        return ipaddress.ip_address(base + (i % 50_000) * 256)

    # Pass every triplet once (first sight, then after the delay).
    for i in range(5 * n):
        grey.check(ip(i), 's@bench.example', 'r@bench.example')
    now[0] += 301
    for i in range(5 * n):
        assert grey.check(ip(i), 's@bench.example', 'r@bench.example') is None
    limit = RateLimit(messages=10**9, per=3600, store=shared)
    results = {
        'get': cpu_per_call(lambda i: shared.get('bench:get'), n),
        'greylist': cpu_per_call(
            lambda i: grey.check(ip(i), 's@bench.example', 'r@bench.example'), n),
        'greylist-new': cpu_per_call(
            lambda i: grey.check(ip(i), f'new{i}@bench.example', 'r@bench.example'), n),
        'rate_limit': cpu_per_call(
            lambda i: shared.hit(f'rate:msg:{limit.per}:client:{ip(i)}', limit.per, 10**9), n),
    }
    shared.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tree', help='a checkout whose smtp_stack to measure instead')
    p.add_argument('--url', help='a running Redis to use instead of a private one')
    p.add_argument('-n', type=int, default=2000, help='decisions per round')
    args = p.parse_args()
    if args.tree:
        use_checkout(args.tree)
    workdir = tempfile.mkdtemp(prefix='policy-cpu-')
    proc = None
    try:
        url = args.url
        if url is None:
            proc, url = start_redis(workdir)
        import gevent
        results = gevent.spawn(loads, url, args.n).get()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    import smtp_stack
    print(f'# {os.path.dirname(smtp_stack.__file__)}  n={args.n}  load {os.getloadavg()[0]:.2f}')
    for name, seconds in results.items():
        print(f'{name:14s} {seconds * 1000:7.3f} CPU-ms per decision')


if __name__ == '__main__':
    main()
