"""smtp_stack as the milter of a real Postfix (a private instance:
postfix_private.py), driven by smtplib: what the client sees through
Postfix, what Postfix stores, and what its log says."""
import email
import os
import re
import smtplib
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import peers
from milter_filters import DOMAIN, FORGED_AR, change, client, message, refusals, wait_for
from postfix_private import milter_address, milter_thread, private_postfix
from smtp_stack import SmtpError
from smtp_stack.milter import MilterServer
from smtp_stack.tls import generate_self_signed

SEEN = []           # per message: what the middleware saw of the session
SEEN_LOCK = threading.Lock()


def filters(ctx, next):
    """The middleware of these tests: a refusal per stage, and the changes."""
    refusals(ctx)
    next()
    if ctx.command_name != 'DATA':
        return
    size, blocked = 0, False
    while chunk := ctx.data_stream.read(65536):
        size += len(chunk)
        blocked = blocked or b'BUY NOW' in chunk
    if blocked:
        raise SmtpError(554, 'Spam refused by the milter', '5.7.1')
    session = ctx.session
    with SEEN_LOCK:
        SEEN.append({'user': session.user, 'tls': session.tls, 'size': size,
                     'queue_id': session.milter.queue_id, 'helo': session.helo,
                     'client': session.remote_address})
    change(session.envelope, [('X-Milter', f'seen size={size} user={session.user or "-"}'),
                              ('Authentication-Results', 'milter.test; none')])


@pytest.fixture(scope='module')
def milter():
    server = MilterServer(name='milter.test')
    server.use(filters)
    with milter_thread(server) as running:
        yield running


@pytest.fixture(scope='module', params=['6', '2'], ids=['milter_protocol=6',
                                                        'milter_protocol=2'])
def postfix(request, milter):
    with private_postfix(milter_address(milter), milter_protocol=request.param) as instance:
        instance.protocol = request.param
        yield instance


def delivered(postfix, subject):
    """The delivered message whose Subject is `subject` (waits for it)."""
    def find():
        for raw in postfix.messages():
            parsed = email.message_from_bytes(raw)
            if parsed['Subject'] == subject:
                return parsed
        return None

    return wait_for(find, 20, lambda: f'{subject!r} not delivered:\n{postfix.log()[-3000:]}')


def test_a_refused_recipient_sees_our_reply_through_postfix(postfix):
    with client(postfix) as smtp:
        smtp.ehlo()
        smtp.mail('sender@example.org')
        code, text = smtp.rcpt(f'unknown@{DOMAIN}')
        assert (code, text) == (550, b'5.1.1 No such user here (the milter says)')
        assert smtp.rcpt(f'rcpt@{DOMAIN}')[0] == 250
        smtp.data(message('one refused'))
    line = postfix.wait_for_log(f'to=<unknown@{DOMAIN}>')
    assert 'milter-reject: RCPT from' in line
    assert '550 5.1.1 No such user here (the milter says)' in line
    assert delivered(postfix, 'one refused')['X-Original-To'] == f'rcpt@{DOMAIN}'


def test_a_tempfail_at_mail(postfix):
    with client(postfix) as smtp:
        smtp.ehlo()
        code, text = smtp.mail('later@example.org')
    assert (code, text) == (451, b'4.7.1 Greylisted by the milter, come back later')
    postfix.wait_for_log('milter-reject: MAIL from')


def test_a_body_refused_by_its_content(postfix):
    with client(postfix) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail('sender@example.org', [f'rcpt@{DOMAIN}'],
                      message('spam', 'Please BUY NOW.\r\n'))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        554, b'5.7.1 Spam refused by the milter')
    postfix.wait_for_log('milter-reject: END-OF-MESSAGE from')
    assert not any(b'BUY NOW' in raw for raw in postfix.messages())


def test_headers_added_and_a_forged_one_removed_in_the_stored_message(postfix):
    with client(postfix) as smtp:
        smtp.sendmail('sender@example.org', [f'rcpt@{DOMAIN}'],
                      message('headers', headers=[FORGED_AR,
                                                  'Authentication-Results: other.example; '
                                                  'dkim=pass']))
    stored = delivered(postfix, 'headers')
    assert stored['X-Milter'].startswith('seen size=')
    results = stored.get_all('Authentication-Results')
    assert results == ['milter.test; none', 'other.example; dkim=pass']
    raw = stored.as_bytes()
    # Inserted on top, above Postfix's own Received field, as RFC 8601 5 asks.
    assert raw.index(b'Authentication-Results: milter.test; none') < raw.index(b'Received:')


def test_a_forged_field_past_a_megabyte_of_header_fields_is_removed(postfix):
    """The field sits after 1.1 MB of others, past the milter's 1 MiB
    header_budget: the milter still names it, and Postfix deletes it."""
    padding = [f'X-Pad-{number}: {"p" * 90}' for number in range(11_500)]
    with client(postfix) as smtp:
        smtp.sendmail('sender@example.org', [f'rcpt@{DOMAIN}'],
                      message('long header', headers=['Authentication-Results: other.example; '
                                                      'dkim=pass', *padding, FORGED_AR]))
    assert sum(map(len, padding)) > 1_100_000
    stored = delivered(postfix, 'long header')
    assert stored.get_all('Authentication-Results') == ['milter.test; none',
                                                        'other.example; dkim=pass']
    assert [name for name in stored.keys() if name.startswith('X-Pad-')] == \
        [f'X-Pad-{number}' for number in range(11_500)]
    assert 'not done' not in postfix.log()


def test_a_recipient_changed(postfix):
    with client(postfix) as smtp:
        smtp.sendmail('sender@example.org', [f'change-me@{DOMAIN}'], message('changed'))
    stored = delivered(postfix, 'changed')
    assert stored['X-Original-To'] == f'changed@{DOMAIN}'
    assert stored['Delivered-To'] == f'changed@{DOMAIN}'


def test_the_queue_id_is_postfix_s(postfix):
    with client(postfix) as smtp:
        smtp.ehlo()
        smtp.mail('sender@example.org')
        smtp.rcpt(f'rcpt@{DOMAIN}')
        code, text = smtp.data(message('queue id'))
    queue_id = re.search(rb'queued as (\w+)', text).group(1).decode()
    assert any(seen['queue_id'] == queue_id for seen in SEEN)


# -- one protocol version from here on: what Postfix does differs in nothing else ---------

@pytest.fixture(scope='module')
def postfix6(milter):
    with private_postfix(milter_address(milter)) as instance:
        yield instance


def test_fifty_sessions_at_once(postfix6):
    def send(i):
        with client(postfix6) as smtp:
            smtp.sendmail('sender@example.org', [f'rcpt{i}@{DOMAIN}'],
                          message(f'parallel {i}', f'message {i}\r\n'))

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(send, range(50)))
    found = postfix6.wait_for_messages(50)
    subjects = {email.message_from_bytes(raw)['Subject'] for raw in found}
    assert {f'parallel {i}' for i in range(50)} <= subjects
    assert all(b'X-Milter: seen' in raw for raw in found)


@pytest.fixture(scope='module')
def postfix_tls_auth(milter, tmp_path_factory):
    """Postfix with STARTTLS and Cyrus SASL (sasldb): alice's password is 'secret'."""
    saslpasswd2 = peers.program('saslpasswd2', 'sasl2-bin', fallback='/usr/sbin/saslpasswd2')
    with private_postfix(milter_address(milter)) as instance:
        key, cert = generate_self_signed('mx.' + DOMAIN)
        (instance.config / 'key.pem').write_bytes(key)
        (instance.config / 'cert.pem').write_bytes(cert)
        sasldb = instance.config / 'sasldb2'
        subprocess.run([saslpasswd2, '-p', '-c', '-f', str(sasldb), '-u', DOMAIN, 'alice'],
                       input=b'secret', check=True, timeout=30)
        subprocess.run(['chown', 'postfix', str(sasldb)], check=True, timeout=30)
        # Debian's Postfix reads Cyrus's smtpd.conf from $config_directory/sasl.
        (instance.config / 'sasl').mkdir()
        (instance.config / 'sasl' / 'smtpd.conf').write_text(
            f'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n'
            f'sasldb_path: {sasldb}\n')
        instance.reconfigure(
            smtpd_tls_cert_file=str(instance.config / 'cert.pem'),
            smtpd_tls_key_file=str(instance.config / 'key.pem'),
            smtpd_tls_security_level='may', smtpd_sasl_auth_enable='yes',
            smtpd_sasl_type='cyrus', smtpd_sasl_path='smtpd',
            smtpd_sasl_security_options='noanonymous')
        offering_starttls(instance)
        yield instance


def offering_starttls(instance, timeout=30.0):
    """Wait until the smtpd that answers has read the new main.cf: after
    `postfix reload` the smtpd left idle by the start-up probe may still
    serve one more client with the old settings (no STARTTLS)."""
    deadline = time.monotonic() + timeout
    while True:
        with client(instance) as smtp:
            smtp.ehlo()
            if smtp.has_extn('starttls'):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f'Postfix did not offer STARTTLS within {timeout} s')
        time.sleep(0.1)         # a poll step, bounded by the deadline


def test_the_login_and_tls_are_seen_through_the_macros(postfix_tls_auth):
    with client(postfix_tls_auth) as smtp:
        smtp.starttls(context=ssl._create_unverified_context())
        smtp.login(f'alice@{DOMAIN}', 'secret')
        smtp.sendmail('sender@example.org', [f'rcpt@{DOMAIN}'], message('tls and auth'))
    stored = delivered(postfix_tls_auth, 'tls and auth')
    assert stored['X-Milter'].endswith(f'user=alice@{DOMAIN}')
    seen = [s for s in SEEN if s['user'] == f'alice@{DOMAIN}']
    assert seen and seen[-1]['tls']['version'].startswith('TLSv1')
    assert seen[-1]['tls']['cipher']


def test_the_private_postfix_leaves_no_process_behind():
    """The master makes a session of its own: the fixture stops it by its pid."""
    with private_postfix('inet:127.0.0.1:9') as postfix:
        master = postfix.master_pid()
        assert master is not None and os.path.exists(f'/proc/{master}')
    deadline = time.monotonic() + 10
    while os.path.exists(f'/proc/{master}') and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f'/proc/{master}'), f'the master {master} still runs'
