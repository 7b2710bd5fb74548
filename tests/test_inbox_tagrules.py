"""Tags on arrival beyond X-Tags: Mailpit's `--tag` rules and `--tags-config`,
plus-addresses and `--tags-disable`, and `--tags-username`."""
from __future__ import annotations

import smtplib
from urllib.parse import quote

import pytest

from clirunner import smtp_stack
from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
from smtp_stack.inbox.tags import load_tag_rules, parse_tag_rules, parse_tags_disable


def test_rules_are_parsed_as_mailpit_splits_them():
    rules = parse_tag_rules('urgent,Ops=Subject:ALERT "vip=from:boss@example.com" '
                            "'two words=subject:\"big deal\"'")
    assert [(r.tags, r.query) for r in rules] == [
        (('urgent', 'Ops'), 'subject:alert'),
        (('vip',), 'from:boss@example.com'),
        (('two words',), 'subject:"big deal"')]
    assert parse_tag_rules('') == []


@pytest.mark.parametrize('text, problem', [
    ('urgent', 'error parsing tags (urgent)'),
    ('=subject:x', 'needs tags and a query'),
    ('urgent=', 'needs tags and a query'),
    ('x=' + 'y' * 2000, 'tag rule'),
])
def test_bad_rules_are_refused(text, problem):
    with pytest.raises(ValueError, match=problem.replace('(', r'\(').replace(')', r'\)')):
        parse_tag_rules(text)


def test_rules_from_a_yaml_file(tmp_path):
    path = tmp_path / 'tags.yaml'
    path.write_text('filters:\n  - match: "subject:invoice"\n    tags: "billing, money"\n')
    [rule] = load_tag_rules(str(path))
    assert rule.tags == ('billing', 'money') and rule.query == 'subject:invoice'
    path.write_text('tags: []\n')
    with pytest.raises(ValueError, match='missing filters'):
        load_tag_rules(str(path))


def test_tags_disable_takes_mailpits_names():
    assert parse_tags_disable('X-Tags, plus-addressing') == {'x-tags', 'plus-addresses'}
    assert parse_tags_disable('') == frozenset()
    with pytest.raises(ValueError, match='invalid --tags-disable option: colour'):
        parse_tags_disable('xtags,colour')


def tags_of(inbox, subject):
    query = quote(f'subject:"{subject}"')
    listing = Http(inbox.url).json('GET', f'/api/v1/search?query={query}')
    [message] = listing['messages']
    return message['Tags']


def test_rules_plus_addresses_x_tags_and_the_username_tag_new_mail(tmp_path):
    rules = parse_tag_rules('alerts,ops=subject:alert "vip=from:boss@example.com"')
    with InboxThread(tmp_path / 'inbox.db', tag_rules=rules, tags_username=True,
                     accept_any_auth=True) as inbox:
        send(inbox.smtp, subject='ALERT disk full')
        send(inbox.smtp, subject='hello', sender='Boss <boss@example.com>',
             to='ann+signup+eu@example.com')
        send(inbox.smtp, make_mail(subject='x-tagged', extra_headers={'X-Tags': 'one, two'}))
        send(inbox.smtp, subject='plain')
        with smtplib.SMTP(*inbox.smtp, timeout=WAIT) as client:
            client.login('carol', 'anything')
            client.send_message(make_mail(subject='from carol alert'))
        assert tags_of(inbox, 'ALERT disk full') == ['alerts', 'ops']
        assert tags_of(inbox, 'hello') == ['eu', 'signup', 'vip']
        assert tags_of(inbox, 'x-tagged') == ['one', 'two']
        assert tags_of(inbox, 'plain') == []
        assert tags_of(inbox, 'from carol alert') == ['alerts', 'carol', 'ops']
        # the rule tags are tags like any other: listed and searchable
        web = Http(inbox.url)
        assert web.json('GET', '/api/v1/tags') == ['alerts', 'carol', 'eu', 'one', 'ops',
                                                   'signup', 'two', 'vip']
        assert web.json('GET', '/api/v1/search?query=tag:ops')['messages_count'] == 2


def test_tags_disable_turns_off_plus_addresses_and_x_tags(tmp_path):
    with InboxThread(tmp_path / 'inbox.db', tags_disable={'x-tags', 'plus-addresses'}) as inbox:
        send(inbox.smtp, make_mail(subject='untagged', to='ann+signup@example.com',
                                   extra_headers={'X-Tags': 'one'}))
        assert tags_of(inbox, 'untagged') == []


def test_the_command_takes_the_tag_options(tmp_path):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--tag', 'no-equals-sign', cwd=tmp_path)
    assert result.returncode == 2 and 'error parsing tags (no-equals-sign)' in result.stderr
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--tags-disable', 'colour', cwd=tmp_path)
    assert result.returncode == 2 and 'invalid --tags-disable option' in result.stderr
    help_text = smtp_stack('inbox', '--help', cwd=tmp_path).stdout
    for flag in ('--tag ', '--tags-config', '--tags-disable', '--tags-username'):
        assert flag in help_text
