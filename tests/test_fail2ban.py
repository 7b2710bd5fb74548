"""contrib/fail2ban/filter.d/smtp-stack.conf, judged by the real
fail2ban-regex against the log `smtp-stack serve` wrote for real sessions:
every failed AUTH from the client's address matches, nothing else does
(an accepted login, a refusal, a user name that names another address);
in mode=aggressive the refused recipient matches too. Both log formats,
with one process and with workers."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import peers
from conftest import WAIT
from serve_log import accepted_session, failed_auth_session, finish, refused_session, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILTER = os.path.join(ROOT, 'contrib', 'fail2ban', 'filter.d', 'smtp-stack.conf')
JAIL = os.path.join(ROOT, 'contrib', 'fail2ban', 'jail.d', 'smtp-stack.conf')


def matched(log: str, filter_spec: str, out: str = 'ip') -> list[str]:
    """What fail2ban-regex reports for each line the filter matched."""
    program = peers.program('fail2ban-regex', 'fail2ban')
    result = subprocess.run([program, '-o', out, log, filter_spec], capture_output=True,
                            text=True, timeout=6 * WAIT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


# Each format and each process model once (each case runs fail2ban-regex
# three times: about 5 s).
@pytest.mark.parametrize(('log_format', 'workers'), [('text', 1), ('json', 2)])
def test_failed_logins_match_and_nothing_else(tmp_path, log_format, workers):
    peers.program('fail2ban-regex', 'fail2ban')
    proc = serve(tmp_path, log_format=log_format, workers=workers)
    try:
        for _ in range(3):
            failed_auth_session(proc.address)
        # A client choosing a user name that looks like another client.
        failed_auth_session(proc.address, user='x from unknown[192.0.2.66]: mechanism=PLAIN')
        accepted_session(proc.address)
        refused_session(proc.address)
        lines = finish(proc)
    finally:
        proc.close()
    log = tmp_path / 'smtp-stack.log'
    log.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    failed = [line for line in lines if 'auth failed from unknown[127.0.0.1]' in line]
    assert len(failed) == 4, lines
    assert any('auth ok from unknown[127.0.0.1]' in line for line in lines)
    assert any('reject: RCPT' in line for line in lines)
    if workers > 1:
        assert all(' worker=' in line or '"worker": ' in line for line in failed)

    assert matched(str(log), FILTER) == ['127.0.0.1'] * 4
    assert sorted(matched(str(log), FILTER, 'msg')) == sorted(failed)
    aggressive = matched(str(log), f'{FILTER}[mode=aggressive]', 'msg')
    assert len(aggressive) == 5
    assert [line for line in aggressive if line not in failed][0].count('reject: RCPT') == 1


def test_fail2ban_reads_the_jail_with_the_filter(tmp_path):
    """fail2ban-client -d: the configuration as the server would get it,
    from Debian's /etc/fail2ban with our filter and jail added."""
    client = peers.program('fail2ban-client', 'fail2ban')
    conf = tmp_path / 'fail2ban'
    shutil.copytree('/etc/fail2ban', conf)
    shutil.copy(FILTER, conf / 'filter.d')
    log = tmp_path / 'smtp-stack.log'
    log.write_text('')
    jail = open(JAIL, encoding='utf-8').read()
    assert 'logpath  = /var/log/smtp-stack.log' in jail
    (conf / 'jail.d' / 'smtp-stack.conf').write_text(
        jail.replace('/var/log/smtp-stack.log', str(log)))
    result = subprocess.run([client, '-c', str(conf), '-d'], capture_output=True, text=True,
                            timeout=6 * WAIT)
    assert result.returncode == 0, result.stdout + result.stderr
    dump = result.stdout
    assert "['add', 'smtp-stack', 'auto']" in dump
    assert f"['set', 'smtp-stack', 'addlogpath', '{log}', 'head']" in dump
    assert "['set', 'smtp-stack', 'maxretry', 5]" in dump
    assert 'auth failed from' in dump and "['start', 'smtp-stack']" in dump
