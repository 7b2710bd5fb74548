"""A real Mailpit API client drives the inbox: npm's `mailpit-api` (2.1.0,
pinned in tests/inbox_client/package-lock.json, installed here with
`npm ci` when missing), run by Node against the inbox over HTTP."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import peers
from clirunner import Process
from inbox_helpers import InboxThread, send

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'inbox_client')


@pytest.fixture(scope='module')
def node_client():
    node, npm = peers.program('node', 'nodejs'), peers.program('npm', 'nodejs')
    if not os.path.isdir(os.path.join(CLIENT, 'node_modules', 'mailpit-api')):
        subprocess.run([npm, 'ci', '--no-audit', '--no-fund', '--loglevel=error'], cwd=CLIENT,
                       check=True, timeout=180, capture_output=True)
    return node


def test_mailpit_api_client_lists_searches_waits_reads_deletes(tmp_path, node_client):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='Welcome Ann', sender='Shop <shop@example.com>',
             to='ann@example.com')
        send(inbox.smtp, subject='Invoice 7', sender='Shop <shop@example.com>',
             attachments=[('invoice-7.pdf', 'application/pdf', b'%PDF-1.4 ' + b'x' * 1000)])
        client = Process([node_client, 'client.mjs', inbox.url], CLIENT)
        try:
            client.wait_line('^WAITING$', 'stdout', timeout=20)
            send(inbox.smtp, subject='Late arrival', text='It arrived while the client waited.\n')
            line = client.wait_line('^RESULT ', 'stdout', timeout=20).string
            assert client.wait(20) == 0, client.seen
        finally:
            client.close()
    result = json.loads(line[len('RESULT '):])
    assert result == {
        'info': {'Messages': 2, 'Unread': 2},
        'list': ['Invoice 7', 'Welcome Ann'],
        'search': ['Welcome Ann'],
        'waited': 'Late arrival',
        'attachment': {'name': 'invoice-7.pdf', 'size': 1009},
        'read': 'ok',
        'deleted': 'ok',
    }
