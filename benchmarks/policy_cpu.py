"""The CPU cost of one policy decision against a real redis-server (issue 25).

A private redis-server (no persistence, a free loopback port) serves the
store; the decisions run in one greenlet of a process that gevent did not
monkey-patch, as `smtp-stack serve` runs them. CPU is that process's own
(user + system, every thread counted), per decision; the Redis server's
CPU is not in it.

    python benchmarks/policy_cpu.py                    # the work tree
    python benchmarks/policy_cpu.py --tree /tmp/before # and another checkout, side by side
    python benchmarks/policy_cpu.py --url unix:///PATH/redis.sock

With `--tree`, every measurement is made for both checkouts in the same
run, alternating (each checkout in processes of its own, against the same
redis-server), and the table gives both and their ratio: one run, one
load, for a before/after (`git worktree add /tmp/before COMMIT`).

Loads:
- greylist: the RCPT of a triplet that passed before (a network not yet
  auto-allowed: what most recipients of a busy MX cost; three calls before);
- greylist-new: first sight of a triplet (the 451);
- rate_limit: one sliding-window hit (MAIL with `messages=`);
- get: one plain store call, the floor of any decision;
- dkim: `dkimcheck.verify_dkim` of a 4 KB message signed rsa-sha256 with a
  2048-bit key (the key record answered from memory: no DNS), the part
  of `authenticate` that costs most;
- authenticate: `Authenticate.check` of that message as the server makes
  it (DNS from memory); spf (new domain): one SPF evaluation by pyspf.
Best of 5 rounds of `--n` decisions each.

    python benchmarks/policy_cpu.py --messages 3000    # per message, over SMTP

`--messages`: the server in a process of its own (the same tree), smtplib
sending 4 KB messages over loopback in one session; the server's CPU
(user + system, from /proc) per message with no policy, greylist alone
(`delay=0`, `auto_allow=0`: the triplets passed in a warm-up), rate_limit
alone (`messages=`), both, and authenticate (SPF of the MAIL FROM and HELO
identities, DKIM, DMARC, ARC of a signed message; DNS answered from
memory, through the resolver's `query` as pyspf asks it); each one's cost
over none. The median of `--rounds` runs of each. With `--instructions`
the server runs under valgrind's callgrind and the table counts the
instructions it ran in user space per message (in thousands), which the
load of a shared machine does not change (system time is not in them).
"""

import argparse
import ipaddress
import json
import os
import shutil
import socket
import statistics
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
    results['dkim'] = dkim_cpu(n)
    results.update(authenticate_cpu(n))
    return results


class MemoryDns:
    """DNS answered from a dict of TXT records: `txt` for dkimcheck and
    DMARC, `query` (an Answer, TTL 300) for pyspf's lookups, `timeout`."""
    timeout = 2.0

    def __init__(self, records: dict[str, str]):
        self.records = {name: [value.encode()] for name, value in records.items()}

    def txt(self, name: str) -> list[bytes]:
        return self.records.get(name.rstrip('.').lower(), [])

    def query(self, name: str, rdtype: str = 'A'):
        from smtp_stack.policies.dns import Answer

        class Txt:
            def __init__(self, value: bytes):
                self.strings = (value,)
        name = name.rstrip('.').lower()
        found = [Txt(value) for value in self.txt(name)] if rdtype == 'TXT' else []
        return Answer(name, rdtype, tuple(found), False, 300)


def authenticate_cpu(n: int) -> dict[str, float]:
    """`Authenticate.check` of the signed message (SPF of both identities,
    DKIM, DMARC, ARC), and one SPF evaluation of a sender domain not seen
    before (what a result kept for its TTL saves)."""
    from smtp_stack.policies.authentication import Authenticate
    from smtp_stack.policies.spf import check_spf
    message, records = signed_message()
    for i in range(max(100, n // 4) * 5 + 1):
        records[f'd{i}.bench.example'] = 'v=spf1 ip4:127.0.0.0/8 -all'
    dns = MemoryDns(records)
    check = Authenticate(resolver=dns)
    args = (message, '127.0.0.1', 's@bench.example', 'client.bench.example')
    assert check.check(*args).dkim[0].result == 'pass'
    return {
        'authenticate': cpu_per_call(lambda i: check.check(*args), max(100, n // 4)),
        'spf (new domain)': cpu_per_call(
            lambda i: check_spf(dns, '127.0.0.1', f's@d{i}.bench.example', 'client.bench.example'),
            max(100, n // 4)),
    }


class KeyRecords:
    """Answers TXT lookups from a dict (a TxtResolver for dkimcheck)."""

    def __init__(self, records: dict[str, bytes]):
        self.records = records

    def txt(self, name: str) -> list[bytes]:
        record = self.records.get(name.rstrip('.').lower())
        return [record] if record else []


def dkim_cpu(n: int) -> float:
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from smtp_stack.policies.dkimcheck import verify_dkim
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    records = KeyRecords({'sel._domainkey.bench.example': b'v=DKIM1; k=rsa; p='
                          + base64.b64encode(public)})
    head = (b'From: s@bench.example\r\nTo: r@bench.example\r\nSubject: bench\r\n'
            b'Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@bench.example>\r\n\r\n')
    message = head + (b'x' * 70 + b' words\r\n') * 52
    message = dkim.sign(message, b'sel', b'bench.example', private,
                        include_headers=[b'from', b'to', b'subject', b'date',
                                         b'message-id']) + message
    assert verify_dkim(records, message)[0].result == 'pass'
    return cpu_per_call(lambda i: verify_dkim(records, message), max(100, n // 4))


SERVER = """
import logging, sys
sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None
from smtp_stack import SmtpServer, policies
logging.getLogger('smtp_stack').setLevel(logging.WARNING)
server = SmtpServer(name='bench.example', disable_reverse_lookup=True,
                    disabled_commands=['STARTTLS', 'AUTH'], max_messages=0,
                    max_errors=10**6)
url, which = sys.argv[2], sys.argv[3]
if which in ('greylist', 'both'):
    server.use(policies.greylist(delay=0, auto_allow=0, store=url))
if which in ('rate_limit', 'both'):
    server.use(policies.rate_limit(messages=10**9, store=url))
if which == 'authenticate':
    import json
    from smtp_stack.policies.dns import Answer
    class Txt:          # a TXT record as dnspython gives it
        def __init__(self, value):
            self.strings = (value,)
    class Records:      # DNS answered from memory: the CPU of the checks alone
        timeout = 2.0
        def __init__(self, records):
            self.records = {name: [value.encode()] for name, value in records.items()}
        def txt(self, name):
            return self.records.get(name.rstrip('.').lower(), [])
        def query(self, name, rdtype='A'):      # what pyspf's lookups go through
            name = name.rstrip('.').lower()
            found = [Txt(value) for value in self.txt(name)] if rdtype == 'TXT' else []
            return Answer(name, rdtype, tuple(found), False, 300)
    server.use(policies.authenticate(resolver=Records(json.loads(sys.argv[4]))))
def read_body(ctx, next):
    next()
    if ctx.command_name == 'DATA' and ctx.session.envelope.data_stream is not None:
        while ctx.session.envelope.data_stream.read(65536):
            pass
if which != 'authenticate':        # it reads the body itself (spool)
    server.use(read_body)
server.start(0, '127.0.0.1')
print(server.address[1], flush=True)
server.serve_forever()
"""
MESSAGE = (b'From: s@bench.example\r\nTo: r@bench.example\r\nSubject: bench\r\n\r\n'
           + (b'x' * 78 + b'\r\n') * 50)
RECIPIENTS = 50


def server_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f'/proc/{pid}/stat') as stat:
        fields = stat.read().rpartition(')')[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def signed_message() -> tuple[bytes, dict[str, str]]:
    """MESSAGE signed rsa-sha256 (2048 bits) for bench.example, and the TXT
    records of its key, SPF (127.0.0.1 may send) and DMARC (p=reject)."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    message = (b'Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@bench.example>\r\n'
               + MESSAGE)
    signature = dkim.sign(message, b'sel', b'bench.example', private,
                          include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
    return signature + message, {
        'sel._domainkey.bench.example': 'v=DKIM1; k=rsa; p=' + base64.b64encode(public).decode(),
        'bench.example': 'v=spf1 ip4:127.0.0.0/8 -all',
        'client.bench.example': 'v=spf1 ip4:127.0.0.0/8 -all',
        '_dmarc.bench.example': 'v=DMARC1; p=reject',
    }


def per_message(tree: str, url: str, which: str, messages: int,
                instructions: bool = False) -> float:
    """The server's CPU seconds per message for the policy set `which`; with
    `instructions`, the instructions it ran per message in user space
    instead, counted by valgrind's callgrind (from after the warm-up to
    its exit): what the load of the machine does not change."""
    import json
    import smtplib
    message, records = signed_message() if which == 'authenticate' else (MESSAGE, {})
    command = [sys.executable, '-c', SERVER, tree, url, which, json.dumps(records)]
    workdir = tempfile.mkdtemp(prefix='policy-cpu-cg-')
    if instructions:
        command = ['valgrind', '--tool=callgrind', f'--callgrind-out-file={workdir}/cg.out',
                   os.path.realpath(sys.executable), *command[1:]]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, 'PYTHONHASHSEED': '0'})
    try:
        port = int(server.stdout.readline())
        client = smtplib.SMTP('127.0.0.1', port, timeout=300 if instructions else 30)
        client.ehlo('client.bench.example')
        recipients = [f'r{i}@bench.example' for i in range(RECIPIENTS)]
        for rcpt in recipients:         # greylist: each triplet seen, then passed
            for _ in range(2):
                try:
                    client.sendmail('s@bench.example', [rcpt], message)
                except smtplib.SMTPRecipientsRefused:
                    pass
        if instructions:
            subprocess.run(['callgrind_control', '--zero', str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = server_cpu(server.pid)
        for i in range(messages):
            client.sendmail('s@bench.example', [recipients[i % RECIPIENTS]], message)
        spent = server_cpu(server.pid) - before
        client.quit()
        if not instructions:
            return spent / messages
        server.terminate()
        server.wait(120)
        with open(f'{workdir}/cg.out') as counts:
            found = [line for line in counts if line.startswith('totals:')]
        return int(found[-1].split()[1]) / messages
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(120)
        shutil.rmtree(workdir, ignore_errors=True)


SCENARIOS = ('none', 'greylist', 'rate_limit', 'both', 'authenticate')


def messages_report(trees: list[str], url: str, messages: int, rounds: int,
                    instructions: bool = False) -> None:
    """Per message over SMTP, each scenario for each tree in turn, `rounds` times."""
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(1 if instructions else rounds):
        for which in SCENARIOS:
            for tree in trees:
                runs.setdefault((tree, which), []).append(
                    per_message(tree, url, which, messages, instructions))
    results = {key: statistics.median(values) for key, values in runs.items()}
    if instructions:        # shown as thousands of instructions, in the CPU-ms columns
        results = {key: value / 1e6 for key, value in results.items()}
        print(f'# server user-space instructions per 4 KB message over SMTP, in thousands '
              f'(callgrind): {messages} messages')
    else:
        print(f'# server CPU-ms per 4 KB message over SMTP: {messages} messages, median of '
              f'{rounds} rounds; load {os.getloadavg()[0]:.2f}')
    print_table(trees, {tree: {which: results[tree, which] for which in SCENARIOS}
                        for tree in trees}, relative_to='none')


def print_table(trees: list[str], results: dict[str, dict[str, float]],
                relative_to: str | None = None) -> None:
    """One line per load: each tree's CPU-ms (and the cost over `relative_to`)."""
    names = [os.path.basename(tree.rstrip('/')) or tree for tree in trees]
    print(f'{"":14s}' + ''.join(f'{name[-24:]:>26s}' for name in names)
          + ('  ratio' if len(trees) == 2 else ''))
    for which in results[trees[0]]:
        cells, costs = [], []
        for tree in trees:
            ms = results[tree][which] * 1000
            if relative_to and which != relative_to:
                cost = ms - results[tree][relative_to] * 1000
                costs.append(cost)
                cells.append(f'{ms:9.3f} (+{cost:.3f})')
            else:
                costs.append(ms)
                cells.append(f'{ms:9.3f}')
        ratio = f'  {costs[1] / costs[0]:.2f}' if len(trees) == 2 and costs[0] > 0 else ''
        print(f'{which:14s}' + ''.join(f'{cell:>26s}' for cell in cells) + ratio)


def decisions_in_child(tree: str, url: str, n: int) -> dict[str, float]:
    """`loads` run by a process of its own with `tree`'s smtp_stack."""
    command = [sys.executable, os.path.abspath(__file__), '--url', url, '-n', str(n), '--json',
               '--child-tree', tree]
    found: dict[str, float] = json.loads(subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True).stdout)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tree', help='another checkout to measure side by side with the work tree')
    p.add_argument('--url', help='a running Redis to use instead of a private one')
    p.add_argument('-n', type=int, default=2000, help='decisions per round')
    p.add_argument('--messages', type=int, help='per message over SMTP instead (how many)')
    p.add_argument('--rounds', type=int, default=3, help='runs of each, over SMTP (median)')
    p.add_argument('--instructions', action='store_true',
                   help='over SMTP: instructions per message (valgrind), not CPU time')
    p.add_argument('--json', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--child-tree', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_tree:
        use_checkout(args.child_tree)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [os.path.abspath(args.tree), here] if args.tree else [here]
    workdir = tempfile.mkdtemp(prefix='policy-cpu-')
    proc = None
    try:
        url = args.url
        if url is None:
            proc, url = start_redis(workdir)
        if not args.json:
            print(f'# load {os.getloadavg()[0]:.2f} at the start; trees: {", ".join(trees)}',
                  file=sys.stderr)
        if args.messages:
            messages_report(trees, url, args.messages, args.rounds, args.instructions)
            return
        if args.json:
            import gevent
            print(json.dumps(gevent.spawn(loads, url, args.n).get()))
            return
        results = {tree: decisions_in_child(tree, url, args.n) for tree in trees}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f'# CPU-ms per decision, no SMTP: n={args.n}, best of 5 rounds; '
          f'load {os.getloadavg()[0]:.2f}')
    print_table(trees, results)


if __name__ == '__main__':
    main()
