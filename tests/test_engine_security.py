"""TLS (implicit, STARTTLS, SNI, client certificates) and AUTH over real sockets."""
import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import subprocess
import threading
import time

import pytest
from cryptography import x509

from smtp_stack import SmtpError
from smtp_stack.tls import generate_self_signed

import peers
from conftest import WAIT, RawClient, readable


def insecure_client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def accept_secret(session):
    """on_auth: 'secret' is the password (or shared secret) of everyone."""
    return {'name': session.auth.username} if session.auth.validate('secret') else None


def tls_client(c, server_hostname='mx.test', context=None):
    context = context or insecure_client_context()
    c.sock = context.wrap_socket(c.sock, server_hostname=server_hostname)
    c.buf = b''
    return c


# --- STARTTLS ------------------------------------------------------------------

def test_starttls_with_smtplib_resets_the_session(serve):
    seen = []

    def spy(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            s = ctx.session
            seen.append((s.secure, s.tls['version'], s.transmission_type, s.helo))
    server = serve(middleware=[spy])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.ehlo('plain.example')
        assert smtp.has_extn('starttls')
        smtp.starttls(context=insecure_client_context())
        smtp.ehlo('secure.example')
        assert not smtp.has_extn('starttls')
        smtp.sendmail('a@b.example', ['c@d.example'], b'Subject: x\r\n\r\nhi\r\n')
    assert seen == [(True, seen[0][1], 'ESMTPS', 'secure.example')]
    assert seen[0][1] in ('TLSv1.2', 'TLSv1.3')


def test_starttls_forgets_the_plaintext_envelope(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(220, 'STARTTLS')
    tls_client(c)
    assert c.cmd('RCPT TO:<c@d.example>')[0] == 503   # neither EHLO nor MAIL survive
    c.expect(250, 'EHLO x')
    assert c.cmd('RCPT TO:<c@d.example>')[0] == 503


def test_starttls_injection_is_discarded(serve, client):
    """CVE-2011-0411: commands pipelined after STARTTLS are never executed."""
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.send('STARTTLS\r\nRSET\r\n')
    assert c.reply() == (220, '2.0.0 Ready to start TLS')
    assert c.buf == b''
    tls_client(c)
    # the first reply over TLS answers our NOOP, not the injected RSET
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_second_starttls_gets_554(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(220, 'STARTTLS')
    tls_client(c)
    c.expect(250, 'EHLO x')
    assert c.cmd('STARTTLS') == (554, '5.5.1 Error: TLS already active')


def test_failed_handshake_closes_only_that_connection(serve, client):
    server = serve()
    bad = client(server)
    bad.expect(220, 'STARTTLS')
    bad.send(b'this is not a TLS client hello\r\n' * 4)
    assert bad.closed()
    good = client(server)
    assert good.cmd('NOOP')[0] == 250


def test_slow_handshake_is_cut_at_upgrade_timeout(serve, client):
    c = client(serve(upgrade_timeout=0.3))
    c.expect(220, 'STARTTLS')
    assert c.closed()       # we never start the handshake


def test_handshake_dripped_byte_by_byte_is_cut_at_upgrade_timeout(serve, client):
    """upgrade_timeout bounds the whole handshake, not each wait in it: a
    ClientHello that keeps trickling in is still cut off."""
    c = client(serve(upgrade_timeout=0.4))
    c.expect(220, 'STARTTLS')
    started = time.monotonic()
    hello = b'\x16\x03\x01\x02\x00' + b'\x01' * 200   # a record header and its start
    closed = False
    for byte in hello:
        if time.monotonic() - started > WAIT:
            break
        try:
            c.sock.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        if readable(c.sock, 0.05) and c.closed():     # the drip's pace
            closed = True
            break
    elapsed = time.monotonic() - started
    assert closed and 0.35 <= elapsed < 0.4 + 1.0, elapsed


@pytest.mark.parametrize('tls13', [True, False], ids=['TLS 1.3 ticket', 'TLS 1.2'])
def test_a_client_resumes_its_tls_session_and_gets_one_new_ticket(serve, client, tls13):
    """A mail client resumes the session of its last connection; under TLS
    1.3 each handshake, full or resumed, hands it exactly one new ticket."""
    server = serve()
    context = insecure_client_context()
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    def connect(session=None):
        c = client(server)
        c.expect(250, 'EHLO a.example')
        c.expect(220, 'STARTTLS')
        c.sock = context.wrap_socket(c.sock, server_hostname='mx.test', session=session)
        c.buf = b''
        c.expect(250, 'EHLO a.example')     # reading it takes in the tickets
        c.expect(221, 'QUIT')
        return c.sock.session, c.sock.session_reused

    first, reused = connect()
    assert not reused and first is not None
    second, reused = connect(first)
    assert reused
    if tls13:
        assert second.id != first.id        # a fresh ticket for the next time
    _, reused = connect(second)
    assert reused


def test_tls13_handshakes_issue_one_session_ticket(serve, client):
    """One ticket per handshake (OpenSSL's default is two)."""
    server = serve()
    tickets = []
    context = insecure_client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    c = client(server)
    c.expect(250, 'EHLO a.example')
    c.expect(220, 'STARTTLS')

    # The ssl module's undocumented message callback: the only view of the
    # handshake messages themselves.
    def count(conn, direction, version, content_type, msg_type, data):
        if direction == 'read' and msg_type == ssl._TLSMessageType.NEWSESSION_TICKET:
            tickets.append(len(data))
    context._msg_callback = count
    tls_client(c, context=context)
    c.expect(250, 'EHLO a.example')
    c.expect(221, 'QUIT')
    assert len(tickets) == 1


def test_starttls_disabled(serve, client):
    c = client(serve(disabled_commands=['STARTTLS']))
    assert 'STARTTLS' not in c.expect(250, 'EHLO x').split('\n')
    assert c.cmd('STARTTLS')[0] == 502


def test_implicit_tls_with_smtp_ssl(serve):
    server = serve(secure=True)
    seen = []
    server.use(lambda ctx, next: (next(), seen.append(ctx.session.secure)))
    with smtplib.SMTP_SSL(*server.address, timeout=WAIT, context=insecure_client_context()) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250 and not smtp.has_extn('starttls')
        assert smtp.noop()[0] == 250
    assert seen and all(seen)


def test_given_certificate_is_used(serve):
    key, cert = generate_self_signed('given.example')
    server = serve(key=key, cert=cert, secure=True)
    ctx = ssl.create_default_context(cadata=cert.decode())    # verifies chain and name
    c = RawClient(server.address)
    try:
        tls_client(c, server_hostname='given.example', context=ctx)
        c.expect(220)
        peer = c.sock.getpeercert()
    finally:
        c.close()
    assert ('DNS', 'given.example') in peer['subjectAltName']


def test_bad_pem_fails_at_construction():
    from smtp_stack import SmtpServer
    with pytest.raises(ValueError):
        SmtpServer(key='-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n',
                   cert='-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n')


def test_sni_gives_each_name_its_certificate(serve):
    keys = {name: generate_self_signed(name) for name in ('one.example', 'two.example')}
    names = []

    def spy(ctx, next):
        next()
        names.append(ctx.session.tls['servername'])
    server = serve(secure=True, middleware=[spy], sni_options={
        name: {'key': key, 'cert': cert} for name, (key, cert) in keys.items()})
    for name, (_, cert) in keys.items():
        c = RawClient(server.address)
        try:
            tls_client(c, server_hostname=name)
            c.expect(220)
            c.expect(250, 'NOOP')
            der = c.sock.getpeercert(binary_form=True)
        finally:
            c.close()
        assert der == x509.load_pem_x509_certificate(cert).public_bytes(
            __import__('cryptography.hazmat.primitives.serialization',
                       fromlist=['Encoding']).Encoding.DER)
    assert names == ['one.example', 'two.example']


def client_certificate(name):
    """A self-signed certificate usable for TLS client authentication."""
    import datetime
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_client_certificate_is_in_session_tls(serve, tmp_path):
    ca_key, ca_cert = client_certificate('client.example')
    cert_file = tmp_path / 'client.pem'
    cert_file.write_bytes(ca_cert + ca_key)
    peers = []

    def spy(ctx, next):
        next()
        peers.append(ctx.session.tls['peer_certificate'])
    server = serve(secure=True, request_cert=True, ca=ca_cert, middleware=[spy])
    ctx = insecure_client_context()
    ctx.load_cert_chain(str(cert_file))
    with smtplib.SMTP_SSL(*server.address, timeout=WAIT, context=ctx) as smtp:
        smtp.noop()
    assert peers and ('DNS', 'client.example') in peers[0]['subjectAltName']
    # without a certificate the handshake is refused (reject_unauthorized=True)
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP_SSL(*server.address, timeout=WAIT,
                              context=insecure_client_context()) as smtp:
            smtp.noop()


# --- AUTH ----------------------------------------------------------------------

@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'CRAM-MD5'])
def test_smtplib_login_each_mechanism(serve, mechanism):
    seen = []

    def spy(ctx, next):
        next()
        if ctx.command_name == 'MAIL':
            seen.append((ctx.session.user, ctx.session.transmission_type))
    server = serve(auth_methods=['PLAIN', 'LOGIN', 'CRAM-MD5'], on_auth=accept_secret,
                   middleware=[spy])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.starttls(context=insecure_client_context())
        smtp.ehlo()
        smtp.user, smtp.password = 'alice', 'secret'
        code, _ = smtp.auth(mechanism, getattr(smtp, 'auth_' + mechanism.lower().replace('-', '_')),
                            initial_response_ok=True)
        assert code == 235
        smtp.sendmail('alice@b.example', ['c@d.example'], b'x\r\n')
    assert seen == [({'name': 'alice'}, 'ESMTPSA')]


def test_wrong_password_gets_535_and_third_failure_closes(serve, client):
    c = client(serve(allow_insecure_auth=True, on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    bad = base64.b64encode(b'\0alice\0wrong').decode()
    assert c.cmd(f'AUTH PLAIN {bad}') == (535, '5.7.8 Error: authentication failed')
    assert c.cmd(f'AUTH PLAIN {bad}')[0] == 535
    assert c.cmd(f'AUTH PLAIN {bad}')[0] == 535
    assert c.reply()[0] == 421
    assert c.closed()


def test_default_on_auth_rejects_everyone(serve, client):
    c = client(serve(allow_insecure_auth=True))
    c.expect(250, 'EHLO x')
    good = base64.b64encode(b'\0alice\0secret').decode()
    assert c.cmd(f'AUTH PLAIN {good}')[0] == 535


def test_auth_requires_tls_unless_allowed(serve, client):
    c = client(serve(on_auth=accept_secret))
    lines = c.expect(250, 'EHLO x').split('\n')
    assert not any(line.startswith('AUTH') for line in lines)
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==') == (
        538, '5.7.11 Error: must issue a STARTTLS command first')


def test_auth_sequence_rules(serve, client):
    c = client(serve(allow_insecure_auth=True, on_auth=accept_secret))
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')[0] == 503      # before EHLO
    c.expect(250, 'EHLO x')
    assert c.cmd('AUTH NOPE')[0] == 504
    assert c.cmd('AUTH')[0] == 501
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')[0] == 503      # in a transaction
    c.expect(250, 'RSET')
    c.expect(235, 'AUTH PLAIN AGFsaWNlAHNlY3JldA==')
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==') == (503, '5.5.1 Error: already authenticated')
    lines = c.expect(250, 'EHLO x').split('\n')
    assert not any(line.startswith('AUTH') for line in lines)


def test_plain_with_continuation_and_authzid(serve, client):
    seen = []

    def on_auth(session):
        seen.append((session.auth.method, session.auth.authzid, session.auth.username))
        return accept_secret(session)
    c = client(serve(allow_insecure_auth=True, on_auth=on_auth))
    c.expect(250, 'EHLO x')
    assert c.cmd('AUTH PLAIN') == (334, '')
    c.expect(235, base64.b64encode(b'admin\0alice\0secret').decode())
    assert seen == [('PLAIN', 'admin', 'alice')]


def test_login_without_initial_response(serve, client):
    c = client(serve(allow_insecure_auth=True, on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    assert c.cmd('AUTH LOGIN') == (334, 'VXNlcm5hbWU6')
    assert c.cmd(base64.b64encode(b'alice').decode()) == (334, 'UGFzc3dvcmQ6')
    c.expect(235, base64.b64encode(b'secret').decode())


def test_cancel_and_bad_base64(serve, client):
    c = client(serve(allow_insecure_auth=True, on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    c.expect(334, 'AUTH LOGIN')
    assert c.cmd('*') == (501, '5.7.0 Authentication aborted')
    c.expect(334, 'AUTH LOGIN')
    assert c.cmd('%%%not base64')[0] == 501
    c.send('AUTH LOGIN\r\n')
    c.expect(334)
    c.send('A' * 13000 + '\r\n')
    assert c.reply()[0] == 500
    assert c.cmd('NOOP')[0] == 250


def test_cram_md5_raw(serve, client):
    c = client(serve(allow_insecure_auth=True, auth_methods=['CRAM-MD5'], on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    code, challenge = c.cmd('AUTH CRAM-MD5')
    assert code == 334
    digest = hmac.new(b'secret', base64.b64decode(challenge), hashlib.md5).hexdigest()
    c.expect(235, base64.b64encode(f'alice {digest}'.encode()).decode())


def xoauth2(user, token):
    return base64.b64encode(f'user={user}\x01auth=Bearer {token}\x01\x01'.encode()).decode()


def test_xoauth2_success_and_gmail_style_failure(serve, client):
    def on_auth(session):
        return session.auth.username if session.auth.validate('good-token') else None
    c = client(serve(allow_insecure_auth=True, auth_methods=['XOAUTH2'], on_auth=on_auth))
    c.expect(250, 'EHLO x')
    code, challenge = c.cmd(f'AUTH XOAUTH2 {xoauth2("alice", "bad-token")}')
    assert code == 334
    assert json.loads(base64.b64decode(challenge))['status'] == '401'
    assert c.cmd('')[0] == 535
    c.expect(235, f'AUTH XOAUTH2 {xoauth2("alice", "good-token")}')


def test_spec_example_middleware_with_no_auth_reply(serve):
    """The AUTH pattern of the README's quick example, driven by smtplib."""
    def check_auth(ctx, next):
        next()
        if ctx.session.auth:
            if ctx.session.auth.validate('secret'):
                ctx.session.user = {'name': ctx.session.auth.username}
                ctx.send(235, 'Authentication successful')
            else:
                ctx.send(535, 'Authentication failed')
                ctx.close()
            ctx.session.auth = None
    server = serve(auth_methods=['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'],
                   allow_insecure_auth=True, no_auth_reply=True, middleware=[check_auth])
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        smtp.login('bob', 'secret')
        smtp.sendmail('bob@b.example', ['c@d.example'], b'hi\r\n')
    with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
        # 535, then the example closes the connection: smtplib, which would
        # try its next mechanism, finds the connection gone
        with pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)):
            smtp.login('bob', 'wrong')


def test_no_auth_reply_without_middleware_fails_closed(serve, client):
    c = client(serve(allow_insecure_auth=True, no_auth_reply=True, on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')[0] == 535


def test_auth_optional_false_requires_auth_for_mail(serve, client):
    c = client(serve(allow_insecure_auth=True, auth_optional=False, on_auth=accept_secret))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example>') == (530, '5.7.0 Error: authentication required')
    c.expect(235, 'AUTH PLAIN AGFsaWNlAHNlY3JldA==')
    c.expect(250, 'MAIL FROM:<a@b.example>')


def test_on_auth_smtp_error_is_the_reply(serve, client):
    def on_auth(session):
        raise SmtpError(454, 'Temporary authentication failure', '4.7.0')
    c = client(serve(allow_insecure_auth=True, on_auth=on_auth))
    c.expect(250, 'EHLO x')
    assert c.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==') == (454, '4.7.0 Temporary authentication failure')


# --- swaks, an independent client ----------------------------------------------

def run_swaks(server, *args):
    cmd = [peers.swaks_with_tls(), '--server', '127.0.0.1', '--port', str(server.address[1]),
           '--from', 'alice@b.example', '--to', 'c@d.example', '--timeout', '10', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_swaks_starttls(serve):
    delivered = threading.Event()
    server = serve(middleware=[lambda ctx, next: (next(), ctx.command_name == 'DATA'
                                                  and ctx.session.secure and delivered.set())])
    result = run_swaks(server, '--tls')
    assert result.returncode == 0, result.stdout + result.stderr
    assert delivered.is_set()


def test_swaks_implicit_tls(serve):
    server = serve(secure=True)
    result = run_swaks(server, '--tlsc')
    assert result.returncode == 0, result.stdout + result.stderr


def test_swaks_auth_cram_md5(serve):
    server = serve(auth_methods=['CRAM-MD5'], on_auth=accept_secret)
    result = run_swaks(server, '--tls', '--auth', 'CRAM-MD5', '--auth-user', 'alice',
                       '--auth-password', 'secret')
    assert result.returncode == 0, result.stdout + result.stderr
    assert '235 ' in result.stdout


# --- curl, a third client ----------------------------------------------------------

@pytest.mark.parametrize('scheme, options', [('smtp', {}), ('smtps', {'secure': True})])
def test_curl_sends_with_tls_and_login(serve, tmp_path, scheme, options):
    bodies = []

    def store(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            bodies.append((ctx.session.user, ctx.session.secure, ctx.data_stream.read()))
    server = serve(on_auth=accept_secret, middleware=[store], **options)
    message = tmp_path / 'message.eml'
    message.write_bytes(b'Subject: from curl\r\n\r\nhello\r\n')
    result = subprocess.run(
        [peers.program('curl', 'curl'), '--silent', '--show-error', '--max-time', '20', '--insecure', '--ssl-reqd',
         '--url', f'{scheme}://127.0.0.1:{server.address[1]}', '--user', 'carol:secret',
         '--mail-from', 'carol@b.example', '--mail-rcpt', 'c@d.example',
         '--upload-file', str(message)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert bodies == [({'name': 'carol'}, True, b'Subject: from curl\r\n\r\nhello\r\n')]
