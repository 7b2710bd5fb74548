"""docs/operating.md shows what `smtp-stack serve` really writes: each
block of log lines there is compared with the lines of the same sessions
run here (time, pids, session ids, ports and file names aside), and its
"where did my mail go?" recipe is run with bash on a real log, text and
JSON."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

import peers
from serve_log import accepted_session, failed_auth_session, finish, refused_session, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'operating.md')
SESSION_LOGGERS = re.compile(r' smtp_stack(?:\.delivery)?\[|"logger": "smtp_stack(?:\.delivery)?"')


def doc_blocks() -> dict[str, str]:
    """'<!-- name -->' then a fenced block: {name: its text}."""
    text = open(DOC, encoding='utf-8').read()
    return {name: body for name, body in
            re.findall(r'<!-- ([\w -]+) -->\n```\w*\n(.*?)```', text, re.DOTALL)}


def normalized(lines: list[str], root: str | None = None) -> list[str]:
    """What two runs of the same sessions share: times, pids, ports, file
    names and session ids (numbered in order of appearance) replaced."""
    ids: dict[str, str] = {}
    out = []
    for line in lines:
        if root is not None:
            line = line.replace(root, '/var')
        line = re.sub(r'\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]\d{3}(?:[+-]\d\d:\d\d)?',
                      'TIME', line)
        line = re.sub(r'(smtp_stack(?:\.\w+)*)\[\d+\]', r'\1[PID]', line)
        line = re.sub(r'"pid": \d+', '"pid": PID', line)
        line = re.sub(r'(127\.0\.0\.1\]?):\d+', r'\1:PORT', line)
        line = re.sub(r'"client_port": \d+', '"client_port": PORT', line)
        line = re.sub(r'\d+\.M\d+P\d+Q\d+R[0-9a-f]+\.[\w.-]+,S=\d+', 'FILE', line)
        line = re.sub(r'[0-9a-f]{16}', lambda m: ids.setdefault(m[0], f'ID{len(ids) + 1}'),
                      line)
        out.append(line)
    return out


def sessions(lines: list[str]) -> list[str]:
    return [line for line in lines if SESSION_LOGGERS.search(line)]


def split_by_session(lines: list[str]) -> list[list[str]]:
    """The session lines, one list per connection (connect ... disconnect)."""
    groups: list[list[str]] = []
    for line in sessions(lines):
        if ': connect from ' in line:
            groups.append([])
        groups[-1].append(line)
    return groups


@pytest.fixture(scope='module')
def logs(tmp_path_factory):
    """The text log of three sessions (accepted, refused, failed AUTH), the
    log of a relay to that server, and a JSON log of an accepted message."""
    root = tmp_path_factory.mktemp('operating')
    mail = serve(root, log_format='text', deliver=f'{{maildir: {root / "vmail"}}}')
    relay_root = root / 'relay'
    relay_root.mkdir()
    try:
        relay = serve(relay_root, log_format='text', deliver=(
            f'{{relay: {{host: 127.0.0.1, port: {mail.address[1]}}}}}'))
        try:
            accepted_session(mail.address)
            refused_session(mail.address)
            failed_auth_session(mail.address)
            accepted_session(relay.address, login=False)
        finally:
            relayed = finish(relay)
            relay.close()
    finally:
        text = finish(mail)
        mail.close()
    json_root = root / 'json'
    json_root.mkdir()
    proc = serve(json_root, log_format='json', deliver=f'{{maildir: {root / "vmail"}}}')
    try:
        accepted_session(proc.address)
    finally:
        as_json = finish(proc)
        proc.close()
    return {'root': str(root), 'text': text, 'relay': relayed, 'json': as_json}


@pytest.mark.parametrize(('block', 'index'), [('accepted session', 0), ('refused session', 1),
                                              ('failed login', 2)])
def test_the_lines_of_each_session_are_those_shown(logs, block, index):
    shown = doc_blocks()[block].splitlines()
    real = split_by_session(logs['text'])[index]
    assert normalized(shown, '/var') == normalized(real, logs['root']), '\n'.join(real)


def test_the_relay_lines_are_those_shown(logs):
    shown = doc_blocks()['relayed session'].splitlines()
    # The mail server's session comes first in its log: this one relayed to it.
    [real] = split_by_session(logs['relay'])
    upstream = split_by_session(logs['text'])[3]
    queued = re.search(r'queued as ([0-9a-f]{16}-\d+)', real[1])
    assert queued and upstream[-2].split(': ')[1] == queued[1]     # the accepted line there
    assert normalized(shown) == normalized(real), '\n'.join(real)


def test_the_json_line_is_the_one_shown(logs):
    [shown] = doc_blocks()['json accepted'].splitlines()
    [real] = [line for line in logs['json'] if '"event": "accepted"' in line]
    assert normalized([shown], '/var') == normalized([real], logs['root']), real


def test_every_json_field_is_in_the_table(logs):
    text = open(DOC, encoding='utf-8').read()
    table = set(re.findall(r'^\| `(\w+)` \|', text, re.MULTILINE))
    import json
    seen = {key for line in logs['json'] for key in json.loads(line)}
    assert seen <= table, sorted(seen - table)


@pytest.mark.parametrize('kind', ['text', 'json'])
def test_where_did_my_mail_go(logs, tmp_path, kind):
    bash = peers.program('bash', 'bash')
    recipe = doc_blocks()['where did my mail go']
    log = tmp_path / 'smtp-stack.log'
    log.write_text('\n'.join(logs[kind]) + '\n', encoding='utf-8')
    result = subprocess.run([bash, '-c', recipe], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, LOG=str(log), RCPT='bob@example.com'))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert any('to=<bob@example.com>, relay=maildir, status=sent' in line for line in out), out
    assert any('accepted: from=<alice@example.org>, size=' in line for line in out), out
    assert any('connect from unknown[127.0.0.1]' in line for line in out), out
    assert not any('victim@elsewhere.example' in line for line in out), out
