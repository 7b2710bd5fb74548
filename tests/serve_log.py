"""`smtp-stack serve` as a mail admin runs it, and the log it wrote: for the
tests of docs/operating.md and of the fail2ban filter.

A configuration with a user (alice, password 'right'), AUTH over plain
connections, a `recipients` policy for example.com and a Maildir; the
sessions are driven with smtplib; `finish()` stops the server with SIGTERM
and returns every line it wrote to stderr.
"""
from __future__ import annotations

import queue
import signal
import smtplib
import textwrap

from clirunner import Serve
from conftest import WAIT

from smtp_stack.users import hash_password

BODY = b'Subject: where did it go\r\n\r\nHello Bob.\r\n'
PASSWORD = 'right'


def config(tmp_path, *, log_format: str = 'text', workers: int = 1,
           deliver: str | None = None) -> str:
    """The YAML file of a server on 127.0.0.1, port chosen by the system."""
    path = tmp_path / f'smtp-{log_format}-{workers}.yaml'
    deliver = deliver or f'{{maildir: {tmp_path / "maildir"}}}'
    path.write_text(textwrap.dedent(f'''\
        name: mx.example.com
        listen: {{host: 127.0.0.1, port: 0}}
        log_format: {log_format}
        workers: {workers}
        close_timeout: 2
        disable_reverse_lookup: true
        allow_insecure_auth: true
        users: [{{username: alice, password_hash: '{hash_password(PASSWORD, 'pbkdf2-sha256')}'}}]
        policies:
          - recipients: {{domains: [example.com]}}
        deliver: {deliver}
    '''))
    return str(path)


def serve(tmp_path, *args: str, **options) -> Serve:
    return Serve(tmp_path, '--config', config(tmp_path, **options), *args)


def finish(proc: Serve) -> list[str]:
    """Stop the server gracefully; every line of its stderr, in order."""
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    lines = list(proc.seen['stderr'])
    while True:
        try:
            line = proc.stderr.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f'stderr not closed; so far: {lines}') from None
        if line is None:
            return lines
        lines.append(line)


def accepted_session(address, *, login: bool = True) -> bytes:
    """EHLO, AUTH (alice), one message for bob@example.com: the reply text."""
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example.org')
        if login:
            smtp.login('alice', PASSWORD)
        smtp.mail('alice@example.org')
        smtp.rcpt('bob@example.com')
        code, text = smtp.data(BODY)
        assert code == 250, (code, text)
        return text


def refused_session(address) -> None:
    """A recipient outside example.com: the policy refuses it."""
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example.org')
        smtp.mail('someone@example.net')
        code, _ = smtp.rcpt('victim@elsewhere.example')
        assert code == 554


def failed_auth_session(address, user: str = 'alice', password: str = 'guess') -> None:
    """One AUTH PLAIN with a wrong password."""
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.ehlo('client.example.org')
        smtp.user, smtp.password = user, password
        try:
            smtp.auth('PLAIN', smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            assert exc.smtp_code == 535
        else:
            raise AssertionError('the login was accepted')
