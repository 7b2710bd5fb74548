"""Testing code that sends mail, with the `smtp_server` pytest fixture.

The fixture comes with smtp_stack (a pytest plugin, entry point `pytest11`):
once smtp_stack is installed, any test may ask for `smtp_server`, a running
`smtp_stack.testing.MailSink` on 127.0.0.1 and a free port. It accepts any
login and offers STARTTLS with a certificate signed by a CA made at run
time, whose file is `smtp_server.ca_file`: code that logs in and verifies
certificates runs unchanged.

    pytest examples/test_fixture_example.py
"""
import smtplib
import ssl
from email.message import EmailMessage

import pytest


# -- the code under test: it only knows a host and a port ---------------------------

def send_password_reset(host, port, to, link):
    msg = EmailMessage()
    msg['From'] = 'no-reply@shop.example'
    msg['To'] = to
    msg['Subject'] = 'Reset your password'
    msg.set_content(f'Open this link to choose a new password:\n{link}\n')
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(msg)


def send_invoice(host, port, to, user, password, cafile=None, implicit_tls=False):
    """Mail sent as it should be: logged in, over TLS, the certificate checked
    (against the system's trust unless `cafile` names the CAs to trust)."""
    msg = EmailMessage()
    msg['From'] = user
    msg['To'] = to
    msg['Subject'] = 'Your invoice'
    msg.set_content('Please find your invoice attached.\n')
    context = ssl.create_default_context(cafile=cafile)
    if implicit_tls:
        smtp = smtplib.SMTP_SSL(host, port, timeout=10, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=10)
        smtp.starttls(context=context)
    with smtp:
        smtp.login(user, password)
        smtp.send_message(msg)


# -- the tests ---------------------------------------------------------------------------

def test_reset_mail_goes_to_the_user(smtp_server):
    host, port = smtp_server.address
    send_password_reset(host, port, 'ann@example.com', 'https://shop.example/r/abc123')

    [message] = smtp_server.wait_for(1)             # bounded wait, no sleep
    assert message['Subject'] == 'Reset your password'
    assert [r.address for r in message.envelope.rcpt_to] == ['ann@example.com']
    assert message.envelope.mail_from.address == 'no-reply@shop.example'
    assert 'https://shop.example/r/abc123' in message.get_content()


def test_each_test_gets_an_empty_sink(smtp_server):
    assert smtp_server.messages == []


def test_several_messages_and_clear(smtp_server):
    host, port = smtp_server.address
    for user in ('a@example.com', 'b@example.com'):
        send_password_reset(host, port, user, 'https://shop.example/r/x')
    assert [m['To'] for m in smtp_server.wait_for(2)] == ['a@example.com', 'b@example.com']
    smtp_server.clear()
    assert smtp_server.messages == []


def test_invoice_over_verified_starttls_with_login(smtp_server, monkeypatch):
    # The code trusts the system's CAs; the test adds the sink's CA to them.
    monkeypatch.setenv('SSL_CERT_FILE', smtp_server.ca_file)
    host, port = smtp_server.address
    send_invoice(host, port, 'ann@example.com', 'billing@shop.example', 'app-password')

    [message] = smtp_server.wait_for(1)
    assert message.session.user == 'billing@shop.example'   # any login is accepted, and recorded
    assert message.session.secure


@pytest.mark.smtp_server(tls='implicit', users={'billing@shop.example': 'app-password'})
def test_invoice_over_implicit_tls_with_a_known_user(smtp_server):
    host, port = smtp_server.address
    with pytest.raises(smtplib.SMTPAuthenticationError):
        send_invoice(host, port, 'ann@example.com', 'billing@shop.example', 'a wrong one',
                     cafile=smtp_server.ca_file, implicit_tls=True)
    send_invoice(host, port, 'ann@example.com', 'billing@shop.example', 'app-password',
                 cafile=smtp_server.ca_file, implicit_tls=True)

    [message] = smtp_server.wait_for(1)
    assert message['Subject'] == 'Your invoice' and message.session.secure
