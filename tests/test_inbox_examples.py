"""The two mounting examples, run for real: examples/inbox_gunicorn.py under
gunicorn (a process of its own reading the file `smtp-stack inbox` writes)
and examples/inbox_flask.py, a Flask app with the inbox at /inbox/."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading


import peers
from clirunner import ROOT, Process
from inbox_helpers import Http, InboxThread, WebSocket, send

EXAMPLES = os.path.join(ROOT, 'examples')


def _gunicorn_args():
    args = [sys.executable, '-m', 'gunicorn', '-k', 'gevent', '-b', '127.0.0.1:0',
            '--workers', '1', '--access-logfile', '-']
    help_text = subprocess.run(args[:3] + ['--help'], capture_output=True, text=True,
                               timeout=30).stdout
    if '--no-control-socket' in help_text:      # gunicorn 24+: no socket in $HOME
        args.append('--no-control-socket')
    return args + ['examples.inbox_gunicorn:app']


def test_gunicorn_example_serves_what_the_smtp_side_stored(tmp_path):
    db = tmp_path / 'shared.db'
    with InboxThread(db) as receiver:          # the SMTP side, writing the file
        env_db = {'INBOX_DB': str(db)}
        os.environ.update(env_db)
        try:
            web = Process(_gunicorn_args(), ROOT)
        finally:
            del os.environ['INBOX_DB']
        try:
            match = web.wait_line(r'Listening at: http://127\.0\.0\.1:(\d+)', 'stderr', timeout=20)
            http = Http(f'http://127.0.0.1:{match[1]}/')
            send(receiver.smtp, subject='Through gunicorn')
            data = http.json('GET', '/api/v1/messages')
            assert [m['Subject'] for m in data['messages']] == ['Through gunicorn']
            assert 'Read' not in http.json('GET', '/api/v1/message/latest')     # as Mailpit's
            assert http.json('GET', '/api/v1/messages')['messages'][0]['Read'] is True
            page = http.get('/')
            assert page.status == 200 and b'static/app.js' in page.body
            events = http.get('/api/events', headers={
                'Upgrade': 'websocket', 'Connection': 'Upgrade', 'Sec-WebSocket-Version': '13',
                'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ=='})
            assert events.status == 501      # the page polls instead (see the example)
            assert http.request('DELETE', '/api/v1/messages').text == 'ok'
            assert Http(receiver.url).json('GET', '/api/v1/messages')['total'] == 0
        finally:
            web.close()


def test_flask_example_mounts_the_inbox_beside_the_app(tmp_path):
    peers.python_module('flask')
    import gevent
    from gevent.pywsgi import WSGIServer
    spec = importlib.util.spec_from_file_location('inbox_flask', os.path.join(EXAMPLES, 'inbox_flask.py'))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    db = tmp_path / 'dev.db'
    with InboxThread(db) as receiver:
        app = example.create_app(str(db), *receiver.smtp)
        ready, holder = threading.Event(), {}

        def serve():
            server = WSGIServer(('127.0.0.1', 0), app, log=None)
            server.start()
            holder.update(server=server, loop=gevent.get_hub().loop)
            ready.set()
            server.serve_forever()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert ready.wait(10)
        base = f'http://127.0.0.1:{holder["server"].server_port}/'
        try:
            http = Http(base)
            ws = WebSocket('127.0.0.1', holder['server'].server_port, path='/inbox/api/events')
            try:
                reply = http.request('POST', '/signup', raw_body=b'email=ann%40example.com',
                                     headers={'Content-Type': 'application/x-www-form-urlencoded'})
                assert reply.status == 200, reply.text
                assert ws.event('new')['Data']['Subject'] == 'Welcome to the shop'
            finally:
                ws.close()
            data = http.json('GET', '/inbox/api/v1/messages')
            [item] = data['messages']
            assert item['To'] == [{'Name': '', 'Address': 'ann@example.com'}]
            moved = http.get('/inbox')
            assert moved.status == 301 and moved.headers['location'] == '/inbox/'
            page = http.get('/inbox/')
            assert page.status == 200 and b'static/app.js' in page.body
            assert http.get('/inbox/static/app.js').status == 200
            view = http.get(f'/inbox/view/{item["ID"]}.html')
            assert b'<b>signing up</b>' in view.body
            assert http.get('/').status == 200      # the app itself
        finally:
            holder['loop'].run_callback_threadsafe(holder['server'].stop)
            thread.join(10)
