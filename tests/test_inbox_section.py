"""The inbox section as a component of `smtp-stack serve`'s servers: its web
side starts with the first server and stops with the last, and one that
cannot listen stops the start, naming its address."""
from __future__ import annotations

import smtplib
import socket
import urllib.error
import urllib.request

import pytest

from smtp_stack.config import parse
from smtp_stack.receiver import Receiver

from conftest import WAIT, wait_until
from inbox_helpers import receiver_thread
from log_lines import kept_lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=WAIT) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def receiver_for(tmp_path, web_port: int) -> Receiver:
    """Two servers (SMTP and LMTP listeners) sharing one inbox delivery."""
    config = parse({'name': 'mx.test', 'disable_reverse_lookup': True,
                    'disabled_commands': ['STARTTLS'],
                    'listen': [{'host': '127.0.0.1', 'port': 0},
                               {'host': '127.0.0.1', 'port': 0, 'lmtp': True}],
                    'inbox': {'db': 'caught.db', 'http': f'127.0.0.1:{web_port}'}},
                   str(tmp_path))
    receiver = Receiver(config)
    assert len(receiver.servers) == 2
    return receiver


def test_the_web_side_runs_from_the_first_start_to_the_last_stop(tmp_path):
    port = free_port()
    with receiver_thread(receiver_for(tmp_path, port)) as receiver:
        assert web_answers(port)
        assert f'mail goes to inbox {tmp_path / "caught.db"} (web and API on ' \
               f'http://127.0.0.1:{port}/)' in receiver.describe()
        first, second = receiver.servers
        first.stop()
        assert web_answers(port)            # the other server still runs
        second.stop()
        assert wait_until(lambda: not web_answers(port))


def test_a_web_side_that_cannot_listen_stops_the_start_and_names_its_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        receiver = receiver_for(tmp_path, port)
        with pytest.raises(OSError) as raised:
            receiver.start()
    assert raised.value.filename == f'127.0.0.1:{port}'
    # The first server's components start before it accepts: nothing listens.
    assert receiver.bound == [] and all(not server.listeners for server in receiver.servers)


@pytest.mark.parametrize('verbose', [True, False])
def test_verbose_in_the_section_logs_each_message_stored(tmp_path, verbose):
    config = parse({'name': 'mx.test', 'disable_reverse_lookup': True,
                    'disabled_commands': ['STARTTLS'], 'listen': [{'host': '127.0.0.1', 'port': 0}],
                    'inbox': {'db': 'caught.db', 'http': f'127.0.0.1:{free_port()}',
                              'verbose': verbose}},
                   str(tmp_path))
    with kept_lines('smtp_stack.inbox') as lines, receiver_thread(Receiver(config)) as receiver:
        with smtplib.SMTP(*receiver.servers[0].address, timeout=WAIT) as client:
            client.sendmail('ann@example.com', ['bob@example.com'],
                            b'Subject: from serve\r\n\r\nhi\r\n')
    stored = [line for line in lines.lines if 'stored in the inbox' in line]
    if verbose:
        assert len(stored) == 1, lines.lines
        assert 'from=<ann@example.com>, to=<bob@example.com>, size=' in stored[0], stored
        assert stored[0].endswith(', subject="from serve"'), stored
    else:
        assert stored == [], stored
