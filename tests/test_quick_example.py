"""The README's quick example, run as a script and sent mail with smtplib."""
import os
import subprocess
import sys
import smtplib

from conftest import WAIT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_example_receives_mail_with_auth():
    proc = subprocess.Popen([sys.executable, '-u', os.path.join(ROOT, 'examples', 'quick_example.py'), '0'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        while line and not line.startswith('listening on '):
            line = proc.stdout.readline()
        assert line.startswith('listening on '), 'the example did not start'
        port = int(line.rsplit(':', 1)[1])
        for user_password in (('bob', 'secret'),):
            with smtplib.SMTP('127.0.0.1', port, timeout=WAIT) as smtp:
                smtp.login(*user_password)
                smtp.sendmail('bob@example.com', ['alice@example.com'],
                              b'Subject: hi\r\n\r\nhello\r\n')
        line = proc.stdout.readline()
        while line and 'received' not in line:
            line = proc.stdout.readline()
        assert line.startswith('received 22 bytes from bob@example.com')
    finally:
        proc.kill()
        proc.wait(WAIT)
