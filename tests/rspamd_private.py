"""A private rspamd for the tests: Debian's rspamd with its own configuration
directory, ports, database and run directories and log file, started in
the foreground on free 127.0.0.1 ports and stopped by its PID. The system's
rspamd (its service, /etc/rspamd's files) is never touched: the Debian
defaults are read from /etc/rspamd ($CONFDIR), everything we change goes
into our own $LOCAL_CONFDIR.

    rspamd = PrivateRspamd(tmp_path)                 # the normal worker: rspamd.url
    rspamd = PrivateRspamd(tmp_path, milter=True)    # and the proxy in milter mode:
                                                     # rspamd.milter_address
    PrivateRspamd(tmp_path, cache_dir=shared)        # 1-2 s instead of 5 after the first
    rspamd.pause() / rspamd.resume()                 # SIGSTOP / SIGCONT, every process
    rspamd.stop()                                    # SIGTERM, then SIGKILL; waited for

What it answers is made predictable for tests, and fast (under a second to
start): no DNS (every module that asks it is disabled, and the resolver
points at a port nobody answers), no Redis (the modules that need one stay
off by themselves), no hyperscan compilation, a five-line TLD list instead
of the 9,628 suffixes; rspamd's test patterns are on (GTUBE and its
variants also from loopback clients), and the milter_headers module adds
its headers for loopback clients too. The subject words in `RULES` give
the other actions:

    subject contains           action           how
    GTUBE (the body, X...)     reject           rspamd's own test pattern, 'Gtube pattern'
    rspamd-test:add-header     add header       a score between the thresholds
    rspamd-test:rewrite        rewrite subject  a score between the thresholds
    rspamd-test:greylist       greylist         a score between the thresholds (no greylist
                                                module: it needs Redis)
    rspamd-test:soft-reject    soft reject      set_pre_result, with SOFT_REJECT_TEXT

and the request header `Settings-ID: smtp_stack_add_header` (SETTINGS_ID)
makes any message 'add header'.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from peers import program, running

WAIT = 15.0
SOFT_REJECT_TEXT = 'rspamd-test: try again later'
# A Settings-ID rspamd knows: its add_header threshold is below any score.
SETTINGS_ID = 'smtp_stack_add_header'
# Far above what the rules rspamd runs here give a test message (a few points).
THRESHOLDS = {'greylist': 40, 'add_header': 60, 'rewrite_subject': 80, 'reject': 150}
RULES = {'rspamd-test:greylist': 45, 'rspamd-test:add-header': 65, 'rspamd-test:rewrite': 85}

# Modules that would ask DNS (slow without a resolver) or the network.
DISABLED = ('rbl', 'surbl', 'spf', 'dkim', 'dmarc', 'arc', 'asn', 'hfilter', 'mx_check',
            'fuzzy_check', 'phishing', 'whitelist', 'reputation', 'emails', 'url_redirector',
            'dcc', 'replies', 'neural', 'ratelimit', 'greylist', 'dkim_signing', 'rspamd_update',
            'multimap', 'bimi', 'external_relay')

LUA_RULES = """
local function subject_has(word)
  return function(task)
    local subject = task:get_header('Subject') or ''
    return subject:find(word, 1, true) ~= nil
  end
end
%(scored)s
rspamd_config.SMTP_STACK_TEST_SOFT_REJECT = {
  callback = function(task)
    local subject = task:get_header('Subject') or ''
    if subject:find('rspamd-test:soft-reject', 1, true) then
      task:set_pre_result('soft reject', '%(soft)s', 'smtp_stack_test')
      return true
    end
    return false
  end,
  score = 0.0,
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class PrivateRspamd:
    """rspamd in `workdir`, on free loopback ports; started at once."""

    def __init__(self, workdir: str | os.PathLike, milter: bool = False,
                 cache_dir: str | os.PathLike | None = None):
        self.workdir = str(workdir)
        # rspamd's compiled pattern caches (the language detector's take 5 s
        # to build): several instances of one test run may share them.
        self.cache_dir = str(cache_dir or workdir)
        self.binary = program('rspamd', 'rspamd', fallback='/usr/bin/rspamd')
        self.port = free_port()
        self.controller_port = free_port()
        self.milter_port = free_port() if milter else None
        self.log_path = os.path.join(self.workdir, 'rspamd.log')
        self.proc: subprocess.Popen | None = None
        self._write_config()
        self.start()

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    @property
    def milter_address(self) -> str:
        if self.milter_port is None:
            raise RuntimeError('started without milter=True')
        return f'inet:127.0.0.1:{self.milter_port}'

    # -- configuration ------------------------------------------------------------

    def _write(self, name: str, text: str) -> None:
        path = os.path.join(self.workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)

    def _write_config(self) -> None:
        proxy = '' if self.milter_port is None else f"""
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{self.milter_port}";
    # Debian's worker-proxy.inc, less its upstream at rspamd's default port: ours
    milter = yes; timeout = 120s; count = 1; max_retries = 5;
    discard_on_reject = false; quarantine_on_reject = false;
    spam_header = "X-Spam"; reject_message = "Spam message rejected";
    upstream "local" {{ default = yes; hosts = "127.0.0.1:{self.port}"; }}   # the normal worker
}}"""
        self._write('rspamd.conf', f"""
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{self.port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "controller" {{
    bind_socket = "127.0.0.1:{self.controller_port}";
    .include "$CONFDIR/worker-controller.inc"
}}{proxy}
""")
        self._write('tld.dat', 'com\nnet\norg\ntest\nexample\n')
        self._write('local.d/options.inc', f"""
url_tld = "{self.workdir}/tld.dat";
disable_hyperscan = true;
hs_cache_dir = "{self.cache_dir}";
enable_test_patterns = true;
dns {{ nameserver = ["127.0.0.1:{free_port()}"]; timeout = 0.1s; retransmits = 1; }}
""")
        self._write('local.d/actions.conf',
                    ''.join(f'{name} = {score};\n' for name, score in THRESHOLDS.items()))
        self._write('local.d/milter_headers.conf', """
use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status", "authentication-results"];
skip_local = false;
skip_authenticated = false;
""")
        self._write('local.d/settings.conf', f"""
{SETTINGS_ID} {{
    id = "{SETTINGS_ID}";
    apply {{ actions {{ add_header = -1000; }} }}
}}
""")
        for module in DISABLED:
            self._write(f'local.d/{module}.conf', 'enabled = false;\n')
        scored = ''.join(
            f"rspamd_config.{'SMTP_STACK_TEST_' + re.sub(r'[^A-Z]', '_', word.upper())} = "
            f"{{ callback = subject_has('{word}'), score = {score}.0 }}\n"
            for word, score in RULES.items())
        self._write('rspamd.local.lua', LUA_RULES % {'scored': scored, 'soft': SOFT_REJECT_TEXT})

    # -- the process ----------------------------------------------------------------

    def start(self) -> None:
        as_root = ['-u', 'root', '-g', 'root'] if os.geteuid() == 0 else []
        where = {'LOCAL_CONFDIR': self.workdir, 'DBDIR': self.workdir, 'RUNDIR': self.workdir,
                 'LOGDIR': self.workdir}
        command = [self.binary, '-f', *as_root, '-c', os.path.join(self.workdir, 'rspamd.conf')]
        for name, value in where.items():
            command += ['--var', f'{name}={value}']
        # A session of its own: its process group (its PID) holds every
        # process it forks, helpers it starts later too, for stop() to end.
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + WAIT
        while not self._pongs():
            if self.proc.poll() is not None:
                raise RuntimeError(f'rspamd exited ({self.proc.returncode}): '
                                   f'{self.proc.stderr.read().decode(errors="replace")}'
                                   f'{self.log_tail()}')
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f'rspamd did not answer /ping in {WAIT} s{self.log_tail()}')
            time.sleep(0.02)        # a poll step, bounded by the deadline

    def _pongs(self) -> bool:
        ports = [self.port] + ([self.milter_port] if self.milter_port else [])
        try:
            for port in ports:
                if port == self.milter_port:        # a milter port answers no HTTP
                    socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
                    continue
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/ping', timeout=0.5) as r:
                    if r.read().strip() != b'pong':
                        return False
        except OSError:
            return False
        return True

    def children(self) -> list[int]:
        """The worker processes rspamd forked (normal, controller, proxy ...)."""
        if self.proc is None:
            return []
        try:
            with open(f'/proc/{self.proc.pid}/task/{self.proc.pid}/children') as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def pause(self) -> None:
        """SIGSTOP to rspamd and its workers: connections are accepted by the
        kernel (the backlog) and never answered."""
        for pid in [self.proc.pid, *self.children()]:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in [self.proc.pid, *self.children()]:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM to the main process (it stops its workers), SIGKILL to
        all of them if that takes too long; waited for."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        workers = self.children()
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            for pid in [proc.pid, *workers]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(WAIT)
        try:        # a helper forked after `workers` was read (hs_helper) ends too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + WAIT
        while any(running(pid) for pid in workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f'rspamd workers {workers} outlived their master')
            time.sleep(0.02)

    # -- what it saw ------------------------------------------------------------------

    def log(self) -> str:
        try:
            with open(self.log_path, encoding='utf-8', errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def log_tail(self, lines: int = 20) -> str:
        return '\n' + '\n'.join(self.log().splitlines()[-lines:])

    def connections(self) -> int:
        """How many connections the normal worker accepted (its log says each)."""
        return len(re.findall(r'\(normal\).*accepted connection from', self.log()))


