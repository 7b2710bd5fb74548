"""The shop's Flask-Mail code, unchanged, against the `smtp_server` fixture.

    pytest examples/flask_mail_app

Flask-Mail always logs in when MAIL_USERNAME and MAIL_PASSWORD are set, and
the fixture accepts any login by default, recording the user name on each
message (`message.session.user`). Flask-Mail does not check the server's
certificate (it calls `starttls()` without a context); see
test_fixture_example.py and the Django example for clients that do.
"""
import pytest

pytest.importorskip('flask_mail')

from shop_mail import create_app  # noqa: E402  (after the importorskip)


def shop(smtp_server, **config):
    host, port = smtp_server.address
    # TESTING makes Flask-Mail suppress sending unless MAIL_SUPPRESS_SEND says otherwise.
    return create_app(MAIL_SERVER=host, MAIL_PORT=port, MAIL_USERNAME='shop@shop.example',
                      MAIL_PASSWORD='app-password', TESTING=True, MAIL_SUPPRESS_SEND=False,
                      **config)


def test_the_order_mail_is_sent_after_login_over_starttls(smtp_server):
    response = shop(smtp_server).test_client().post('/orders', data={'email': 'ann@example.com'})

    assert response.status_code == 201
    [message] = smtp_server.wait_for(1)
    assert message['Subject'] == 'Your order 1042'
    assert message['From'] == 'orders@shop.example'
    assert 'is on its way' in message.get_content()
    assert message.session.user == 'shop@shop.example'      # Flask-Mail logged in
    assert message.session.secure                           # after STARTTLS


@pytest.mark.smtp_server(users={'shop@shop.example': 'the real password'})
def test_a_wrong_password_is_reported_to_the_customer(smtp_server):
    response = shop(smtp_server).test_client().post('/orders', data={'email': 'ann@example.com'})

    assert response.status_code == 503
    assert smtp_server.messages == []


@pytest.mark.smtp_server(tls='implicit')
def test_implicit_tls_on_port_465(smtp_server):
    app = shop(smtp_server, MAIL_USE_TLS=False, MAIL_USE_SSL=True)

    assert app.test_client().post('/orders', data={'email': 'bob@example.com'}).status_code == 201
    [message] = smtp_server.wait_for(1)
    assert message.session.secure and message.session.user == 'shop@shop.example'
