"""The inbox's web page and Mailpit API under gunicorn.

The SMTP side runs elsewhere and writes into the same SQLite file, e.g.
`smtp-stack inbox` (its own web side is then just a second one) or
`smtp-stack serve` with an `inbox:` section:

    smtp-stack inbox --db /tmp/dev-inbox.db &
    INBOX_DB=/tmp/dev-inbox.db gunicorn -k gevent -b 127.0.0.1:8080 examples.inbox_gunicorn:app

Use the gevent worker (`-k gevent`): the database calls then run in gevent's
thread pool while other requests go on. gunicorn does not hand a request's
socket to the application after a 101, so `/api/events` answers 501 there
and the page polls the API every two seconds instead; new mail still shows
without a reload. tests/test_inbox_examples.py runs exactly this.
"""
import os

from smtp_stack.inbox import wsgi_app

app = wsgi_app(os.environ.get('INBOX_DB', 'inbox.db'),
               max_messages=int(os.environ.get('INBOX_MAX_MESSAGES', '500')))
