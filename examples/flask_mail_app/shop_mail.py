"""A web shop that mails an order confirmation with Flask-Mail, logging in
to its mail provider over STARTTLS, as production apps do.

    pip install flask flask-mail
    MAIL_SERVER=smtp.provider.example MAIL_USERNAME=shop@shop.example \\
        MAIL_PASSWORD=... flask --app examples/flask_mail_app/shop_mail.py run

The mail settings are Flask-Mail's `MAIL_*` keys, read from the environment
and overridable per app: that is all a test needs to send them to the
`smtp_server` fixture (see test_shop_mail.py).
"""
import os
import smtplib

from flask import Flask, request
from flask_mail import Mail, Message


def create_app(**config):
    app = Flask(__name__)
    app.config.update(
        MAIL_SERVER=os.environ.get('MAIL_SERVER', 'localhost'),
        MAIL_PORT=int(os.environ.get('MAIL_PORT', '587')),
        MAIL_USE_TLS=os.environ.get('MAIL_USE_TLS', 'true') == 'true',
        MAIL_USERNAME=os.environ.get('MAIL_USERNAME'),
        MAIL_PASSWORD=os.environ.get('MAIL_PASSWORD'),
        MAIL_DEFAULT_SENDER='orders@shop.example',
    )
    app.config.update(config)
    mail = Mail(app)

    @app.post('/orders')
    def order():
        email = request.form.get('email', '')
        if '@' not in email:
            return {'error': 'an email address is needed'}, 400
        message = Message('Your order 1042', recipients=[email],
                          body='Thank you! Your order 1042 is on its way.\n')
        try:
            mail.send(message)
        except (smtplib.SMTPException, OSError) as exc:
            app.logger.warning('order mail to %s not sent: %r', email, exc)
            return {'error': 'the confirmation could not be mailed'}, 503
        return {'ok': True}, 201

    return app
