"""CallableDelivery hands the function a file of the whole body, spooled in
memory up to `spool_memory` bytes and in a temporary file beyond, and
calls it off the hub (in the hub's thread pool) unless `threaded=False`."""
from __future__ import annotations

import smtplib
import threading

import pytest

from smtp_stack.delivery import CallableDelivery

from conftest import WAIT

LINE = b'0123456789abcdefghijklmnopqrstuvwxyz' * 2 + b'\r\n'     # 74 octets


def message(lines: int) -> bytes:
    return b'From: a@b.example\r\nSubject: spooled\r\n\r\n' + LINE * lines


@pytest.mark.parametrize('lines, spool_memory', [(10, 1 << 20), (4000, 4096)],
                         ids=['in memory', 'past spool_memory'])
@pytest.mark.parametrize('threaded', [True, False])
def test_the_function_reads_the_whole_body_from_its_start(serve, lines, spool_memory, threaded):
    seen = []

    def deliver(session, envelope, body):
        first = body.read()
        body.seek(0)
        seen.append((first, body.read(), threading.get_ident(), envelope.rcpt_to[0].address))

    session_threads = []

    def note_thread(ctx, next):
        session_threads.append(threading.get_ident())
        next()

    server = serve(middleware=[note_thread, CallableDelivery(deliver, threaded=threaded,
                                                             spool_memory=spool_memory)])
    sent = message(lines)
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        assert c.sendmail('a@b.example', ['c@d.example'], sent) == {}
    [(first, again, thread, rcpt)] = seen
    assert first == again and rcpt == 'c@d.example'
    assert first.startswith(b'Received: ') and first.endswith(sent)
    assert len(first) > (spool_memory if lines > 10 else 0)
    assert (thread != session_threads[-1]) is threaded      # off the hub, in a worker thread


def test_a_function_that_raises_gets_451_and_the_next_message_goes_through(serve):
    calls = []

    def deliver(session, envelope, body):
        calls.append(len(body.read()))
        if len(calls) == 1:
            raise RuntimeError('the queue is down')

    server = serve(middleware=[CallableDelivery(deliver, spool_memory=4096)])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail('a@b.example', ['c@d.example'], message(4000))
        assert refused.value.smtp_code == 451
        assert c.sendmail('a@b.example', ['c@d.example'], message(4000)) == {}
    assert len(calls) == 2 and calls[0] == calls[1] > 4000 * len(LINE)
