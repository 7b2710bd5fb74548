"""The pytest plugin and MailSink's defaults and switches, over real sockets
with smtplib: any AUTH accepted and recorded, STARTTLS verified against the
run-time CA (and refused by the system's trust), the marker, the ini keys,
the session fixture, and a process monkey-patched by gevent."""
import os
import smtplib
import ssl
import sys
import tempfile
import textwrap

import pytest

import smtp_stack.pytest_plugin
from smtp_stack.testing import MailSink

from clirunner import ROOT, run
from conftest import WAIT, RawClient

MESSAGE = b'Subject: fixture\r\n\r\nx\r\n'


def verifying(sink):
    """What an application that checks certificates builds, trusting the sink's CA."""
    return ssl.create_default_context(cafile=sink.ca_file)


def xoauth2(user, token):
    return lambda challenge=None: f'user={user}\x01auth=Bearer {token}\x01\x01'


def test_the_plugin_is_loaded_through_the_pytest11_entry_point(request):
    assert request.config.pluginmanager.get_plugin('smtp_stack') is smtp_stack.pytest_plugin


def test_the_fixture_is_a_running_sink(smtp_server):
    assert smtp_server.address[0] == '127.0.0.1' and smtp_server.messages == []
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example', 'e@f.example'], MESSAGE)
    [message] = smtp_server.wait_for(1)
    assert message['Subject'] == 'fixture'
    assert [r.address for r in message.envelope.rcpt_to] == ['c@d.example', 'e@f.example']
    assert message.session.user is None and not message.session.secure


# -- AUTH: any mechanism, any credentials, without TLS; the user recorded -----

@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'CRAM-MD5', 'XOAUTH2'])
def test_any_login_is_accepted_over_a_plain_connection_and_recorded(smtp_server, mechanism):
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.ehlo()
        assert mechanism in c.esmtp_features['auth'].split()
        c.user, c.password = 'ann@shop.example', 'any password at all'
        authobject = {'PLAIN': c.auth_plain, 'LOGIN': c.auth_login,
                      'CRAM-MD5': c.auth_cram_md5,
                      'XOAUTH2': xoauth2('ann@shop.example', 'any-token')}[mechanism]
        code, _ = c.auth(mechanism, authobject, initial_response_ok=mechanism != 'CRAM-MD5')
        assert code == 235
        c.sendmail('ann@shop.example', ['c@d.example'], MESSAGE)
    [message] = smtp_server.wait_for(1)
    assert message.session.user == 'ann@shop.example'
    assert message.session.auth.method == mechanism
    assert not message.session.secure
    assert message.session.transmission_type == 'ESMTPA'


def test_smtplib_login_as_apps_call_it(smtp_server):
    """What Flask-Mail and Django do: login(user, password), whatever the mechanism."""
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.login('mailer', 'hunter2')
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    assert smtp_server.wait_for(1)[0].session.user == 'mailer'


# -- TLS: a certificate signed by the run-time CA -----------------------------------

@pytest.mark.parametrize('host', ['127.0.0.1', 'localhost'])
def test_starttls_is_verified_against_ca_file_with_the_host_name(smtp_server, host):
    with smtplib.SMTP(host, smtp_server.address[1], timeout=WAIT) as c:
        c.starttls(context=verifying(smtp_server))      # host name checked too
        c.login('ann', 'x')
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    [message] = smtp_server.wait_for(1)
    assert message.session.secure and message.session.tls['version'].startswith('TLSv1.')
    assert message.session.transmission_type == 'ESMTPSA'


@pytest.mark.smtp_server(host='::1')
def test_starttls_is_verified_over_ipv6_loopback(smtp_server):
    assert smtp_server.address[0] == '::1'
    with smtplib.SMTP('::1', smtp_server.address[1], timeout=WAIT) as c:
        c.starttls(context=verifying(smtp_server))
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    assert smtp_server.wait_for(1)[0].session.secure


def test_the_system_trust_does_not_know_the_ca(smtp_server):
    """The check is real: without ca_file, verification fails."""
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            c.starttls(context=ssl.create_default_context())
    assert 'unable to get local issuer certificate' in str(failed.value)


def test_the_certificate_is_not_good_for_other_names(smtp_server):
    c = RawClient(smtp_server.address)
    try:
        c.expect(220)
        c.expect(250, 'EHLO client.example')
        c.expect(220, 'STARTTLS')
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            verifying(smtp_server).wrap_socket(c.sock, server_hostname='mail.example.com')
        assert 'Hostname mismatch' in str(failed.value)
    finally:
        c.close()


def test_ca_file_is_a_temporary_file_removed_when_the_process_exits(tmp_path):
    script = textwrap.dedent('''
        import os
        from smtp_stack.testing import MailSink
        with MailSink() as a, MailSink() as b:
            assert a.ca_file == b.ca_file and os.path.isfile(a.ca_file)
            print(a.ca_file)
    ''')
    result = run([sys.executable, '-c', script], tmp_path)
    assert result.returncode == 0, result.stderr
    ca_file = result.stdout.strip()
    assert ca_file.startswith(tempfile.gettempdir() + os.sep)
    assert not ca_file.startswith(ROOT) and not ca_file.startswith(str(tmp_path))
    assert not os.path.exists(ca_file) and not os.path.exists(os.path.dirname(ca_file))


# -- the switches, through the marker -----------------------------------------------

@pytest.mark.smtp_server(auth_required=True)
def test_auth_required_refuses_mail_before_login(smtp_server):
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
        assert refused.value.smtp_code == 530
        c.login('ann', 'anything')
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    assert smtp_server.wait_for(1)[0].session.user == 'ann'


@pytest.mark.smtp_server(users={'ann': 's3cret'})
def test_users_accepts_only_those_logins(smtp_server):
    for user, password in (('ann', 'wrong'), ('bob', 's3cret')):
        with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:   # QUIT gets 221, not 421
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                c.login(user, password)
            assert failed.value.smtp_code == 535
    for mechanism in ('PLAIN', 'CRAM-MD5'):     # a password, and an HMAC of the challenge
        with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
            c.ehlo()
            c.user, c.password = 'ann', 's3cret'
            authobject = c.auth_plain if mechanism == 'PLAIN' else c.auth_cram_md5
            assert c.auth(mechanism, authobject, initial_response_ok=False)[0] == 235
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth('XOAUTH2', xoauth2('ann', 'not the token'))
        assert c.auth('XOAUTH2', xoauth2('ann', 's3cret'))[0] == 235


@pytest.mark.smtp_server(tls='off')
def test_tls_off_offers_no_starttls(smtp_server):
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.ehlo()
        assert not c.has_extn('starttls')
        assert c.docmd('STARTTLS')[0] == 502
        c.login('ann', 'x')         # AUTH is still offered, in the clear
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    assert smtp_server.wait_for(1)[0].session.user == 'ann'


@pytest.mark.smtp_server(tls='implicit')
def test_tls_implicit_is_verified_against_ca_file(smtp_server):
    with smtplib.SMTP_SSL(*smtp_server.address, timeout=WAIT,
                          context=verifying(smtp_server)) as c:
        c.login('ann', 'x')
        c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
    [message] = smtp_server.wait_for(1)
    assert message.session.secure and message.session.user == 'ann'


@pytest.mark.smtp_server(allow_insecure_auth=False)
def test_auth_only_after_tls_with_a_server_option(smtp_server):
    with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
        c.ehlo()
        assert c.docmd('AUTH', 'PLAIN AGFubgB4')[0] == 538
        c.starttls(context=verifying(smtp_server))
        c.login('ann', 'x')


@pytest.mark.smtp_server(auth_required=True)
class TestMarkersOnAClassAndATest:

    @pytest.mark.smtp_server(size=1000)
    def test_the_nearest_marker_adds_to_the_class_one(self, smtp_server):
        with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
            c.ehlo()
            assert c.esmtp_features['size'] == '1000'
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
            assert refused.value.smtp_code == 530
            c.login('ann', 'x')
            with pytest.raises(smtplib.SMTPSenderRefused) as too_big:     # MAIL ... SIZE=
                c.sendmail('a@b.example', ['c@d.example'], MESSAGE + b'y' * 2000 + b'\r\n')
            assert too_big.value.smtp_code == 552
        assert smtp_server.messages == []

    @pytest.mark.smtp_server(auth_required=False)
    def test_the_nearest_marker_wins(self, smtp_server):
        with smtplib.SMTP(*smtp_server.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
        assert len(smtp_server.wait_for(1)) == 1


@pytest.mark.parametrize('options, error', [
    ({'tls': 'ssl'}, "tls must be one of starttls, implicit, off, not 'ssl'"),
    ({'tls': 'off', 'secure': True}, "tls='off' and secure=True disagree"),
    ({'tls': 'starttls', 'disabled_commands': ['STARTTLS']}, 'disabled_commands has STARTTLS'),
    ({'auth_required': True, 'auth_optional': True}, 'auth_required=True and auth_optional'),
    ({'auth_required': 'yes'}, 'auth_required must be True or False'),
    ({'users': {'ann': ''}}, 'users must map user names to passwords'),
    ({'users': {'ann': 'x'}, 'on_auth': lambda session: 'ann'}, 'users or on_auth'),
])
def test_contradicting_switches_are_refused_at_construction(options, error):
    with pytest.raises(ValueError) as refused:
        MailSink(**options)
    assert error in str(refused.value)


def test_the_switches_stand_for_server_options():
    assert MailSink(secure=True).tls == 'implicit'
    assert MailSink(disabled_commands=['STARTTLS']).tls == 'off'
    assert MailSink().tls == 'starttls'
    with pytest.raises(TypeError):
        MailSink(sise=10)       # any other keyword is an SmtpServer option, checked as such


# -- ini keys and the session fixture: an inner pytest in a project of its own ------

def run_pytest(project, ini, tests):
    (project / 'pytest.ini').write_text(textwrap.dedent(ini))
    (project / 'test_inner.py').write_text(textwrap.dedent(tests))
    return run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rA'],
               project, timeout=120)


INNER_HELPERS = '''
    import smtplib, socket, ssl
    import pytest
    MESSAGE = b'Subject: inner\\r\\n\\r\\nx\\r\\n'

    def verifying(sink):
        return ssl.create_default_context(cafile=sink.ca_file)
'''


def test_ini_keys_set_the_options_and_the_marker_overrides_them(tmp_path):
    ini = '''
        [pytest]
        addopts = --strict-markers
        smtp_server_tls = implicit
        smtp_server_auth_required = true
        smtp_server_users =
            ann:s3cret
            bob:pass:with:colons
        smtp_server_options =
            size = 1000
            banner = 'the inner sink'
            auth_methods = ['PLAIN', 'LOGIN']
    '''
    tests = INNER_HELPERS + '''
    def check_ini_options(sink):
        with verifying(sink).wrap_socket(socket.create_connection(sink.address, timeout=10),
                                         server_hostname=sink.address[0]) as raw:
            assert b'the inner sink' in raw.recv(1000)      # the 220 greeting
        with smtplib.SMTP_SSL(*sink.address, timeout=10, context=verifying(sink)) as c:
            c.ehlo()
            assert c.esmtp_features['size'] == '1000'
            assert c.esmtp_features['auth'].split() == ['PLAIN', 'LOGIN']
            with pytest.raises(smtplib.SMTPSenderRefused):
                c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login('ann', 'wrong')
            c.login('bob', 'pass:with:colons')
            c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
        assert sink.wait_for(1, timeout=10)[0].session.user == 'bob'

    def test_the_ini_keys_configure_smtp_server(smtp_server):
        check_ini_options(smtp_server)

    def test_the_ini_keys_configure_smtp_server_session(smtp_server_session):
        check_ini_options(smtp_server_session)

    @pytest.mark.smtp_server(tls='starttls', users={'cy': 'pw'}, size=0)
    def test_the_marker_overrides_the_ini_keys(smtp_server):
        with smtplib.SMTP(*smtp_server.address, timeout=10) as c:
            c.starttls(context=verifying(smtp_server))
            c.ehlo()
            assert 'size' not in c.esmtp_features or c.esmtp_features['size'] in ('', '0')
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login('ann', 's3cret')
            c.login('cy', 'pw')
            c.sendmail('a@b.example', ['c@d.example'], MESSAGE)
        assert smtp_server.wait_for(1, timeout=10)[0].session.user == 'cy'
    '''
    result = run_pytest(tmp_path, ini, tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '3 passed' in result.stdout


def test_smtp_server_session_is_shared_and_emptied_before_each_test(tmp_path):
    tests = INNER_HELPERS + '''
    def send(sink, subject):
        with smtplib.SMTP(*sink.address, timeout=10) as c:
            c.sendmail('a@b.example', ['c@d.example'], f'Subject: {subject}\\r\\n\\r\\nx\\r\\n')

    @pytest.fixture(scope='session')
    def app_config(smtp_server_session):
        """A session-wide app configuration made once from the session's sink."""
        return {'MAIL_PORT': smtp_server_session.address[1]}

    @pytest.fixture
    def welcome_mail_sent(smtp_server_session):
        send(smtp_server_session, 'sent by a fixture')

    def test_1_sends(smtp_server_session, app_config):
        assert app_config['MAIL_PORT'] == smtp_server_session.address[1]
        send(smtp_server_session, 'one')
        assert [m['Subject'] for m in smtp_server_session.wait_for(1)] == ['one']

    def test_2_starts_empty(smtp_server_session, app_config):
        assert app_config['MAIL_PORT'] == smtp_server_session.address[1]
        assert smtp_server_session.messages == []
        send(smtp_server_session, 'two')

    def test_3_keeps_what_its_fixtures_sent(welcome_mail_sent, smtp_server_session):
        assert [m['Subject'] for m in smtp_server_session.messages] == ['sent by a fixture']

    def test_4_the_session_sink_has_the_defaults(smtp_server_session):
        with smtplib.SMTP(*smtp_server_session.address, timeout=10) as c:
            c.starttls(context=verifying(smtp_server_session))
            c.login('anyone', 'anything')

    @pytest.mark.smtp_server(auth_required=True)
    def test_5_a_marker_cannot_configure_the_shared_sink(smtp_server_session):
        pass

    @pytest.mark.smtp_server(auth_required=True)
    def test_6_a_marker_with_both_fixtures_is_for_smtp_server(smtp_server, smtp_server_session):
        assert smtp_server.server.options.auth_optional is False
        assert smtp_server_session.server.options.auth_optional is True
    '''
    result = run_pytest(tmp_path, '[pytest]\naddopts = --strict-markers\n', tests)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '5 passed, 1 error' in result.stdout, result.stdout
    assert 'ERROR test_inner.py::test_5_a_marker_cannot_configure_the_shared_sink' in result.stdout
    assert 'takes its options from the smtp_server_* ini keys' in result.stdout


@pytest.mark.parametrize('ini, error', [
    ('smtp_server_tls = ssl', "smtp_server_tls: 'ssl' is not one of starttls, implicit, off"),
    ('smtp_server_users = ann', "smtp_server_users: 'ann' is not \"user:password\""),
    ('smtp_server_options = size 1000', "smtp_server_options: 'size 1000' is not"),
    ('smtp_server_port = 25x', "smtp_server_port: '25x' is not a port number"),
])
def test_a_bad_ini_key_stops_the_run_with_its_name(tmp_path, ini, error):
    result = run_pytest(tmp_path, f'[pytest]\n{ini}\n', 'def test_x():\n    pass\n')
    assert result.returncode == 4, result.stdout + result.stderr
    assert error in result.stderr


def test_a_bad_marker_fails_the_test_that_carries_it(tmp_path):
    tests = '''
    import pytest

    @pytest.mark.smtp_server(sise=1000)
    def test_misspelt(smtp_server):
        pass

    @pytest.mark.smtp_server('implicit')
    def test_positional(smtp_server):
        pass
    '''
    result = run_pytest(tmp_path, '[pytest]\n', tests)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '2 errors' in result.stdout
    assert 'SmtpServer got unknown option(s): sise' in result.stdout
    assert 'takes keyword options only' in result.stdout


# -- a process monkey-patched by gevent ---------------------------------------------

def test_mailsink_in_a_process_monkey_patched_by_gevent(tmp_path):
    script = textwrap.dedent('''
        from gevent import monkey
        monkey.patch_all()
        import smtplib, ssl, threading
        from smtp_stack.testing import MailSink
        assert monkey.is_module_patched('socket')
        with MailSink() as sink:
            with smtplib.SMTP(*sink.address, timeout=10) as c:
                c.sendmail('a@b.example', ['c@d.example'], b'Subject: patched\\r\\n\\r\\nx\\r\\n')
            with smtplib.SMTP(*sink.address, timeout=10) as c:
                c.starttls(context=ssl.create_default_context(cafile=sink.ca_file))
                c.login('ann', 'anything')
                c.sendmail('a@b.example', ['c@d.example'], b'Subject: secure\\r\\n\\r\\nx\\r\\n')
            plain, secure = sink.wait_for(2, timeout=10)
            print('got', plain['Subject'], secure['Subject'], secure.session.user,
                  secure.session.secure)
    ''')
    result = run([sys.executable, '-c', script], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'got patched secure ann True'
