"""The YAML `policies:`, `store:` and `dns:` sections: checked with paths,
and run by `smtp-stack serve` — two server processes sharing one Redis,
and two sharing one SQLite file — against a real dnsmasq."""
from __future__ import annotations

import email
import os
import shutil
import smtplib
import time

import pytest
import yaml

from smtp_stack.config import ConfigError, parse
from smtp_stack.policies.config import duration

from clirunner import Serve, smtp_stack
from policy_services import (LISTED_V4, dns_server, keys, redis_server,  # noqa: F401 (fixtures)
                             redis_tls, redis_tls_server, redis_unix_server, wait_for)




def errors_of(data, tmp_path) -> list:
    with pytest.raises(ConfigError) as err:
        parse(data, str(tmp_path))
    return err.value.lines()


def test_durations():
    assert [duration(v) for v in (300, '5m', '1h', '36d', '1.5s')] == [300, 300, 3600, 36 * 86400, 1.5]
    with pytest.raises(ValueError):
        duration('soon')


def test_the_section_is_checked_with_paths(tmp_path):
    lines = errors_of({'deliver': {'maildir': str(tmp_path / 'md')},
                       'store': 'mysql://db',
                       'dns': {'nameservers': ['resolver.example'], 'tries': 3},
                       'policies': [{'greylist': {'delay': 'soon'}},
                                    {'spamassassin': {}},
                                    {'rate_limit': {'key': 'domain', 'messages': 5}},
                                    {'recipients': {'domians': ['x.test']}},
                                    {'dnsbl': {}}]}, tmp_path)
    text = '\n'.join(lines)
    assert 'store: unknown URL' in text
    assert 'dns.tries: unknown option' in text
    assert "policies[0].greylist.delay: must be a duration" in text
    assert "policies[1]: unknown policy 'spamassassin'" in text
    assert 'policies[2].rate_limit: key must be one of client, user, sender' in text
    assert 'policies[3].recipients.domians: unknown parameter' in text
    assert 'policies[4].dnsbl' in text


def test_a_good_section_parses(tmp_path):
    (tmp_path / 'rcpts').write_text('a@mx.test\n')
    config = parse({'deliver': {'maildir': str(tmp_path / 'md')},
                    'store': 'sqlite:///state.db',
                    'dns': {'nameservers': ['127.0.0.1'], 'timeout': 1},
                    'policies': ['authenticate',
                                 {'recipients': {'addresses_file': 'rcpts'}},
                                 {'greylist': {'delay': '5m', 'expire': '36d'}}]},
                   str(tmp_path))
    section = config.policies
    assert [name for name, _ in section.entries] == ['authenticate', 'recipients', 'greylist']
    assert section.entries[1][1]['addresses_file'] == str(tmp_path / 'rcpts')
    assert section.entries[2][1] == {'delay': 300.0, 'expire': 36 * 86400.0}
    assert section.store == f'sqlite:///{tmp_path}/state.db'
    built = section.build()
    assert len(built) == 3 and built[2].store is not None


def test_a_rediss_store_names_its_files_relative_to_the_configuration(tmp_path):
    (tmp_path / 'tls').mkdir()
    for name in ('ca.pem', 'client.pem', 'client.key'):
        (tmp_path / 'tls' / name).write_text('(not read before the first connection)')
    query = 'ssl_ca_certs=tls/ca.pem&ssl_certfile=tls/client.pem&ssl_keyfile=tls/client.key'
    config = parse({'deliver': {'maildir': str(tmp_path / 'md')},
                    'store': f'rediss://:pw@localhost:6380/0?{query}'}, str(tmp_path))
    tls = tmp_path / 'tls'
    assert config.policies.store == (
        f'rediss://:pw@localhost:6380/0?ssl_ca_certs={tls}/ca.pem'
        f'&ssl_certfile={tls}/client.pem&ssl_keyfile={tls}/client.key')
    lines = errors_of({'deliver': {'maildir': str(tmp_path / 'md')},
                       'store': 'rediss://localhost:6380/0?ssl_ca_certs=missing.pem'}, tmp_path)
    assert any(line.startswith('store: ssl_ca_certs: no such file') for line in lines), lines


def test_dnsbl_zones_with_return_codes_and_weights(tmp_path):
    """The Postfix forms (zone=codes*weight) and mappings, in one list."""
    base = {'deliver': {'maildir': str(tmp_path / 'md')}}
    config = parse({**base, 'policies': [{'dnsbl': {'threshold': 3, 'zones': [
        'zen.test=127.0.0.[2..11]*3', 'bl2.test',
        {'zone': 'wl.test', 'codes': ['127.0.10.[1..3]', '127.0.20.1'], 'weight': -2}]}}]},
        str(tmp_path))
    policy = config.policies.build()[0]
    assert [(e.zone, [c.text for c in e.codes], e.weight) for e in policy.entries] == [
        ('zen.test', ['127.0.0.[2..11]'], 3), ('bl2.test', [], 1),
        ('wl.test', ['127.0.10.[1..3]', '127.0.20.1'], -2)]
    assert policy.threshold == 3
    lines = errors_of({**base, 'policies': [
        {'dnsbl': {'zones': ['zen.test', 'zen.test=127.0.0.[9..2]']}},
        {'dnsbl': {'zones': [{'zone': 'x.test', 'weight': 'heavy'}]}},
        {'dnsbl': {'zones': 5}}]}, tmp_path)
    assert lines == [
        "policies[0].dnsbl: zones[1] 'zen.test=127.0.0.[9..2]': "
        "'127.0.0.[9..2]': '9..2' is not a number or range from 0 to 255",
        "policies[1].dnsbl: zones[0] {'zone': 'x.test', 'weight': 'heavy'}: "
        "weight must be an integer",
        "policies[2].dnsbl.zones: must be a list of zones, each 'zone[=codes][*weight]' "
        "or {zone, codes, weight}"], lines


def write_config(tmp_path, name, dns_port, store_url, **extra) -> str:
    (tmp_path / 'rcpts.txt').write_text('bob@mx.test\n')
    data = {
        'name': 'mx.test', 'listen': {'host': '127.0.0.1', 'port': 0},
        'use_xclient': True, 'disable_reverse_lookup': True,
        'disabled_commands': ['STARTTLS'],
        'deliver': {'maildir': str(tmp_path / 'maildir')},
        'dns': {'nameservers': ['127.0.0.1'], 'port': dns_port, 'timeout': 2},
        'store': store_url,
        'policies': [
            {'dnsbl': {'zones': ['bl.test=127.0.0.[2..11]']}},
            {'recipients': {'addresses_file': 'rcpts.txt'}},
            {'greylist': {'delay': '1s', 'auto_allow': 0}},
            {'rate_limit': {'recipients': 3, 'per': '1h', 'key': 'sender'}},
            {'authenticate': {'enforce_dmarc': True}},
        ],
        **extra,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def rcpt(address, ip, sender, recipient):
    client = smtplib.SMTP(*address, timeout=10)
    try:
        client.ehlo('proxy.test')
        assert client.docmd('XCLIENT', f'ADDR={ip} HELO=mail.example.test')[0] == 220
        client.ehlo_resp = None
        client.ehlo('mail.example.test')
        assert client.mail(sender)[0] == 250
        code, text = client.rcpt(recipient)
        if code != 250:
            return code, text
        return client.data(b'From: <alice@example.test>\r\nSubject: hi\r\n\r\nHello.\r\n')
    finally:
        client.close()


def url_of(kind: str, tmp_path, request) -> str:
    if kind == 'sqlite':
        return f'sqlite:///{tmp_path}/state.db'
    if kind == 'rediss':        # the CA file named relative to the configuration
        server = request.getfixturevalue('redis_tls_server')
        shutil.copy(server.tls.ca, tmp_path / 'redis-ca.pem')
        return f'rediss://localhost:{server.port}/0?ssl_ca_certs=redis-ca.pem'
    fixture = {'redis': 'redis_server', 'unix': 'redis_unix_server'}[kind]
    return request.getfixturevalue(fixture).url


@pytest.mark.parametrize('kind', ['redis', 'sqlite', 'unix', 'rediss'])
def test_two_serve_processes_share_one_store(kind, tmp_path, dns_server, request):
    url = url_of(kind, tmp_path, request)
    assert smtp_stack('check-config', write_config(tmp_path, 'a.yaml', dns_server.port, url),
                      cwd=tmp_path).returncode == 0
    a = Serve(tmp_path, '--config', write_config(tmp_path, 'a.yaml', dns_server.port, url))
    b = Serve(tmp_path, '--config', write_config(tmp_path, 'b.yaml', dns_server.port, url))
    try:
        sender = f's{time.time_ns()}@example.test'
        # policies in their YAML order: dnsbl, recipients, greylist, rate_limit
        assert rcpt(a.address, LISTED_V4, sender, 'bob@mx.test')[0] == 554
        assert rcpt(a.address, '192.0.2.5', sender, 'carol@mx.test')[0] == 550
        assert rcpt(a.address, '192.0.2.5', sender, 'bob@mx.test')[0] == 451
        assert rcpt(b.address, '192.0.2.5', sender, 'bob@mx.test')[0] == 451   # a's first sight
        assert wait_for(lambda: rcpt(b.address, '192.0.2.6', sender, 'bob@mx.test')[0] == 250,
                        timeout=6)
        # authenticate: SPF pass for example.test from 192.0.2.x, DMARC pass
        new = os.path.join(tmp_path, 'maildir', 'new')
        stored = [email.message_from_bytes(open(os.path.join(new, f), 'rb').read())
                  for f in os.listdir(new)]
        assert len(stored) == 1
        assert 'spf=pass' in stored[0]['Authentication-Results']
        assert 'dmarc=pass' in stored[0]['Authentication-Results']
        # rate_limit: 3 recipients per sender an hour, counted over both processes
        # (the retry that passed greylisting was the first: two more, then 450)
        assert rcpt(a.address, '192.0.2.6', sender, 'bob@mx.test')[0] == 250
        assert rcpt(b.address, '192.0.2.6', sender, 'bob@mx.test')[0] == 250
        assert rcpt(a.address, '192.0.2.6', sender, 'bob@mx.test')[0] == 450
        # enforce_dmarc: example.test says p=reject; 198.51.100.9 fails SPF, no DKIM
        other = f'x{time.time_ns()}@example.test'
        assert rcpt(a.address, '198.51.100.9', other, 'bob@mx.test')[0] == 451
        assert wait_for(lambda: rcpt(b.address, '198.51.100.9', other, 'bob@mx.test')[0] == 550,
                        timeout=6)
    finally:
        a.close()
        b.close()


def test_two_workers_share_one_sqlite_file(tmp_path, dns_server):
    """workers: 2 — the kernel spreads connections over both; every retry
    after the delay passes, whichever worker saw the first attempt."""
    url = f'sqlite:///{tmp_path}/state.db'
    server = Serve(tmp_path, '--config',
                   write_config(tmp_path, 'w.yaml', dns_server.port, url, workers=2))
    try:
        sender = f'w{time.time_ns()}@example.test'
        assert rcpt(server.address, '192.0.2.7', sender, 'bob@mx.test')[0] == 451
        assert wait_for(lambda: rcpt(server.address, '192.0.2.7', sender, 'bob@mx.test')[0] == 250,
                        timeout=6)
        codes = {rcpt(server.address, f'192.0.2.{i}', sender, 'bob@mx.test')[0]
                 for i in range(8, 14)}
        assert codes <= {250, 450}      # passed greylisting everywhere (450: rate_limit of 3)
        assert 451 not in codes
    finally:
        server.close()


def test_arc_seal_reads_its_key_file(tmp_path):
    from policy_services import RsaKey
    (tmp_path / 'arc.pem').write_bytes(RsaKey().private_pem)
    base = {'deliver': {'maildir': str(tmp_path / 'md')}}
    seal = {'selector': 'arc1', 'domain': 'example.test', 'key_file': 'arc.pem'}
    config = parse({**base, 'policies': [{'authenticate': {'arc_seal': seal}}]}, str(tmp_path))
    assert config.policies.build()[0].sealer.selector == 'arc1'
    lines = errors_of({**base, 'policies': [{'authenticate': {'arc_seal': {
        **seal, 'key_file': 'missing.pem'}}}]}, tmp_path)
    assert any('policies[0].authenticate.arc_seal: key_file: No such file' in line for line in lines)


def test_authenticate_remove_forged_from_yaml(tmp_path):
    base = {'deliver': {'maildir': str(tmp_path / 'md')}}
    kept = parse({**base, 'policies': [{'authenticate': {'remove_forged': False}}]}, str(tmp_path))
    assert kept.policies.build()[0].remove_forged is False
    assert parse({**base, 'policies': ['authenticate']}, str(tmp_path)).policies.build()[0].remove_forged
    lines = errors_of({**base, 'policies': [{'authenticate': {'remove_forged': 'sometimes'}}]}, tmp_path)
    assert any('remove_forged' in line for line in lines)


def test_serve_recipients_lookup_and_a_file_read_again_on_sighup(tmp_path):
    import signal
    (tmp_path / 'mailboxes.py').write_text(    # a module next to the config: importable
        'def known(address):\n    return address.lower() == "dave@lookup.test"\n')
    (tmp_path / 'rcpts.txt').write_text('bob@mx.test\n')
    path = tmp_path / 'r.yaml'
    path.write_text(yaml.safe_dump({
        'name': 'mx.test', 'listen': {'host': '127.0.0.1', 'port': 0},
        'use_xclient': True, 'disable_reverse_lookup': True, 'disabled_commands': ['STARTTLS'],
        'deliver': {'maildir': str(tmp_path / 'maildir')},
        'policies': [{'recipients': {'domains': ['lookup.test'], 'addresses_file': 'rcpts.txt',
                                     'lookup': 'mailboxes:known'}}]}))
    server = Serve(tmp_path, '--config', str(path))
    try:
        assert rcpt(server.address, '192.0.2.5', 'a@x.test', 'dave@lookup.test')[0] == 250
        assert rcpt(server.address, '192.0.2.5', 'a@x.test', 'erin@lookup.test')[0] == 550
        assert rcpt(server.address, '192.0.2.5', 'a@x.test', 'carol@mx.test')[0] == 550
        (tmp_path / 'rcpts.txt').write_text('bob@mx.test\ncarol@mx.test\n')
        server.signal(signal.SIGHUP)
        server.wait_line('SIGHUP: configuration reloaded')
        assert rcpt(server.address, '192.0.2.5', 'a@x.test', 'carol@mx.test')[0] == 250
    finally:
        server.close()
