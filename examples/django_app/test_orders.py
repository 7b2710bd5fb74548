"""Django's SMTP email backend, with the project's EMAIL_* settings, against
the session's sink (conftest.py): login and verified STARTTLS included."""
import smtplib
import ssl

import pytest

from orders import confirm_order


def test_the_confirmation_goes_out_logged_in_over_verified_tls(smtp_server_session):
    confirm_order('ann@example.com', 1042)

    [message] = smtp_server_session.wait_for(1)
    assert message['Subject'] == 'Your order 1042'
    assert [r.address for r in message.envelope.rcpt_to] == ['ann@example.com']
    assert message.envelope.mail_from.address == 'orders@shop.example'
    assert message.session.user == 'shop@shop.example'     # EMAIL_HOST_USER
    assert message.session.secure                          # EMAIL_USE_TLS, certificate checked


def test_each_test_starts_with_an_empty_sink(smtp_server_session):
    assert smtp_server_session.messages == []


def test_the_certificate_check_is_real(smtp_server_session, monkeypatch):
    monkeypatch.delenv('SSL_CERT_FILE')     # the system's trust only: the sink's CA is unknown

    with pytest.raises(ssl.SSLCertVerificationError):
        confirm_order('ann@example.com', 1043)
    assert smtp_server_session.messages == []


@pytest.mark.smtp_server(users={'shop@shop.example': 'the real password'})
def test_a_wrong_password_is_an_error(smtp_server):
    from django.test import override_settings

    with override_settings(EMAIL_HOST=smtp_server.address[0], EMAIL_PORT=smtp_server.address[1]):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            confirm_order('ann@example.com', 1044)
        with override_settings(EMAIL_HOST_PASSWORD='the real password'):
            confirm_order('ann@example.com', 1044)
    assert smtp_server.wait_for(1)[0]['Subject'] == 'Your order 1044'
