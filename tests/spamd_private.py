"""A private SpamAssassin spamd for the tests: Debian's spamd (package
spamd; the rules come with spamassassin) on a free loopback port, with its
own site configuration and home in the test's directory, no network tests
(`--local`), no user configurations, stopped by the PID of its pidfile.

    spamd = PrivateSpamd(tmp_path)      # started; spamd.address 'HOST:PORT'
    spamd.stop()                        # SIGTERM, then SIGKILL; waited for

Its local.cf adds one rule, TEST_RULE, that a subject containing
TEST_WORD fires, worth TEST_SCORE, with a description long enough to be
continued on a second line of the report; GTUBE (SpamAssassin's own test
pattern) scores 1000.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from peers import program

WAIT = 20.0
TEST_WORD = 'smtp-stack-spamd-test'
TEST_RULE = 'SMTP_STACK_TEST'
TEST_SCORE = 3.3
TEST_DESCRIPTION = ('A subject that the smtp_stack test suite uses to see a rule of its own '
                    'fire and its description come back whole')
GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'
RULES_DIR = '/usr/share/spamassassin'       # the rules as packaged (never sa-update's)
PRE_DIR = '/etc/spamassassin'               # the packaged plugin lists; its local.cf is not read

LOCAL_CF = f"""\
use_bayes 0
bayes_auto_learn 0
header {TEST_RULE} Subject =~ /{TEST_WORD}/
score {TEST_RULE} {TEST_SCORE}
describe {TEST_RULE} {TEST_DESCRIPTION}
"""


def _spamd_user() -> tuple[int, int, str] | None:
    """(uid, gid, name) spamd's children run as when we are root (Debian's
    debian-spamd, else nobody); None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ('debian-spamd', 'nobody'):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid, name
    raise RuntimeError('no user for spamd to run as (debian-spamd, nobody)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


class PrivateSpamd:
    def __init__(self, workdir: str | os.PathLike):
        self.spamd = program('spamd', 'spamd', '/usr/sbin/spamd')
        self.user = _spamd_user()
        if self.user is None:
            self.dir = os.path.join(os.fspath(workdir), 'spamd')
            os.makedirs(self.dir)
        else:
            # As root, spamd's children run as another user, who cannot enter
            # pytest's 0700 directories: a directory of its own under /tmp.
            self.dir = tempfile.mkdtemp(prefix='smtp_stack-spamd-')
            os.chmod(self.dir, 0o755)
        self.site = os.path.join(self.dir, 'site')
        os.makedirs(self.site)
        for name in os.listdir(PRE_DIR):     # the plugin loads (v320.pre ...): nothing runs without
            if name.endswith('.pre'):
                shutil.copy(os.path.join(PRE_DIR, name), self.site)
        with open(os.path.join(self.site, 'local.cf'), 'w') as f:
            f.write(LOCAL_CF)
        self.pidfile = os.path.join(self.dir, 'spamd.pid')
        self.logfile = os.path.join(self.dir, 'spamd.log')
        self.port = free_port()
        self.address = f'127.0.0.1:{self.port}'
        self.pid: int | None = None
        if self.user is not None:
            for root, dirs, files in os.walk(self.dir):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, self.user[0], self.user[1])
        self.start()

    def start(self) -> None:
        args = [self.spamd, '--listen', self.address, '--pidfile', self.pidfile,
                '--local', '--nouser-config', '--configpath', RULES_DIR,
                '--siteconfigpath', self.site, '--helper-home-dir', self.dir,
                '--max-children', '1', '--min-children', '1', '--syslog', self.logfile]
        if self.user is not None:
            args += ['--username', self.user[2]]
        with open(os.devnull, 'wb') as null:
            process = subprocess.Popen(args, stdout=null, stderr=null, start_new_session=True)
        deadline = time.monotonic() + WAIT
        while not self._pongs():
            if process.poll() is not None:
                raise RuntimeError(f'spamd exited with {process.returncode}: {self.log_tail()}')
            if time.monotonic() > deadline:
                self._kill_group(process.pid)
                process.wait(WAIT)
                raise RuntimeError(f'spamd did not answer within {WAIT} s: {self.log_tail()}')
            time.sleep(0.1)     # polling a starting daemon: nothing to wait on
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())
        self._process = process

    def _pongs(self) -> bool:
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=2) as s:
                s.sendall(b'PING SPAMC/1.5\r\n\r\n')
                return b'PONG' in s.recv(100)
        except OSError:
            return False

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self._process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self._kill_group(pid)
            self._process.wait(WAIT)
        if self.user is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.logfile, errors='replace') as f:
                return ''.join(f.readlines()[-lines:])
        except OSError:
            return '(no log)'
