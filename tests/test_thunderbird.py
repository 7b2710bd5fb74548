"""Mozilla Thunderbird (Debian's `thunderbird`) sends to a real server.

Thunderbird runs headless with a profile made here, once for the module, and
is driven over the Marionette protocol (tests/marionette.py) in its chrome
context. Each case configures an outgoing SMTP server and an identity
through Thunderbird's account services, fills a compose-fields object and
hands it to its message-send service (nsIMsgSend.createAndSendMessage, what
the compose window's Send button ends in): the message is built by
Thunderbird's MIME writer and sent by its own SMTP client.

The test's self-signed certificate is trusted the way Thunderbird's
certificate-exception dialog does it ("Confirm Security Exception", stored
permanently): nsICertOverrideService.rememberValidityOverride for the host
and port, which lands in the profile's cert_override.txt. Without it
Thunderbird refuses the server, and says so in its send-failure alert.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess

import pytest

from smtp_stack.testing import MailSink
from smtp_stack.tls import generate_self_signed

import peers
from conftest import wait_until
from marionette import Marionette, MarionetteError
from test_clients import HOST, USERS, received

STARTUP_TIMEOUT = 30.0      # seconds for Thunderbird to open its Marionette port
SCRIPT_TIMEOUT_MS = 20000   # a send that has not finished by then fails the test
ALERT_TIMEOUT = 10.0       # for the first prompt after a failed send
NEXT_PROMPT_TIMEOUT = 1.0  # for each further one
MAX_PROMPTS = 4

# Preferences of the test's profile (user.js). The machine's network is closed,
# and nothing may try it: no updates, telemetry, remote settings, add-on,
# blocklist or safe-browsing fetches, start page, in-app notifications,
# captive-portal or connectivity probes, DNS-over-HTTPS, OCSP, GMP downloads.
# A release build ignores a remote-settings server given in a pref unless
# MOZ_DISABLE_NONLOCAL_CONNECTIONS is set (Gecko's switch for its own test
# runs), which also makes Thunderbird refuse any connection off loopback.
PREFERENCES = {
    'marionette.port': 0,       # any free port: Marionette writes it to MarionetteActivePort
    'app.update.disabledForTesting': True,
    'app.update.auto': False,
    'app.update.checkInstallTime': False,
    'app.normandy.enabled': False,
    'datareporting.policy.dataSubmissionEnabled': False,
    'datareporting.healthreport.uploadEnabled': False,
    'datareporting.usage.uploadEnabled': False,
    'toolkit.telemetry.enabled': False,
    'toolkit.telemetry.unified': False,
    'toolkit.telemetry.archive.enabled': False,
    'toolkit.telemetry.server': '',
    'services.settings.server': 'data:,#remote-settings-dummy/v1',
    'extensions.update.enabled': False,
    'extensions.getAddons.cache.enabled': False,
    'extensions.blocklist.enabled': False,
    'extensions.systemAddon.update.enabled': False,
    'browser.safebrowsing.malware.enabled': False,
    'browser.safebrowsing.phishing.enabled': False,
    'browser.region.network.url': '',
    'browser.region.update.enabled': False,
    'browser.search.update': False,
    'geo.provider.network.url': '',
    'media.gmp-manager.url': '',
    'media.gmp-provider.enabled': False,
    'dom.push.connection.enabled': False,
    'network.captive-portal-service.enabled': False,
    'network.connectivity-service.enabled': False,
    'network.dns.disablePrefetch': True,
    'network.prefetch-next': False,
    'network.http.speculative-parallel-limit': 0,
    'network.trr.mode': 5,
    'security.OCSP.enabled': 0,
    'security.remote_settings.crlite_filters.enabled': False,
    'security.remote_settings.intermediates.enabled': False,
    'mail.inappnotifications.enabled': False,
    'mail.shell.checkDefaultClient': False,
    'mailnews.start_page.enabled': False,
    'mailnews.auto_config.fetchFromISP.enabled': False,
    'mailnews.auto_config.fetchFromExchange.enabled': False,
    'mailnews.auto_config.guess.enabled': False,
    'mail.provider.enabled': False,
    'mail.cloud_files.enabled': False,
    'mail.phishing.detection.enabled': False,
    # One message per connection: Thunderbird says QUIT after each send
    # instead of keeping the connection for 5 s (quit_delay_ms).
    'mail.smtpserver.default.max_messages_per_connection': 1,
}

# Runs in Thunderbird's chrome context: arguments[0] the options, the last
# argument Marionette's callback. Resolves with {status} (an nsresult, 0 is
# success) when Thunderbird's send listener hears the end of the send.
SEND = r'''
const [options, done] = [arguments[0], arguments[arguments.length - 1]];
const { MailServices } = ChromeUtils.importESModule(
  "resource:///modules/MailServices.sys.mjs");
let finished = false;
const finish = result => { if (!finished) { finished = true; done(result); } };
try {
  const server = MailServices.outgoingServer.createServer("smtp")
    .QueryInterface(Ci.nsISmtpServer);
  server.hostname = options.host;
  server.port = options.port;
  server.socketType = Ci.nsMsgSocketType[options.socketType];
  server.authMethod = Ci.nsMsgAuthMethod[options.authMethod];
  if (options.username) {
    server.username = options.username;
  }
  const identity = MailServices.accounts.createIdentity();
  identity.email = options.email;
  identity.fullName = options.fullName;
  identity.smtpServerKey = server.key;
  identity.doFcc = false;             // no Sent folder to copy to
  const fields = Cc["@mozilla.org/messengercompose/composefields;1"]
    .createInstance(Ci.nsIMsgCompFields);
  fields.from = `${options.fullName} <${options.email}>`;
  fields.to = options.to;
  fields.subject = options.subject;
  const listener = {
    QueryInterface: ChromeUtils.generateQI(["nsIMsgSendListener"]),
    onStartSending() {},
    onProgress() {},
    onStatus() {},
    onStopSending(msgId, status) { finish({ status, messageId: msgId }); },
    onGetDraftFolderURI() {},
    onSendNotPerformed(msgId, status) { finish({ status, notPerformed: true }); },
    onTransportSecurityError() {},
  };
  const send = Cc["@mozilla.org/messengercompose/send;1"].createInstance(Ci.nsIMsgSend);
  send.createAndSendMessage(
    null, identity, null, fields, false, false, Ci.nsIMsgSend.nsMsgDeliverNow, null,
    "text/plain", options.body, null, null, listener, options.password || null, "",
    Ci.nsIMsgCompType.New,
  ).catch(error => finish({ error: String(error) }));
} catch (error) {
  finish({ error: `${error}\n${error.stack}` });
}
'''

# What "Confirm Security Exception" does with "Permanently store this exception".
TRUST = r'''
const [host, port, der] = arguments;
const cert = Cc["@mozilla.org/security/x509certdb;1"]
  .getService(Ci.nsIX509CertDB).constructX509FromBase64(der);
Cc["@mozilla.org/security/certoverride;1"].getService(Ci.nsICertOverrideService)
  .rememberValidityOverride(host, port, {}, cert, false);
return cert.sha256Fingerprint;
'''


class Thunderbird:
    """A running Thunderbird and the Marionette session that drives it."""

    def __init__(self, marionette: Marionette, profile) -> None:
        self.marionette = marionette
        self.profile = profile

    def trust(self, port: int, cert_pem: bytes) -> str:
        """Add the certificate exception for HOST:port; the SHA-256 fingerprint."""
        der = ssl.PEM_cert_to_DER_cert(cert_pem.decode('ascii'))
        return self.marionette.execute_script(
            TRUST, [HOST, port, base64.b64encode(der).decode('ascii')])

    def send(self, port: int, socket_type: str, auth_method: str, subject: str,
             body: str, user: str | None = None, password: str | None = None) -> dict:
        """Compose and send one message; {'status': nsresult, ...}."""
        options = {'host': HOST, 'port': port, 'socketType': socket_type,
                   'authMethod': auth_method, 'username': user, 'password': password,
                   'email': 'alice@b.example', 'fullName': 'Alice', 'to': 'c@d.example',
                   'subject': subject, 'body': body}
        return self.marionette.execute_async_script(SEND, [options]) or {}

    def override_line(self, port: int, fingerprint: str) -> str | None:
        """The line of the profile's cert_override.txt (where permanent
        exceptions are kept) for HOST:port and this certificate, if there is one."""
        with contextlib.suppress(FileNotFoundError):
            for line in (self.profile / 'cert_override.txt').read_text().splitlines():
                if line.startswith(f'{HOST}:{port}:') and fingerprint in line:
                    return line
        return None

    def failure_report(self) -> str | None:
        """What Thunderbird told the user after a failed send: the text of each
        prompt it opened, in order, None if none opened within ALERT_TIMEOUT.

        Each is answered so that the next case starts clean: a failed login
        asks "Retry / Cancel / Enter New Password" (dismissed: Cancel), after
        which the send fails and its alert (OK, its only button) says why.
        """
        texts: list[str] = []
        timeout = ALERT_TIMEOUT
        while len(texts) < MAX_PROMPTS:
            text = wait_until(self._prompt_text, timeout=timeout, step=0.05)
            if not text:
                break
            texts.append(text)
            self.marionette.dismiss_alert()     # Cancel, or OK where that is the only button
            timeout = NEXT_PROMPT_TIMEOUT
        return '\n'.join(texts) if texts else None

    def _prompt_text(self) -> str | None:
        with contextlib.suppress(MarionetteError):
            return self.marionette.alert_text()
        return None


def active_port(profile, process) -> int | None:
    if process.poll() is not None:
        raise AssertionError(f'Thunderbird exited with status {process.returncode}')
    with contextlib.suppress(OSError):
        text = (profile / 'MarionetteActivePort').read_text().strip()
        if text.isdigit():
            return int(text)
    return None


@pytest.fixture(scope='module')
def thunderbird(tmp_path_factory):
    """Thunderbird, headless, with a fresh profile, for the whole module;
    its process group is killed by PID at the end."""
    program = peers.program('thunderbird', 'thunderbird')
    home = tmp_path_factory.mktemp('thunderbird')
    profile = home / 'profile'
    profile.mkdir()
    (profile / 'user.js').write_text(''.join(
        f'user_pref({json.dumps(name)}, {json.dumps(value)});\n'
        for name, value in PREFERENCES.items()))
    env = dict(os.environ, HOME=str(home), TMPDIR=str(home), XDG_CONFIG_HOME=str(home),
               XDG_CACHE_HOME=str(home), XDG_DATA_HOME=str(home), MOZ_HEADLESS='1',
               MOZ_CRASHREPORTER_DISABLE='1', MOZ_DISABLE_NONLOCAL_CONNECTIONS='1')
    log_path = home / 'thunderbird.log'
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(
            [program, '--headless', '--marionette', '--remote-allow-system-access',
             '--no-remote', '--profile', str(profile)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    marionette = None
    try:
        port = wait_until(lambda: active_port(profile, process), timeout=STARTUP_TIMEOUT,
                          step=0.05)
        assert port, f'Marionette did not listen within {STARTUP_TIMEOUT} s'
        marionette = Marionette(HOST, port, timeout=SCRIPT_TIMEOUT_MS / 1000 + 10)
        # Prompts are left to the test (failure_report), not dismissed by Marionette.
        marionette.new_session({'unhandledPromptBehavior': 'ignore'})
        marionette.set_context('chrome')
        marionette.set_timeouts(script_ms=SCRIPT_TIMEOUT_MS)
        yield Thunderbird(marionette, profile)
    except Exception:
        print(log_path.read_text(errors='replace')[-4000:])
        raise
    finally:
        if marionette is not None:
            marionette.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope='module')
def certificate():
    """(key PEM, cert PEM): self-signed, the case an exception is made for."""
    return generate_self_signed(HOST)


@pytest.fixture
def sink(certificate):
    """sink(**switches) -> a started MailSink serving the self-signed
    certificate (user alice, password 'secret'); stopped after the test."""
    started = []

    def start(**switches):
        key, cert = certificate
        started.append(MailSink(users=USERS, key=key, cert=cert, **switches).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


BODY = 'Grüße from Thunderbird: its own composer, its own SMTP client.\n'

# (case, server options, Thunderbird's nsMsgSocketType, nsMsgAuthMethod,
#  the user the server records, the mechanism used, TLS)
CASES = [
    ('plain', {}, 'plain', 'none', None, None, False),
    ('starttls-auth-plain', {}, 'alwaysSTARTTLS', 'passwordCleartext', 'alice', 'PLAIN', True),
    ('implicit-tls-auth-plain', {'tls': 'implicit'}, 'SSL', 'passwordCleartext', 'alice',
     'PLAIN', True),
    ('starttls-cram-md5', {}, 'alwaysSTARTTLS', 'passwordEncrypted', 'alice', 'CRAM-MD5', True),
]


@pytest.mark.parametrize('case, options, socket_type, auth_method, user, method, secure',
                         CASES, ids=[case[0] for case in CASES])
def test_thunderbird_sends(thunderbird, sink, certificate, case, options, socket_type,
                           auth_method, user, method, secure):
    server = sink(**options)
    port = server.address[1]
    if socket_type != 'plain':
        fingerprint = thunderbird.trust(port, certificate[1])
        assert wait_until(lambda: thunderbird.override_line(port, fingerprint)), \
            'the exception is not in cert_override.txt'
    credentials = {'user': 'alice', 'password': 'secret'} if user else {}
    result = thunderbird.send(port, socket_type, auth_method, case, BODY, **credentials)
    assert result.get('status') == 0, (result, thunderbird.failure_report())
    assert received(server) == {
        'mail_from': 'alice@b.example', 'rcpt_to': ['c@d.example'], 'user': user,
        'method': method, 'secure': secure, 'subject': case, 'text': BODY}
    message = server.messages[0]
    assert message['From'] == 'Alice <alice@b.example>'
    assert message['User-Agent'].startswith('Mozilla Thunderbird')
    assert message['Message-ID'] == result['messageId']


def test_thunderbird_refuses_the_certificate_without_the_exception(thunderbird, sink):
    """What the cases above owe to the exception: without it Thunderbird stops
    at the handshake, sends nothing and tells the user why."""
    server = sink()
    result = thunderbird.send(server.address[1], 'alwaysSTARTTLS', 'passwordCleartext',
                              'refused', BODY, user='alice', password='secret')
    assert result.get('status') not in (None, 0), result
    report = thunderbird.failure_report()
    assert report is not None and 'not trusted' in report, report
    assert server.messages == []
