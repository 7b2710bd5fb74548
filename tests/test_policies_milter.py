"""policies.milter against real milters started here on free loopback ports:
OpenDKIM signing (the stored message carries a DKIM-Signature that dkimpy
verifies) and verifying (its Authentication-Results); rspamd's proxy in
milter mode (GTUBE refused with rspamd's reply, a clean message passes with
rspamd's headers); a libmilter milter written with pymilter (Debian
python3-milter) that takes every action the protocol has; a milter that
accepts connections and never answers (the default action, within the
timeout). smtplib is the client, a MailSink the delivery."""
from __future__ import annotations

import contextlib
import email
import json
import logging
import ssl
from email.message import EmailMessage
import os
import re
import smtplib
import socket
import subprocess
import time

import pytest

from smtp_stack import SmtpServer, policies
from smtp_stack.config import ConfigError, parse
from smtp_stack.delivery import MaildirDelivery, RelayDelivery
from smtp_stack.testing import MailSink, ServerThread

import peers
from clamav_private import EICAR, SIGNATURE, PrivateClamav
from opendkim_private import DOMAIN, SELECTOR, PrivateOpenDkim
from rspamd_private import PrivateRspamd

GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'
WAIT = 10.0

# A libmilter milter (pymilter): what it does is chosen by words in the
# Subject, and it reports what it saw in a header field it adds.
TEST_MILTER = r'''
import json, sys, time
import Milter

NAME, ADDRESS = sys.argv[1], sys.argv[2]
CONNECT_MACROS = ('j', '_', '{daemon_name}', '{daemon_addr}', '{client_addr}', 'v')
MAIL_MACROS = ('i', '{mail_addr}', '{auth_authen}', '{auth_type}')


class Test(Milter.Base):
    def __init__(self):
        self.seen = {'headers': [], 'body': 0, 'rcpt': [], 'macros': {}}

    def _macros(self, names):
        for name in names:
            value = self.getsymval(name)
            if value is not None:
                self.seen['macros'][name] = value

    def connect(self, hostname, family, hostaddr):
        self.seen['connect'] = [hostname, hostaddr[0]]
        self._macros(CONNECT_MACROS)
        return Milter.CONTINUE

    def hello(self, name):
        self.seen['helo'] = name
        self._macros(('{tls_version}', '{cipher}'))
        return Milter.CONTINUE

    def envfrom(self, sender, *args):
        self.seen = {'headers': [], 'body': 0, 'rcpt': [], 'macros': self.seen['macros'],
                     'helo': self.seen.get('helo'), 'connect': self.seen.get('connect'),
                     'mail': [sender, *args]}
        self._macros(MAIL_MACROS)
        if 'tempfail-mail' in sender:
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        self._macros(('{rcpt_addr}',))
        if to.startswith('<refused'):
            self.setreply('550', '5.1.1', 'No such user here (%s)' % NAME)
            return Milter.REJECT
        self.seen['rcpt'].append(to)
        return Milter.CONTINUE

    def header(self, name, value):
        self.seen['headers'].append(name)
        if name == 'Subject':
            self.subject = value
        return Milter.CONTINUE

    def body(self, chunk):
        self.seen['body'] += len(chunk)
        return Milter.CONTINUE

    def eom(self):
        subject = getattr(self, 'subject', '')
        if 'reject-eom' in subject:
            self.setreply('554', '5.7.0', 'Content refused by %s' % NAME)
            return Milter.REJECT
        if 'tempfail-eom' in subject:
            return Milter.TEMPFAIL
        if 'hang-eom' in subject:
            time.sleep(3)
        if 'discard' in subject:
            return Milter.DISCARD
        if 'quarantine' in subject:
            self.quarantine('held by %s' % NAME)
        if 'chgfrom' in subject:
            self.chgfrom('<changed@example.test>')
        if 'addrcpt' in subject:
            self.addrcpt('<added@mx.test>')
        if 'delrcpt' in subject:
            self.delrcpt('<bob@mx.test>')
        if 'replbody' in subject:
            self.replacebody(b'The body ' + NAME.encode() + b' wrote.\r\n')
        if 'chgheader' in subject:
            self.chgheader('Subject', 1, 'changed by ' + NAME)
        if 'delheader' in subject:
            self.chgheader('X-Drop', 1, '')
        if 'chgadded' in subject:
            self.chgheader('X-Added', 1, 'changed by ' + NAME)
        if 'deladded' in subject:
            self.chgheader('X-Added', 1, '')
        if 'insadded' in subject:
            self.addheader('X-Ins', 'below X-Added', 1)     # SMFIR_INSHEADER at index 1
        if 'chglast' in subject:
            self.chgheader('X-Last', 1, 'changed by ' + NAME)
            self.chgheader('X-Gone', 1, '')
        self.addheader('X-Seen-' + NAME, json.dumps(self.seen, sort_keys=True))
        return Milter.CONTINUE


Milter.factory = Test
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT
                 | Milter.CHGBODY | Milter.QUARANTINE | Milter.CHGFROM)
print('ready', flush=True)
Milter.runmilter(NAME, ADDRESS, 30)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class PyMilter:
    """TEST_MILTER under Debian's /usr/bin/python3 (python3-milter)."""

    def __init__(self, workdir, name: str, unix: bool = False):
        python = peers.program('python3', 'python3-milter', fallback='/usr/bin/python3')
        python = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else python
        check = subprocess.run([python, '-c', 'import Milter'], capture_output=True, timeout=WAIT)
        if check.returncode != 0:
            peers.missing('pymilter for /usr/bin/python3', 'python3-milter')
        script = os.path.join(workdir, 'test_milter.py')
        with open(script, 'w') as f:
            f.write(TEST_MILTER)
        self.port = free_port()
        self.path = os.path.join(workdir, 'milter.sock')
        self.address = f'unix:{self.path}' if unix else f'inet:127.0.0.1:{self.port}'
        listen = self.address if unix else f'inet:{self.port}@127.0.0.1'
        self.proc = subprocess.Popen([python, script, name, listen],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if unix:
                    with socket.socket(socket.AF_UNIX) as probe:
                        probe.settimeout(0.5)
                        probe.connect(self.path)
                else:
                    socket.create_connection(('127.0.0.1', self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode()) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)        # a poll step, bounded by the deadline

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()       # libmilter waits for its sessions' threads: not long
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


# -- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope='module')
def keys_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('dkim-keys')


@pytest.fixture(scope='module')
def dkim_signer(tmp_path_factory, keys_dir):
    running = PrivateOpenDkim(tmp_path_factory.mktemp('opendkim-s'), 's', key_dir=keys_dir)
    yield running
    running.stop()


class SimpleSigner(PrivateOpenDkim):
    """OpenDKIM signing with simple canonicalization of the header too: its
    DKIM-Signature verifies only if stored byte for byte as OpenDKIM wrote it."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.conf) as f:
            text = f.read()
        assert 'Canonicalization relaxed/simple' in text
        with open(self.conf, 'w') as f:
            f.write(text.replace('Canonicalization relaxed/simple',
                                 'Canonicalization simple/simple'))


@pytest.fixture(scope='module')
def dkim_simple_signer(tmp_path_factory, keys_dir):
    running = SimpleSigner(tmp_path_factory.mktemp('opendkim-simple'), 's', key_dir=keys_dir)
    yield running
    running.stop()


@pytest.fixture(scope='module')
def dkim_verifier(tmp_path_factory, keys_dir):
    running = PrivateOpenDkim(tmp_path_factory.mktemp('opendkim-v'), 'v', key_dir=keys_dir)
    yield running
    running.stop()


class RemovingVerifier(PrivateOpenDkim):
    """OpenDKIM verifying, and removing every Authentication-Results field
    that claims this server's authserv-id (RemoveARAll, RemoveARFrom)."""

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.conf, 'a') as f:
            f.write('RemoveARAll yes\nRemoveARFrom mx.test\n')


@pytest.fixture(scope='module')
def dkim_removing_verifier(tmp_path_factory, keys_dir):
    running = RemovingVerifier(tmp_path_factory.mktemp('opendkim-r'), 'v', key_dir=keys_dir)
    yield running
    running.stop()


@pytest.fixture(scope='module')
def rspamd(tmp_path_factory):
    running = PrivateRspamd(tmp_path_factory.mktemp('rspamd'), milter=True)
    yield running
    running.stop()


@pytest.fixture(scope='module')
def clamav(tmp_path_factory):
    running = PrivateClamav(tmp_path_factory.mktemp('clamav'))
    yield running
    running.stop()


@pytest.fixture(scope='module')
def test_milter(tmp_path_factory):
    running = PyMilter(tmp_path_factory.mktemp('pymilter'), 'one')
    yield running
    running.stop()


@pytest.fixture(scope='module')
def second_milter(tmp_path_factory):
    running = PyMilter(tmp_path_factory.mktemp('pymilter2'), 'two')
    yield running
    running.stop()


@pytest.fixture
def serve():
    sinks = []

    def start(*milters, **options):
        sink = MailSink(**{'name': 'mx.test', 'tls': 'off', **options})
        for milter in milters:
            sink.server.use(milter)
        sinks.append(sink.start())
        return sink

    yield start
    for sink in sinks:
        sink.stop()


def message(subject='Hello', body='Hi there.', extra=''):
    return (f'From: Alice <alice@{DOMAIN}>\r\nTo: bob@mx.test\r\nSubject: {subject}\r\n'
            f'Message-ID: <{time.monotonic_ns()}@{DOMAIN}>\r\n'
            f'Date: Thu, 03 Dec 2026 08:00:00 +0000\r\n{extra}\r\n{body}\r\n').encode()


def send(sink, data, rcpts=('bob@mx.test',), sender=f'alice@{DOMAIN}'):
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        return client.sendmail(sender, list(rcpts), data)


def seen(stored, name='one'):
    """The milter's report (the field folded where its JSON has spaces)."""
    return json.loads(stored[f'X-Seen-{name}'].replace('\t', ' '))


@contextlib.contextmanager
def smtp_server(*middleware, **options):
    """An SmtpServer with `middleware` (the delivery first), serving in a thread."""
    server = SmtpServer(**{'name': 'mx.test', 'disable_reverse_lookup': True, **options})
    for each in middleware:
        server.use(each)
    runner = ServerThread(server).start()
    try:
        yield server
    finally:
        runner.stop(timeout=2)


def maildir_server(box, *policies_used):
    """An SmtpServer storing into the Maildir `box`, with `policies_used` after it."""
    return smtp_server(MaildirDelivery(str(box)), *policies_used)


# -- OpenDKIM --------------------------------------------------------------------------

def test_opendkim_signs_what_the_delivery_stores(serve, dkim_signer):
    dkim = peers.python_module('dkim')
    sink = serve(policies.milter(dkim_signer.address, name='opendkim'))
    assert send(sink, message()) == {}
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert len(stored.get_all('DKIM-Signature')) == 1      # once, where OpenDKIM put it
    assert f'd={DOMAIN}' in stored['DKIM-Signature'] and f's={SELECTOR}' in stored['DKIM-Signature']
    record = dkim_signer.public_record.encode()
    assert dkim.verify(stored.raw, dnsfunc=lambda name, timeout=5: record)
    tampered = stored.raw.replace(b'Hi there.', b'Hi there!')
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)


def test_opendkim_simple_canonicalization_verifies_where_the_relay_delivers(serve,
                                                                         dkim_simple_signer):
    """The signature field is kept as OpenDKIM folded it, where it inserted it
    (index 0: on top, above the relay's Received), and the signed fields are
    untouched: dkimpy verifies the message the upstream received."""
    dkim = peers.python_module('dkim')
    upstream = MailSink(name='upstream.test', tls='off').start()
    try:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        with smtp_server(relay, policies.milter(dkim_simple_signer.address,
                                                name='opendkim')) as server:
            long_subject = ' '.join(['folded'] * 20)
            assert send(server, message(subject=long_subject,
                                        extra='X-Folded: a\r\n\tb\r\n')) == {}
        [stored] = upstream.wait_for(1, timeout=WAIT)
    finally:
        upstream.stop()
    raw = stored.raw
    assert raw.startswith(b'DKIM-Signature: ') and b'\r\nReceived: from ' in raw
    assert b'c=simple/simple' in raw and b'\r\n\t' in raw.split(b'\r\nReceived')[0]
    record = dkim_simple_signer.public_record.encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)
    refolded = raw.replace(b'\r\n\t', b'\r\n ', 1)        # what refolding used to do
    assert not dkim.verify(refolded, dnsfunc=lambda name, timeout=5: record)


def test_opendkim_verifies_and_says_so(serve, dkim_verifier):
    dkim = peers.python_module('dkim')
    signed = message(subject='Signed elsewhere')
    signature = dkim.sign(signed, SELECTOR.encode(), DOMAIN.encode(),
                          dkim_verifier.private_key, include_headers=[b'From', b'Subject'])
    sink = serve(policies.milter(dkim_verifier.address, name='opendkim'))
    send(sink, signature + signed)
    send(sink, signature + signed.replace(b'Hi there.', b'Changed on the way.'))
    good, bad = sink.wait_for(2, timeout=WAIT)
    assert 'dkim=pass' in good['Authentication-Results']
    assert good['Authentication-Results'].startswith('mx.test')
    assert 'dkim=fail' in bad['Authentication-Results']


def test_opendkim_removes_an_authentication_results_another_policy_added(
        serve, dkim_removing_verifier):
    """Its CHGHEADER deletions reach the field a policy inside it added, as
    they reach one Postfix added before its milters, and the client's forged one."""
    dkim = peers.python_module('dkim')
    signed = message(subject='Signed elsewhere',
                     extra='Authentication-Results: mx.test; dkim=pass (forged)\r\n')
    signature = dkim.sign(signed, SELECTOR.encode(), DOMAIN.encode(),
                          dkim_removing_verifier.private_key,
                          include_headers=[b'From', b'Subject'])

    def spf_result(ctx, next):
        next()
        if ctx.command_name == 'DATA' and ctx.reply is not None and ctx.reply.code == 250:
            ctx.session.envelope.add_header('Authentication-Results',
                                            f'mx.test; spf=pass smtp.mailfrom={DOMAIN}')

    sink = serve(policies.milter(dkim_removing_verifier.address, name='opendkim'),
                 spf_result)
    send(sink, signature + signed)
    [stored] = sink.wait_for(1, timeout=WAIT)
    [result] = stored.get_all('Authentication-Results')
    assert result.startswith('mx.test') and 'dkim=pass' in result
    assert 'forged' not in result and 'spf=' not in result


# -- rspamd in milter mode ---------------------------------------------------------------

def test_rspamd_refuses_gtube_with_its_reply(serve, rspamd):
    sink = serve(policies.milter(rspamd.milter_address, name='rspamd'))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(sink, message(body=GTUBE))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (554, b'5.7.1 Gtube pattern')
    assert send(sink, message()) == {}
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert stored['X-Spamd-Result'].startswith('default: False')
    assert stored['X-Rspamd-Queue-Id'] == f'{stored.session.id}-1'     # the `i` macro
    assert stored['X-Spam-Status'].startswith('No')


# -- clamav-milter and clamd ---------------------------------------------------------------

def test_clamav_refuses_eicar_and_passes_a_clean_message(serve, clamav):
    sink = serve(policies.milter(clamav.address, name='clamav'))
    attached = EmailMessage()
    attached['From'], attached['To'], attached['Subject'] = f'alice@{DOMAIN}', 'bob@mx.test', 'x'
    attached.set_content('See the file.')
    attached.add_attachment(EICAR, maintype='application', subtype='octet-stream',
                            filename='eicar.com')
    for infected in (message(body=EICAR.decode()), attached.as_bytes().replace(b'\n', b'\r\n')):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(sink, infected)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(f'5.7.1 Virus found: {SIGNATURE}'.encode())
    assert send(sink, message()) == {}
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert stored['X-Virus-Status'] == 'Clean'
    assert stored['X-Virus-Scanned'].startswith('clamav-milter')


# -- every action, from a libmilter milter -------------------------------------------------

def test_the_milter_sees_the_session_and_the_macros(serve, test_milter):
    connect = 'j {daemon_name} {daemon_addr} v _ {client_addr}'     # Postfix's, and one more
    sink = serve(policies.milter(test_milter.address, name='one', macros={'connect': connect}))
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        client.ehlo('client.example')
        client.sendmail(f'alice@{DOMAIN}', ['bob@mx.test', 'carol@mx.test'],
                        message(extra='X-Extra: 1\r\n'))
    [stored] = sink.wait_for(1, timeout=WAIT)
    report = seen(stored)
    assert report['connect'][1] == '127.0.0.1'
    assert report['helo'] == 'client.example'
    assert report['mail'][0] == f'<alice@{DOMAIN}>'
    assert report['rcpt'] == ['<bob@mx.test>', '<carol@mx.test>']
    assert report['headers'] == ['From', 'To', 'Subject', 'Message-ID', 'Date', 'X-Extra']
    assert report['body'] == len(b'Hi there.\r\n')
    macros = report['macros']
    assert macros['j'] == macros['{daemon_name}'] == 'mx.test'
    assert macros['{client_addr}'] == macros['{daemon_addr}'] == '127.0.0.1'
    assert macros['_'].endswith('[127.0.0.1]')
    assert macros['i'] == f'{stored.session.id}-1'
    assert macros['{mail_addr}'] == f'alice@{DOMAIN}'
    assert macros['{rcpt_addr}'] == 'carol@mx.test'
    assert macros['v'].startswith('smtp_stack')


def test_tls_and_the_login_reach_the_milter_as_macros(serve, test_milter):
    sink = serve(policies.milter(test_milter.address, name='one'), tls='starttls')
    context = ssl.create_default_context(cafile=sink.ca_file)
    with smtplib.SMTP('localhost', sink.address[1], timeout=WAIT) as client:
        client.starttls(context=context)
        client.ehlo()
        client.user, client.password = 'carol', 'secret'
        client.auth('PLAIN', client.auth_plain)
        client.sendmail(f'alice@{DOMAIN}', ['bob@mx.test'], message())
    [stored] = sink.wait_for(1, timeout=WAIT)
    macros = seen(stored)['macros']
    assert macros['{tls_version}'] == stored.session.tls['version']
    assert macros['{cipher}'] == stored.session.tls['cipher']
    assert (macros['{auth_authen}'], macros['{auth_type}']) == ('carol', 'PLAIN')


def test_a_milter_on_a_unix_socket(serve, tmp_path):
    milter = PyMilter(tmp_path, 'local', unix=True)
    try:
        sink = serve(policies.milter(milter.address, name='local'))
        send(sink, message(subject='chgheader'))
        [stored] = sink.wait_for(1, timeout=WAIT)
        assert stored['Subject'] == 'changed by local'
        assert seen(stored, 'local')['connect'][1] == '127.0.0.1'
    finally:
        milter.stop()


def test_refusals_at_each_command(serve, test_milter):
    sink = serve(policies.milter(test_milter.address, name='one'))
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        client.ehlo('client.example')
        assert client.mail('tempfail-mail@example.test') == \
            (451, b'4.7.1 Service unavailable - try again later')
        assert client.mail(f'alice@{DOMAIN}')[0] == 250     # the refused MAIL left nothing
        assert client.rcpt('refused@mx.test') == \
            (550, b'5.1.1 No such user here (one)')
        assert client.rcpt('bob@mx.test')[0] == 250
        code, text = client.data(message(subject='reject-eom please'))
        assert (code, text) == (554, b'5.7.0 Content refused by one')
        client.rset()
        client.sendmail(f'alice@{DOMAIN}', ['bob@mx.test'], message(subject='fine'))
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert [a.address for a in stored.envelope.rcpt_to] == ['bob@mx.test']
    assert stored['Subject'] == 'fine'


def test_modifications_reach_the_envelope(serve, test_milter):
    sink = serve(policies.milter(test_milter.address, name='one'))
    subject = 'chgfrom addrcpt delrcpt chgheader delheader quarantine replbody'
    send(sink, message(subject=subject, extra='X-Drop: forged\r\nX-Keep: yes\r\n'),
         rcpts=['bob@mx.test', 'carol@mx.test'])
    [stored] = sink.wait_for(1, timeout=WAIT)
    envelope = stored.envelope
    assert envelope.mail_from.address == 'changed@example.test'
    assert [a.address for a in envelope.rcpt_to] == ['carol@mx.test', 'added@mx.test']
    assert stored.get_all('Subject') == ['changed by one']
    assert stored['X-Drop'] is None and stored['X-Keep'] == 'yes'
    assert envelope.quarantined == 'held by one'
    replaced = envelope.replaced_body
    assert replaced is not None and replaced.read() == b'The body one wrote.\r\n'


def add_field(ctx, next):
    """A policy inside the milter's: its field is there when the milter is shown the message."""
    next()
    if ctx.command_name == 'DATA' and ctx.reply is not None and ctx.reply.code == 250:
        ctx.session.envelope.add_header('X-Added', 'by a policy')


def test_a_field_another_policy_added_is_changed_and_deleted(serve, test_milter):
    """As Postfix's cleanup lets a milter change the fields added before it."""
    sink = serve(policies.milter(test_milter.address, name='one'), add_field)
    send(sink, message(subject='chgadded'))
    send(sink, message(subject='deladded'))
    send(sink, message(subject='insadded'))
    changed, deleted, inserted = sink.wait_for(3, timeout=WAIT)
    assert seen(changed)['headers'][0] == 'X-Added'
    assert changed.get_all('X-Added') == ['changed by one']
    assert changed.raw.startswith(b'X-Added: changed by one\r\nFrom: ')
    assert deleted['X-Added'] is None and deleted.raw.startswith(b'From: ')
    # Index 1: below the added field (0), where this server's Received goes (none here).
    assert inserted.raw.startswith(b'X-Added: by a policy\r\nX-Ins: below X-Added\r\nFrom: ')


def test_changes_past_a_mebibyte_of_header_section(serve, test_milter):
    """The fields at the end of a 1.1 MB header section are changed and
    deleted as those at its top (Postfix's cleanup has no such limit)."""
    sink = serve(policies.milter(test_milter.address, name='one'))
    padding = ''.join(f'X-Pad-{i:04d}: {"p" * 490}\r\n\t{"q" * 490}\r\n' for i in range(1100))
    send(sink, message(subject='chglast', extra=padding + 'X-Gone: x\r\nX-Last: original\r\n'))
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert stored.raw.index(b'X-Last') > 1 << 20
    assert stored.get_all('X-Last') == ['changed by one'] and stored['X-Gone'] is None
    assert len(stored.get_all('X-Pad-1099')) == 1


def test_discard_drops_the_message(serve, test_milter):
    sink = serve(policies.milter(test_milter.address, name='one'))
    assert send(sink, message(subject='discard')) == {}
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert stored.envelope.dropped == 'discarded by milter one'


def test_milters_in_a_row_each_see_the_ones_before(serve, test_milter, second_milter):
    sink = serve(policies.milter(test_milter.address, name='one'),
                 policies.milter(second_milter.address, name='two'))
    send(sink, message(subject='chgheader'))
    [stored] = sink.wait_for(1, timeout=WAIT)
    # One changed the Subject in place and appended its field (ADDHEADER: after the
    # last field, as Postfix's cleanup does); two saw both where the delivery stores
    # them (one's Subject no longer asks for a change), and appended its own.
    assert seen(stored, 'one')['headers'] == ['From', 'To', 'Subject', 'Message-ID', 'Date']
    assert seen(stored, 'two')['headers'] == ['From', 'To', 'Subject', 'Message-ID', 'Date',
                                              'X-Seen-one']
    assert [name for name, _ in stored.items()] == ['From', 'To', 'Subject', 'Message-ID',
                                                    'Date', 'X-Seen-one', 'X-Seen-two']
    assert stored.get_all('Subject') == ['changed by one']


def test_a_later_milter_sees_the_body_an_earlier_one_replaced(serve, test_milter,
                                                             second_milter):
    sink = serve(policies.milter(test_milter.address, name='one'),
                 policies.milter(second_milter.address, name='two'))
    send(sink, message(subject='replbody', body='The client wrote this.'))
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert seen(stored, 'one')['body'] == len(b'The client wrote this.\r\n')
    assert seen(stored, 'two')['body'] == len(b'The body one wrote.\r\n')
    assert stored.raw.endswith(b'\r\n\r\nThe body two wrote.\r\n')


def test_the_first_refusal_ends_the_row(serve, test_milter, second_milter):
    sink = serve(policies.milter(test_milter.address, name='one'),
                 policies.milter(second_milter.address, name='two'))
    with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
        client.ehlo('client.example')
        client.mail(f'alice@{DOMAIN}')
        assert client.rcpt('refused@mx.test')[1] == b'5.1.1 No such user here (one)'
        client.rcpt('bob@mx.test')
        assert client.data(message(subject='reject-eom'))[1] == b'5.7.0 Content refused by one'


# -- a milter that never answers, one that is not there -----------------------------------

@pytest.fixture
def silent_milter():
    """A listening socket nobody accepts on: connections complete (the
    kernel's backlog) and no byte ever comes back."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(16)
        yield f'inet:127.0.0.1:{sock.getsockname()[1]}'


@pytest.mark.parametrize('action, reply', [
    ('tempfail', (451, b'4.7.1 Service unavailable - try again later')),
    ('reject', (550, b'5.5.0 Service unavailable')),
])
def test_a_silent_milter_gets_the_default_action_in_time(serve, silent_milter, action, reply,
                                                         caplog):
    policy = policies.milter(silent_milter, name=f'silent-{action}', command_timeout=0.5,
                             default_action=action)
    sink = serve(policy)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, 'smtp_stack.policies'):
        with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
            assert client.ehlo('client.example')[0] == 250
            assert client.mail(f'alice@{DOMAIN}') == reply
            assert client.rcpt('bob@mx.test')[0] == 503
        took = time.monotonic() - began
        assert took < 0.5 + 2.0
        # The next session fails at once: the breaker is open after a slow failure.
        began = time.monotonic()
        with smtplib.SMTP(*sink.address, timeout=WAIT) as client:
            client.ehlo('client.example')
            assert client.mail(f'alice@{DOMAIN}') == reply
        assert time.monotonic() - began < 0.4
    lines = [r.getMessage() for r in caplog.records if f'silent-{action}' in r.getMessage()]
    assert len(lines) == 1 and 'no reply to SMFIC_OPTNEG in 0.5 s' in lines[0], lines
    assert sink.messages == []


def test_a_silent_milter_with_accept_is_passed_by(serve, silent_milter):
    sink = serve(policies.milter(silent_milter, name='silent-accept', command_timeout=0.5,
                                 default_action='accept'))
    assert send(sink, message()) == {}
    assert len(sink.wait_for(1, timeout=WAIT)) == 1


def unfolded(stored, name):
    """A field's value unfolded as RFC 5322 2.2.3 says: the line breaks
    taken out, the white space after them kept."""
    return re.sub(r'\r?\n(?=[ \t])', '', stored[name])


def held(box):
    """The messages of the Maildir `box`'s quarantine folder (in no order:
    two files written within one clock tick have the same mtime)."""
    folder = box / '.Quarantine' / 'new'
    return [path.read_bytes() for path in folder.iterdir()] if folder.exists() else []


def test_quarantine_as_the_default_action_holds_every_later_message(tmp_path, silent_milter):
    """Postfix's milter_default_action = quarantine: the session goes on
    as with 'accept', and each message is held (Maildir: .Quarantine)."""
    box = tmp_path / 'box'
    policy = policies.milter(silent_milter, name='silent-quarantine', command_timeout=0.5,
                             default_action='quarantine')
    with maildir_server(box, policy) as server, \
            smtplib.SMTP(*server.address, timeout=WAIT) as client:
        client.ehlo('client.example')
        for subject in ('first', 'second'):
            assert client.sendmail(f'alice@{DOMAIN}', ['bob@mx.test'],
                                   message(subject=subject)) == {}
    assert not (box / 'new').exists() or list((box / 'new').iterdir()) == []
    stored = [email.message_from_bytes(raw) for raw in held(box)]
    assert sorted(kept['Subject'] for kept in stored) == ['first', 'second']
    for kept in stored:
        assert unfolded(kept, 'X-Quarantine-Reason') == \
            'milter silent-quarantine unavailable: no reply to SMFIC_OPTNEG in 0.5 s'


def test_quarantine_as_the_default_action_when_the_milter_fails_on_the_message(
        tmp_path, test_milter):
    """Silent past content_timeout at the end of this very message: held, not refused."""
    box = tmp_path / 'box'
    policy = policies.milter(test_milter.address, name='slow-quarantine', content_timeout=0.5,
                             default_action='quarantine')
    with maildir_server(box, policy) as server:
        assert send(server, message(subject='hang-eom')) == {}
    [raw] = held(box)
    assert unfolded(email.message_from_bytes(raw), 'X-Quarantine-Reason') == \
        'milter slow-quarantine unavailable: no reply to SMFIC_BODYEOB in 0.5 s'


def test_a_milter_silent_at_the_end_of_the_message(serve, test_milter):
    """content_timeout bounds the wait for the verdict; the breaker then
    spares the next session the wait."""
    sink = serve(policies.milter(test_milter.address, name='slow-eom', content_timeout=0.5))
    began = time.monotonic()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(sink, message(subject='hang-eom'))
    assert (refused.value.smtp_code, refused.value.smtp_error) == \
        (451, b'4.7.1 Service unavailable - try again later')
    assert 0.5 <= time.monotonic() - began < 2.5
    began = time.monotonic()
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(sink, message())
    assert time.monotonic() - began < 0.4
    assert sink.messages == []


def test_a_milter_that_is_not_there(serve):
    address = f'inet:127.0.0.1:{free_port()}'
    sink = serve(policies.milter(address, name='absent'))
    began = time.monotonic()
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(sink, message())
    assert refused.value.smtp_code == 451
    assert time.monotonic() - began < 2.0


# -- the YAML entry checks what the library call checks -------------------------------------

@pytest.mark.parametrize('kwargs, error', [
    ({'address': 'tcp:127.0.0.1:1'}, 'address must be inet:HOST:PORT'),
    ({'address': 'inet:127.0.0.1:70000'}, 'address must be inet:HOST:PORT'),
    ({'address': 'inet:127.0.0.1:8891', 'default_action': 'hold'}, 'default_action'),
    ({'address': 'inet:127.0.0.1:8891', 'command_timeout': 0}, 'command_timeout'),
    ({'address': 'inet:127.0.0.1:8891', 'macros': {'later': 'i'}}, "unknown stage 'later'"),
])
def test_bad_parameters(tmp_path, kwargs, error):
    with pytest.raises(ValueError, match=error):
        policies.milter(**kwargs)
    with pytest.raises(ConfigError) as err:
        parse({'deliver': {'maildir': str(tmp_path / 'md')}, 'policies': [{'milter': kwargs}]},
              str(tmp_path))
    assert any(line.startswith('policies[0].milter') for line in err.value.lines()), \
        err.value.lines()


@pytest.mark.parametrize('action', ['accept', 'quarantine'])
def test_the_yaml_entry_builds_the_policy(tmp_path, action):
    config = parse({'deliver': {'maildir': str(tmp_path / 'md')},
                    'policies': [{'milter': {'address': 'inet:127.0.0.1:8891', 'name': 'dkim',
                                             'command_timeout': 5, 'default_action': action,
                                             'macros': {'connect': 'j _ {client_addr}'}}}]},
                   str(tmp_path))
    [built] = config.policies.build()
    assert (built.address, built.name, built.command_timeout, built.default_action) == \
        ('inet:127.0.0.1:8891', 'dkim', 5.0, action)
    assert built.lists['C'] == ('j', '_', '{client_addr}')


def test_bdat_messages_are_judged_whole(serve, test_milter):
    """CHUNKING (RFC 3030): SMFIC_DATA at the first BDAT, the message after the LAST."""
    sink = serve(policies.milter(test_milter.address, name='one'))
    with socket.create_connection(sink.address, timeout=WAIT) as sock, \
            sock.makefile('rb') as replies:

        def command(data: bytes) -> bytes:
            sock.sendall(data)
            while (line := replies.readline())[3:4] == b'-':
                pass
            return line

        replies.readline()
        command(b'EHLO client.example\r\n')
        refused, accepted = message(subject='reject-eom'), message(subject='chgheader')
        half = len(refused) // 2
        for chunks, last in (([refused[:half], refused[half:]], b'554 5.7.0 Content refused'),
                             ([accepted], b'250 ')):
            command(f'MAIL FROM:<alice@{DOMAIN}>\r\n'.encode())
            command(b'RCPT TO:<bob@mx.test>\r\n')
            for i, chunk in enumerate(chunks):
                tail = b' LAST' if i == len(chunks) - 1 else b''
                reply = command(b'BDAT %d%s\r\n' % (len(chunk), tail) + chunk)
            assert reply.startswith(last), reply
    [stored] = sink.wait_for(1, timeout=WAIT)
    assert stored['Subject'] == 'changed by one'


def test_the_milter_hears_rset_and_the_end_of_the_session(serve):
    """ABORT for a transaction RSET ended, QUIT and the connection closed
    when the client vanishes without QUIT (session_closed)."""
    from test_milter_client import ScriptedPeer, _packet
    continue_ = [_packet('c')] * 4
    peer = ScriptedPeer({'C': continue_, 'H': continue_, 'M': continue_, 'R': continue_})
    try:
        sink = serve(policies.milter(peer.address, name='scripted'))
        client = smtplib.SMTP(*sink.address, timeout=WAIT)
        client.ehlo('client.example')
        client.mail(f'alice@{DOMAIN}')
        client.rcpt('bob@mx.test')
        client.rset()
        client.mail(f'alice@{DOMAIN}')
        client.close()                  # gone, without QUIT
        peer.thread.join(WAIT)
        assert not peer.thread.is_alive()       # the server closed its milter connection
        assert [c for c in peer.seen if c != 'D'] == ['O', 'C', 'H', 'M', 'R', 'A', 'M', 'Q']
    finally:
        peer.close()
