"""smtp_stack.tls: certificates, contexts and SNI, with real handshakes.

Both ends of every handshake run in gevent greenlets over a socketpair; the
only wait is bounded by gevent.Timeout.
"""
import datetime
import ipaddress
import logging
import warnings

import gevent
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gevent import socket, ssl

from smtp_stack.sockets import PlainSocket, TlsSocket
from smtp_stack.tls import (
    build_secure_contexts, create_context, generate_self_signed, install_sni,
    normalize_hostname, tls_info,
)

TIMEOUT = 10


# -- helpers -----------------------------------------------------------------

def handshake(server_ctx, client_ctx=None, sni=None):
    """One TLS handshake: (the server's tls_info or its error,
    the server certificate DER the client saw or the client's error)."""
    client_ctx = client_ctx or client_context()
    left, right = socket.socketpair()

    def server():
        sock = TlsSocket(PlainSocket(fileno=left.detach()), server_ctx)
        try:
            sock.do_handshake(TIMEOUT)
            info = tls_info(sock.sslobj)
            sock.sendall(b'ok')
            return info
        except OSError as exc:
            return exc
        finally:
            sock.close()

    def client():
        sock = client_ctx.wrap_socket(right, server_hostname=sni, do_handshake_on_connect=False)
        try:
            sock.do_handshake()
            # In TLS 1.3 the server judges a client certificate after the
            # client has finished: its verdict arrives with the first read.
            if sock.recv(2) != b'ok':
                raise ConnectionError('server closed after the handshake')
            return sock.getpeercert(binary_form=True)
        except OSError as exc:
            return exc
        finally:
            sock.close()

    with gevent.Timeout(TIMEOUT):
        server_g, client_g = gevent.spawn(server), gevent.spawn(client)
        return server_g.get(), client_g.get()


def client_context(ca=None, cert_files=None, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca.decode())
    if cert_files:
        ctx.load_cert_chain(*cert_files)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def der(cert_pem):
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem)


def _pem(key, cert):
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def make_ca(name='Test CA'):
    """(key, cert, cert PEM) of a small EC certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert, cert.public_bytes(serialization.Encoding.PEM)


def issue(ca, name, usage=ExtendedKeyUsageOID.CLIENT_AUTH):
    """(key PEM, cert PEM) for `name`, signed by `ca`."""
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem(key, cert)


@pytest.fixture(scope='module')
def ca():
    return make_ca()


@pytest.fixture
def client_cert_files(tmp_path):
    """Write a (key PEM, cert PEM) pair where a client context can load it."""
    def write(pair):
        key_file, cert_file = tmp_path / 'client.key', tmp_path / 'client.crt'
        key_file.write_bytes(pair[0])
        cert_file.write_bytes(pair[1])
        return str(cert_file), str(key_file)
    return write


# -- names -------------------------------------------------------------------

@pytest.mark.parametrize('name, expected', [
    ('Example.COM', 'example.com'),
    ('mx.example.com.', 'mx.example.com'),
    ('bücher.example', 'xn--bcher-kva.example'),
    ('BÜCHER.Example.', 'xn--bcher-kva.example'),
    ('XN--BCHER-KVA.example', 'xn--bcher-kva.example'),
    ('*.Example.org', '*.example.org'),
    ('127.0.0.1', '127.0.0.1'),
    ('a' * 70 + '.Example', 'a' * 70 + '.example'),      # too long for IDNA, kept
    ('Ü' * 100 + '.bücher.example', 'ü' * 100 + '.xn--bcher-kva.example'),
])
def test_normalize_hostname(name, expected):
    assert normalize_hostname(name) == expected


# -- self-signed certificates ------------------------------------------------

def test_self_signed_certificate_parses_back_with_cn_and_san():
    key_pem, cert_pem = generate_self_signed('mx.example')
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == 'mx.example'
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ['mx.example']
    assert san.get_values_for_type(x509.IPAddress) == []
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= datetime.timedelta(days=3650)


def test_self_signed_certificate_for_ip_literal_has_ip_san():
    cert = x509.load_pem_x509_certificate(generate_self_signed('127.0.0.1')[1])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address('127.0.0.1')]
    assert san.get_values_for_type(x509.DNSName) == ['127.0.0.1']


def test_self_signed_certificate_for_bracketed_ipv6_literal():
    assert generate_self_signed('[::1]') is generate_self_signed('::1')
    cert = x509.load_pem_x509_certificate(generate_self_signed('[::1]')[1])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address('::1')]


def test_self_signed_pair_is_generated_once_per_hostname():
    first = generate_self_signed('cache.example')
    assert generate_self_signed('cache.example') is first
    assert generate_self_signed('CACHE.example.') is first
    assert generate_self_signed('other.example')[1] != first[1]


@pytest.mark.parametrize('hostname, days', [('', 3650), ('.', 3650), ('x.example', 0)])
def test_self_signed_rejects_bad_arguments(hostname, days):
    with pytest.raises(ValueError):
        generate_self_signed(hostname, days)


def test_self_signed_certificate_verifies_for_its_name():
    _, cert_pem = generate_self_signed('verify.example')
    server, client = handshake(create_context(hostname='verify.example'),
                               client_context(ca=cert_pem), sni='verify.example')
    assert client == der(cert_pem), client


def test_default_context_reuses_the_cached_pair():
    expected = der(generate_self_signed('default.example')[1])
    for _ in range(2):
        server, client = handshake(create_context(hostname='default.example'))
        assert client == expected


# -- contexts from PEM ----------------------------------------------------------

@pytest.mark.parametrize('as_text', [False, True], ids=['bytes', 'str'])
def test_context_from_given_pem_verifies_against_its_ca(ca, as_text):
    key, cert = issue(ca, 'given.example', ExtendedKeyUsageOID.SERVER_AUTH)
    if as_text:
        key, cert = key.decode(), cert.decode()
    server, client = handshake(create_context(key=key, cert=cert),
                               client_context(ca=ca[2]), sni='given.example')
    assert client == der(cert)
    assert server['version'] == 'TLSv1.3' and server['cipher'] and server['bits']


def test_cert_alone_may_hold_the_key_too(ca):
    key, cert = issue(ca, 'combined.example', ExtendedKeyUsageOID.SERVER_AUTH)
    server, client = handshake(create_context(cert=cert + key))
    assert client == der(cert)


def _encrypted_key():
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b'secret'))


BROKEN_CERT = b'-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'


@pytest.mark.parametrize('options', [
    {'key': 'not a key', 'cert': 'not a cert'},
    {'cert': BROKEN_CERT},
    {'cert': b'\xff\xfe PEM?'},
    {'key': _encrypted_key(), 'cert': generate_self_signed('enc.example')[1]},
    {'key': generate_self_signed('one.example')[0], 'cert': generate_self_signed('two.example')[1]},
    {'key': generate_self_signed('one.example')[0]},
    {'ca': 'nonsense'},
    {'ca': BROKEN_CERT},
    {'min_version': 'SSLv3'},
    {'min_version': None},
    {'ciphers': 'NO-SUCH-CIPHER'},
    {'session_id_context': 'x' * 33},
], ids=['garbage', 'broken-cert', 'not-ascii', 'encrypted-key', 'key-mismatch',
        'key-without-cert', 'ca-garbage', 'ca-broken', 'sslv3', 'no-version', 'ciphers',
        'long-session-id-context'])
def test_bad_options_raise_value_error(options):
    with pytest.raises(ValueError):
        create_context(**options)


@pytest.mark.parametrize('name', ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'])
def test_min_version_names(name):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # TLSv1 and TLSv1.1 are deprecated
        ctx = create_context(min_version=name)
    assert ctx.minimum_version.name == name.replace('.', '_')


def test_min_version_tls13_refuses_a_client_capped_at_tls12():
    server_ctx = create_context(min_version='TLSv1.3')
    server, client = handshake(server_ctx, client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert isinstance(server, ssl.SSLError)
    assert 'ALERT_PROTOCOL_VERSION' in str(client)      # the alert went out
    server, client = handshake(server_ctx)
    assert server['version'] == 'TLSv1.3'


def test_honor_cipher_order_and_ciphers_are_applied():
    ctx = create_context(ciphers='ECDHE+AESGCM', honor_cipher_order=True)
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    server, client = handshake(ctx, client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert server['version'] == 'TLSv1.2' and 'GCM' in server['cipher']


# -- SNI -----------------------------------------------------------------------

@pytest.fixture(scope='module')
def two_hosts():
    a, b = generate_self_signed('a.example'), generate_self_signed('b.example')
    options = {'sni_options': {'A.Example': {'key': a[0], 'cert': a[1]},
                               'b.example.': {'key': b[0].decode(), 'cert': b[1].decode()}}}
    return options, der(a[1]), der(b[1])


def test_sni_two_hostnames_get_two_certificates(two_hosts):
    options, a_der, b_der = two_hosts
    contexts = build_secure_contexts(options, 'default.example')
    assert set(contexts) == {'*', 'a.example', 'b.example'}
    install_sni(contexts)
    default_der = der(generate_self_signed('default.example')[1])
    for sni, expected in [('a.example', a_der), ('B.EXAMPLE', b_der),
                          ('c.example', default_der), (None, default_der)]:
        server, client = handshake(contexts['*'], sni=sni)
        assert client == expected, sni
        assert server['servername'] == (sni.lower() if sni else None)


def test_sni_works_when_the_default_context_is_gevents(two_hosts, tmp_path):
    """An application may put gevent's SSLContext in secure_context; gevent
    wraps every SNI callback to hand it `conn._sslsock()`, which must still
    lead to the object being handshaken."""
    options, a_der, _ = two_hosts
    contexts = build_secure_contexts(options, 'default.example')
    key, cert = generate_self_signed('default.example')
    (tmp_path / 'key.pem').write_bytes(key)
    (tmp_path / 'cert.pem').write_bytes(cert)
    own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)       # gevent.ssl's class
    own.load_cert_chain(tmp_path / 'cert.pem', tmp_path / 'key.pem')
    contexts['*'] = own
    install_sni(contexts)
    server, client = handshake(own, sni='a.example')
    assert client == a_der
    assert server['servername'] == 'a.example'


@pytest.mark.parametrize('key', ['bücher.example', 'BÜCHER.example.', 'xn--bcher-kva.example'])
@pytest.mark.parametrize('sent', ['xn--bcher-kva.example', 'XN--BCHER-KVA.EXAMPLE.'])
def test_sni_idn_hostname_in_sni_options(key, sent):
    """Clients send A-labels (RFC 6066 §3); the options may be written either way."""
    contexts = build_secure_contexts({'sni_options': {key: {}}}, 'default.example')
    assert 'xn--bcher-kva.example' in contexts
    install_sni(contexts)
    server, client = handshake(contexts['*'], sni=sent)
    assert client == der(generate_self_signed('xn--bcher-kva.example')[1])
    assert server['servername'] == 'xn--bcher-kva.example'


def test_sni_wildcard_matches_one_label():
    contexts = build_secure_contexts({'sni_options': {'*.Example.org': {}}}, 'default.example')
    install_sni(contexts)
    wildcard = der(generate_self_signed('*.example.org')[1])
    default = der(generate_self_signed('default.example')[1])
    for sni, expected in [('mx.example.org', wildcard), ('example.org', default),
                          ('a.mx.example.org', default)]:
        assert handshake(contexts['*'], sni=sni)[1] == expected, sni


def test_sni_callback_is_asked_first_and_none_falls_back_to_the_dict(two_hosts):
    options, a_der, _ = two_hosts
    contexts = build_secure_contexts(options, 'default.example')
    special = create_context(hostname='special.example')
    asked = []

    def callback(name):
        asked.append(name)
        return special if name in ('special.example', 'a.example') else None

    install_sni(contexts, callback)
    assert handshake(contexts['*'], sni='Special.Example.')[1] == \
        der(generate_self_signed('special.example')[1])
    assert handshake(contexts['*'], sni='a.example')[1] != a_der   # the callback wins
    server, client = handshake(contexts['*'], sni='b.example')      # None: the dict decides
    assert server['servername'] == 'b.example'
    assert asked == ['special.example', 'a.example', 'b.example']


def test_sni_callback_may_return_a_plain_stdlib_context(tmp_path):
    import ssl as stdlib_ssl
    key, cert = generate_self_signed('plain.example')
    (tmp_path / 'key.pem').write_bytes(key)
    (tmp_path / 'cert.pem').write_bytes(cert)
    plain = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_SERVER)
    plain.load_cert_chain(tmp_path / 'cert.pem', tmp_path / 'key.pem')
    assert not isinstance(plain, ssl.SSLContext)
    contexts = build_secure_contexts({}, 'default.example')
    install_sni(contexts, lambda name: plain)
    assert handshake(contexts['*'], sni='plain.example')[1] == der(cert)


@pytest.mark.parametrize('bad', [ZeroDivisionError('boom'), 'not a context'])
def test_sni_callback_failure_fails_only_that_handshake(bad):
    contexts = build_secure_contexts({}, 'default.example')
    errors = []

    def callback(name):
        if name == 'bad.example':
            if isinstance(bad, Exception):
                raise bad
            return bad
        return None

    install_sni(contexts, callback, on_error=lambda exc, name: errors.append((exc, name)))
    server, client = handshake(contexts['*'], sni='bad.example')
    assert isinstance(server, ssl.SSLError) and isinstance(client, ssl.SSLError)
    assert 'INTERNAL_ERROR' in str(client)
    assert [name for _, name in errors] == ['bad.example']
    server, client = handshake(contexts['*'], sni='good.example')
    assert server['servername'] == 'good.example'


def test_sni_callback_failure_is_logged_by_default(caplog):
    contexts = build_secure_contexts({}, 'default.example')
    install_sni(contexts, lambda name: 1 / 0)
    with caplog.at_level(logging.WARNING, logger='smtp_stack'):
        server, client = handshake(contexts['*'], sni='x.example')
    assert isinstance(server, ssl.SSLError)
    assert 'x.example' in caplog.text and 'ZeroDivisionError' in caplog.text


def test_sni_entries_added_after_install_are_used():
    contexts = build_secure_contexts({}, 'default.example')
    install_sni(contexts)
    contexts['late.example'] = create_context(hostname='late.example')
    contexts['*.late.example'] = create_context(hostname='*.late.example')
    assert handshake(contexts['*'], sni='late.example')[1] == \
        der(generate_self_signed('late.example')[1])
    assert handshake(contexts['*'], sni='mx.late.example')[1] == \
        der(generate_self_signed('*.late.example')[1])


def test_sni_options_inherit_top_level_options(ca):
    key, cert = issue(ca, 'top.example', ExtendedKeyUsageOID.SERVER_AUTH)
    combined = issue(ca, 'combined.example', ExtendedKeyUsageOID.SERVER_AUTH)
    contexts = build_secure_contexts({
        'key': key, 'cert': cert, 'min_version': 'TLSv1.3',
        'sni_options': {'same.example': {},
                        'own.example': {'min_version': 'TLSv1.2', 'key': None},
                        'self.example': {'cert': generate_self_signed('self.example')[1],
                                         'key': generate_self_signed('self.example')[0]},
                        # key and cert travel as a pair: the top-level key is not taken
                        'combined.example': {'cert': combined[1] + combined[0]}},
    }, 'ignored.example')
    assert contexts['same.example'].minimum_version == ssl.TLSVersion.TLSv1_3
    assert contexts['own.example'].minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(contexts['same.example'])[1] == der(cert)
    assert handshake(contexts['own.example'])[1] == der(cert)       # None inherits
    assert handshake(contexts['self.example'])[1] == der(generate_self_signed('self.example')[1])
    assert handshake(contexts['combined.example'])[1] == der(combined[1])


def test_sni_switch_keeps_the_verify_mode_of_the_first_context(ca):
    """Pins an OpenSSL limit: SSL_set_SSL_CTX swaps certificate and key, not
    the verify mode, so request_cert in one sni_options entry alone asks nothing."""
    contexts = build_secure_contexts(
        {'ca': ca[2], 'sni_options': {'certs.example': {'request_cert': True}}}, 'default.example')
    install_sni(contexts)
    server, client = handshake(contexts['*'], sni='certs.example')
    assert client == der(generate_self_signed('certs.example')[1])
    assert server['peer_certificate'] is None


@pytest.mark.parametrize('sni_options', [
    {'a.example': {'colour': 'blue'}},
    {'a.example': {}, 'A.EXAMPLE.': {}},
    {'*': {}},
    {'a.example': 'not a dict'},
    {'a.example': {'cert': 'garbage'}},
    ['a.example'],
])
def test_bad_sni_options_raise_value_error(sni_options):
    with pytest.raises(ValueError):
        build_secure_contexts({'sni_options': sni_options}, 'default.example')


# -- client certificates ---------------------------------------------------------

def test_request_cert_reports_the_client_certificate(ca, client_cert_files):
    pair = issue(ca, 'client.example')
    server_ctx = create_context(ca=ca[2], request_cert=True)
    server, client = handshake(server_ctx, client_context(cert_files=client_cert_files(pair)))
    assert isinstance(client, bytes), client
    assert server['peer_certificate_der'] == der(pair[1])
    assert (('commonName', 'client.example'),) in server['peer_certificate']['subject']


@pytest.mark.parametrize('tls13', [True, False], ids=['TLSv1.3', 'TLSv1.2'])
def test_reject_unauthorized_refuses_a_client_without_certificate(tls13):
    server_ctx = create_context(ca=make_ca()[2], request_cert=True)
    client_ctx = client_context(max_version=None if tls13 else ssl.TLSVersion.TLSv1_2)
    server, client = handshake(server_ctx, client_ctx)
    assert isinstance(server, ssl.SSLError)
    assert isinstance(client, OSError)


def test_reject_unauthorized_refuses_an_untrusted_client_certificate(ca, client_cert_files):
    stranger = issue(make_ca('Other CA'), 'stranger.example')
    server_ctx = create_context(ca=ca[2], request_cert=True)
    server, client = handshake(server_ctx, client_context(cert_files=client_cert_files(stranger)))
    assert isinstance(server, ssl.SSLError)
    assert isinstance(client, OSError)


def test_request_cert_without_reject_unauthorized_admits_a_client_without_certificate(ca):
    server_ctx = create_context(ca=ca[2], request_cert=True, reject_unauthorized=False)
    assert server_ctx.verify_mode == ssl.CERT_OPTIONAL
    server, client = handshake(server_ctx)
    assert isinstance(client, bytes)
    assert server['peer_certificate'] is None and server['peer_certificate_der'] is None


def test_no_client_certificate_is_asked_by_default(ca, client_cert_files):
    server, client = handshake(create_context(ca=ca[2]),
                               client_context(cert_files=client_cert_files(issue(ca, 'c.example'))))
    assert server['peer_certificate'] is None
