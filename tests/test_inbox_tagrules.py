"""Tags on arrival beyond X-Tags: Mailpit's `--tag` rules and `--tags-config`,
plus-addresses and `--tags-disable`, and `--tags-username`."""
from __future__ import annotations

import shlex
import smtplib
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clirunner import smtp_stack
from inbox_helpers import WAIT, Http, InboxThread, make_mail, send
from smtp_stack.inbox.store import Store
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


def test_a_rule_sees_the_arrival_tags(tmp_path):
    """Rules are checked after the X-Tags and plus-address tags are given,
    so `tag:` and `is:tagged` work in a rule (docs/inbox.md)."""
    store = Store(str(tmp_path / 'r.db'))
    store.tag_rules = parse_tag_rules('vip=tag:signup marked=is:tagged')
    tagged = store.add(make_mail(subject='a', to='ann+signup@example.com').as_bytes())
    plain = store.add(make_mail(subject='b').as_bytes())
    assert (tagged['Tags'], plain['Tags']) == (['marked', 'signup', 'vip'], [])


# Texts where SQLite's folding is not Python's: KELVIN SIGN folds to k in
# FTS5's tables, LIKE folds ASCII only, and a NUL ends LIKE's view of a text.
TEXTS = st.lists(st.sampled_from(['Invoice', 'INVOICE 7', 'invo', 'ab', 'Ab', 'x', 'Größe',
                                  'GRÖSSE', '\u212aelvin', 'kelvin', 'İstanbul', 'a\0b', 'ÀB',
                                  '%_', '"q"', ' ']), min_size=1, max_size=3).map(' '.join)
VALUES = st.sampled_from(['invoice', 'INVOICE', 'in', 'ab', 'AB', 'größe', 'GRÖSSE', 'kel',
                          'ke', '\u212ael', 'istanbul', 'İst', 'b', 'àb', 'ÀB', '%', '_', 'x y',
                          '"q"', 'q"', 'a\0b'])
FIELDS = st.sampled_from(['', 'subject:', 'from:', 'to:', 'filename:', 'message-id:', '-',
                          '-subject:', 'is:', 'has:', 'larger:', 'smaller:', 'tag:'])


_STORES: list[Store] = []      # one file for every example; a mailbox each


@settings(max_examples=150, deadline=None)
@given(subject=TEXTS, body=TEXTS,
       terms=st.lists(st.tuples(FIELDS, VALUES), min_size=1, max_size=3))
def test_rules_find_what_the_search_finds(tmp_path_factory, subject, body, terms):
    """A rule is decided on the new message alone (Python for ASCII text,
    else a one-row index): it must tag exactly the messages the same
    search finds among all of them."""
    query = ' '.join(f'{field}"{value}"' if ' ' in value else f'{field}{value}'
                     for field, value in terms).lower()
    try:
        rules = parse_tag_rules(f'found={shlex.quote(query)}')
    except ValueError:
        return          # a query the search refuses
    if not _STORES:
        _STORES.append(Store(str(tmp_path_factory.mktemp('rules') / 'r.db')))
    store = _STORES[0]
    store.tag_rules = rules
    mailbox = f'box{store.listing(mailbox="count")["total"]}'
    store.add(b'Subject: x\r\n\r\n', mailbox='count')
    for n, text in enumerate([subject, 'other ' + subject, body]):
        mail = make_mail(subject=text, text=body, to='ann+signup@example.com' if n else None)
        store.add(mail.as_bytes(), mailbox=mailbox)
    listed = store.listing(mailbox=mailbox)['messages']
    tagged = {m['ID'] for m in listed if 'found' in m['Tags']}
    found = {m['ID'] for m in store.listing(query=rules[0].query, mailbox=mailbox)['messages']}
    assert tagged == found
