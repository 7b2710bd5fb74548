"""smtp_stack as the milter of a real Postfix (a private instance,
postfix_private.py): a middleware's `envelope.quarantine(reason)` puts the
message in Postfix's hold queue with the reason in Postfix's log, and a
middleware that works longer than Postfix's milter_content_timeout still
gets its verdict through, because SMFIR_PROGRESS keeps Postfix waiting;
without it Postfix gives up and applies milter_default_action.

One Postfix for the module, calling two MilterServers in a row (its
smtpd_milters list): `paced` sends PROGRESS every half second, `quiet`
never does. The same middleware runs in both; words in the Subject say
which one is slow, and what to do."""
from __future__ import annotations

import email
import json
import re
import smtplib
import subprocess
import time

import gevent
import pytest

import peers
from postfix_private import milter_address, milter_thread, private_postfix
from smtp_stack.middleware import stages
from smtp_stack.milter import MilterServer

DOMAIN = 'test.example'
CONTENT_TIMEOUT = 2             # Postfix's milter_content_timeout, in seconds
WORK = 3.0                      # what the slow middleware takes, past that timeout
STEP = 0.05                     # one step of its work, then the hub runs others
WAIT = 20.0


def working(name: str):
    """The middleware of server `name`: holds a message whose Subject says
    'hold', works WORK seconds when it says 'slow-<name>'."""

    @stages('DATA', 'HEADER', 'BODY')      # the end of the message, and its content
    def middleware(ctx, next):
        next()
        envelope = ctx.session.envelope
        with envelope.spool().open() as body:
            subject = email.message_from_binary_file(body)['Subject'] or ''
        if 'hold' in subject:
            envelope.quarantine(f'held for review by {name}: {subject}')
        if f'slow-{name}' in subject:
            began = time.monotonic()
            steps = 0
            while time.monotonic() - began < WORK:     # bounded steps; the hub runs between
                with envelope.spool().open() as body:
                    while body.read(65536):
                        pass
                steps += 1
                gevent.sleep(STEP)
            envelope.add_header('X-Worked', f'{name} {steps} steps')

    return middleware


@pytest.fixture(scope='module')
def postfix():
    paced = MilterServer(name='paced.test', progress_interval=0.5)
    paced.use(working('paced'))
    quiet = MilterServer(name='quiet.test', progress_interval=0)     # 0: never
    quiet.use(working('quiet'))
    with milter_thread(paced) as first, milter_thread(quiet) as second, \
            private_postfix(f'{milter_address(first)}, {milter_address(second)}',
                            milter_content_timeout=f'{CONTENT_TIMEOUT}s',
                            milter_default_action='tempfail') as instance:
        yield instance


def message(subject: str) -> bytes:
    return (f'From: sender@example.org\r\nTo: rcpt@{DOMAIN}\r\nSubject: {subject}\r\n'
            f'\r\nHello.\r\n').encode()


def send(postfix, subject: str) -> tuple[int, bytes]:
    """The reply to DATA (its text holds Postfix's queue id)."""
    with smtplib.SMTP('127.0.0.1', postfix.smtp_port, local_hostname='client.example',
                      timeout=WAIT) as smtp:
        smtp.ehlo()
        assert smtp.mail('sender@example.org')[0] == 250
        assert smtp.rcpt(f'rcpt@{DOMAIN}')[0] == 250
        return smtp.data(message(subject))


def queue(postfix) -> list[dict]:
    """What `postqueue -j` says of the private instance's queues."""
    postqueue = peers.program('postqueue', 'postfix', fallback='/usr/sbin/postqueue')
    listed = subprocess.run([postqueue, '-c', str(postfix.config), '-j'], capture_output=True,
                            text=True, timeout=30, check=True)
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def queued_as(text: bytes) -> str:
    found = re.search(rb'queued as (\w+)', text)
    assert found, text
    return found.group(1).decode()


def test_a_quarantined_message_lands_in_postfix_s_hold_queue(postfix):
    code, text = send(postfix, 'please hold')
    assert code == 250
    queue_id = queued_as(text)
    line = postfix.wait_for_log(f'{queue_id}: milter-hold: END-OF-MESSAGE from')
    # Postfix logs the milter's reason since 3.10 (cleanup_milter_apply); before, its
    # own words.
    version = tuple(int(n) for n in re.search(
        r'daemon started -- version (\d+)\.(\d+)', postfix.log()).groups())
    reason = ('held for review by paced: please hold' if version >= (3, 10)
              else 'milter triggers HOLD action')
    assert f': {reason}; from=<sender@example.org> to=<rcpt@{DOMAIN}>' in line
    deadline = time.monotonic() + WAIT
    while not (held := [m for m in queue(postfix) if m['queue_id'] == queue_id]):
        assert time.monotonic() < deadline, queue(postfix)
        time.sleep(0.1)         # a poll step, bounded by the deadline
    assert held[0]['queue_name'] == 'hold'
    assert [r['address'] for r in held[0]['recipients']] == [f'rcpt@{DOMAIN}']
    assert (postfix.queue / 'hold' / queue_id).exists()
    assert not any(b'please hold' in raw for raw in postfix.messages())


def test_progress_keeps_postfix_waiting_for_a_slow_middleware(postfix):
    began = time.monotonic()
    code, text = send(postfix, 'slow-paced')
    took = time.monotonic() - began
    assert code == 250, text
    assert took >= WORK > CONTENT_TIMEOUT
    stored = next(email.message_from_bytes(raw) for raw in postfix.wait_for_messages(1)
                  if b'Subject: slow-paced' in raw)
    assert stored['X-Worked'].startswith('paced ')
    assert int(stored['X-Worked'].split()[1]) > 10       # it yielded to the hub each step


def test_without_progress_postfix_applies_its_default_action(postfix):
    began = time.monotonic()
    code, text = send(postfix, 'slow-quiet')
    took = time.monotonic() - began
    assert (code, text) == (451, b'4.7.1 Service unavailable - try again later')
    assert CONTENT_TIMEOUT <= took < WORK
    postfix.wait_for_log("can't read SMFIC_BODYEOB reply packet header: Connection timed out")
    line = postfix.wait_for_log('milter-reject: END-OF-MESSAGE from')
    assert ': 4.7.1 Service unavailable - try again later; from=<sender@example.org>' in line
    assert not any(b'slow-quiet' in raw for raw in postfix.messages())
