"""sa-check through SpamAssassin's spamd (`--enable-spamassassin HOST:PORT`),
in Mailpit's shape, against a private spamd the tests start on 127.0.0.1."""
from __future__ import annotations

import email.utils
import socket
from datetime import datetime, timezone

import pytest

from clirunner import smtp_stack
from inbox_helpers import Http, InboxThread, make_mail, send, spam_check
from smtp_stack.inbox.spamd import SpamdClient, parse_reply, report_rules, round_down
from spamd_private import GTUBE, TEST_DESCRIPTION, TEST_RULE, TEST_WORD, PrivateSpamd

# now: a Date hours or days old is a rule of its own (DATE_IN_PAST_*)
DATE = {'Date': email.utils.format_datetime(datetime.now(timezone.utc))}


@pytest.fixture(scope='module')
def spamd(tmp_path_factory):
    running = PrivateSpamd(tmp_path_factory.mktemp('spamd'))
    yield running
    running.stop()


@pytest.fixture
def inbox(tmp_path, spamd):
    with InboxThread(tmp_path / 'inbox.db', spamassassin=spamd.address) as running:
        yield running


def check(inbox, subject, text='Hello,\nnothing to see here.\n'):
    return spam_check(inbox, make_mail(subject=subject, text=text, extra_headers=DATE))


def test_gtube_is_spam_with_its_rule(inbox):
    result = check(inbox, 'buy now', text=f'{GTUBE}\n')
    assert list(result) == ['IsSpam', 'Error', 'Score', 'Rules']
    assert result['IsSpam'] is True and result['Error'] == ''
    assert result['Score'] > 990      # GTUBE's 1000, give or take the other rules'
    gtube = [r for r in result['Rules'] if r['Name'] == 'GTUBE']
    assert gtube == [{'Score': 1000.0, 'Name': 'GTUBE',
                      'Description': 'BODY: Generic Test for Unsolicited Bulk Email'}]


def test_a_rule_of_our_own_with_a_long_description(inbox):
    result = check(inbox, f'about {TEST_WORD} today')
    ours = [r for r in result['Rules'] if r['Name'] == TEST_RULE]
    assert ours == [{'Score': 3.3, 'Name': TEST_RULE, 'Description': TEST_DESCRIPTION}]
    assert result['IsSpam'] is (result['Score'] >= 5.0)     # Mailpit's threshold


def test_the_web_ui_is_told_spamassassin_is_on(inbox):
    assert Http(inbox.url).json('GET', '/api/v1/webui')['SpamAssassin'] is True


def test_an_unknown_message_is_404(inbox):
    web = Http(inbox.url)
    assert web.get('/api/v1/message/latest/sa-check').status == 404
    assert web.get('/api/v1/message/AAAAAAAAAAAAAAAAAAAAAA/sa-check').status == 404


def test_spamd_out_of_reach_is_an_error_in_the_answer(tmp_path):
    with socket.socket() as closed:
        closed.bind(('127.0.0.1', 0))
        port = closed.getsockname()[1]
    with InboxThread(tmp_path / 'inbox.db', spamassassin=f'127.0.0.1:{port}') as inbox:
        result = check(inbox, 'anything')
    assert result['IsSpam'] is False and result['Rules'] is None and result['Score'] == 0
    assert 'refused' in result['Error'].lower()


def test_a_silent_spamd_ends_at_the_timeout(tmp_path):
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(5)
        with InboxThread(tmp_path / 'inbox.db',
                         spamassassin=f'127.0.0.1:{silent.getsockname()[1]}') as inbox:
            inbox.inbox.app.spam_checker.timeout = 0.3
            result = check(inbox, 'anything')
    assert result['Error'] == 'no answer within 0.3 s' and result['Rules'] is None


def test_without_spamassassin_the_check_is_501(tmp_path):
    with InboxThread(tmp_path / 'inbox.db') as inbox:
        send(inbox.smtp, subject='x')
        web = Http(inbox.url)
        reply = web.get('/api/v1/message/latest/sa-check')
        assert reply.status == 501 and '--enable-spamassassin' in reply.json()['Error']
        assert web.json('GET', '/api/v1/webui')['SpamAssassin'] is False


REPORT = (b'SPAMD/1.1 0 EX_OK\r\nContent-length: 400\r\nSpam: True ; 7.25 / 5.0\r\n\r\n'
          b'Spam detection software ...\n\n'
          b'Content analysis details:   (7.3 points, 5.0 required)\n\n'
          b' pts rule name              description\n'
          b'---- ---------------------- ------------------------------------------\n'
          b'-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n'
          b' 3.5 LONG_ONE               A description that goes on and on until it\n'
          b'                            wraps onto the next line\n'
          b' 1.947 ODD                  Three decimals\n')


def test_the_report_is_parsed_as_mailpit_reads_it():
    spam, score, body = parse_reply(REPORT)
    assert spam is True and score == 7.25
    assert report_rules(body) == [
        {'Score': -0.0, 'Name': 'NO_RELAYS',
         'Description': 'Informational: message was not relayed via SMTP'},
        {'Score': 3.5, 'Name': 'LONG_ONE',
         'Description': 'A description that goes on and on until it wraps onto the next line'},
        {'Score': 1.9, 'Name': 'ODD', 'Description': 'Three decimals'}]


@pytest.mark.parametrize('text, rounded', [('2.7', 2.7), ('1.947', 1.9), ('-0.1', -0.1),
                                           ('-1.01', -1.1), ('1000', 1000.0), ('x', 0.0)])
def test_scores_are_rounded_down_to_one_decimal(text, rounded):
    assert round_down(text) == rounded


@pytest.mark.parametrize('reply, problem', [
    (b'HTTP/1.1 200 OK\r\n\r\n', 'not a spamd reply'),
    (b'SPAMD/1.1 76 Bad header line\r\n\r\n', 'spamd: 76 Bad header line'),
    (b'SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n', 'no Spam: header'),
])
def test_bad_replies(reply, problem):
    with pytest.raises(Exception, match=problem):
        parse_reply(reply)


@pytest.mark.parametrize('address', ['nonsense', 'host:', ':783', 'host:99999'])
def test_bad_addresses(address):
    with pytest.raises(ValueError):
        SpamdClient(address)


def test_the_command_checks_the_address(tmp_path):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--enable-spamassassin', 'nonsense', cwd=tmp_path)
    assert result.returncode == 2 and 'is not HOST:PORT or unix:PATH' in result.stderr
