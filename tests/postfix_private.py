"""The milter tests' peers: a private Postfix (`private_postfix`), a
MilterServer serving in a thread of its own (`milter_thread`), and a
packet-level MTA for what Postfix never sends (`MtaClient`).

The private Postfix has its own configuration, queue and data
directories, smtpd on a free 127.0.0.1 port, every accepted message
delivered into one Maildir, and its log in a file the test reads.

The system's Postfix (/etc/postfix, its service) is never touched: this
instance runs `postfix -c DIR start-fg` as a child process and is stopped
by its PID. Its directory is made under /tmp with mode 0755 rather than in
pytest's tmp_path, whose parents are 0700: Postfix's daemons drop to the
`postfix` user and must reach their queue directory.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import peers
from peers import running

from smtp_stack.milter import MilterServer
from smtp_stack.milter import protocol as P

STARTUP_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 20.0

MASTER_CF = """\
{smtpd_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


def _end(pid: int, signum: int, timeout: float) -> None:
    """Send `signum` to `pid` and wait until it has gone, up to `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


class PrivatePostfix:
    """One instance: `start()`, `stop()`, `smtp_port`, `maildir` (the
    Maildir every recipient's mail goes to), `log()` (its maillog text),
    `wait_for_messages(n)`, `wait_for_log(text)`."""

    domain = 'test.example'

    def __init__(self, milter: str, **settings: str) -> None:
        self.postfix = peers.program('postfix', 'postfix', fallback='/usr/sbin/postfix')
        self.root = Path(tempfile.mkdtemp(prefix='smtp-stack-postfix-', dir='/tmp'))
        os.chmod(self.root, 0o755)
        self.config = self.root / 'etc'
        self.queue = self.root / 'queue'
        self.data = self.root / 'data'
        self.mail = self.root / 'mail'
        for path in (self.config, self.queue, self.data, self.mail):
            path.mkdir(mode=0o755)
        postfix_user = pwd.getpwnam('postfix')
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        nobody = pwd.getpwnam('nobody')
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        self.maillog = self.root / 'maillog'
        self.smtp_port = free_port()
        self.maildir = self.mail / 'box'
        main = {
            'compatibility_level': '3.6',
            'queue_directory': str(self.queue),
            'data_directory': str(self.data),
            'command_directory': '/usr/sbin',
            'daemon_directory': '/usr/lib/postfix/sbin',
            'meta_directory': '/etc/postfix',
            'shlib_directory': '/usr/lib/postfix',
            'mail_owner': 'postfix',
            'setgid_group': 'postdrop',
            'myhostname': 'mx.' + self.domain,
            'mydomain': self.domain,
            'mydestination': '',
            'inet_interfaces': '127.0.0.1',
            'inet_protocols': 'ipv4',
            'mynetworks': '127.0.0.0/8',
            'alias_maps': '',
            'alias_database': '',
            'smtpd_relay_restrictions': 'permit_mynetworks, reject_unauth_destination',
            'virtual_mailbox_domains': self.domain,
            'virtual_mailbox_base': str(self.mail),
            'virtual_mailbox_maps': 'static:box/',
            'virtual_uid_maps': f'static:{nobody.pw_uid}',
            'virtual_gid_maps': f'static:{nobody.pw_gid}',
            'virtual_minimum_uid': '1',
            'virtual_mailbox_limit': '0',
            'message_size_limit': str(200 * 1024 * 1024),
            'maillog_file': str(self.maillog),
            'maillog_file_prefixes': str(self.root),
            'smtpd_milters': milter,
            'milter_default_action': 'tempfail',
            'milter_protocol': '6',
            'smtpd_banner': '$myhostname ESMTP',
            'biff': 'no',
            'smtputf8_enable': 'no',
            'default_process_limit': '100',
            'smtpd_client_connection_count_limit': '0',
            'smtpd_client_connection_rate_limit': '0',
            'anvil_rate_time_unit': '60s',
            'smtpd_error_sleep_time': '0',
            'smtpd_soft_error_limit': '100',
            'smtpd_hard_error_limit': '200',
            'queue_run_delay': '1s',
            'minimal_backoff_time': '1s',
            'maximal_backoff_time': '2s',
        }
        main.update(settings)
        (self.config / 'main.cf').write_text(
            ''.join(f'{key} = {value}\n' for key, value in main.items()))
        listen = f'127.0.0.1:{self.smtp_port}'
        (self.config / 'master.cf').write_text(
            MASTER_CF.replace('{smtpd_listen}', listen).replace('1000?', '1000'))
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> PrivatePostfix:
        check = subprocess.run([self.postfix, '-c', str(self.config), 'check'],
                               capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f'postfix check failed: {check.stdout}{check.stderr}')
        self.process = subprocess.Popen(
            [self.postfix, '-c', str(self.config), 'start-fg'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError('postfix exited: '
                                   + (self.process.stderr.read() or b'').decode(errors='replace')
                                   if self.process.stderr else '')
            with contextlib.suppress(OSError), socket.create_connection(
                    ('127.0.0.1', self.smtp_port), timeout=1) as sock:
                sock.settimeout(5)
                if sock.recv(100).startswith(b'220'):
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f'postfix did not listen on {self.smtp_port} within '
                           f'{STARTUP_TIMEOUT} s')

    def master_pid(self) -> int | None:
        """The master's pid, from queue/pid/master.pid (None before it wrote it)."""
        try:
            return int((self.queue / 'pid' / 'master.pid').read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the master by its pid. `start-fg` keeps it in the foreground
        of the `postfix` command, but the master makes a session of its own
        (setsid): a signal to the command's process group misses it and
        leaves it running. SIGTERM to the master ends it and its children;
        the command then exits."""
        process, self.process = self.process, None
        if process is None:
            return
        master = self.master_pid()
        if master is not None:
            _end(master, signal.SIGTERM, timeout=20)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if master is not None and running(master):
            _end(master, signal.SIGKILL, timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def reconfigure(self, **settings: str) -> None:
        """Change main.cf settings and have the master read them again."""
        postconf = shutil.which('postconf') or '/usr/sbin/postconf'
        subprocess.run([postconf, '-c', str(self.config), '-e',
                        *(f'{key}={value}' for key, value in settings.items())],
                       check=True, timeout=30)
        subprocess.run([self.postfix, '-c', str(self.config), 'reload'],
                       check=True, capture_output=True, timeout=30)

    # -- what it did ---------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.maillog.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def messages(self) -> list[bytes]:
        found = []
        for sub in ('new', 'cur'):
            folder = self.maildir / sub
            if folder.is_dir():
                found.extend(sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns))
        return [path.read_bytes() for path in found]

    def wait_for_messages(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f'{len(found)} of {count} messages delivered in {timeout} s;'
                                   f' the log:\n{self.log()[-3000:]}')
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = DELIVERY_TIMEOUT) -> str:
        """The first log line holding `text`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f'no log line with {text!r} in {timeout} s:\n'
                                   f'{self.log()[-3000:]}')
            time.sleep(0.05)


@contextlib.contextmanager
def private_postfix(milter: str, **settings: str) -> Iterator[PrivatePostfix]:
    instance = PrivatePostfix(milter, **settings)
    try:
        yield instance.start()
    finally:
        instance.remove()


# -- a MilterServer in a thread ---------------------------------------------------

@contextlib.contextmanager
def milter_thread(server: MilterServer, listen: str = 'inet:127.0.0.1:0'
                  ) -> Iterator[MilterServer]:
    """Serve `server` on `listen` in a thread with its own hub; stopped
    (and the hub destroyed) on exit."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.start(listen)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            server.serve_forever()
        finally:
            gevent.get_hub().destroy(destroy_loop=True)

    thread = threading.Thread(target=run, name='milter', daemon=True)
    thread.start()
    if not ready.wait(10):
        raise TimeoutError('the MilterServer did not start in 10 s')
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        server.stop(timeout=2.0)
        thread.join(10)


def milter_address(server: MilterServer) -> str:
    """'inet:127.0.0.1:PORT' (or 'unix:PATH') of a started server."""
    address = server.address
    if isinstance(address, str):
        return f'unix:{address}'
    assert address is not None
    return f'inet:{address[0]}:{address[1]}'


# -- an MTA speaking packets ------------------------------------------------------

class MtaClient:
    """The MTA side of a milter connection, packet by packet: `send`
    commands, `reply()` reads one packet (None when the milter closed)."""

    def __init__(self, server: MilterServer, timeout: float = 10.0) -> None:
        address = server.address
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            assert address is not None
            self.sock = socket.create_connection(address, timeout=timeout)
        self.reader = P.PacketReader()

    def send(self, *packets: bytes) -> None:
        self.sock.sendall(b''.join(packets))

    def reply(self) -> P.Packet | None:
        while True:
            packet = self.reader.next_packet()
            if packet is not None:
                return packet
            data = self.sock.recv(65536)
            if not data:
                return None
            self.reader.feed(data)

    def negotiate(self, version: int = 6, actions: int = 0x1FF,
                  protocol: int = 0x1FFFFF) -> P.Packet:
        self.send(P.command(P.OPTNEG, version, actions, protocol))
        answer = self.reply()
        assert answer is not None and answer.command == P.OPTNEG
        return answer

    def closed(self) -> bool:
        """True once the milter closed the connection (reads to its end)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
