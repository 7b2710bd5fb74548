"""How many messages one SMTP session may give the inbox: section, over a
real socket. The section's SMTP side is the file's servers, so their
`max_messages` (top level: per session; the section's own `max_messages`
is how many the inbox keeps) decides: `0` lets a test suite send every
message over one connection, as `smtp-stack inbox` and Mailpit do, and a
number stops the session at it."""
from __future__ import annotations

import smtplib

import pytest

from inbox_helpers import WAIT, Http, receiver_thread
from smtp_stack.config import parse

MAIL = b'From: a@example.com\r\nTo: b@example.com\r\nSubject: n\r\n\r\nbody\r\n'


def section_config(tmp_path, **top):
    return parse({'name': 'mx.test', 'disable_reverse_lookup': True,
                  'disabled_commands': ['STARTTLS'], **top,
                  'listen': [{'host': '127.0.0.1', 'port': 0}],
                  'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0', 'max_messages': 5000}},
                 str(tmp_path))


@pytest.mark.parametrize('top_level', [{}, {'max_messages': 0}], ids=['default', 'zero'])
def test_one_session_may_send_1001_messages(tmp_path, top_level):
    """As `smtp-stack inbox` and Mailpit: no limit unless the file sets one."""
    with receiver_thread(section_config(tmp_path, **top_level)) as receiver:
        with smtplib.SMTP(*receiver.servers[0].address[:2], timeout=WAIT) as client:
            for _ in range(1001):
                client.sendmail('a@example.com', ['b@example.com'], MAIL)
        host, port = receiver.delivery.target.http_address[:2]
        web = Http(f'http://{host}:{port}/')
        assert web.json('GET', '/api/v1/messages?limit=1')['total'] == 1001
        web.close()


def test_the_files_own_max_messages_still_limits_a_session(tmp_path):
    with receiver_thread(section_config(tmp_path, max_messages=3)) as receiver:
        with smtplib.SMTP(*receiver.servers[0].address[:2], timeout=WAIT) as client:
            for _ in range(3):
                client.sendmail('a@example.com', ['b@example.com'], MAIL)
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail('a@example.com', ['b@example.com'], MAIL)
        assert refused.value.smtp_code == 421
