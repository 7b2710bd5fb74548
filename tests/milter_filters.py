"""What the tests of smtp_stack as the milter of a real MTA share
(test_milter_postfix.py, test_milter_sendmail.py): the middleware's
refusals and changes, chosen by the addresses, and the client's side."""
from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from smtp_stack import SmtpError

DOMAIN = 'test.example'
FORGED_AR = 'Authentication-Results: milter.test; spf=pass smtp.mailfrom=forged.example'
Found = TypeVar('Found')


def refusals(ctx) -> None:
    """A refusal per stage, before the chain goes on: unknown@ at RCPT
    (550), later@ at MAIL (451)."""
    name = ctx.command_name
    if name == 'RCPT' and ctx.address.address.startswith('unknown@'):
        raise SmtpError(550, 'No such user here (the milter says)', '5.1.1')
    if name == 'MAIL' and ctx.address.address.startswith('later@'):
        raise SmtpError(451, 'Greylisted by the milter, come back later', '4.7.1')


def change(envelope, added: Iterable[tuple[str, str]]) -> None:
    """The changes at the end of the message: the forged
    Authentication-Results (authserv-id milter.test) removed, the fields
    `added`, and change-me@ recipients become changed@."""
    envelope.remove_header('Authentication-Results',
                           lambda value: value.startswith('milter.test'))
    for name, value in added:
        envelope.add_header(name, value)
    envelope.rcpt_to = [type(a)(a.address.replace('change-me@', 'changed@'), a.args)
                        for a in envelope.rcpt_to]


def client(mta, timeout: float = 30.0) -> smtplib.SMTP:
    return smtplib.SMTP('127.0.0.1', mta.smtp_port, local_hostname='client.example',
                        timeout=timeout)


def message(subject: str, body: str = 'Hello.\r\n', headers: Iterable[str] = ()) -> bytes:
    lines = ['From: sender@example.org', f'To: rcpt@{DOMAIN}', f'Subject: {subject}',
             *headers, '', body]
    return '\r\n'.join(lines).encode()


def wait_for(find: Callable[[], Found | None], timeout: float,
             why: Callable[[], str]) -> Found:
    """What `find` finds, asked again until it finds it; TimeoutError
    with `why()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(why())
        time.sleep(0.05)        # a poll step, bounded by the deadline
