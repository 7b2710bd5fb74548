"""Paths that are not clean (`//view/ID.html`, `/api/v1/../v1/info`) are
redirected to the clean path, as Mailpit's router does: 301 for GET and
HEAD, 308 for the others so that the method and body are kept. Over real
HTTP (http.client, and `requests` following the redirects)."""
from __future__ import annotations

import pytest

import peers
from inbox_helpers import Http, InboxThread, send
from smtp_stack.inbox.app import clean_path, clean_path_redirect


@pytest.mark.parametrize('path, clean', [
    ('/', '/'), ('//', '/'), ('//view/ID.html', '/view/ID.html'),
    ('/api//v1///messages', '/api/v1/messages'), ('/api/v1/../v1/./info', '/api/v1/info'),
    ('/mailbox/ann//', '/mailbox/ann/'), ('/../..', '/'), ('/a/b/../../..//c/', '/c/'),
])
def test_clean_path_is_gos_path_clean_with_the_trailing_slash_kept(path, clean):
    assert clean_path(path) == clean


def test_the_location_is_encoded_under_the_mount_with_the_query_as_sent():
    moved = clean_path_redirect({'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '/in box',
                                 'PATH_INFO': '//view/a%b.html', 'QUERY_STRING': 'embed=1&x=%2F'})
    assert moved is not None and moved.status == 301
    assert dict(moved.headers)['Location'] == '/in%20box/view/a%25b.html?embed=1&x=%2F'
    assert clean_path_redirect({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/view/x.html'}) is None


@pytest.fixture
def inbox(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as running:
        yield running


def test_get_and_head_of_a_double_slash_path_are_moved_permanently(inbox):
    send(inbox.smtp, subject='double', html='<p>the <b>html</b></p>')
    web = Http(inbox.url)
    uid = web.json('GET', '/api/v1/messages')['messages'][0]['ID']
    for method in ('GET', 'HEAD'):
        reply = web.request(method, f'//view/{uid}.html?embed=1')
        assert (reply.status, reply.headers['location']) == (301, f'/view/{uid}.html?embed=1')
    moved = web.get('/api/v1/../v1//info')
    assert (moved.status, moved.headers['location']) == (301, '/api/v1/info')
    followed = web.get(moved.headers['location'])
    assert followed.status == 200
    assert b'<b>html</b>' in web.get(f'/view/{uid}.html').body


def test_other_methods_get_308_and_a_client_keeps_the_method_and_body(inbox):
    """`requests` turns a 301's DELETE into one without its body (every
    message deleted); after a 308 it sends the same DELETE with its body."""
    requests = peers.python_module('requests')
    for n in range(3):
        send(inbox.smtp, subject=f'keep {n}')
    web = Http(inbox.url)
    first, second, third = (m['ID'] for m in web.json('GET', '/api/v1/messages')['messages'])
    reply = web.request('DELETE', '//api/v1/messages', body={'IDs': [first]})
    assert (reply.status, reply.headers['location']) == (308, '/api/v1/messages')
    assert web.json('GET', '/api/v1/messages')['total'] == 3       # the 308 did nothing
    done = requests.delete(inbox.url.rstrip('/') + '//api/v1/messages', json={'IDs': [first]},
                           timeout=10)
    assert done.status_code == 200 and [r.status_code for r in done.history] == [308]
    left = [m['ID'] for m in web.json('GET', '/api/v1/messages')['messages']]
    assert left == [second, third]
    marked = requests.put(inbox.url.rstrip('/') + '//api/v1/messages',
                          json={'IDs': [second], 'Read': True},
                          timeout=10)
    assert marked.status_code == 200 and marked.history[0].status_code == 308
    assert [m['Read'] for m in web.json('GET', '/api/v1/messages')['messages']] == [True, False]
