"""A private Sendmail for the milter tests: Debian's sendmail-bin, unpacked
(not installed: it conflicts with postfix) into /opt/ci-peers/sendmail by
.ci/run, with its own configuration made here from sendmail-cf's m4 files,
its own queue directory, a daemon on a free 127.0.0.1 port, our milter in
INPUT_MAIL_FILTER, and every message relayed to `relay_port` (a MailSink).

    sendmail = PrivateSendmail('inet:8891@127.0.0.1', relay_port=sink_port).start()
    sendmail.smtp_port, sendmail.queue, sendmail.transcript()
    sendmail.stop()

Sendmail wants a qualified name for its host and, when the system's name
has no dot, sleeps a minute ("My unqualified host name ... unknown;
sleeping for retry") before it serves. The daemon therefore runs in a UTS
namespace of its own (`unshare --uts`, as root) whose host name is
mx.test.example; the machine's name is not touched. It has no syslog
here: what it said is in its SMTP transcript (`-X`), which the tests read.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import peers

ROOT = Path('/opt/ci-peers/sendmail')
BINARY = ROOT / 'usr/libexec/sendmail/sendmail'
CF = ROOT / 'usr/share/sendmail/cf/m4/cf.m4'
HOSTNAME = 'mx.test.example'
STARTUP_TIMEOUT = 20.0

MC = """\
divert(-1)
divert(0)dnl
include(`{cf}')dnl
VERSIONID(`smtp_stack tests')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confSERVICE_SWITCH_FILE', `{root}/service.switch')dnl
define(`confHOSTS_FILE', `{root}/hosts')dnl
define(`QUEUE_DIR', `{root}/queue')dnl
define(`confPID_FILE', `{root}/sendmail.pid')dnl
define(`STATUS_FILE', `{root}/statistics')dnl
define(`HELP_FILE', `{root}/helpfile')dnl
define(`ALIAS_FILE', `')dnl
define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {relay_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl
define(`SMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl
define(`LOCAL_MAILER_PATH', `{mail_local}')dnl
define(`confDELIVERY_MODE', `interactive')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`nocanonify')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
INPUT_MAIL_FILTER(`smtp-stack', `S={milter}, F=T, T=C:10s;S:10s;R:10s;E:60s')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def sendmail_milter_address(address: str) -> str:
    """A MilterServer's 'inet:HOST:PORT' as Sendmail writes it: 'inet:PORT@HOST'."""
    kind, _, rest = address.partition(':')
    if kind != 'inet':
        return address
    host, _, port = rest.rpartition(':')
    return f'inet:{port}@{host}'


class PrivateSendmail:
    """One instance: `start()`, `stop()`, `smtp_port`, `queue` (its queue
    directory), `transcript()` (its SMTP sessions, both ways)."""

    def __init__(self, milter: str, relay_port: int) -> None:
        # Not `which sendmail`: /usr/sbin/sendmail is Postfix's.
        if not BINARY.exists():
            peers.missing(str(BINARY), 'sendmail-bin, unpacked by .ci/run')
        self.binary = str(BINARY)
        self.m4 = peers.program('m4', 'm4')
        self.unshare = peers.program('unshare', 'util-linux')
        missing = subprocess.run(['ldd', self.binary], capture_output=True, text=True,
                                 timeout=30).stdout
        if 'not found' in missing:
            peers.missing(f'a library of sendmail ({missing.strip()})', 'libwrap0')
        self.root = Path(tempfile.mkdtemp(prefix='smtp-stack-sendmail-', dir='/tmp'))
        self.queue = self.root / 'queue'
        self.queue.mkdir(mode=0o700)
        self.smtp_port = free_port()
        (self.root / 'service.switch').write_text('hosts files\naliases files\n')
        (self.root / 'hosts').write_text(f'127.0.0.1 localhost {HOSTNAME}\n')
        for name in ('statistics', 'helpfile'):
            (self.root / name).touch()
        mc = MC.format(cf=CF, hostname=HOSTNAME, root=self.root, relay_port=relay_port,
                       mail_local=ROOT / 'usr/libexec/sendmail/mail.local',
                       port=self.smtp_port, milter=sendmail_milter_address(milter))
        made = subprocess.run([self.m4], input=mc, capture_output=True, text=True, timeout=30)
        if made.returncode != 0:
            raise RuntimeError(f'm4 failed: {made.stderr}')
        self.config = self.root / 'sendmail.cf'
        self.config.write_text(made.stdout)
        self.trace = self.root / 'transcript'
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateSendmail:
        self.process = subprocess.Popen(
            [self.unshare, '--uts', 'sh', '-c', f'hostname {HOSTNAME} && exec "$@"', 'sendmail',
             self.binary, '-C', str(self.config), '-bD', '-X', str(self.trace)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read() if self.process.stderr else b''
                raise RuntimeError(f'sendmail exited ({self.process.returncode}): '
                                   f'{error.decode(errors="replace")}')
            with contextlib.suppress(OSError), socket.create_connection(
                    ('127.0.0.1', self.smtp_port), timeout=1) as sock:
                sock.settimeout(5)
                if sock.recv(100).startswith(b'220'):
                    return self
            time.sleep(0.05)        # a poll step, bounded by the deadline
        self.stop()
        raise TimeoutError(f'sendmail did not listen on {self.smtp_port} in {STARTUP_TIMEOUT} s')

    def stop(self) -> None:
        """SIGTERM to its process group (the daemon and the sessions it
        forked), waited for; SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def transcript(self) -> str:
        try:
            return self.trace.read_text(errors='replace')
        except FileNotFoundError:
            return ''


@contextlib.contextmanager
def private_sendmail(milter: str, relay_port: int) -> Iterator[PrivateSendmail]:
    instance = PrivateSendmail(milter, relay_port)
    try:
        yield instance.start()
    finally:
        instance.remove()
