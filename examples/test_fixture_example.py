"""Testing code that sends mail, with the `smtp_server` pytest fixture.

The fixture comes with smtp_stack (a pytest plugin, entry point `pytest11`):
once smtp_stack is installed, any test may ask for `smtp_server`, a running
`smtp_stack.testing.MailSink` on 127.0.0.1 and a free port.

    pytest examples/test_fixture_example.py
"""
import smtplib
from email.message import EmailMessage


# -- the code under test: it only knows a host and a port ---------------------------

def send_password_reset(host, port, to, link):
    msg = EmailMessage()
    msg['From'] = 'no-reply@shop.example'
    msg['To'] = to
    msg['Subject'] = 'Reset your password'
    msg.set_content(f'Open this link to choose a new password:\n{link}\n')
    with smtplib.SMTP(host, port, timeout=10) as smtp:
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
