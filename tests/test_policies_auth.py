"""authenticate: SPF, DKIM, DMARC, ARC against a real dnsmasq serving keys
generated for this run; messages signed by dkimpy (and by OpenDKIM when it
is installed); over SMTP with XCLIENT for the client address."""
from __future__ import annotations

import smtplib
import socket

import dkim
import pytest

from smtp_stack import LogLevels, SmtpServer
from smtp_stack.policies import Resolver, authenticate
from smtp_stack.policies.authentication import Authenticate
from smtp_stack.policies.dmarc import aligned, organizational_domain, parse_record
from smtp_stack.testing import ServerThread

import peers
from policy_services import DMARC_RECORDS, dns_server, keys  # noqa: F401 (fixtures)




@pytest.fixture
def resolver(dns_server):
    return Resolver(['127.0.0.1'], port=dns_server.port, timeout=2.0)


@pytest.fixture
def dead_resolver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    yield Resolver(['127.0.0.1'], port=sock.getsockname()[1], timeout=0.2)
    sock.close()


def message(from_='alice@example.test', subject='Hello', body='Hi there.\r\n') -> bytes:
    return (f'From: Alice <{from_}>\r\nTo: bob@mx.test\r\nSubject: {subject}\r\n'
            f'Message-ID: <1@example.test>\r\nDate: Thu, 03 Dec 2026 08:00:00 +0000\r\n'
            f'\r\n{body}').encode()


def rsa_sign(keys, msg, domain='example.test', selector=b'rsa1', key=None):
    key = key or keys.rsa
    return dkim.sign(msg, selector, domain.encode(), key.private_pem,
                     include_headers=[b'from', b'to', b'subject']) + msg


def ed_sign(keys, msg, domain='example.test'):
    return dkim.sign(msg, b'ed1', domain.encode(), keys.ed.private_b64,
                     signature_algorithm=b'ed25519-sha256',
                     include_headers=[b'from', b'to', b'subject']) + msg


def check(resolver, msg, ip='192.0.2.5', mail_from='alice@example.test', helo='mail.example.test',
          **kw):
    return Authenticate(resolver=resolver, **kw).check(msg, ip, mail_from, helo)


# -- SPF -----------------------------------------------------------------------------------

@pytest.mark.parametrize('ip, sender, expected', [
    ('192.0.2.5', 'a@example.test', 'pass'),
    ('2001:db8::5', 'a@example.test', 'pass'),                 # ip6
    ('198.51.100.5', 'a@example.test', 'fail'),
    ('198.51.100.5', 'a@softfail.test', 'softfail'),
    ('198.51.100.5', 'a@neutral.test', 'neutral'),
    ('198.51.100.5', 'a@nospf.test', 'none'),
    ('198.51.100.5', 'a@nowhere.test', 'none'),                # NXDOMAIN
    ('192.0.2.20', 'a@amx.test', 'pass'),                      # a
    ('192.0.2.21', 'a@amx.test', 'pass'),                      # mx
    ('2001:db8::21', 'a@amx.test', 'pass'),                    # mx, AAAA
    ('192.0.2.22', 'a@amx.test', 'fail'),
    ('192.0.2.9', 'a@redirect.test', 'pass'),                  # redirect=
    ('192.0.2.55', 'a@macro.test', 'pass'),                    # exists:%{i}...
    ('192.0.2.56', 'a@macro.test', 'fail'),
    ('192.0.2.5', 'a@toomany.test', 'permerror'),              # 11 lookups > 10 (4.6.4)
    ('192.0.2.5', 'a@void.test', 'permerror'),                 # 3 void lookups > 2 (4.6.4)
])
def test_spf_results(resolver, ip, sender, expected):
    results = check(resolver, message(), ip=ip, mail_from=sender)
    assert results.spf.result == expected, results.spf


def test_spf_helo_identity_for_the_null_sender(resolver):
    results = check(resolver, message(), ip='192.0.2.5', mail_from='', helo='helo.example.test')
    assert (results.spf.identity, results.spf.result) == ('helo', 'pass')
    assert 'smtp.helo=helo.example.test' in _header(results)


def test_spf_temperror_when_dns_is_down(dead_resolver):
    results = check(dead_resolver, message(), mail_from='a@example.test')
    assert results.spf.result == 'temperror'
    assert results.dmarc.result == 'temperror'


# -- DKIM ----------------------------------------------------------------------------------

def test_dkim_rsa_and_ed25519_signatures_pass(resolver, keys):
    signed = ed_sign(keys, rsa_sign(keys, message()))
    results = check(resolver, signed)
    assert [(d.result, d.algorithm) for d in results.dkim] == \
        [('pass', 'ed25519-sha256'), ('pass', 'rsa-sha256')]


def test_dkim_tampered_body_fails(resolver, keys):
    signed = rsa_sign(keys, message())
    assert [d.result for d in check(resolver, signed + b'P.S. added\r\n').dkim] == ['fail']


def test_dkim_tampered_header_fails(resolver, keys):
    signed = rsa_sign(keys, message()).replace(b'Subject: Hello', b'Subject: Hullo')
    assert [d.result for d in check(resolver, signed).dkim] == ['fail']


def test_dkim_wrong_key_fails(resolver, keys):
    signed = rsa_sign(keys, message(), selector=b'wrong')    # published: another key
    assert [d.result for d in check(resolver, signed).dkim] == ['fail']


def test_dkim_missing_key_is_permerror(resolver, keys):
    signed = rsa_sign(keys, message(), selector=b'nokey')
    assert [d.result for d in check(resolver, signed).dkim] == ['permerror']


def test_dkim_temperror_when_dns_is_down(dead_resolver, keys):
    signed = rsa_sign(keys, message())
    assert [d.result for d in check(dead_resolver, signed).dkim] == ['temperror']


@pytest.mark.parametrize('broken', [b'Subject : Hello',          # RFC 5322 4.5.3 obs-optional
                                    b'Subject: Hello\r\nno colon here'])
def test_a_header_section_that_does_not_split_is_a_dkim_permerror(resolver, keys, broken):
    """Its fields cannot be told apart (dkimpy's reading), so no signature
    can be verified: a permerror, where the check used to raise (the
    client got 451, and again at every retry). DMARC still reads From."""
    signed = rsa_sign(keys, message()).replace(b'Subject: Hello', broken)
    results = check(resolver, signed)
    assert [(d.result, d.domain) for d in results.dkim] == [('permerror', '')]
    assert 'header section does not parse' in results.dkim[0].reason
    assert (results.dmarc.result, results.dmarc.domain) == ('pass', 'example.test')   # by SPF
    unsigned = message().replace(b'Subject: Hello', broken)
    assert check(resolver, unsigned).dkim == []


def test_each_signature_field_and_the_from_field_read_from_one_split(resolver, keys,
                                                                      monkeypatch):
    """The header section is split once per message: for the key names,
    the verification of each signature and DMARC's From."""
    from smtp_stack.policies import authentication
    calls = []
    split = authentication.split_message
    monkeypatch.setattr(authentication, 'split_message',
                        lambda message: calls.append(1) or split(message))
    results = check(resolver, ed_sign(keys, rsa_sign(keys, message())))
    assert [d.result for d in results.dkim] == ['pass', 'pass']
    assert results.dmarc.result == 'pass'
    assert calls == [1]


def test_dkim_none_for_an_unsigned_message(resolver):
    results = check(resolver, message())
    assert results.dkim == []
    assert 'dkim=none' in _header(results)


# -- DMARC ---------------------------------------------------------------------------------

def test_dmarc_pass_by_spf_alignment_only(resolver):
    results = check(resolver, message(), ip='192.0.2.5', mail_from='bounce@example.test')
    assert results.dmarc.result == 'pass'
    assert results.dmarc.spf_aligned and not results.dmarc.dkim_aligned


def test_dmarc_pass_by_dkim_alignment_only(resolver, keys):
    msg = rsa_sign(keys, message('a@dkimonly.test'), domain='dkimonly.test')
    results = check(resolver, msg, ip='198.51.100.5', mail_from='a@dkimonly.test')
    assert results.spf.result == 'fail'
    assert results.dmarc.result == 'pass' and results.dmarc.dkim_aligned


def test_dmarc_fail_with_p_reject(resolver):
    results = check(resolver, message(), ip='198.51.100.5', mail_from='a@example.test')
    assert (results.dmarc.result, results.dmarc.policy) == ('fail', 'reject')
    assert 'dmarc=fail (p=reject dis=reject) header.from=example.test' in _header(results)


def test_dmarc_unaligned_dkim_does_not_count(resolver, keys):
    msg = rsa_sign(keys, message(), domain='other.test')      # d=other.test, From example.test
    results = check(resolver, msg, ip='198.51.100.5')
    assert [d.result for d in results.dkim] == ['pass']
    assert results.dmarc.result == 'fail'


def test_dmarc_subdomain_takes_sp_of_the_organisational_domain(resolver):
    results = check(resolver, message('a@sub.example.test'), ip='198.51.100.5')
    assert (results.dmarc.result, results.dmarc.policy) == ('fail', 'quarantine')
    assert results.dmarc.record_domain == 'example.test'


def test_dmarc_relaxed_alignment_of_a_subdomain(resolver):
    results = check(resolver, message('a@sub.example.test'), ip='192.0.2.5',
                    mail_from='bounce@example.test')
    assert results.dmarc.result == 'pass'


def test_dmarc_strict_alignment(resolver, keys):
    msg = rsa_sign(keys, message('a@strict.test'), domain='sub.example.test')
    results = check(resolver, msg, ip='198.51.100.5', mail_from='a@strict.test')
    assert results.dmarc.result == 'fail'
    assert not aligned('mail.strict.test', 'strict.test', 's')
    assert aligned('mail.strict.test', 'strict.test', 'r')


def test_dmarc_pct_zero_never_rejects(resolver):
    results = check(resolver, message('a@halfpct.test'), ip='198.51.100.5',
                    mail_from='a@halfpct.test')
    assert (results.dmarc.result, results.dmarc.published, results.dmarc.policy) == \
        ('fail', 'reject', 'quarantine')


def test_dmarc_none_without_a_record(resolver):
    results = check(resolver, message('a@nospf.test'), mail_from='a@nospf.test')
    assert results.dmarc.result == 'none'


def test_dmarc_records_parsed_once_by_text(resolver, monkeypatch):
    from smtp_stack.policies import dmarc
    parsed = []
    parse = dmarc.parse_record
    monkeypatch.setattr(dmarc, 'parse_record', lambda text: parsed.append(text) or parse(text))
    dmarc._tags.cache_clear()
    for _ in range(3):
        assert check(resolver, message()).dmarc.published == 'reject'
    assert parsed == [DMARC_RECORDS['example.test']]


def test_dmarc_record_parsing_and_org_domain():
    assert parse_record('v=DMARC1; p=reject; pct=50')['pct'] == '50'
    assert parse_record('p=reject; v=DMARC1') is None
    assert parse_record('v=spf1 -all') is None
    assert organizational_domain('a.b.example.co.uk') == 'example.co.uk'


# -- ARC -------------------------------------------------------------------------------

def arc_seal(keys, msg, srv_id=b'relay.example.test'):
    msg = b'Authentication-Results: relay.example.test; spf=pass smtp.mailfrom=example.test\r\n' + msg
    headers = dkim.arc_sign(msg, b'rsa1', b'example.test', keys.rsa.private_pem, srv_id)
    return b''.join(headers) + msg


def test_arc_chain_validates(resolver, keys):
    sealed = arc_seal(keys, rsa_sign(keys, message()))
    assert check(resolver, sealed).arc.result == 'pass'


def test_arc_chain_broken_by_a_change(resolver, keys):
    sealed = arc_seal(keys, message()).replace(b'Hi there.', b'Hi THERE.')
    assert check(resolver, sealed).arc.result == 'fail'


def test_arc_none_without_a_chain(resolver):
    assert check(resolver, message()).arc.result == 'none'


# -- over SMTP ---------------------------------------------------------------------------

@pytest.fixture
def serve():
    running = []

    def start(policy, **options):
        seen = []

        def capture(ctx, next):
            next()
            if ctx.command_name in ('DATA', 'BDAT') and ctx.session.envelope.data_stream is not None:
                env = ctx.session.envelope
                body = env.data_stream.read()
                seen.append((getattr(env, 'auth_results', None), env.added_headers, body))
        server = SmtpServer(name='mx.test', disable_reverse_lookup=True, use_xclient=True,
                            log_level=LogLevels.WARN, **options)
        server.use(capture)
        server.use(policy)
        server.seen = seen
        running.append(ServerThread(server).start())
        return server

    yield start
    for runner in running:
        runner.stop(timeout=2)


def send(server, ip, sender, msg, helo='mail.example.test'):
    client = smtplib.SMTP(*server.address, timeout=10)
    try:
        client.ehlo('proxy.test')
        assert client.docmd('XCLIENT', f'ADDR={ip} HELO={helo}')[0] == 220
        client.ehlo_resp = None
        client.ehlo(helo)
        assert client.mail(sender)[0] == 250
        assert client.rcpt('bob@mx.test')[0] == 250
        return client.data(msg)
    finally:
        client.close()


def test_smtp_results_go_into_one_header_and_the_body_is_intact(serve, resolver, keys):
    server = serve(authenticate(resolver=resolver))
    signed = rsa_sign(keys, message())
    assert send(server, '192.0.2.5', 'alice@example.test', signed)[0] == 250
    results, added, body = server.seen[0]
    assert body == signed
    assert [name for name, _ in added] == ['Authentication-Results']
    value = added[0][1]
    assert value.startswith('mx.test; spf=pass')
    assert 'dkim=pass header.d=example.test header.s=rsa1' in value
    assert 'dmarc=pass' in value and 'arc=none' in value
    assert results.header == value


def test_smtp_enforced_dmarc_reject_gets_550_after_the_body(serve, resolver):
    server = serve(authenticate(resolver=resolver, enforce_dmarc=True))
    code, text = send(server, '198.51.100.5', 'alice@example.test', message())
    assert code == 550 and b'5.7.1' in text and b'DMARC' in text
    assert server.seen == []
    # the same failure, not enforced, is accepted with the result recorded
    server2 = serve(authenticate(resolver=resolver))
    assert send(server2, '198.51.100.5', 'alice@example.test', message())[0] == 250
    assert server2.seen[0][0].dmarc.result == 'fail'


def test_smtp_dmarc_pass_by_dkim_is_accepted_when_enforced(serve, resolver, keys):
    server = serve(authenticate(resolver=resolver, enforce_dmarc=True))
    msg = rsa_sign(keys, message('a@dkimonly.test'), domain='dkimonly.test')
    assert send(server, '198.51.100.5', 'a@dkimonly.test', msg)[0] == 250


def test_smtp_dns_down_accepts_with_temperror(serve, dead_resolver):
    server = serve(authenticate(resolver=dead_resolver, enforce_dmarc=True))
    assert send(server, '198.51.100.5', 'alice@example.test', message())[0] == 250
    results = server.seen[0][0]
    assert results.spf.result == 'temperror' and results.dmarc.result == 'temperror'


def test_smtp_refused_body_is_never_checked_as_good(serve, resolver):
    server = serve(authenticate(resolver=resolver), size=200)
    code, _ = send(server, '192.0.2.5', 'alice@example.test', message(body='x' * 400 + '\r\n'))
    assert code == 552
    assert server.seen == []        # MessageRefused went through authenticate and capture


def _header(results) -> str:
    from smtp_stack.policies.authresults import header_value
    return header_value('mx.test', results)


# -- OpenDKIM as a second, independent signer -----------------------------------------------

@pytest.fixture(scope='module')
def opendkim(keys, tmp_path_factory):
    peers.program('opendkim', 'opendkim', '/usr/sbin/opendkim')
    peers.program('miltertest', 'miltertest')
    from policy_services import OpenDkim
    signer = OpenDkim(keys.opendkim, str(tmp_path_factory.mktemp('opendkim')))
    yield signer
    signer.stop()


ODK_HEADERS = [('From', 'Alice <alice@example.test>'), ('To', 'bob@mx.test'),
               ('Subject', 'signed by OpenDKIM'), ('Date', 'Thu, 03 Dec 2026 08:00:00 +0000')]
ODK_BODY = 'Hello from the milter.\r\nSecond line.\r\n'


def odk_message(signature: bytes, body: str = ODK_BODY) -> bytes:
    head = ''.join(f'{n}: {v}\r\n' for n, v in ODK_HEADERS)
    return signature + (head + '\r\n' + body).encode()


def test_opendkim_signature_verifies(resolver, opendkim):
    signature = opendkim.sign(ODK_HEADERS, ODK_BODY)
    assert b'a=rsa-sha256' in signature and b's=odk' in signature
    results = check(resolver, odk_message(signature), ip='198.51.100.5')
    assert [(d.result, d.selector) for d in results.dkim] == [('pass', 'odk')]
    assert results.dmarc.result == 'pass' and results.dmarc.dkim_aligned


def test_opendkim_signature_of_a_changed_body_fails(resolver, opendkim):
    signature = opendkim.sign(ODK_HEADERS, ODK_BODY)
    changed = odk_message(signature, ODK_BODY.replace('Second', 'Third'))
    assert [d.result for d in check(resolver, changed, ip='198.51.100.5').dkim] == ['fail']


# -- ARC sealing --------------------------------------------------------------------------

def test_arc_seal_on_the_delivered_message_validates(serve, resolver, keys):
    from smtp_stack.headers import header_block
    from smtp_stack.policies.dkimcheck import verify_arc
    seal = {'selector': 'rsa1', 'domain': 'example.test', 'key': keys.rsa.private_pem}
    server = serve(authenticate(resolver=resolver, arc_seal=seal))
    signed = rsa_sign(keys, message())
    assert send(server, '192.0.2.5', 'alice@example.test', signed)[0] == 250
    _, added, body = server.seen[0]
    assert [n for n, _ in added] == ['Authentication-Results', 'ARC-Authentication-Results',
                                     'ARC-Message-Signature', 'ARC-Seal']
    delivered = header_block(added) + body
    assert delivered.startswith(b'ARC-Seal: i=1;') or delivered.startswith(b'ARC-Seal:')
    result = verify_arc(resolver, delivered)
    assert (result.result, result.instance) == ('pass', 1)
    assert verify_arc(resolver, delivered.replace(b'Hi there.', b'Hi THERE.')).result == 'fail'


def test_arc_seal_key_is_checked_at_construction():
    with pytest.raises(ValueError):
        authenticate(arc_seal={'selector': 's', 'domain': 'd.test', 'key': 'not a key'})


def test_spf_of_helo_is_recorded_beside_mail_from(resolver):
    results = check(resolver, message(), ip='198.51.100.5', mail_from='a@softfail.test',
                    helo='helo.example.test')
    assert (results.spf.result, results.helo.result) == ('softfail', 'fail')
    header = _header(results)
    assert 'spf=softfail' in header and 'smtp.mailfrom=a@softfail.test' in header
    assert 'smtp.helo=helo.example.test' in header


def test_a_message_over_the_verify_bound_is_not_verified(resolver, keys):
    signed = rsa_sign(keys, message(body='x' * 2000 + '\r\n'))
    results = check(resolver, signed, max_verify_bytes=1000)
    assert [(d.result, d.domain) for d in results.dkim] == [('policy', 'example.test')]
    assert results.arc is None
    assert results.dmarc.result == 'pass'           # by SPF, from the header section


def test_smtp_bdat_chunks_are_checked_as_one_message(serve, resolver, keys):
    """CHUNKING (RFC 3030): the body in two BDAT chunks is spooled whole."""
    server = serve(authenticate(resolver=resolver))
    signed = rsa_sign(keys, message())
    half = len(signed) // 2
    sock = socket.create_connection(server.address, timeout=10)
    reader = sock.makefile('rb')

    def reply():
        lines = []
        while True:
            line = reader.readline()
            lines.append(line)
            if line[3:4] != b'-':
                return int(line[:3]), b''.join(lines)
    try:
        assert reply()[0] == 220
        for line in ('EHLO proxy.test', 'XCLIENT ADDR=192.0.2.5 HELO=mail.example.test'):
            sock.sendall(line.encode() + b'\r\n')
            assert reply()[0] in (220, 250)
        for line in ('EHLO mail.example.test', 'MAIL FROM:<alice@example.test>',
                     'RCPT TO:<bob@mx.test>'):
            sock.sendall(line.encode() + b'\r\n')
            assert reply()[0] == 250
        sock.sendall(b'BDAT %d\r\n' % half + signed[:half])
        assert reply()[0] == 250
        sock.sendall(b'BDAT %d LAST\r\n' % (len(signed) - half) + signed[half:])
        assert reply()[0] == 250
    finally:
        reader.close()
        sock.close()
    results, _, body = server.seen[0]
    assert body == signed
    assert [d.result for d in results.dkim] == ['pass'] and results.dmarc.result == 'pass'


def test_dkim_rsa_sha1_is_not_accepted(resolver, keys):
    """RFC 8301 3.1: a valid rsa-sha1 signature is not a pass."""
    msg = message()
    signed = dkim.sign(msg, b'rsa1', b'example.test', keys.rsa.private_pem,
                       signature_algorithm=b'rsa-sha1', include_headers=[b'from']) + msg
    assert [d.result for d in check(resolver, signed, ip='198.51.100.5').dkim] == ['policy']


def test_an_unverified_big_message_is_never_refused_by_dmarc(serve, resolver, keys):
    """Over the verify bound its DKIM signature is not checked, so DMARC
    cannot count it: that is not a failure to record or to enforce."""
    server = serve(Authenticate(resolver=resolver, enforce_dmarc=True, max_verify_bytes=1000))
    msg = rsa_sign(keys, message('a@dkimonly.test', body='x' * 2000 + '\r\n'), domain='dkimonly.test')
    code, _ = send(server, '198.51.100.5', 'a@dkimonly.test', msg)      # SPF fails, DKIM unverified
    assert code == 250
    assert server.seen[0][0].dmarc.result == 'temperror'


def test_verifying_signed_mail_keeps_the_hub_running(resolver, keys):
    """The verification runs in a worker thread; a message over the bound
    (default 4 MiB), whose relaxed canonicalisation would hold the GIL for
    about a second, is not verified at all. Another greenlet keeps its pace."""
    import time

    import gevent
    small = message(body=('y ' * 499 + '\r\n') * 2_000)           # 2 MB: verified
    big = message(body=('y ' * 499 + '\r\n') * 12_000)            # 12 MB: over the bound
    signed = [dkim.sign(m, b'rsa1', b'example.test', keys.rsa.private_pem,
                        canonicalize=(b'relaxed', b'relaxed'),
                        include_headers=[b'from', b'to', b'subject']) + m for m in (small, big)]
    gaps = []

    def tick():
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = gevent.spawn(tick)
    try:
        gevent.sleep(0.02)
        verified = [Authenticate(resolver=resolver).check(m, '192.0.2.5', 'alice@example.test',
                                                          'mail.example.test') for m in signed]
    finally:
        ticker.kill()
    assert [[d.result for d in r.dkim] for r in verified] == [['pass'], ['policy']]
    assert verified[1].dmarc.result == 'pass'       # SPF aligned: judged without DKIM
    assert max(gaps) < 0.5, f'the hub stopped for {max(gaps):.2f} s'
