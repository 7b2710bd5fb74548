"""Testing the shop's mail with the `smtp_server` fixture (smtp_stack's pytest plugin).

    pytest examples/flask_app

The fixture is a real SMTP server on 127.0.0.1 and a free port; the app is
configured to send there, and the test reads what arrived. Nothing is
mocked: smtplib, the SMTP dialogue and the MIME message are the real ones.
"""
import pytest

from app import create_app, send_welcome


def test_send_welcome_needs_no_flask(smtp_server):
    send_welcome(*smtp_server.address, 'ann@example.com')
    [message] = smtp_server.wait_for(1)
    assert message['Subject'] == 'Welcome to the shop'
    assert message.get_content() == 'Thanks for signing up!\n'


def test_signup_sends_the_welcome_mail(smtp_server):
    pytest.importorskip('flask')
    host, port = smtp_server.address
    app = create_app(SMTP_HOST=host, SMTP_PORT=port, TESTING=True)

    response = app.test_client().post('/signup', data={'email': 'bob@example.com'})

    assert response.status_code == 201
    [message] = smtp_server.wait_for(1)
    assert [r.address for r in message.envelope.rcpt_to] == ['bob@example.com']
    assert message['To'] == 'bob@example.com'


def test_bad_signup_sends_nothing(smtp_server):
    pytest.importorskip('flask')
    app = create_app(SMTP_HOST=smtp_server.address[0], SMTP_PORT=smtp_server.address[1])
    assert app.test_client().post('/signup', data={'email': 'nope'}).status_code == 400
    assert smtp_server.messages == []
