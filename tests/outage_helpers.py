"""A server in a process of its own, clients by the dozen, and what an
outage leaves behind: for the tests of dependency outages (test_outages*.py).

The server runs in a subprocess so that its stderr is only what gevent or
Python print there (a traceback of a greenlet or of a pool thread): its log
goes to a file of its own. `Served.stop()` ends it by its pid. The clients
are threads with smtplib, held at a barrier after EHLO so that every one
sends MAIL at the same moment; each message carries a token, so the
maildir tells whether an accepted message was stored exactly once.
"""
from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from clirunner import env_with_package

WAIT = 30.0         # the bound of every wait here (a session under an outage included)

SERVER = r'''
import json, logging, signal, sys
spec = json.loads(sys.argv[1])
if spec.get('patched'):
    from gevent import monkey; monkey.patch_all()
import gevent
logging.basicConfig(filename=spec['log'], level=logging.WARNING,
                    format='%(levelname)s %(name)s: %(message)s')
from smtp_stack import SmtpServer, policies
from smtp_stack.delivery import MaildirDelivery

def open_store(url, timeout):
    if url.startswith('sqlite:///'):
        from smtp_stack.state.sqlite_store import SqliteStore
        return SqliteStore(url[len('sqlite:///'):], busy_timeout=timeout)
    if url.startswith('redis://'):
        from smtp_stack.state.redis_store import RedisStore
        return RedisStore(url, timeout=timeout)
    return policies.store(url)

shared = open_store(spec['store'], spec['store_timeout']) if spec.get('store') else None
resolver = None
if spec.get('dns_port'):
    resolver = policies.Resolver(['127.0.0.1'], port=spec['dns_port'],
                                 timeout=spec['dns_timeout'])
options = dict(spec.get('options', {}))
if options.pop('shared_limits', False):
    options['store'] = shared
server = SmtpServer(name='mx.test', disable_reverse_lookup=True, use_xclient=True,
                    log_level='warn', **options)
server.use(MaildirDelivery(spec['maildir']))
for name, params in spec['policies']:
    params = dict(params)
    if name in ('greylist', 'rate_limit'):
        params['store'] = shared
    if name in ('dnsbl', 'authenticate'):
        params['resolver'] = resolver
    server.use(getattr(policies, name)(**params))
server.start(0, '127.0.0.1')
gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, 1))
print('listening', server.address[1], flush=True)
server.serve_forever()
'''


class Served:
    """The server of `spec` in a subprocess; `log()` and `stderr()` read
    what it left, `stop()` ends it (SIGTERM, then SIGKILL, by its pid)."""

    def __init__(self, spec: dict, workdir: str):
        self.workdir = workdir
        self.maildir = os.path.join(workdir, 'maildir')
        self.log_path = os.path.join(workdir, 'server.log')
        self.err_path = os.path.join(workdir, 'server.stderr')
        spec = dict(spec, maildir=self.maildir, log=self.log_path)
        self._err = open(self.err_path, 'w')
        self.proc = subprocess.Popen([sys.executable, '-c', SERVER, json.dumps(spec)],
                                     env=env_with_package(), stdout=subprocess.PIPE,
                                     stderr=self._err, text=True)
        self.port = self._port()

    def _port(self) -> int:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(WAIT)
        match = re.match(r'listening (\d+)', found[0] if found else '')
        if not match:
            self.stop()
            raise RuntimeError(f'the server did not start: {self.stderr()}')
        return int(match[1])

    @property
    def address(self) -> tuple[str, int]:
        return '127.0.0.1', self.port

    def log(self) -> list[str]:
        with open(self.log_path, encoding='utf-8', errors='replace') as f:
            return f.read().splitlines()

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        with open(self.err_path, encoding='utf-8', errors='replace') as f:
            return f.read()

    def stored(self) -> list[bytes]:
        """The messages in the maildir's new/ (the tokens are in them)."""
        new = os.path.join(self.maildir, 'new')
        out = []
        for name in sorted(os.listdir(new)) if os.path.isdir(new) else ():
            with open(os.path.join(new, name), 'rb') as f:
                out.append(f.read())
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(WAIT)
        self._err.close()


@dataclass
class Outcome:
    """One session: each step's reply code and how long it took."""
    token: str
    mail: int = 0
    mail_text: str = ''
    mail_time: float = 0.0
    rcpt: int = 0
    rcpt_text: str = ''
    rcpt_time: float = 0.0
    data: int = 0

    @property
    def accepted(self) -> bool:
        return self.data == 250

    @property
    def refusal(self) -> int:
        """The code of the first step that was not 250 (0 if none)."""
        return next((code for code in (self.mail, self.rcpt, self.data) if code != 250), 0)


def one_session(address, token: str, client_ip: str, start: threading.Barrier) -> Outcome:
    out = Outcome(token)
    client = smtplib.SMTP(*address, timeout=WAIT)
    try:
        client.ehlo('client.test')
        code, _ = client.docmd('XCLIENT', f'ADDR={client_ip} NAME=[UNAVAILABLE]')
        assert code == 220, code
        client.ehlo_resp = None
        client.ehlo('client.test')
        start.wait(WAIT)
        began = time.monotonic()
        out.mail, text = client.mail(f'sender-{token}@example.org')
        out.mail_time, out.mail_text = time.monotonic() - began, text.decode()
        if out.mail != 250:
            return out
        began = time.monotonic()
        out.rcpt, text = client.rcpt('user@example.test')
        out.rcpt_time, out.rcpt_text = time.monotonic() - began, text.decode()
        if out.rcpt != 250:
            return out
        out.data, _ = client.data(f'Subject: {token}\r\nMessage-ID: <{token}@client.test>\r\n'
                                  f'\r\nbody of {token}\r\n'.encode())
        return out
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def sessions(address, count: int, tag: str = 'm', first_ip: int = 10) -> list[Outcome]:
    """`count` sessions at once, each from its own client address
    (192.0.2.first_ip...), all sending MAIL at the same moment."""
    start = threading.Barrier(count)
    with ThreadPoolExecutor(count) as pool:
        jobs = [pool.submit(one_session, address, f'{tag}{i}-{time.time_ns()}',
                            f'192.0.2.{first_ip + i}', start) for i in range(count)]
        return [job.result(WAIT * 2) for job in jobs]


def nothing_lost(served: Served, outcomes: list[Outcome]) -> None:
    """Every message accepted is stored exactly once; every other one was
    refused with a 4xx (the client keeps it and retries)."""
    stored = served.stored()
    for out in outcomes:
        copies = sum(out.token.encode() in message for message in stored)
        if out.accepted:
            assert copies == 1, (out, copies)
        else:
            assert copies == 0 and 400 <= out.refusal < 500, out


def tracebacks(text: str) -> list[str]:
    """What gevent or Python printed of an exception."""
    return [line for line in text.splitlines()
            if 'Traceback' in line or 'failed with' in line or line.startswith('  File ')]
