"""`smtp-stack milter --config FILE` (run as `python -m smtp_stack.milter.command`,
the same command) behind a private Postfix: the example's middleware, a
50 MB message with bounded milter memory, and the milter killed mid-session."""
import email
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postfix_private import free_port, private_postfix

EXAMPLES = Path(__file__).resolve().parent.parent / 'examples'
DOMAIN = 'test.example'
BIG = 50 * 1024 * 1024


class MilterProcess:
    """The command in a process of its own, stopped by its PID."""

    def __init__(self, config, listen):
        self.args = [sys.executable, '-m', 'smtp_stack.milter.command', '--config', str(config),
                     '--listen', listen]
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()      # the start-up line, once it listens
        assert 'milter listening on' in line, line + self.process.stderr.read()
        return self

    def peak_memory_kib(self):
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith('VmHWM:')))

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.close()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.close()

    def close(self):
        if self.process is not None:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture(scope='module')
def setup():
    listen = f'inet:127.0.0.1:{free_port()}'
    milter = MilterProcess(EXAMPLES / 'milter.yaml', listen).start()
    try:
        with private_postfix(listen) as postfix:
            yield milter, postfix
    finally:
        milter.stop()


def send(postfix, recipients, data):
    with smtplib.SMTP('127.0.0.1', postfix.smtp_port, local_hostname='client.example',
                      timeout=60) as smtp:
        return smtp.sendmail('sender@example.org', recipients, data)


def test_the_example_behind_postfix(setup):
    milter, postfix = setup
    with smtplib.SMTP('127.0.0.1', postfix.smtp_port, timeout=30) as smtp:
        smtp.ehlo('client.example')
        smtp.mail('sender@example.org')
        assert smtp.rcpt('someone@blocked.example') == (
            550, b'5.1.1 Mail for blocked.example is not accepted here')
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(postfix, [f'r@{DOMAIN}'], b'Subject: offer\r\n\r\nplease buy now\r\n')
    assert refused.value.smtp_code == 554
    send(postfix, [f'r@{DOMAIN}'],
         b'Subject: fine\r\nAuthentication-Results: mx.example.com; dkim=pass\r\n\r\nhello\r\n')
    stored = email.message_from_bytes(postfix.wait_for_messages(1)[-1])
    assert stored['X-Content-Filter'] == 'checked 6 bytes; user=anonymous' or \
        stored['X-Content-Filter'].startswith('checked ')
    assert stored['Authentication-Results'] is None


def test_a_50_mb_message_streams_with_bounded_milter_memory(setup):
    milter, postfix = setup
    before = milter.peak_memory_kib()
    line = b'x' * 998 + b'\r\n'
    body = b'Subject: big\r\n\r\n' + line * (BIG // len(line) + 1)
    started = time.monotonic()
    send(postfix, [f'big@{DOMAIN}'], body)
    found = postfix.wait_for_messages(2, timeout=120)
    elapsed = time.monotonic() - started
    after = milter.peak_memory_kib()
    big = email.message_from_bytes(next(raw for raw in found if b'Subject: big' in raw))
    checked = int(big['X-Content-Filter'].split()[1])      # 'checked N bytes; user=...'
    assert checked >= len(body)     # every byte went through the middleware
    # The body streamed through 64 KiB chunks: the milter's peak grew by
    # far less than the message (the reader's buffer and one chunk in flight).
    assert after - before < 16 * 1024, (before, after)
    print(f'50 MB through Postfix and the milter in {elapsed:.1f} s; milter peak RSS '
          f'{before} -> {after} KiB')


def test_the_milter_killed_mid_session_then_restarted(setup):
    milter, postfix = setup
    smtp = smtplib.SMTP('127.0.0.1', postfix.smtp_port, timeout=30)
    try:
        smtp.ehlo('client.example')
        assert smtp.mail('sender@example.org')[0] == 250
        assert smtp.rcpt(f'r@{DOMAIN}')[0] == 250
        milter.kill()
        with pytest.raises(smtplib.SMTPDataError) as failed:
            smtp.data(b'Subject: lost\r\n\r\nhello\r\n')
        # milter_default_action = tempfail, at the next event Postfix sends
        assert failed.value.smtp_code == 451
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPException:
            pass
        smtp.close()
    postfix.wait_for_log('milter inet:127.0.0.1:')     # Postfix's warning
    milter.start()          # the same address, at once: nothing was left behind
    try:
        send(postfix, [f'r@{DOMAIN}'], b'Subject: after restart\r\n\r\nhello\r\n')
    except smtplib.SMTPException as exc:
        raise AssertionError(postfix.log()[-3000:]) from exc
    deadline = time.monotonic() + 20
    while not any(b'Subject: after restart' in raw for raw in postfix.messages()):
        assert time.monotonic() < deadline, postfix.log()[-2000:]
        time.sleep(0.05)


def test_bad_configuration_exits_1_with_every_problem(tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('milter:\n  listen: tcp:1\n  middlewar: x\n  size: huge\n')
    done = subprocess.run([sys.executable, '-m', 'smtp_stack.milter.command', '--config',
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert 'milter.listen' in done.stderr and "did you mean 'middleware'" in done.stderr
    assert 'milter.size' in done.stderr


def test_sigterm_stops_it_and_removes_its_unix_socket(tmp_path):
    (tmp_path / 'm.yaml').write_text('milter:\n  middleware: [milter_filter:content_filter]\n')
    os.symlink(EXAMPLES / 'milter_filter.py', tmp_path / 'milter_filter.py')
    path = tmp_path / 'milter.sock'
    milter = MilterProcess(tmp_path / 'm.yaml', f'unix:{path}').start()
    assert path.exists()
    milter.process.send_signal(signal.SIGTERM)
    assert milter.process.wait(15) == 0
    milter.close()
    assert not path.exists()


def test_the_example_as_an_smtp_server_of_its_own(tmp_path):
    """The same middleware, no MTA: MaildirDelivery applies its header changes."""
    process = subprocess.Popen([sys.executable, str(EXAMPLES / 'milter_filter.py'), 'server',
                                '--port', '0', '--maildir', str(tmp_path / 'mail')],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert 'SMTP server listening on' in line, line + process.stderr.read()
        port = int(line.rsplit(':', 1)[1])
        with smtplib.SMTP('127.0.0.1', port, timeout=30) as smtp:
            smtp.ehlo('client.example')
            smtp.mail('sender@example.org')
            assert smtp.rcpt('x@blocked.example')[0] == 550
            assert smtp.rcpt('r@example.org')[0] == 250
            smtp.data(b'Subject: direct\r\nAuthentication-Results: mx.example.com; '
                      b'spf=pass\r\n\r\nhello\r\n')
        stored = [path.read_bytes() for path in (tmp_path / 'mail').rglob('*')
                  if path.is_file() and path.parent.name == 'new']
        assert len(stored) == 1
        parsed = email.message_from_bytes(stored[0])
        assert parsed['X-Content-Filter'].startswith('checked ')
        assert parsed['Authentication-Results'] is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        process.stdout.close()
        process.stderr.close()


def test_workers_share_the_address_behind_postfix(tmp_path):
    """workers: 2 — a master that binds and two forked workers that serve;
    SIGTERM to the master stops them all."""
    (tmp_path / 'm.yaml').write_text('milter:\n  workers: 2\n'
                                     '  middleware: [milter_filter:content_filter]\n')
    os.symlink(EXAMPLES / 'milter_filter.py', tmp_path / 'milter_filter.py')
    listen = f'inet:127.0.0.1:{free_port()}'
    milter = MilterProcess(tmp_path / 'm.yaml', listen).start()
    try:
        def workers():
            children = Path(f'/proc/{milter.process.pid}/task/{milter.process.pid}/children')
            return children.read_text().split()

        deadline = time.monotonic() + 20
        while len(workers()) < 2:
            assert time.monotonic() < deadline, workers()
            time.sleep(0.05)
        pids = workers()
        with private_postfix(listen) as postfix:
            for i in range(6):
                send(postfix, [f'r{i}@{DOMAIN}'], b'Subject: w%d\r\n\r\nhello\r\n' % i)
            found = postfix.wait_for_messages(6)
        assert all(b'X-Content-Filter: checked' in raw for raw in found)
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(30) == 0
        for pid in pids:
            assert not Path(f'/proc/{pid}').exists() or \
                Path(f'/proc/{pid}/stat').read_text().split()[2] == 'Z'
    finally:
        milter.stop()
