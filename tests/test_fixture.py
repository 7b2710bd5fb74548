"""The `smtp_server` fixture, used from a test; MailSink under gevent monkey-patching."""
import smtplib
import sys
import textwrap

from smtp_stack.pytest_plugin import smtp_server  # noqa: F401  (what the pytest11 entry point provides)

from clirunner import run
from conftest import WAIT


def test_the_fixture_is_a_running_sink(smtp_server):  # noqa: F811
    assert smtp_server.address[0] == '127.0.0.1' and smtp_server.messages == []
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example', 'e@f.example'], b'Subject: fixture\r\n\r\nx\r\n')
    [message] = smtp_server.wait_for(1)
    assert message['Subject'] == 'fixture'
    assert [r.address for r in message.envelope.rcpt_to] == ['c@d.example', 'e@f.example']


def test_mailsink_in_a_process_monkey_patched_by_gevent(tmp_path):
    script = textwrap.dedent('''
        from gevent import monkey
        monkey.patch_all()
        import smtplib, threading
        from smtp_stack.testing import MailSink
        assert monkey.is_module_patched('socket')
        with MailSink() as sink:
            with smtplib.SMTP(*sink.address, timeout=10) as c:
                c.sendmail('a@b.example', ['c@d.example'], b'Subject: patched\\r\\n\\r\\nx\\r\\n')
            [m] = sink.wait_for(1, timeout=10)
            print('got', m['Subject'])
    ''')
    result = run([sys.executable, '-c', script], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'got patched'
