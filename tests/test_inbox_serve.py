"""`smtp-stack serve` with an `inbox:` section: the configured servers store
into the inbox, and its web side runs in the same process."""
from __future__ import annotations

import signal
import socket
import textwrap

import pytest

from clirunner import Serve, smtp_stack
from inbox_helpers import Http, send


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_serve_with_an_inbox_section(tmp_path):
    port = free_port()
    (tmp_path / 'smtp.yaml').write_text(textwrap.dedent(f"""\
        name: mx.test
        disable_reverse_lookup: true
        listen: [{{host: 127.0.0.1, port: 0}}]
        inbox:
          db: caught.db
          http: 127.0.0.1:{port}
          max_messages: 10
        """))
    check = smtp_stack('check-config', 'smtp.yaml', cwd=tmp_path)
    assert check.returncode == 0 and f'inbox {tmp_path / "caught.db"}' in check.stdout
    server = Serve(tmp_path, '--config', 'smtp.yaml')
    try:
        assert f'mail goes to inbox {tmp_path / "caught.db"}' in server.line
        send(server.address, subject='Caught by serve')
        web = Http(f'http://127.0.0.1:{port}/')
        message = web.json('GET', '/api/v1/message/latest')
        assert message['Subject'] == 'Caught by serve'
        raw = web.get('/api/v1/message/latest/raw').body
        assert b'by mx.test with ESMTP' in raw.split(b'\r\n\r\n')[0]
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.close()


@pytest.mark.parametrize('section, problem', [
    ('inbox: {db: x.db}\ndeliver: {maildir: md}', 'inbox: the inbox is the delivery'),
    ('inbox: {colour: blue}', 'inbox.colour: unknown key'),
    ('inbox: {http: "not a port"}', 'inbox.http:'),
    ('inbox: {max_messages: -1}',
     'inbox.max_messages: must be an integer, 0 or more (0: every message)'),
    ('inbox: {ui_auth_file: nowhere}', 'inbox.ui_auth_file: file not found'),
    ('inbox: {db: /nonexistent/dir/x.db}', 'inbox.db: /nonexistent/dir is not a directory'),
    ('inbox: [1]', 'inbox: must be a mapping'),
])
def test_bad_inbox_sections(tmp_path, section, problem):
    (tmp_path / 'bad.yaml').write_text(section + '\n')
    result = smtp_stack('check-config', 'bad.yaml', cwd=tmp_path)
    assert result.returncode == 1
    assert problem in result.stderr, result.stderr
