"""The development inbox under load (issue 24): ingest rate, memory, first paint.

    python benchmarks/inbox_bench.py                      # 10,000 messages, one run
    python benchmarks/inbox_bench.py --stages 500,1000 --paint-runs 2   # quick
    python benchmarks/inbox_bench.py --py-spy /tmp/inbox.txt    # + where the time goes

`smtp-stack inbox` runs as a process of its own on free loopback ports, with
what makes ingest cost more turned on: search (its FTS5 index is always
kept), tags (a rule, `billing=subject:invoice`, and plus-address tags:
every fifth message goes to `ann+signup@...`) and thumbnails (Pillow
must be importable; one PNG thumbnail is asked for and timed at the end).

Measured:
- ingest: mixed messages (a third plain text, a third text+HTML, a third
  text with a small PNG attached) from 4 smtplib connections, each in a
  process of its own (one message per MAIL transaction, a new session
  every 500 messages), until the API lists them all (`GET /api/v1/messages` total),
  per stage (stored 0 -> 1,000 -> 5,000 -> 10,000 by default) and over
  the stages after the first (warm);
- memory: the inbox process's RSS (VmRSS; VmHWM its peak) before any
  message and after each stage: flat in the number stored is the target;
- first paint of the full inbox in Debian's headless Chromium (selenium,
  chromium-driver): a script the browser evaluates before the page's own
  (DevTools `Page.addScriptToEvaluateOnNewDocument`; the page is not
  changed) notes when the first `#list li.message` row is in the DOM and
  when the next frame after it was drawn, as `performance.now()`: ms since
  the navigation started. The first navigation is cold (empty cache),
  the others warm;
- beside them: the list, search and thumbnail requests timed on the full
  inbox (median of 10).

Mailpit's figures cannot be measured here (no Mailpit binary on this
machine, and no network beyond package registries): the report compares
with the rate Mailpit publishes (200-300 msg/s "depending on CPU").
`--py-spy FILE` records the inbox process with py-spy during the warm
stages (every thread: the SMTP hub, the capture's threads, SQLite) and
prints the functions with the most samples, self and inclusive.
"""
from __future__ import annotations

import argparse
import collections
import email
import email.message
import email.policy
import glob
import json
import multiprocessing
import os
import queue
import re
import resource
import shutil
import signal
import smtplib
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECTIONS = 4
# messages per SMTP session: the inbox of trees before ebe3068 answers the
# MAIL after 1,000 in one session with 421 (smtp_stack's max_messages
# default; the inbox has no limit since); kept so that old and new trees
# are measured alike
SESSION_MESSAGES = 500
TAG_RULE = 'billing=subject:invoice'
MAILPIT_RATE = (200, 300)           # msg/s, as Mailpit publishes it
TARGET_FACTOR = 3
PAINT_TARGET_MS = 1000
START_LINE = re.compile(r'inbox: SMTP on ([0-9.]+):(\d+), web and API on (http://[0-9.:]+/)')
WAIT = 60.0

# -- the messages (pure) ---------------------------------------------------------------------


def png_bytes(width: int, height: int) -> bytes:
    """A valid RGB PNG of a two-colour gradient (PNG spec: signature, IHDR,
    one IDAT of filter-0 scanlines, IEND; each chunk with its CRC-32)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
    def pixel(x: int, y: int) -> bytes:
        return bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
    rows = b''.join(b'\0' + b''.join(pixel(x, y) for x in range(width)) for y in range(height))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows))
            + chunk(b'IEND', b''))


KINDS = ('text', 'html', 'png')
PNG = png_bytes(64, 48)


@dataclass(frozen=True)
class Outgoing:
    kind: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes


def make_message(n: int) -> Outgoing:
    """Message number n of the mix: its kind cycles text, HTML, PNG; every
    fourth subject is an invoice (the tag rule), every fifth goes to a
    plus-address (a tag of its own)."""
    kind = KINDS[n % len(KINDS)]
    to = 'ann+signup@example.com' if n % 5 == 0 else f'user{n % 97}@example.com'
    msg = email.message.EmailMessage()
    msg['From'] = f'Shop {n % 13} <shop{n % 13}@example.org>'
    msg['To'] = to
    msg['Subject'] = f'Invoice {n}' if n % 4 == 0 else f'Your order {n} has shipped'
    msg['Message-ID'] = f'<bench.{n}@example.org>'
    msg['Date'] = 'Tue, 03 Feb 2026 10:00:00 +0000'
    text = (f'Hello,\n\nyour order {n} left our warehouse today. '
            'It should arrive within three working days.\n\nThe shop\n')
    msg.set_content(text)
    if kind == 'html':
        msg.add_alternative(f'<html><body><h1>Order {n}</h1><p>Your order left our '
                            '<b>warehouse</b> today.</p><p><a href="https://shop.example.org/'
                            f'orders/{n}">Track it</a></p></body></html>', subtype='html')
    elif kind == 'png':
        msg.add_attachment(PNG, maintype='image', subtype='png', filename='pixel.png')
    if msg.is_multipart():
        msg.set_boundary(f'bench-boundary-{n}')        # not random: every run sends the same
    data = msg.as_bytes(policy=email.policy.SMTP)
    return Outgoing(kind, f'shop{n % 13}@example.org', (to,), data)


def make_messages(start: int, count: int) -> list[Outgoing]:
    return [make_message(n) for n in range(start, start + count)]


def shares(items: Sequence[Outgoing], parts: int) -> list[Sequence[Outgoing]]:
    """`items` dealt round-robin into `parts` lists (each connection gets the same mix)."""
    return [items[i::parts] for i in range(parts)]


def summarize_collapsed(lines: Iterable[str], top: int = 15,
                        keep: str = '') -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """py-spy's raw (collapsed) stacks, `frame;frame;... COUNT` per line:
    (total samples, the `top` frames by self samples, the `top` frames by
    inclusive samples, counted once per stack; only frames containing
    `keep` in the inclusive list when given)."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count_text = line.rstrip('\n').rpartition(' ')
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(';')
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if keep in frame:
                inclusive[frame] += count
    return total, own.most_common(top), inclusive.most_common(top)


# -- the inbox process -----------------------------------------------------------------------


# The command of the checkout at sys.argv[1]: an editable install's finder,
# which would win over sys.path, is dropped first (as benchlib/checkout.py does).
LAUNCH = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
from smtp_stack.cli import main
sys.exit(main(sys.argv[2:]))
"""


class InboxProcess:
    """`smtp-stack inbox` of the checkout `tree`, in a session of its own."""

    def __init__(self, workdir: str, max_messages: int, tree: str = ROOT) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, '-c', LAUNCH, os.path.abspath(tree), 'inbox',
             '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
             '--db', os.path.join(workdir, 'inbox.db'), '--max-messages', str(max_messages),
             '--tag', TAG_RULE],
            cwd=workdir, env=dict(os.environ, PYTHONUNBUFFERED='1'), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        match = self._wait_for(START_LINE, WAIT)
        self.smtp = (match[1], int(match[2]))
        self.url = match[3].rstrip('/')

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if match := pattern.search(line):
                return match
        self.stop()
        raise RuntimeError(f'the inbox did not start: {"".join(seen)[-2000:]}')

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[int]:
        """The inbox process and its descendants (its store process)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in glob.glob(f'/proc/{pid}/task/*/children'):
                try:
                    with open(task) as f:
                        todo.extend(int(child) for child in f.read().split())
                except OSError:         # the task or process ended meanwhile
                    pass
        return found

    def cpu_seconds(self) -> float:
        """User + system time of the inbox process and its descendants, every
        thread, and of those it already reaped (/proc/PID/stat)."""
        ticks = 0
        for pid in self.processes():
            try:
                with open(f'/proc/{pid}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
            if pid == self.pid:             # its children that ended: cutime, cstime
                ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf('SC_CLK_TCK')

    def rss_kib(self, field_name: str = 'VmRSS') -> int:
        """The field of /proc/PID/status, summed over the inbox's processes."""
        total = 0
        for pid in self.processes():
            try:
                with open(f'/proc/{pid}/status') as f:
                    for line in f:
                        if line.startswith(field_name + ':'):
                            total += int(line.split()[1])
            except OSError:
                continue
        if not total:
            raise RuntimeError(f'no {field_name} for {self.pid}')
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)


def get_json(url: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def timed_get(url: str, runs: int = 10) -> tuple[float, bytes, str]:
    """(median ms, the last body, its content type) of `runs` GETs of `url`."""
    times, body, ctype = [], b'', ''
    for _ in range(runs):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as answer:
            body, ctype = answer.read(), answer.headers.get('Content-Type', '')
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), body, ctype


# -- ingest ----------------------------------------------------------------------------------


def _sender(address: tuple[str, int], share: Sequence[Outgoing], go: object) -> None:
    """One connection: wait for the start, send every message of the share,
    in sessions of SESSION_MESSAGES."""
    go.wait(WAIT)                                            # type: ignore[attr-defined]
    for first in range(0, len(share), SESSION_MESSAGES):
        with smtplib.SMTP(*address, timeout=30) as client:
            client.ehlo('bench.example.org')
            for item in share[first:first + SESSION_MESSAGES]:
                client.sendmail(item.sender, list(item.recipients), item.data)


def children_cpu_seconds() -> float:
    """User + system time of this process's children that were waited for:
    the sending processes (the inbox is waited for only at the end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ingest(inbox: InboxProcess, messages: Sequence[Outgoing], expected_total: int) -> float:
    """Seconds from the first MAIL of `messages`, over CONNECTIONS processes,
    until the API lists `expected_total` messages."""
    context = multiprocessing.get_context('fork')
    go = context.Event()
    senders = [context.Process(target=_sender, args=(inbox.smtp, share, go))
               for share in shares(messages, CONNECTIONS)]
    for sender in senders:
        sender.start()
    started = time.perf_counter()
    go.set()
    deadline = time.monotonic() + WAIT + len(messages) / 10     # 10 msg/s at the least
    for sender in senders:
        sender.join(max(1.0, deadline - time.monotonic()))
        if sender.exitcode != 0:
            for other in senders:
                other.kill()
            raise RuntimeError(f'a sender failed (exit {sender.exitcode})')
    while True:
        listed = get_json(f'{inbox.url}/api/v1/messages?limit=1')['total']
        if listed >= expected_total:
            return time.perf_counter() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f'{listed} of {expected_total} listed before the deadline')
        time.sleep(0.02)


# -- first paint -----------------------------------------------------------------------------

FIRST_ROWS_PROBE = """
(() => {
  const seen = () => {
    if (window.__benchRows !== undefined || !document.querySelector('#list li.message')) return;
    window.__benchRows = performance.now();
    requestAnimationFrame(() => setTimeout(() => { window.__benchPainted = performance.now(); }));
  };
  new MutationObserver(seen).observe(document, { childList: true, subtree: true });
})();
"""
READ_PROBE = """
const paint = Object.fromEntries(performance.getEntriesByType('paint')
  .map((e) => [e.name, e.startTime]));
const nav = performance.getEntriesByType('navigation')[0];
return { rows: window.__benchRows ?? null, painted: window.__benchPainted ?? null,
         fcp: paint['first-contentful-paint'] ?? null, responseEnd: nav ? nav.responseEnd : null,
         shown: document.querySelectorAll('#list li.message').length };
"""


def first_paint(url: str, runs: int) -> list[dict[str, float]]:
    """Navigation to the first list rows drawn, `runs` times in one headless
    Chromium (the first cold); the probe's readings of each, in ms."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = shutil.which('chromium'), shutil.which('chromedriver')
    if not chromium or not driver_path:
        raise RuntimeError('first paint needs chromium and chromium-driver (Debian)')
    profile = tempfile.mkdtemp(prefix='inbox-bench-chromium-')
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--disable-dev-shm-usage', f'--user-data-dir={profile}',
                 '--window-size=1280,800'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument',
                               {'source': FIRST_ROWS_PROBE})
        readings = []
        for _ in range(runs):
            driver.get('about:blank')
            driver.get(url + '/')
            WebDriverWait(driver, WAIT).until(
                lambda d: d.execute_script('return window.__benchPainted !== undefined'),
                message='the first rows of the list')
            readings.append(driver.execute_script(READ_PROBE))
        return readings
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- profiling -------------------------------------------------------------------------------


class PySpy:
    """py-spy recording the inbox process (raw collapsed stacks) until stop()."""

    def __init__(self, pid: int, output: str) -> None:
        program = shutil.which('py-spy')
        if program is None:
            raise RuntimeError('--py-spy needs py-spy (pip install py-spy)')
        self.output = output
        self.proc = subprocess.Popen([program, 'record', '--pid', str(pid), '--format', 'raw',
                                      '--output', output, '--rate', '250', '--threads',
                                      '--nonblocking'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.output


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    # stored after, sent, seconds, KiB after, the inbox's CPU seconds, the clients' CPU seconds
    stages: list[tuple[int, int, float, int, float, float]] = field(default_factory=list)
    idle_kib: int = 0
    peak_kib: int = 0
    paint: list[dict[str, float]] = field(default_factory=list)
    requests_ms: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)

    def warm_rate(self) -> float:
        later = self.stages[1:] or self.stages
        return sum(s[1] for s in later) / sum(s[2] for s in later)

    def warm_cpu_ms(self) -> float:
        """The inbox process's CPU per message over the warm stages, ms."""
        later = self.stages[1:] or self.stages
        return sum(s[4] for s in later) / sum(s[1] for s in later) * 1000

    def warm_client_cpu_ms(self) -> float:
        """The sending processes' CPU per message over the warm stages, ms."""
        later = self.stages[1:] or self.stages
        return sum(s[5] for s in later) / sum(s[1] for s in later) * 1000


def machine_facts(tree: str) -> dict[str, str]:
    commit = subprocess.run(['git', '-C', tree, 'rev-parse', '--short', 'HEAD'],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', tree, 'status', '--porcelain', '--', 'smtp_stack'],
                           capture_output=True, text=True).stdout.strip()
    with open('/proc/loadavg') as f:
        load = ' '.join(f.read().split()[:3])
    if not commit:
        commit = f'of {tree} (no git checkout: say which commit it is)'
    return {'commit': commit + (' (smtp_stack/ modified)' if dirty else ''),
            'nproc': str(os.cpu_count()), 'load before': load,
            'python': sys.version.split()[0],
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def run(stages: list[int], paint_runs: int, spy_file: str | None, tree: str = ROOT) -> Report:
    report = Report(facts=machine_facts(tree))
    workdir = tempfile.mkdtemp(prefix='inbox-bench-')
    inbox = InboxProcess(workdir, max_messages=stages[-1] + 1000, tree=tree)
    spy = None
    try:
        report.idle_kib = inbox.rss_kib()
        stored = 0
        for number, target in enumerate(stages):
            batch = make_messages(stored, target - stored)
            if number == 1 and spy_file:
                spy = PySpy(inbox.pid, spy_file)
            cpu, clients = inbox.cpu_seconds(), children_cpu_seconds()
            seconds = ingest(inbox, batch, target)
            report.stages.append((target, len(batch), seconds, inbox.rss_kib(),
                                  inbox.cpu_seconds() - cpu, children_cpu_seconds() - clients))
            stored = target
            print(f'stored {target}: {len(batch) / seconds:.0f} msg/s, '
                  f'RSS {inbox.rss_kib() / 1024:.1f} MiB', file=sys.stderr)
        if spy is not None:
            spy.stop()
        report.peak_kib = inbox.rss_kib('VmHWM')
        report.facts['load after ingest'] = open('/proc/loadavg').read().split()[0]
        measure_requests(inbox, report)
        if paint_runs:
            report.paint = first_paint(inbox.url, paint_runs)
        report.facts['RSS after the page'] = f'{inbox.rss_kib() / 1024:.1f} MiB'
    finally:
        if spy is not None and spy.proc.poll() is None:
            spy.stop()
        inbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def measure_requests(inbox: InboxProcess, report: Report) -> None:
    """The list, a search and a thumbnail on the full inbox; and that the
    tags of the rule and of the plus-addresses were given."""
    base = inbox.url
    report.requests_ms['list (50)'], _, _ = timed_get(f'{base}/api/v1/messages?limit=50')
    report.requests_ms['search "warehouse" (50)'], _, _ = timed_get(
        f'{base}/api/v1/search?query=warehouse&limit=50')
    report.requests_ms['search tag:billing (50)'], _, _ = timed_get(
        f'{base}/api/v1/search?query=tag%3Abilling&limit=50')
    tags = get_json(f'{base}/api/v1/tags')
    if not {'billing', 'signup'} <= set(tags):
        raise RuntimeError(f'the tags were not given: {tags}')
    found = get_json(f'{base}/api/v1/search?query=filename%3Apixel.png&limit=1')
    message_id = found['messages'][0]['ID']
    part = get_json(f'{base}/api/v1/message/{message_id}')['Attachments'][0]['PartID']
    report.requests_ms['thumbnail (PNG)'], body, ctype = timed_get(
        f'{base}/api/v1/message/{message_id}/part/{part}/thumb')
    if ctype != 'image/jpeg' or not body.startswith(b'\xff\xd8'):
        raise RuntimeError(f'the thumbnail is no JPEG ({ctype}): thumbnails need Pillow')


def render(report: Report) -> str:
    """The report as the Markdown section docs/performance.md takes."""
    low, high = MAILPIT_RATE
    warm = report.warm_rate()
    lines = ['| stored | sent in the stage | msg/s | inbox CPU per message (ms) '
             '| clients\' CPU per message (ms) | RSS after (MiB) |',
             '|---:|---:|---:|---:|---:|---:|',
             f'| 0 | — | — | — | — | {report.idle_kib / 1024:.1f} |']
    for target, sent, seconds, kib, cpu, clients in report.stages:
        lines.append(f'| {target:,} | {sent:,} | {sent / seconds:.0f} | {cpu / sent * 1000:.2f} '
                     f'| {clients / sent * 1000:.2f} | {kib / 1024:.1f} |')
    lines.append(f'\nWarm rate (every stage after the first): **{warm:.0f} msg/s** = '
                 f'{warm / high:.1f}× the top of Mailpit\'s published 200–300 msg/s '
                 f'({warm / low:.1f}× its bottom); target ≥ {TARGET_FACTOR}× '
                 f'({TARGET_FACTOR * low}–{TARGET_FACTOR * high} msg/s). The inbox used '
                 f'{report.warm_cpu_ms():.2f} ms of CPU per message (every thread): '
                 f'{1000 / report.warm_cpu_ms():.0f} messages per CPU-second; the '
                 f'{CONNECTIONS} sending processes {report.warm_client_cpu_ms():.2f} ms. '
                 f'Peak RSS (VmHWM) {report.peak_kib / 1024:.1f} MiB.')
    if report.paint:
        painted = [r['painted'] for r in report.paint]
        warm_paint = painted[1:] or painted
        lines.append(f'\nFirst paint of the {report.stages[-1][0]:,}-message inbox '
                     f'(navigation to the first rows drawn): cold {painted[0]:.0f} ms, warm '
                     f'median {statistics.median(warm_paint):.0f} ms '
                     f'(of {len(warm_paint)}); target < {PAINT_TARGET_MS} ms. '
                     f'Rows in the DOM at {report.paint[0]["rows"]:.0f} ms cold, first '
                     f'contentful paint {report.paint[0]["fcp"] or 0:.0f} ms, '
                     f'{report.paint[0]["shown"]} rows shown.')
    lines.append('\nRequests on the full inbox (median of 10): ' + ', '.join(
        f'{name} {ms:.1f} ms' for name, ms in report.requests_ms.items()) + '.')
    lines.append('\nRun: ' + ', '.join(f'{k} {v}' for k, v in report.facts.items()) + '.')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--stages', default='1000,5000,10000',
                        help='stored counts at which to measure (default 1000,5000,10000)')
    parser.add_argument('--paint-runs', type=int, default=6,
                        help='navigations measured in Chromium (the first cold; 0: none)')
    parser.add_argument('--py-spy', metavar='FILE', help='record the inbox during the warm '
                        'stages with py-spy (raw stacks into FILE) and print the hot spots')
    parser.add_argument('--json', metavar='FILE', help='write every figure as JSON')
    parser.add_argument('--tree', metavar='DIR', default=ROOT,
                        help='run smtp_stack from this checkout (default: this one), e.g. '
                        '`git archive HEAD smtp_stack | tar -x -C DIR`')
    args = parser.parse_args(argv)
    stages = [int(s) for s in args.stages.split(',')]
    if stages != sorted(set(stages)) or stages[0] <= 0:
        parser.error('--stages: increasing positive counts')
    report = run(stages, args.paint_runs, args.py_spy, args.tree)
    print(render(report))
    if args.py_spy:
        with open(args.py_spy) as f:
            total, own, inclusive = summarize_collapsed(f, keep='smtp_stack')
        print(f'\npy-spy: {total} samples (every thread, idle ones left out)')
        print('self:\n' + '\n'.join(f'  {n / total:6.1%}  {frame}' for frame, n in own))
        print('inclusive (smtp_stack):\n' + '\n'.join(
            f'  {n / total:6.1%}  {frame}' for frame, n in inclusive))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report.__dict__, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
