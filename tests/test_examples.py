"""Every example runs, and does what its docstring says."""
import base64
import hashlib
import hmac
import importlib.util
import mailbox
import os
import signal
import smtplib
import sys

import pytest

from smtp_stack.testing import MailSink

import peers
from clirunner import LISTENING, ROOT, Process, run
from conftest import WAIT, RawClient

EXAMPLES = os.path.join(ROOT, 'examples')
BODY = b'From: a@b.example\r\nSubject: example\r\n\r\nhello\r\n'


@pytest.fixture
def example():
    """example(name, *args, cwd) -> a running example script (killed after the test)."""
    procs = []

    def start(name, *args, cwd):
        proc = Process([sys.executable, os.path.join(EXAMPLES, name), *args], cwd)
        procs.append(proc)
        match = proc.wait_line(LISTENING.pattern, 'stdout')
        proc.address = (match[1], int(match[2]))
        return proc

    yield start
    for proc in procs:
        proc.close()


def stop(proc):
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_maildir_receiver(example, tmp_path):
    proc = example('maildir_receiver.py', '--port', '0', '--maildir', 'inbox', cwd=tmp_path)
    with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [msg] = mailbox.Maildir(str(tmp_path / 'inbox'), create=False)
    assert msg['Subject'] == 'example' and msg['Received']
    stop(proc)


def test_content_filter_composes_a_spooling_check_with_maildir(example, tmp_path):
    proc = example('content_filter.py', '--port', '0', '--maildir', 'inbox', cwd=tmp_path)
    spam = b'From: a@b.example\r\nSubject: win\r\n\r\nlottery! act now! wire transfer\r\n'
    big = BODY + b'x' * 70 * 2 ** 14 + b'\r\n'      # over 1 MiB: spooled to a file
    with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail('a@b.example', ['c@d.example'], spam)
        assert refused.value.smtp_code == 550
        c.sendmail('a@b.example', ['c@d.example'], big.replace(b'x' * 70, b'x' * 68 + b'\r\n'))
    c = RawClient(proc.address)
    c.expect(220)
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<x@y.example>\r\n.\r\n')
    assert c.reply()[0] == 554          # bare LF: refused, and not stored either
    c.close()
    messages = sorted(mailbox.Maildir(str(tmp_path / 'inbox'), create=False),
                      key=lambda m: len(m.as_bytes()))
    assert [m['Subject'] for m in messages] == ['example', 'example']
    for msg in messages:
        assert msg['X-Spam-Status'].startswith('No, score=0') and msg['Received']
    assert len(messages[1].as_bytes()) > 2 ** 20
    stop(proc)


def test_relay_filter(example, tmp_path):
    with MailSink() as upstream:
        proc = example('relay_filter.py', '--port', '0', '--domain', 'd.example',
                       '--upstream', f'127.0.0.1:{upstream.address[1]}', cwd=tmp_path)
        with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
            refused = c.sendmail('a@b.example', ['c@d.example', 'x@elsewhere.example'], BODY)
            assert refused == {'x@elsewhere.example': (550, b'5.1.2 Relay access denied for elsewhere.example')}
            eicar = (b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*')
            with pytest.raises(smtplib.SMTPDataError) as err:
                c.sendmail('a@b.example', ['c@d.example'],
                           BODY + b'x' * 70000 + eicar[:20] + eicar[20:] + b'\r\n')
            assert err.value.smtp_code == 554
        [msg] = upstream.messages
        assert [r.address for r in msg.envelope.rcpt_to] == ['c@d.example']
        assert 'by filter.localhost' in msg['Received']
        stop(proc)


def test_auth_users(example, tmp_path):
    proc = example('auth_users.py', '--port', '0', '--maildir', 'sent', cwd=tmp_path)
    with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            c.sendmail('alice@example.com', ['bob@example.org'], BODY)
        assert err.value.smtp_code == 530
        # smtplib tries CRAM-MD5 first (offered), which a hash cannot check; PLAIN works.
        c.login('alice', 'wonderland')
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail('mallory@example.com', ['bob@example.org'], BODY)
        c.sendmail('alice@example.com', ['bob@example.org'], BODY)
    c = smtplib.SMTP(*proc.address, timeout=WAIT)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        c.login('alice', 'not her password')    # three mechanisms, three failures: 421
    c.close()
    # CRAM-MD5 needs the plain secret: the robot has one.
    c = RawClient(proc.address)
    try:
        c.expect(220)
        c.expect(250, 'EHLO x')
        challenge = base64.b64decode(c.expect(334, 'AUTH CRAM-MD5'))
        digest = hmac.new(b's3cret-token', challenge, hashlib.md5).hexdigest()
        c.expect(235, base64.b64encode(f'robot {digest}'.encode()).decode())
    finally:
        c.close()
    assert len(list(mailbox.Maildir(str(tmp_path / 'sent'), create=False))) == 1
    stop(proc)


def test_lmtp_server(example, tmp_path):
    proc = example('lmtp_server.py', '--port', '0', '--root', 'mail',
                   '--user', 'ann@d.example', '--user', 'bob', cwd=tmp_path)
    c = RawClient(proc.address)
    try:
        c.expect(220)
        c.expect(250, 'LHLO x')
        c.expect(250, 'MAIL FROM:<a@b.example>')
        c.expect(250, 'RCPT TO:<ann@d.example>')
        assert c.cmd('RCPT TO:<zed@d.example>')[0] == 550
        c.expect(250, 'RCPT TO:<bob@e.example>')
        c.expect(354, 'DATA')
        c.send(BODY + b'.\r\n')
        assert [c.reply()[0], c.reply()[0]] == [250, 250]      # one reply per recipient
    finally:
        c.close()
    for box in ('d.example/ann', 'e.example/bob'):
        assert len(list(mailbox.Maildir(str(tmp_path / 'mail' / box), create=False))) == 1
    stop(proc)


def run_pytest(path, tmp_path):
    """The fixture comes from the pytest11 entry point once installed, else
    from examples/conftest.py."""
    return run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', path],
               tmp_path, timeout=60)


def test_fixture_example(tmp_path):
    result = run_pytest(os.path.join(EXAMPLES, 'test_fixture_example.py'), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '5 passed' in result.stdout


def test_flask_mail_example_logs_in_with_the_real_flask_mail(tmp_path):
    peers.python_module('flask_mail')
    result = run_pytest(os.path.join(EXAMPLES, 'flask_mail_app'), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '3 passed' in result.stdout and 'skipped' not in result.stdout


def test_django_example_sends_with_the_real_smtp_backend(tmp_path):
    peers.python_module('django')
    result = run_pytest(os.path.join(EXAMPLES, 'django_app'), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '4 passed' in result.stdout and 'skipped' not in result.stdout


def test_flask_app_example(tmp_path):
    """Flask may be absent: then its two tests skip and the smtplib one still runs."""
    result = run_pytest(os.path.join(EXAMPLES, 'flask_app'), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    if importlib.util.find_spec('flask') is not None:
        assert '3 passed' in result.stdout
    else:
        assert '1 passed, 2 skipped' in result.stdout
