"""A private OpenDKIM for the tests: Debian's opendkim in the foreground with
its own configuration, key and public-key file in a temporary directory, on
a free 127.0.0.1 port, stopped by its PID. The system's opendkim (its
service, /etc/opendkim.conf) is never touched.

    dkim = PrivateOpenDkim(tmp_path, mode='s')     # signs mail for example.test
    dkim = PrivateOpenDkim(tmp_path, mode='v')     # verifies, adds Authentication-Results
    dkim.address                                   # 'inet:127.0.0.1:PORT'
    dkim.private_key, dkim.public_record           # the key opendkim-genkey made
    dkim.stop()

The key is made with opendkim-genkey (selector `sel`, domain DOMAIN); the
signer finds it through a KeyTable and a SigningTable, the verifier finds
its public half through `TestPublicKeys` (OpenDKIM's option for tests: a
file of 'name record' lines read instead of DNS), so no resolver is asked.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

from peers import program

WAIT = 10.0
DOMAIN = 'example.test'
SELECTOR = 'sel'
AUTHSERV_ID = 'mx.test'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class PrivateOpenDkim:
    """opendkim in `workdir` on a free loopback port; started at once."""

    def __init__(self, workdir: str | os.PathLike, mode: str = 's',
                 key_dir: str | os.PathLike | None = None):
        self.workdir = str(workdir)
        self.binary = program('opendkim', 'opendkim', fallback='/usr/sbin/opendkim')
        self.key_dir = str(key_dir or workdir)
        self.port = free_port()
        self.mode = mode
        self._make_key()
        self._write_config()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def address(self) -> str:
        return f'inet:127.0.0.1:{self.port}'

    def _make_key(self) -> None:
        private = os.path.join(self.key_dir, f'{SELECTOR}.private')
        if not os.path.exists(private):
            genkey = program('opendkim-genkey', 'opendkim-tools',
                             fallback='/usr/sbin/opendkim-genkey')
            subprocess.run([genkey, '--bits=1024', f'--directory={self.key_dir}',
                            f'--domain={DOMAIN}', f'--selector={SELECTOR}'],
                           check=True, capture_output=True, timeout=WAIT)
        with open(private, 'rb') as f:
            self.private_key = f.read()
        self.private_path = private
        with open(os.path.join(self.key_dir, f'{SELECTOR}.txt')) as f:
            zone = f.read()
        # The zone stub: 'sel._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." ) ; ...'
        self.public_record = ''.join(re.findall(r'"([^"]*)"', zone.split(')')[0]))

    def _write_config(self) -> None:
        def write(name: str, text: str) -> str:
            path = os.path.join(self.workdir, name)
            with open(path, 'w') as f:
                f.write(text)
            return path

        keys = write('keys.txt', f'{SELECTOR}._domainkey.{DOMAIN} {self.public_record}\n')
        table = write('key.table', f'{SELECTOR}._domainkey.{DOMAIN} '
                                   f'{DOMAIN}:{SELECTOR}:{self.private_path}\n')
        signing = write('signing.table', f'*@{DOMAIN} {SELECTOR}._domainkey.{DOMAIN}\n')
        lines = [f'Mode {self.mode}', 'Syslog no', 'Background no', 'RequireSafeKeys false',
                 f'Socket inet:{self.port}@127.0.0.1', f'PidFile {self.workdir}/opendkim.pid',
                 f'AuthservID {AUTHSERV_ID}', 'Canonicalization relaxed/simple',
                 'SignatureAlgorithm rsa-sha256', f'TestPublicKeys {keys}',
                 'DNSTimeout 1', 'UserID root']
        if 's' in self.mode:
            lines += [f'KeyTable file:{table}', f'SigningTable refile:{signing}',
                      'InternalHosts 127.0.0.1', 'SenderHeaders From']
        else:
            lines += ['InternalHosts 192.0.2.254']     # loopback clients are verified
        self.conf = write('opendkim.conf', '\n'.join(lines) + '\n')

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, '-f', '-x', self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + WAIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f'opendkim exited ({self.proc.returncode}): '
                                   f'{self.proc.stderr.read().decode(errors="replace")}')
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f'opendkim did not listen in {WAIT} s')
            time.sleep(0.02)        # a poll step, bounded by the deadline

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a second (it lingers after SIGTERM); waited for."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
