"""A Flask app with the development inbox mounted beside it, at /inbox/.

The app sends its mail with plain smtplib to the inbox's SMTP side; the
same process serves the inbox's page and API under /inbox/ (Werkzeug's
DispatcherMiddleware), so a developer sees what the app sent next to the
app itself:

    smtp-stack inbox --db dev-inbox.db --http 127.0.0.1:0 &     # SMTP on :1025
    python examples/inbox_flask.py                              # http://127.0.0.1:5000/
    curl -d email=ann@example.com http://127.0.0.1:5000/signup
    # then open http://127.0.0.1:5000/inbox/

It is served by gevent's WSGI server, which also carries the inbox's
websocket (`/inbox/api/events`). tests/test_inbox_examples.py drives it.
"""
import os
import smtplib
from email.message import EmailMessage

from smtp_stack.inbox import wsgi_app


def create_app(inbox_db='dev-inbox.db', smtp_host='127.0.0.1', smtp_port=1025):
    from flask import Flask, request
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask(__name__)

    @app.post('/signup')
    def signup():
        msg = EmailMessage()
        msg['From'] = 'Shop <welcome@shop.example>'
        msg['To'] = request.form['email']
        msg['Subject'] = 'Welcome to the shop'
        msg.set_content('Thanks for signing up!\n')
        msg.add_alternative('<p>Thanks for <b>signing up</b>!</p>', subtype='html')
        with smtplib.SMTP(smtp_host, smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
        return {'sent': True}

    @app.get('/')
    def home():
        return '<p>The shop. Mail it sent: <a href="inbox/">inbox</a></p>'

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {'/inbox': wsgi_app(inbox_db)})
    return app


if __name__ == '__main__':
    from gevent.pywsgi import WSGIServer
    server = WSGIServer(('127.0.0.1', int(os.environ.get('PORT', '5000'))),
                        create_app(os.environ.get('INBOX_DB', 'dev-inbox.db'),
                                   smtp_port=int(os.environ.get('SMTP_PORT', '1025'))))
    print(f'http://127.0.0.1:{server.server_port or 5000}/', flush=True)
    server.serve_forever()
