"""A tiny web shop that sends a welcome mail with smtplib when someone signs up.

    pip install flask
    SMTP_PORT=2525 flask --app examples/flask_app/app.py run
    # in another terminal: smtp-stack serve   (mail lands in ./maildir)
    curl -d email=ann@example.com http://127.0.0.1:5000/signup

The mail code (`send_welcome`) is plain smtplib and needs no Flask; only
`create_app()` imports Flask. The SMTP host and port come from the app's
config, which is what lets a test point them at the `smtp_server` fixture
(see test_app.py).
"""
import os
import smtplib
from email.message import EmailMessage


def send_welcome(host: str, port: int, to: str) -> None:
    msg = EmailMessage()
    msg['From'] = 'welcome@shop.example'
    msg['To'] = to
    msg['Subject'] = 'Welcome to the shop'
    msg.set_content('Thanks for signing up!\n')
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(msg)


def create_app(**config):
    from flask import Flask, request     # only the web part needs Flask

    app = Flask(__name__)
    app.config.update(SMTP_HOST=os.environ.get('SMTP_HOST', '127.0.0.1'),
                      SMTP_PORT=int(os.environ.get('SMTP_PORT', '25')))
    app.config.update(config)

    @app.post('/signup')
    def signup():
        email = request.form.get('email', '')
        if '@' not in email:
            return {'error': 'an email address is needed'}, 400
        send_welcome(app.config['SMTP_HOST'], app.config['SMTP_PORT'], email)
        return {'ok': True}, 201

    return app


if __name__ == '__main__':
    create_app().run()
