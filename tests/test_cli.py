"""The `smtp-stack` command, run as a subprocess: serve, signals, reload, tools."""
import mailbox
import os
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import sys
import textwrap
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smtp_stack.testing import MailSink
from smtp_stack.users import hash_password, verify_password

from clirunner import ROOT, Process, Serve, run, smtp_stack
from conftest import WAIT, RawClient, readable

BODY = b'From: a@b.example\r\nSubject: cli\r\n\r\nhello\r\n'


@pytest.fixture
def running():
    """running(cwd, *args) -> a started `serve` process, killed after the test."""
    procs = []

    def start(cwd, *args):
        proc = Serve(cwd, *args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


def write_config(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def messages(box):
    return list(mailbox.Maildir(str(box), create=False))


def litter(box):
    return os.listdir(box / 'tmp')


# -- serve -------------------------------------------------------------------------

def test_serve_with_no_config_takes_mail_over_starttls_into_maildir(running, tmp_path):
    proc = running(tmp_path, '--port', '0')
    assert proc.address[0] == '127.0.0.1'
    assert '(SMTP+STARTTLS)' in proc.line
    assert f'mail goes to maildir {tmp_path / "maildir"}' in proc.line
    with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
        c.starttls(context=unverified())
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [msg] = messages(tmp_path / 'maildir')
    assert msg['Subject'] == 'cli' and msg['Return-Path'] == '<a@b.example>'
    assert ' with ESMTPS (TLSv1.' in ' '.join(msg['Received'].split())
    proc.signal(signal.SIGTERM)
    proc.wait_line('SIGTERM: stopping')
    proc.wait_line('stopped')
    assert proc.wait() == 0


def test_quick_start_command_exactly_as_written(tmp_path):
    """README: `smtp-stack serve` (127.0.0.1:2525, ./maildir), in the background."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server does
        try:
            probe.bind(('127.0.0.1', 2525))
        except OSError:
            pytest.skip('127.0.0.1:2525 is taken on this machine')
    script = shutil.which('smtp-stack', path=os.path.dirname(sys.executable)) or shutil.which('smtp-stack')
    args = [script, 'serve'] if script else [sys.executable, '-m', 'smtp_stack', 'serve']
    proc = Process(args, tmp_path)
    try:
        proc.wait_line(r'listening on 127\.0\.0\.1:2525 \(SMTP\+STARTTLS\)', 'stdout')
        with smtplib.SMTP('127.0.0.1', 2525, timeout=WAIT) as c:
            c.starttls(context=unverified())
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert len(messages(tmp_path / 'maildir')) == 1
        proc.signal(signal.SIGINT)          # Ctrl-C
        assert proc.wait() == 0
    finally:
        proc.close()


def serve_into_data(running, tmp_path, close_timeout, first_part: bytes):
    """A receiver delivering into tmp_path/box and a client halfway through DATA."""
    config = write_config(tmp_path / 'smtp.yaml', f'''
        name: mx.test
        disable_reverse_lookup: true
        close_timeout: {close_timeout}
        deliver: {{maildir: box}}
    ''')
    proc = running(tmp_path, '--config', config, '--port', '0')
    c = RawClient(proc.address)
    c.expect(220)
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    c.expect(354, 'DATA')
    c.send(first_part)
    return proc, c


def test_sigterm_mid_data_lets_the_client_finish(running, tmp_path):
    proc, c = serve_into_data(running, tmp_path, 20, b'Subject: halves\r\n\r\nfirst half\r\n')
    try:
        proc.signal(signal.SIGTERM)
        proc.wait_line('SIGTERM: stopping; 1 open session')
        c.send(b'second half\r\n.\r\n')
        assert c.reply()[0] == 250
        try:
            assert c.reply()[0] == 421      # then the server closes the session
        except ConnectionError:
            pass
    finally:
        c.close()
    assert proc.wait() == 0
    [msg] = messages(tmp_path / 'box')
    assert msg.get_payload() == 'first half\nsecond half\n'
    assert litter(tmp_path / 'box') == []


def test_sigterm_mid_data_with_a_stalled_client_delivers_nothing(running, tmp_path):
    proc, c = serve_into_data(running, tmp_path, 0.5,
                              b'Subject: stalled\r\n\r\nfirst half only\r\n')
    try:
        proc.signal(signal.SIGTERM)
        assert c.reply()[0] == 421      # after close_timeout: 421, the message is not taken
    finally:
        c.close()
    assert proc.wait() == 0
    assert messages(tmp_path / 'box') == [] and litter(tmp_path / 'box') == []


def test_sighup_reloads_users_and_delivery_without_dropping_sessions(running, tmp_path):
    template = '''
        name: mx.test
        disable_reverse_lookup: true
        allow_insecure_auth: true
        size: {size}
        users:
          - username: alice
            password_hash: "{hash}"
        deliver: {{maildir: {box}}}
    '''
    path = tmp_path / 'smtp.yaml'
    write_config(path, template.format(hash=hash_password('old'), box='box1', size=1000000))
    proc = running(tmp_path, '--config', str(path), '--port', '0')
    live = smtplib.SMTP(*proc.address, timeout=WAIT)
    try:
        live.login('alice', 'old')
        write_config(path, template.format(hash=hash_password('new'), box='box2', size=2000000))
        proc.signal(signal.SIGHUP)
        proc.wait_line('SIGHUP: size: changed; restart to apply')
        proc.wait_line('SIGHUP: configuration reloaded')
        assert live.noop()[0] == 250                     # the live session is still up
        live.sendmail('a@b.example', ['c@d.example'], BODY)
        with smtplib.SMTP(*proc.address, timeout=WAIT) as fresh:
            fresh.login('alice', 'new')
            fresh.sendmail('a@b.example', ['c@d.example'], BODY)
        with smtplib.SMTP(*proc.address, timeout=WAIT) as stale:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                stale.login('alice', 'old')
    finally:
        live.close()
    # The live session kept the delivery it started with; new ones use the new one.
    assert len(messages(tmp_path / 'box1')) == 1
    assert len(messages(tmp_path / 'box2')) == 1


def test_sighup_with_a_broken_config_keeps_the_old_one(running, tmp_path):
    path = tmp_path / 'smtp.yaml'
    write_config(path, 'name: mx.test\ndisable_reverse_lookup: true\ndeliver: {maildir: box}\n')
    proc = running(tmp_path, '--config', str(path), '--port', '0')
    path.write_text('size: huge\n')
    proc.signal(signal.SIGHUP)
    proc.wait_line('configuration NOT reloaded')
    proc.wait_line('size: must be a number of bytes')
    with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    assert len(messages(tmp_path / 'box')) == 1


def peer_certificate(address, name='mx.test'):
    with smtplib.SMTP(*address, timeout=WAIT) as c:
        c.ehlo()
        c.starttls(context=unverified())
        return x509.load_der_x509_certificate(c.sock.getpeercert(binary_form=True))


def test_sighup_reloads_certificates(running, tmp_path):
    first, second = tmp_path / 'first', tmp_path / 'second'
    assert smtp_stack('gencert', '--name', 'one.test', '--out', str(first), cwd=tmp_path).returncode == 0
    assert smtp_stack('gencert', '--name', 'two.test', '--out', str(second), cwd=tmp_path).returncode == 0
    tls = tmp_path / 'tls'
    shutil.copytree(first, tls)
    config = write_config(tmp_path / 'smtp.yaml', '''
        name: mx.test
        disable_reverse_lookup: true
        tls: {key: tls/key.pem, cert: tls/cert.pem}
        deliver: {maildir: box}
    ''')
    proc = running(tmp_path, '--config', config, '--port', '0')
    assert 'self-signed' not in proc.line
    assert 'one.test' in peer_certificate(proc.address).subject.rfc4514_string()
    for name in ('key.pem', 'cert.pem'):        # certificates renewed on disk
        shutil.copy(second / name, tls / name)
    proc.signal(signal.SIGHUP)
    proc.wait_line('SIGHUP: configuration reloaded')
    assert 'two.test' in peer_certificate(proc.address).subject.rfc4514_string()


def test_several_listeners_in_one_process(running, tmp_path):
    config = write_config(tmp_path / 'smtp.yaml', '''
        name: mx.test
        disable_reverse_lookup: true
        listen:
          - {host: 127.0.0.1, port: 0}
          - {host: 127.0.0.1, port: 0, secure: true}
          - {host: 127.0.0.1, port: 0, lmtp: true}
        deliver: {maildir: box}
    ''')
    proc = running(tmp_path, '--config', config)
    ports = [int(p) for p in __import__('re').findall(r'127\.0\.0\.1:(\d+)', proc.line)]
    assert len(set(ports)) == 3 and '(SMTPS)' in proc.line and '(LMTP+STARTTLS)' in proc.line
    with smtplib.SMTP('127.0.0.1', ports[0], timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    with smtplib.SMTP_SSL('127.0.0.1', ports[1], timeout=WAIT, context=unverified()) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    with smtplib.LMTP('127.0.0.1', ports[2], timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    received = [' '.join(m['Received'].split()) for m in messages(tmp_path / 'box')]
    assert sorted(r.split(' with ')[1].split()[0] for r in received) == ['ESMTP', 'ESMTPS', 'LMTP']


def test_relay_configured_from_yaml(running, tmp_path):
    with MailSink() as sink:
        config = write_config(tmp_path / 'smtp.yaml', f'''
            name: filter.test
            disable_reverse_lookup: true
            deliver:
              relay: {{host: 127.0.0.1, port: {sink.address[1]}}}
        ''')
        proc = running(tmp_path, '--config', config, '--port', '0')
        assert f'mail goes to relay to SMTP 127.0.0.1:{sink.address[1]}' in proc.line
        with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        [msg] = sink.messages
        assert 'by filter.test' in msg['Received']


def test_serve_with_a_bad_config_exits_1_and_says_why(tmp_path):
    config = write_config(tmp_path / 'smtp.yaml', 'tls: {cert: nope.pem, key: nope.key}\n')
    result = smtp_stack('serve', '--config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'smtp-stack: tls.key: {tmp_path}/nope.key: file not found',
        f'smtp-stack: tls.cert: {tmp_path}/nope.pem: file not found',
    ]


def test_port_in_use_names_the_address_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = smtp_stack('serve', '--port', str(port), cwd=tmp_path)
    assert result.returncode == 1
    # A log line now (runtime.setup_logging): '<time> ERROR smtp_stack.cli[pid]: <message>'
    [line] = result.stderr.splitlines()
    assert ' ERROR smtp_stack.cli[' in line
    assert line.split(': ', 1)[1] == f'cannot listen on 127.0.0.1:{port}: Address already in use'


def test_an_address_not_of_this_machine_is_named(tmp_path):
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface: no DNS, no race.
    result = smtp_stack('serve', '--host', '192.0.2.1', '--port', '2525', cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()     # a log line: '<time> ERROR smtp_stack.cli[pid]: ...'
    assert ' ERROR smtp_stack.cli[' in line
    assert line.split(': ', 1)[1] == ('cannot listen on 192.0.2.1:2525: '
                                      'Cannot assign requested address')


def test_a_mistyped_option_gets_the_usage_of_its_command(tmp_path):
    result = smtp_stack('serve', '--prot', '2600', cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith('usage: smtp-stack serve [-h] [--config FILE]')
    assert lines[-1] == ('smtp-stack serve: error: unrecognized arguments: --prot 2600 '
                         '(did you mean --port?)')


def test_an_unknown_argument_of_check_config_gets_its_usage(tmp_path):
    result = smtp_stack('check-config', 'a.yaml', 'b.yaml', cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == 'usage: smtp-stack check-config [-h] FILE'
    assert result.stderr.splitlines()[-1] == \
        'smtp-stack check-config: error: unrecognized arguments: b.yaml'


def test_a_top_level_list_is_one_error_not_a_maildir_complaint(tmp_path):
    config = write_config(tmp_path / 'smtp.yaml', '- name: mx.test\n- size: 10M\n')
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'the configuration must be a YAML mapping (key: value), not a list']


# -- check-config, gencert, hash-password -----------------------------------------

def test_check_config_prints_each_error_with_its_path(tmp_path):
    config = write_config(tmp_path / 'smtp.yaml', '''
        size: big
        tls:
          sni_options:
            mail.example.com: {key: k.pem, cert: c.pem}
        listen: [{port: 99999}]
    ''')
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'size: must be a number of bytes, e.g. 10485760 or 10M',
        'listen[0].port: must be an integer from 0 to 65535',
        f'tls.sni_options.mail.example.com.key: {tmp_path}/k.pem: file not found',
        f'tls.sni_options.mail.example.com.cert: {tmp_path}/c.pem: file not found',
    ]


def shipped_example_configs() -> list:
    """Every configuration the distribution ships as an example."""
    found = []
    for folder in ('docs', 'examples'):
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            found += [os.path.join(dirpath, n) for n in names
                      if n.endswith(('.yaml', '.yml')) and 'config' in n]
    return sorted(found)


def test_the_shipped_example_configs_are_found():
    assert [os.path.relpath(p, ROOT) for p in shipped_example_configs()] == [
        'docs/config.example.yaml', 'examples/config.example.yaml']


@pytest.mark.parametrize('path', shipped_example_configs(), ids=lambda p: os.path.relpath(p, ROOT))
def test_check_config_passes_a_shipped_example_as_shipped(tmp_path, path):
    result = smtp_stack('check-config', path, cwd=tmp_path)     # from elsewhere, nothing added
    assert (result.returncode, result.stderr) == (0, '')
    assert result.stdout.startswith(f'{path}: OK (listen 0.0.0.0:25, 0.0.0.0:465, 127.0.0.1:2424;')


def test_check_config_ok(tmp_path):
    config = write_config(tmp_path / 'smtp.yaml', 'name: mx.test\nlisten: {port: 2526}\n')
    result = smtp_stack('check-config', config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'{config}: OK (listen 127.0.0.1:2526; 0 user(s); mail goes to maildir ')


def test_gencert_writes_a_matching_key_and_certificate(tmp_path):
    out = tmp_path / 'certs'
    result = smtp_stack('gencert', '--name', 'mx.example.org', '--out', str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((out / 'cert.pem').read_bytes())
    key = serialization.load_pem_private_key((out / 'key.pem').read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ['mx.example.org']
    assert stat.S_IMODE(os.stat(out / 'key.pem').st_mode) == 0o600
    again = smtp_stack('gencert', '--name', 'x.test', '--out', str(out), cwd=tmp_path)
    assert again.returncode == 1 and '--force' in again.stderr
    forced = smtp_stack('gencert', '--name', 'x.test', '--out', str(out), '--force', cwd=tmp_path)
    assert forced.returncode == 0


@pytest.mark.parametrize('scheme', ['scrypt', 'pbkdf2-sha256'])
def test_hash_password_round_trip(tmp_path, scheme):
    result = smtp_stack('hash-password', '--scheme', scheme, cwd=tmp_path, input='correct horse\n')
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith(f'${scheme}$')
    assert verify_password(hashed, 'correct horse')
    assert not verify_password(hashed, 'correct horse\n')
    assert not verify_password(hashed, 'wrong')


def test_hash_password_refuses_an_empty_one(tmp_path):
    result = smtp_stack('hash-password', cwd=tmp_path, input='\n')
    assert result.returncode == 1 and 'empty password' in result.stderr


def test_no_command_prints_usage(tmp_path):
    result = smtp_stack(cwd=tmp_path)
    assert result.returncode == 2 and 'serve' in result.stderr
    assert run([sys.executable, '-m', 'smtp_stack', '--version'], tmp_path).stdout.startswith('smtp-stack ')


def test_serve_with_workers_delivers_and_stops(running, tmp_path):
    proc = running(tmp_path, '--port', '0', '--workers', '2')
    for n in range(4):
        with smtplib.SMTP(*proc.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY.replace(b'hello', b'hello %d' % n))
    assert len(messages(tmp_path / 'maildir')) == 4
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_bad_workers_count_is_a_config_error(tmp_path):
    result = smtp_stack('serve', '--workers', '0', cwd=tmp_path)
    assert result.returncode == 1 and '--workers' in result.stderr + result.stdout


def _hash_password_on_a_tty(typed: list[str]) -> tuple[int, str]:
    """Run `smtp-stack hash-password` on a pseudo-terminal, answering each
    prompt with the next of `typed`; (exit status, everything it showed)."""
    import pty
    from clirunner import env_with_package
    pid, master = pty.fork()
    if pid == 0:        # the child: the pty is its controlling terminal
        try:
            os.execve(sys.executable, [sys.executable, '-m', 'smtp_stack', 'hash-password'],
                      env_with_package())
        finally:
            os._exit(127)
    shown = b''
    answers = list(typed)
    deadline = time.monotonic() + WAIT
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f'no end within {WAIT} s; shown: {shown!r}'
            if not readable(master, remaining):
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:     # EIO: the child closed its side
                break
            if not chunk:
                break
            shown += chunk
            prompts = shown.count(b'Password:') + shown.count(b'Again:')
            while answers and len(typed) - len(answers) < prompts:     # one answer per prompt
                os.write(master, answers.pop(0).encode() + b'\n')
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors='replace')


def test_hash_password_prompts_twice_on_a_terminal_without_echo():
    status, shown = _hash_password_on_a_tty(['tty horse', 'tty horse'])
    assert status == 0, shown
    assert 'Password:' in shown and 'Again:' in shown
    assert 'tty horse' not in shown         # not echoed
    hashed = shown.strip().splitlines()[-1].strip()
    assert verify_password(hashed, 'tty horse')


def test_hash_password_on_a_terminal_refuses_two_different_answers():
    status, shown = _hash_password_on_a_tty(['one horse', 'two horses'])
    assert status == 1 and 'the passwords differ' in shown
    assert '$scrypt$' not in shown
