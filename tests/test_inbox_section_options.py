"""Every option of `smtp-stack inbox` is a key of `smtp-stack serve`'s
`inbox:` section, named as the option with underscores, checked with the
option's rules; and a section using them serves over real sockets
(smtplib with AUTH into mailboxes, http.client, POP3 over implicit TLS)."""
from __future__ import annotations

import argparse
import poplib
import smtplib
import ssl

import pytest

from inbox_helpers import WAIT, Http, make_mail, receiver_thread
from smtp_stack.config import ConfigError, parse
from smtp_stack.inbox.command import add_parser
from smtp_stack.inbox.section import InboxDelivery
from smtp_stack.params import parameters
from smtp_stack.receiver import Receiver
from smtp_stack.users import hash_password

# The command's options that are the server's own keys in `serve`'s file:
# listen:, users: (and auth_methods:), the TLS keys, name:, log_format:.
# Mailpit's SMTP options are the server's keys too: users: (smtp_auth_file),
# allow_insecure_auth:, the TLS keys, a listener's secure:, max_recipients:,
# size: (max_message_size), disable_reverse_lookup:, log_level: (quiet); and
# enable_chaos is accepted by the command only (chaos is always there).
SERVERS_OWN = {'smtp', 'smtp_auth_accept_any', 'smtp_starttls', 'name', 'log_format',
               'smtp_auth_file', 'smtp_auth_allow_insecure', 'smtp_tls_cert', 'smtp_tls_key',
               'smtp_require_tls', 'smtp_max_recipients', 'max_message_size',
               'smtp_disable_rdns', 'quiet', 'enable_chaos',
               # serve logs to stderr (journald, docs/operating.md): no log file
               'log_file'}


def command_options() -> set[str]:
    parser = argparse.ArgumentParser()
    inbox = add_parser(parser.add_subparsers())
    return {action.dest for action in inbox._actions if action.option_strings
            and action.dest != 'help'}


def test_every_option_of_the_command_is_a_key_of_the_section():
    keys = set(parameters(InboxDelivery))
    assert command_options() - SERVERS_OWN == keys
    assert SERVERS_OWN <= command_options()


def check(section, tmp_path):
    return parse({'listen': [{'host': '127.0.0.1', 'port': 0}], 'inbox': section}, str(tmp_path))


@pytest.mark.parametrize('key, value, message', [
    ('max_age', '3w', 'max-age must be either <int>h for hours or <int>d for days: 3w'),
    ('max_age', 12, 'must be a whole number of hours or days'),
    ('webhook_url', 'ftp://example.com/', "not an http(s) URL: 'ftp://example.com/'"),
    ('webhook_limit', -1, 'must be a number, 0 or more (0: no limit)'),
    ('tag', 'no-equals-sign', 'error parsing tags (no-equals-sign)'),
    ('tag', 'x=after:yesterday', "tag rule 'after:yesterday': 'yesterday' is not a date"),
    ('tags_config', 'missing.yaml', 'missing.yaml: file not found'),
    ('tags_disable', 'x-tags,everything', 'invalid --tags-disable option: everything'),
    ('tags_username', 'yes', 'must be true or false'),
    ('enable_spamassassin', 'localhost', "'localhost' is not HOST:PORT or unix:PATH"),
    ('mailboxes', 'sideways', 'must be off or by-user or by-recipient'),
    ('mailbox_pattern', 'nostar@example.com', 'an address with one *'),
    ('pop3', 'nonsense', 'HOST:PORT'),
    ('pop3_auth_file', 'missing', 'file not found'),
    ('pop3_tls_cert', 'missing.pem', 'missing.pem: file not found'),
    ('pop3_tls_implicit', 'on', 'must be true or false'),
    ('allow_internal_http_requests', 'yes', 'must be true or false'),
    ('relay_allowed_recipients', '([a-z', 'not a regular expression'),
    ('ui_auth_file', 'bad-users', 'expected name:hash'),
    ('smtp_allowed_recipients', '([a-z', 'not a regular expression'),
    ('smtp_require_starttls', 'yes', 'must be true or false'),
    ('chaos_triggers', 'Sender:451', 'expected Sender, Recipient or Authentication'),
    ('chaos_triggers', 'Recipient:200:5', 'between 400 and 599'),
    ('max_messages', -1, 'must be an integer, 0 or more'),
    ('enable_prometheus', 'sometimes', "'sometimes' is not HOST:PORT"),
])
def test_a_bad_value_is_a_clear_error_naming_its_key(tmp_path, key, value, message):
    (tmp_path / 'bad-users').write_text('no colon here\n')
    with pytest.raises(ConfigError) as raised:
        check({'db': 'i.db', key: value}, tmp_path)
    [line] = raised.value.lines()
    assert line.startswith(f'inbox.{key}: ') and message in line, line


def test_good_values_are_read(tmp_path):
    (tmp_path / 'rules.yaml').write_text('filters: [{match: "subject:alert", tags: "ops"}]\n')
    (tmp_path / 'users').write_text(f'ann:{hash_password("pw")}\n')
    config = check({'db': 'i.db', 'max_age': '7d', 'webhook_url': 'http://127.0.0.1:9/hook',
                    'webhook_limit': 0, 'tag': 'alerts=subject:alert', 'tags_config': 'rules.yaml',
                    'tags_disable': ['x-tags', 'plus-addresses'], 'tags_username': True,
                    'enable_spamassassin': '127.0.0.1:783', 'mailboxes': 'by-recipient',
                    'mailbox_pattern': 'test+*@example.com', 'pop3': '127.0.0.1:0',
                    'pop3_auth_file': 'users', 'pop3_tls_implicit': True,
                    'relay': '127.0.0.1:25', 'relay_allowed_recipients': '@example\\.com$'},
                   tmp_path)
    spec = config.deliver.spec
    assert (spec['max_age'], spec['tags_disable'], spec['pop3'], spec['tags_config']) == (
        '7d', 'x-tags,plus-addresses', ('127.0.0.1', 0), str(tmp_path / 'rules.yaml'))
    assert check({'mailboxes': False}, tmp_path).deliver.spec['mailboxes'] == 'off'  # YAML's off


@pytest.mark.parametrize('section, message', [
    ({'pop3': '127.0.0.1:0'}, 'pop3 needs pop3_auth_file'),
    ({'pop3_tls_implicit': True}, 'need pop3: HOST:PORT'),
    ({'relay_allowed_recipients': 'x'}, 'relay_allowed_recipients needs relay'),
    ({'mailbox_pattern': '*@example.com'}, 'mailbox_pattern needs mailboxes: by-recipient'),
    ({'smtp_ignore_rejected_recipients': True},
     'smtp_ignore_rejected_recipients needs smtp_allowed_recipients'),
    ({'ui_tls_key': __file__}, 'ui_tls_key needs ui_tls_cert'),
])
def test_the_rules_between_keys_fail_the_check_of_the_file(tmp_path, section, message):
    with pytest.raises(ConfigError) as raised:       # check-config and serve's first step
        check({'db': 'i.db', 'http': '127.0.0.1:0', **section}, tmp_path)
    [line] = raised.value.lines()
    assert line.startswith('inbox: ') and message in line, line
    assert not (tmp_path / 'i.db').exists()         # before anything was opened


def test_the_rules_between_keys_stop_a_delivery_made_in_code(tmp_path):
    with pytest.raises(ValueError, match='^inbox: pop3 needs pop3_auth_file'):
        InboxDelivery(str(tmp_path / 'i.db'), http=('127.0.0.1', 0), pop3=('127.0.0.1', 0))
    assert not (tmp_path / 'i.db').exists()


def test_a_section_with_mailboxes_and_pop3s_serves_them(tmp_path):
    (tmp_path / 'pop3-users').write_text(f'ann:{hash_password("pop pw")}\n')
    config = parse({
        'name': 'mx.test', 'disable_reverse_lookup': True, 'disabled_commands': ['STARTTLS'],
        'allow_insecure_auth': True,
        'users': [{'username': 'ann', 'password_hash': hash_password('smtp pw')}],
        'listen': [{'host': '127.0.0.1', 'port': 0}],
        'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0', 'mailboxes': 'by-user',
                  'tag': 'alerts=subject:alert', 'tags_username': True, 'max_age': '7d',
                  'pop3': '127.0.0.1:0', 'pop3_auth_file': 'pop3-users',
                  'pop3_tls_implicit': True}}, str(tmp_path))
    with receiver_thread(config) as receiver:
        delivery = receiver.delivery.target
        smtp_at = receiver.servers[0].address[:2]
        with smtplib.SMTP(*smtp_at, timeout=WAIT) as client:
            client.login('ann', 'smtp pw')
            client.send_message(make_mail(subject='alert: for ann'))
        with smtplib.SMTP(*smtp_at, timeout=WAIT) as client:
            client.send_message(make_mail(subject='anonymous'))
        host, port = delivery.http_address[:2]
        web = Http(f'http://{host}:{port}/')
        [ann] = web.json('GET', '/mailbox/ann/api/v1/messages')['messages']
        assert (ann['Subject'], ann['Tags']) == ('alert: for ann', ['alerts', 'ann'])
        assert [m['Subject'] for m in web.json('GET', '/api/v1/messages')['messages']] \
            == ['anonymous']
        assert delivery.parts.pruner is not None
        pop3 = poplib.POP3_SSL('127.0.0.1', delivery.parts.pop3_address[1], timeout=WAIT,
                               context=ssl._create_unverified_context())   # self-signed
        pop3.user('ann')
        pop3.pass_('pop pw')
        assert pop3.stat()[0] == 1 and b'Subject: alert: for ann' in pop3.retr(1)[1]
        pop3.quit()


def test_a_section_with_mailpits_smtp_rules_applies_them(tmp_path):
    """The recipient allowlist (taken and left out), STARTTLS required and
    chaos from the start, as the command's options."""
    config = parse({
        'name': 'mx.test', 'disable_reverse_lookup': True,
        'listen': [{'host': '127.0.0.1', 'port': 0}],
        'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0',
                  'smtp_allowed_recipients': '^ok@', 'smtp_ignore_rejected_recipients': True,
                  'smtp_require_starttls': True, 'chaos_triggers': 'Authentication:535:100'}},
        str(tmp_path))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with receiver_thread(config) as receiver:
        delivery = receiver.delivery.target
        smtp_at = receiver.servers[0].address[:2]
        with smtplib.SMTP(*smtp_at, timeout=WAIT) as client:
            client.ehlo('client.test')
            assert client.mail('a@example.org') == (
                530, b'5.7.0 Must issue a STARTTLS command first')
            client.starttls(context=context)
            assert client.sendmail('a@example.org', ['ok@example.com', 'no@example.com'],
                                   make_mail(subject='section rules').as_string()) == {}
        host, port = delivery.http_address[:2]
        web = Http(f'http://{host}:{port}/')
        [item] = web.json('GET', '/api/v1/messages')['messages']
        assert item['Subject'] == 'section rules' and item['Bcc'] == [
            {'Name': '', 'Address': 'ok@example.com'}]
        assert web.json('GET', '/api/v1/chaos')['Authentication'] == {
            'ErrorCode': 535, 'Probability': 100}
        assert web.json('GET', '/api/v1/info')['RuntimeStats']['SMTPRejected'] == 1



def test_a_section_serves_its_web_side_over_https(tmp_path):
    from smtp_stack.testing_tls import loopback_certificates
    made = loopback_certificates()
    (tmp_path / 'cert.pem').write_bytes(made.cert_pem)
    (tmp_path / 'key.pem').write_bytes(made.key_pem)
    config = parse({'listen': [{'host': '127.0.0.1', 'port': 0}],
                    'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0',
                              'ui_tls_cert': 'cert.pem', 'ui_tls_key': 'key.pem'}},
                   str(tmp_path))
    with receiver_thread(config) as receiver:
        delivery = receiver.delivery.target
        assert 'web and API on https://' in delivery.describe()
        port = delivery.http_address[1]
        web = Http(f'https://localhost:{port}/',
                   context=ssl.create_default_context(cafile=made.ca_file))
        assert web.json('GET', '/api/v1/info')['Messages'] == 0


def test_starttls_required_of_a_server_without_it_stops_the_start(tmp_path):
    config = parse({'disabled_commands': ['STARTTLS'],
                    'listen': [{'host': '127.0.0.1', 'port': 0}],
                    'inbox': {'db': 'caught.db', 'http': '127.0.0.1:0',
                              'smtp_require_starttls': True}}, str(tmp_path))
    receiver = Receiver(config)
    with pytest.raises(ValueError, match='smtp_require_starttls needs a server that offers'):
        receiver.start()
    assert all(server.address is None for server in receiver.servers)     # nothing listens
