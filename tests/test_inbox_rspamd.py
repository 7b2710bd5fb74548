"""sa-check through rspamd (`--enable-rspamd URL`), in Mailpit's
SpamAssassinResponse shape, against a private rspamd the tests start on
127.0.0.1 (rspamd_private.py: its test patterns and the subject words that
give each action)."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from clirunner import smtp_stack
from inbox_helpers import WAIT, Http, InboxThread, make_mail, send, spam_check
from rspamd_private import PrivateRspamd
from smtp_stack.config import ConfigError, parse
from smtp_stack.inbox.rspamd_check import RspamdChecker, verdict

GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'


@pytest.fixture(scope='module')
def rspamd(tmp_path_factory):
    running = PrivateRspamd(tmp_path_factory.mktemp('rspamd'))
    yield running
    running.stop()


@pytest.fixture
def inbox(tmp_path, rspamd):
    with InboxThread(tmp_path / 'inbox.db', rspamd=rspamd.url) as running:
        yield running


def check(inbox, subject, text='Hello,\nnothing to see here.\n'):
    return spam_check(inbox, make_mail(subject=subject, text=text))


def test_gtube_is_spam_with_its_symbol(inbox):
    result = check(inbox, 'buy now', text=f'{GTUBE}\n')
    assert list(result) == ['IsSpam', 'Error', 'Score', 'Rules']
    assert result['IsSpam'] is True and result['Error'] == ''
    assert result['Score'] >= 15            # rspamd's reject score, at the least
    assert [r for r in result['Rules'] if r['Name'] == 'GTUBE'] == [
        {'Score': 0.0, 'Name': 'GTUBE', 'Description': ''}]     # a pre-result, no score


def test_a_clean_message_is_not_spam_and_each_symbol_has_its_description(inbox):
    result = check(inbox, 'lunch on friday?')
    assert result['IsSpam'] is False and result['Error'] == '' and result['Score'] < 6
    names = [r['Name'] for r in result['Rules']]
    assert 'MIME_GOOD' in names
    assert {'Score': -0.1, 'Name': 'MIME_GOOD', 'Description': 'Known content-type'} \
        in result['Rules']
    scores = [r['Score'] for r in result['Rules']]
    assert scores == sorted(scores, reverse=True)           # the highest score first


def test_rspamds_add_header_action_is_spam(inbox):
    """IsSpam follows rspamd's action (its thresholds), not spamd's 5.0."""
    result = check(inbox, 'rspamd-test:add-header offer')
    assert result['IsSpam'] is True and result['Score'] >= 6
    assert result['Rules'][0]['Name'] == 'SMTP_STACK_TEST_RSPAMD_TEST_ADD_HEADER'


def test_the_web_ui_is_told_a_spam_check_is_on(inbox):
    assert Http(inbox.url).json('GET', '/api/v1/webui')['SpamAssassin'] is True


def test_rspamd_out_of_reach_is_an_error_in_the_answer(tmp_path):
    with socket.socket() as closed:
        closed.bind(('127.0.0.1', 0))
        port = closed.getsockname()[1]
    with InboxThread(tmp_path / 'inbox.db', rspamd=f'http://127.0.0.1:{port}') as inbox:
        result = check(inbox, 'anything')
    assert result['IsSpam'] is False and result['Rules'] is None and result['Score'] == 0
    assert result['Error'].startswith(f'rspamd 127.0.0.1:{port}: ')
    assert 'refused' in result['Error'].lower()


def test_a_silent_rspamd_ends_at_the_timeout(tmp_path):
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(5)
        url = f'http://127.0.0.1:{silent.getsockname()[1]}'
        with InboxThread(tmp_path / 'inbox.db', rspamd=url) as inbox:
            inbox.inbox.app.spam_checker.pool.timeout = 0.3
            result = check(inbox, 'anything')
    assert result['Error'].endswith('no answer in 0.3 s') and result['Rules'] is None


def one_reply(body: bytes) -> tuple[str, threading.Thread]:
    """A stand-in for a broken rspamd on 127.0.0.1: it reads one request and
    answers 200 with `body`; its URL and thread."""
    listener = socket.create_server(('127.0.0.1', 0))

    def answer():
        with listener:
            conn, _ = listener.accept()
            with conn, conn.makefile('rb') as request:
                length = 0
                while (line := request.readline()) not in (b'\r\n', b''):
                    if line.lower().startswith(b'content-length:'):
                        length = int(line.split(b':')[1])
                request.read(length)
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                             b'Connection: close\r\nContent-Length: %d\r\n\r\n' % len(body)
                             + body)
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return f'http://127.0.0.1:{listener.getsockname()[1]}', thread


@pytest.mark.parametrize('body, error', [
    (b'[' * 200_000 + b']' * 200_000, 'not JSON'),
    (b'{"action": "no action", "score": NaN, "symbols": {}}', 'not JSON'),
    (b'{"action": "reject", "score": 1e999, "symbols": {}}', None),     # a float: 0
], ids=['deep', 'nan', 'huge'])
def test_a_broken_reply_is_an_error_in_a_json_200(tmp_path, body, error):
    """Never a 500 and never a body a browser's JSON.parse refuses (NaN)."""
    url, server = one_reply(body)
    with InboxThread(tmp_path / 'inbox.db', rspamd=url) as inbox:
        send(inbox.smtp, make_mail(subject='x'))
        web = Http(inbox.url)
        reply = web.get('/api/v1/message/latest/sa-check')
        web.close()
    server.join(WAIT)
    assert reply.status == 200, reply.text
    answer = json.loads(reply.text, parse_constant=lambda name: pytest.fail(name))
    if error:
        assert error in answer['Error'] and answer['Rules'] is None, answer
    else:
        assert (answer['Error'], answer['Score'], answer['IsSpam']) == ('', 0.0, True)


@pytest.mark.parametrize('reply, error', [
    ([], 'not an rspamd verdict'),
    ({'score': 3}, 'not an rspamd verdict'),
])
def test_replies_that_are_no_verdict(reply, error):
    result = verdict(reply)
    assert result['Error'].startswith(error) and result['Rules'] is None


def test_odd_symbols_are_read_without_failing():
    result = verdict({'action': 'no action', 'score': 1.27, 'symbols': {
        'A': {'score': 'x'}, 'B': None, 'C': {'score': 2.05, 'description': 7}}})
    assert result == {'IsSpam': False, 'Error': '', 'Score': 1.2, 'Rules': [
        {'Score': 2.0, 'Name': 'C', 'Description': ''},
        {'Score': 0.0, 'Name': 'A', 'Description': ''},
        {'Score': 0.0, 'Name': 'B', 'Description': ''}]}


@pytest.mark.parametrize('url', ['127.0.0.1:11333', 'https://127.0.0.1:11333',
                                 'http://127.0.0.1:11333/checkv2', 'http://:11333',
                                 'http://a..b:11333'])
def test_bad_urls(url):
    with pytest.raises(ValueError, match='http://HOST|not one'):
        RspamdChecker(url)


def test_the_command_checks_the_url_and_takes_one_checker(tmp_path):
    base = ['inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0']
    bad = smtp_stack(*base, '--enable-rspamd', 'ftp://x', cwd=tmp_path)
    assert bad.returncode == 2 and 'http://HOST' in bad.stderr
    both = smtp_stack(*base, '--enable-rspamd', 'http://127.0.0.1:11333',
                      '--enable-spamassassin', '127.0.0.1:783', cwd=tmp_path)
    assert both.returncode == 2 and 'choose one' in both.stderr


def test_the_section_takes_enable_rspamd_and_one_checker(tmp_path):
    def section(**keys):
        return parse({'listen': [{'host': '127.0.0.1', 'port': 0}], 'inbox': keys},
                     str(tmp_path))
    assert section(enable_rspamd='http://127.0.0.1:11333').deliver.spec['enable_rspamd'] \
        == 'http://127.0.0.1:11333'
    with pytest.raises(ConfigError, match='http://HOST'):
        section(enable_rspamd='127.0.0.1')
    with pytest.raises(ConfigError, match='enable_spamassassin and enable_rspamd: choose one'):
        section(enable_rspamd='http://127.0.0.1:11333', enable_spamassassin='127.0.0.1:783')
