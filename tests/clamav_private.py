"""A private ClamAV for the tests: Debian's clamd and clamav-milter in the
foreground, each with its own configuration, log and pid file in a
temporary directory, on free 127.0.0.1 ports, stopped by their PIDs. The
signature database is written here: the EICAR test file's signature, as
an MD5 hash signature (.hdb: the file, e.g. an attachment) and as a body
signature (.ndb: its bytes anywhere, e.g. in a text part). Nothing is
downloaded (freshclam never runs) and the system's clamd and its
services are never touched.

    clamav = PrivateClamav(tmp_path)
    clamav.address          # clamav-milter: 'inet:127.0.0.1:PORT'
    clamav.stop()
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time

from peers import program

WAIT = 20.0
EICAR = rb'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
SIGNATURE = 'Smtp-Stack-Test-EICAR'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait(what: str, proc: subprocess.Popen, ready, log: str) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f'{what} exited ({proc.returncode}): '
                               f'{proc.stderr.read().decode(errors="replace")}{_tail(log)}')
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} did not answer in {WAIT} s{_tail(log)}')
        time.sleep(0.05)        # a poll step, bounded by the deadline


def _tail(path: str) -> str:
    try:
        with open(path, errors='replace') as f:
            return '\n' + ''.join(f.readlines()[-15:])
    except OSError:
        return ''


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT)


class PrivateClamav:
    """clamd and clamav-milter in `workdir`; started at once."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = str(workdir)
        self.clamd_binary = program('clamd', 'clamav-daemon', fallback='/usr/sbin/clamd')
        self.milter_binary = program('clamav-milter', 'clamav-milter',
                                     fallback='/usr/sbin/clamav-milter')
        self.clamd_port = free_port()
        self.port = free_port()
        self.clamd: subprocess.Popen | None = None
        self.milter: subprocess.Popen | None = None
        self._write_config()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f'inet:127.0.0.1:{self.port}'

    def _path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def _write_config(self) -> None:
        db = self._path('db')
        os.makedirs(db, exist_ok=True)
        with open(os.path.join(db, 'test.hdb'), 'w') as f:
            f.write(f'{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{SIGNATURE}-File\n')
        with open(os.path.join(db, 'test.ndb'), 'w') as f:
            f.write(f'{SIGNATURE}:0:*:{EICAR.hex()}\n')
        with open(self._path('clamd.conf'), 'w') as f:
            f.write(f'Foreground yes\nTCPSocket {self.clamd_port}\nTCPAddr 127.0.0.1\n'
                    f'DatabaseDirectory {db}\nPidFile {self._path("clamd.pid")}\n'
                    f'LogFile {self._path("clamd.log")}\nTemporaryDirectory {self.workdir}\n'
                    'SelfCheck 0\n')
        with open(self._path('clamav-milter.conf'), 'w') as f:
            f.write(f'Foreground yes\nMilterSocket inet:{self.port}@127.0.0.1\n'
                    f'ClamdSocket tcp:127.0.0.1:{self.clamd_port}\n'
                    f'PidFile {self._path("clamav-milter.pid")}\n'
                    f'LogFile {self._path("clamav-milter.log")}\nLogInfected Basic\n'
                    'OnInfected Reject\nOnFail Defer\nAddHeader Replace\n'
                    'RejectMsg Virus found: %v\n')

    def _clamd_answers(self) -> bool:
        try:
            with socket.create_connection(('127.0.0.1', self.clamd_port), timeout=1) as s:
                s.sendall(b'zPING\0')
                return s.recv(16).startswith(b'PONG')
        except OSError:
            return False

    def _milter_listens(self) -> bool:
        try:
            socket.create_connection(('127.0.0.1', self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self) -> None:
        self.clamd = subprocess.Popen([self.clamd_binary, '-c', self._path('clamd.conf')],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait('clamd', self.clamd, self._clamd_answers, self._path('clamd.log'))
        self.milter = subprocess.Popen([self.milter_binary, '-c',
                                        self._path('clamav-milter.conf')],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait('clamav-milter', self.milter, self._milter_listens,
              self._path('clamav-milter.log'))

    def stop(self) -> None:
        _stop(self.milter)
        _stop(self.clamd)
