"""A middleware declaring `@stages('DATA')` reads the whole message behind a
real Postfix, as DATA gives it on an SmtpServer (smtp_stack/milter/steps.py:
DATA brings HEADER and BODY); one declaring no content stage is sent none."""
import email
import hashlib
import logging
import smtplib

import pytest

from postfix_private import milter_address, milter_thread, private_postfix
from log_lines import kept_lines
from smtp_stack import LogLevels
from smtp_stack.middleware import stages
from smtp_stack.milter import MilterServer

BODY = ''.join(f'line {number} of the body\r\n' for number in range(3000))    # 72 kB
READ = []           # what the DATA middleware read, per message


@stages('DATA')
def reads_the_message(ctx, next):
    """A content check written for an SmtpServer: data_stream after next()."""
    next()
    if ctx.command_name == 'DATA':
        message = ctx.data_stream.read()
        READ.append(message)
        ctx.session.envelope.add_header('X-Body-Digest', hashlib.sha256(
            message.partition(b'\r\n\r\n')[2]).hexdigest())


@stages()
def stamps(ctx, next):
    """Decides at the end of the message alone: needs no content."""
    next()
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('X-Stamped', 'yes')


@pytest.fixture
def trace():
    with kept_lines('smtp_stack.test_milter_stages') as lines:
        yield lines


def served(*middleware):
    server = MilterServer(name='milter.test', log_level=LogLevels.TRACE,
                          log_backend=logging.getLogger('smtp_stack.test_milter_stages'))
    for fn in middleware:
        server.use(fn)
    return server


def send(postfix, subject):
    with smtplib.SMTP('127.0.0.1', postfix.smtp_port, timeout=30) as smtp:
        smtp.sendmail('sender@example.org', ['rcpt@test.example'],
                      f'From: sender@example.org\r\nSubject: {subject}\r\n\r\n{BODY}'.encode())


def mta_sent(trace, kind):
    return sum(f': MTA: {kind} ' in line for line in trace.lines)


def test_a_data_middleware_reads_the_whole_message_behind_postfix(trace):
    READ.clear()
    with milter_thread(served(reads_the_message, stamps)) as running, \
            private_postfix(milter_address(running)) as postfix:
        send(postfix, 'declared DATA')
        stored = email.message_from_bytes(postfix.wait_for_messages(1)[0])
    assert len(READ) == 1
    header, _, body = READ[0].partition(b'\r\n\r\n')
    assert b'Subject: declared DATA' in header and b'From: sender@example.org' in header
    assert body == BODY.encode()
    assert stored['X-Body-Digest'] == hashlib.sha256(BODY.encode()).hexdigest()
    assert stored['X-Stamped'] == 'yes'
    assert mta_sent(trace, 'SMFIC_HEADER') >= 2 and mta_sent(trace, 'SMFIC_BODY') >= 1


def test_a_chain_without_a_content_stage_is_sent_no_content(trace):
    with milter_thread(served(stamps)) as running, \
            private_postfix(milter_address(running)) as postfix:
        send(postfix, 'no content asked')
        stored = email.message_from_bytes(postfix.wait_for_messages(1)[0])
    assert stored['X-Stamped'] == 'yes' and stored.get_payload() == BODY.replace('\r\n', '\n')
    assert mta_sent(trace, 'SMFIC_BODYEOB') == 1
    assert not any(mta_sent(trace, kind) for kind in
                   ('SMFIC_DATA', 'SMFIC_HEADER', 'SMFIC_EOH', 'SMFIC_BODY'))
