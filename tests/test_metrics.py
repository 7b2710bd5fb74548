"""smtp_stack.metrics: the shared cells (with real forked processes), the
events counted, the library call over loopback (smtplib, urllib), the text
checked by the real `promtool check metrics`, `metrics:` in the YAML, and
the table of docs/operating.md against the schema.

tests/test_metrics_serve.py runs `smtp-stack serve` with workers under a
real Prometheus, and /readyz against a stopped redis-server.
"""
from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from time import monotonic

import gevent
import pytest

import peers
from conftest import WAIT, RawClient, wait_until
from smtp_stack import LogLevels, SmtpError, SmtpServer, policies
from smtp_stack.addresses import Address
from smtp_stack.config import ConfigError, hostport_of, parse
from smtp_stack.events import DEFERRED, LIMIT, SENT, began
from smtp_stack.metrics import Metrics
from smtp_stack.metrics import schema as S
from smtp_stack.metrics.cells import KEYS, SEPARATOR, Cells
from smtp_stack.metrics.counting import Counted, delivery_kind
from smtp_stack.replies import Reply
from smtp_stack.session import Session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key(*parts: str) -> str:
    return SEPARATOR.join(parts)


# -- the cells: one part per process, summed by the reader ---------------------------

def in_child(work) -> int:
    """Run `work` in a forked child; its exit status (0: it returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    status: list[int] = []

    def reaped() -> bool:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(os.waitstatus_to_exitcode(raw))
        return bool(done)

    if not wait_until(reaped):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError('the child did not finish')
    return status[0]


def test_every_process_counts_into_its_part_and_the_reader_sums_the_parts():
    cells = Cells(3, S.is_gauge)
    cells.add((S.CONNECTIONS,))                 # the maker's own part
    parts = [cells.take(), cells.take()]
    assert cells.take() is None                 # three parts: the maker and two workers
    for n, part in enumerate(parts, 1):
        def work(part=part, n=n):
            cells.adopt(part)
            for _ in range(10 * n):
                cells.add((S.CONNECTIONS,))
            cells.add((S.SESSIONS_OPEN,), n)
            cells.add((S.COMMANDS, 'MAIL', 'ok'), n)
        assert in_child(work) == 0
    total = cells.snapshot()
    assert total[S.CONNECTIONS] == [31.0]
    assert total[S.SESSIONS_OPEN] == [3.0]
    assert total[key(S.COMMANDS, 'MAIL', 'ok')] == [3.0]

    # A worker reaped (killed or not): its counters stay, its gauges go.
    cells.give_back(parts[0])
    total = cells.snapshot()
    assert total[S.CONNECTIONS] == [31.0]
    assert total[S.SESSIONS_OPEN] == [2.0]
    assert total[key(S.COMMANDS, 'MAIL', 'ok')] == [3.0]
    # ... and its part is reused, empty, for the next worker.
    assert cells.take() == parts[0]
    assert cells.snapshot() == total


def test_a_process_forked_without_a_part_counts_where_nobody_reads():
    cells = Cells(2, S.is_gauge)
    assert in_child(lambda: cells.add((S.CONNECTIONS,), 5)) == 0
    part = cells.take()
    assert in_child(lambda: (cells.adopt(None), cells.add((S.CONNECTIONS,), 7))) == 0
    assert cells.snapshot() == {}
    cells.give_back(part)


def test_a_full_part_drops_new_series_and_counts_the_rest():
    cells = Cells(1, S.is_gauge)
    for n in range(KEYS):
        cells.add((S.REFUSALS, 'RCPT', '5xx', f'policy{n}'))
    cells.add((S.REFUSALS, 'RCPT', '5xx', 'one too many'))
    cells.add((S.REFUSALS, 'RCPT', '5xx', 'policy0'))
    assert cells.dropped == 1
    total = cells.snapshot()
    assert len(total) == KEYS
    assert total[key(S.REFUSALS, 'RCPT', '5xx', 'policy0')] == [2.0]


# -- the events, counted -------------------------------------------------------------

class Heard:
    """An events observer that keeps what it was told (the one Counted wraps)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __getattr__(self, name: str):
        return lambda *args: self.names.append(name)


def test_each_event_is_counted_and_handed_on():
    cells = Cells(1, S.is_gauge)
    heard = Heard()
    events = Counted(heard, cells)      # type: ignore[arg-type]
    session = Session('127.0.0.1', 25, '192.0.2.1', 40000)
    bob, carol = Address('bob@example.com'), Address('carol@example.com')
    events.refused(session, 'CONNECT', Reply(421, 'busy'), LIMIT, None, None)
    events.connected(session)
    events.tls(session, None)
    events.tls(session, 'no shared cipher')
    events.authenticated(session, 'LOGIN')
    events.auth_failed(session, 'PLAIN', 'alice', Reply(535, 'no'))
    events.auth_failed(session, 'X-MADE-UP', None, Reply(535, 'no'))
    events.refused(session, 'RCPT', Reply(550, 'no such user'), 'recipients', None, None)
    events.refused(session, 'RCPT', Reply(451, 'try later'), 'greylist', None, None)
    events.refused(session, 'MAIL', Reply(503, 'sequence'), 'engine', None, None)
    events.refused(session, 'DATA', Reply(552, 'too big'), LIMIT, None, 'q-1')
    envelope = session.envelope
    began(envelope, monotonic() - 0.2)
    events.accepted(session, envelope, 'q-2', 5000)
    events.delivered(session, 'q-2', [bob, carol], SENT, 'maildir', 'the file')
    events.delivered(session, 'q-2', [bob], DEFERRED, 'mx.example.net:25', '451 later')
    events.delivered(session, 'q-2', [carol], SENT, 'callable app:store', 'stored')
    events.disconnected(session, {'ehlo': 1, 'mail': 2, 'rcpt': 3, 'auth': 3},
                        {'rcpt': 2, 'auth': 2, 'mail': 1})
    assert heard.names == ['refused', 'connected', 'tls', 'tls', 'authenticated',
                           'auth_failed', 'auth_failed', 'refused', 'refused', 'refused',
                           'refused', 'accepted', 'delivered', 'delivered', 'delivered',
                           'disconnected']
    size_buckets = [0.0] * (len(S.SIZE_BUCKETS) + 1)
    size_buckets[S.SIZE_BUCKETS.index(16384.0)] = 1.0       # 5000 bytes: le=16384
    time_cells = cells.snapshot()[S.TRANSACTION_TIME]
    assert time_cells[S.TIME_BUCKETS.index(0.25)] == 1.0    # 0.2 s: le=0.25
    assert 0.2 <= time_cells[-1] < 0.2 + WAIT
    assert cells.snapshot() == {
        key(S.CONNECTIONS_REFUSED, 'limit'): [1.0],
        S.CONNECTIONS: [1.0],
        S.SESSIONS_OPEN: [0.0],
        key(S.TLS_HANDSHAKES, 'success'): [1.0],
        key(S.TLS_HANDSHAKES, 'failure'): [1.0],
        key(S.AUTH, 'LOGIN', 'success'): [1.0],
        key(S.AUTH, 'PLAIN', 'failure'): [1.0],
        key(S.AUTH, 'other', 'failure'): [1.0],        # never the client's word
        key(S.REFUSALS, 'RCPT', '5xx', 'recipients'): [1.0],
        key(S.REFUSALS, 'RCPT', '4xx', 'greylist'): [1.0],
        key(S.REFUSALS, 'MAIL', '5xx', 'engine'): [1.0],
        key(S.REFUSALS, 'DATA', '5xx', 'limit'): [1.0],
        key(S.POLICY_DECISIONS, 'recipients', 'reject'): [1.0],
        key(S.POLICY_DECISIONS, 'greylist', 'tempfail'): [1.0],
        key(S.MESSAGES_REFUSED, 'limit', '5xx'): [1.0],
        S.MESSAGE_SIZE: [*size_buckets, 5000.0],
        S.TRANSACTION_TIME: time_cells,
        key(S.DELIVERIES, 'maildir', 'sent'): [2.0],
        key(S.DELIVERIES, 'relay', 'deferred'): [1.0],
        key(S.DELIVERIES, 'callable', 'sent'): [1.0],
        key(S.COMMANDS, 'EHLO', '2xx'): [1.0],
        key(S.COMMANDS, 'MAIL', '2xx'): [1.0],
        key(S.COMMANDS, 'MAIL', '5xx'): [1.0],
        key(S.COMMANDS, 'RCPT', '2xx'): [1.0],
        key(S.COMMANDS, 'RCPT', '4xx'): [1.0],
        key(S.COMMANDS, 'RCPT', '5xx'): [1.0],
        key(S.COMMANDS, 'DATA', '5xx'): [1.0],
        key(S.COMMANDS, 'AUTH', '2xx'): [1.0],
        key(S.COMMANDS, 'AUTH', '5xx'): [2.0],
    }


@pytest.mark.parametrize('relay, kind', [
    ('maildir', 'maildir'), ('callable app.mail:store', 'callable'),
    ('mx.example.net:25', 'relay'), ('[2001:db8::1]:587', 'relay'),
    ('/run/dovecot/lmtp', 'relay'),
])
def test_a_delivery_is_labelled_by_its_kind_never_its_host(relay, kind):
    assert delivery_kind(relay) == kind


def test_an_observer_that_fails_costs_no_count_and_no_session(caplog):
    class Broken:
        def __getattr__(self, name):
            raise AssertionError('never asked')
    cells = Cells(1, S.is_gauge)
    heard = Heard()
    events = Counted(heard, cells)      # type: ignore[arg-type]
    events.cells = Broken()             # type: ignore[assignment]
    session = Session('127.0.0.1', 25, '192.0.2.1', 40000)
    events.connected(session)
    events.connected(session)
    assert heard.names == ['connected', 'connected']
    assert [r.getMessage() for r in caplog.records if r.name == 'smtp_stack.metrics'] == [
        'counting the connected event failed; it is not counted']


# -- the library call, over loopback --------------------------------------------------

class Exported:
    """An SmtpServer and its metrics served by the library call, both in
    the hub of one thread (as an application runs them)."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.metrics: Metrics | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from smtp_stack import metrics
        try:
            self.metrics = metrics.serve(self.server, '127.0.0.1', 0)
            self.server.start(0, '127.0.0.1')
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.server.serve_forever()
        finally:
            self.metrics.stop()
            gevent.get_hub().destroy(destroy_loop=True)

    @property
    def url(self) -> str:
        assert self.metrics is not None and self.metrics.address is not None
        host, port = self.metrics.address
        return f'http://{host}:{port}'

    def get(self, path: str, method: str = 'GET') -> tuple[int, str, str]:
        """(status, content type, body) of a request to the metrics side."""
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as answer:
                return answer.status, answer.headers['Content-Type'], answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers['Content-Type'], exc.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, parsed by prometheus_client's parser."""
        parser = peers.python_module('prometheus_client.parser', 'metrics')
        status, _, text = self.get('/metrics')
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in parser.text_string_to_metric_families(text)
                for s in family.samples}

    def stop(self) -> None:
        self.server.stop(2)
        self._thread.join(WAIT)


@pytest.fixture
def exported():
    running: list[Exported] = []

    def start(**options) -> Exported:
        middleware = options.pop('middleware', ())
        options.setdefault('name', 'mx.test')
        options.setdefault('disable_reverse_lookup', True)
        options.setdefault('log_level', LogLevels.SILENT)
        server = SmtpServer(**options)
        for fn in middleware:
            server.use(fn)
        running.append(Exported(server))
        return running[-1]

    yield start
    for each in running:
        each.stop()


def no_tls_check() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def refuse_spam(ctx, next):
    next()
    if ctx.command_name == 'DATA' and ctx.session.envelope.mail_from.address == 'spam@example.net':
        raise SmtpError(554, 'no spam')


def test_the_library_call_counts_what_the_sessions_did(exported):
    peers.python_module('prometheus_client', 'metrics')
    served = exported(size=1000, allow_insecure_auth=True, auth_methods=['PLAIN', 'LOGIN'],
                      on_auth=lambda s: 'alice' if s.auth.password == 'right' else None,
                      middleware=[policies.recipients(domains=['example.com']), refuse_spam])
    address = served.server.address
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.starttls(context=no_tls_check())
        smtp.login('alice', 'right')
        for n in range(3):
            smtp.sendmail('alice@example.org', ['bob@example.com'],
                          b'Subject: %d\r\n\r\nhi\r\n' % n)
    with smtplib.SMTP(*address, timeout=WAIT) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = 'alice', 'wrong'
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.auth('PLAIN', smtp.auth_plain)
        smtp.mail('someone@example.net')
        assert smtp.rcpt('victim@elsewhere.example')[0] == 554
        assert smtp.rcpt('bob@example.com')[0] == 250
        assert smtp.data(b'x' * 2000)[0] == 552
        smtp.mail('spam@example.net')
        smtp.rcpt('bob@example.com')
        assert smtp.data(b'Subject: buy\r\n\r\nnow\r\n')[0] == 554
    failed_tls = RawClient(address)
    failed_tls.expect(220)
    failed_tls.expect(250, 'EHLO client.example')
    failed_tls.expect(220, 'STARTTLS')
    failed_tls.send(b'\x16\x03\x01\x00\x05hello, not a handshake\r\n')
    assert failed_tls.closed()
    failed_tls.close()

    expected = {
        ('smtp_stack_connections_total', ()): 3.0,
        ('smtp_stack_sessions_open', ()): 0.0,
        ('smtp_stack_messages_accepted_total', ()): 3.0,
        ('smtp_stack_messages_refused_total', (('by', 'limit'), ('class', '5xx'))): 1.0,
        ('smtp_stack_messages_refused_total', (('by', 'refuse_spam'), ('class', '5xx'))): 1.0,
        ('smtp_stack_received_bytes_total', ()): 3 * 18.0,  # 'Subject: n' CRLF CRLF 'hi' CRLF
        ('smtp_stack_message_size_bytes_count', ()): 3.0,
        ('smtp_stack_message_size_bytes_bucket', (('le', '1024.0'),)): 3.0,
        ('smtp_stack_transaction_seconds_count', ()): 3.0,
        ('smtp_stack_auth_total', (('mechanism', 'PLAIN'), ('result', 'success'))): 1.0,
        ('smtp_stack_auth_total', (('mechanism', 'PLAIN'), ('result', 'failure'))): 1.0,
        ('smtp_stack_tls_handshakes_total', (('result', 'success'),)): 1.0,
        ('smtp_stack_tls_handshakes_total', (('result', 'failure'),)): 1.0,
        ('smtp_stack_refusals_total',
         (('by', 'recipients'), ('class', '5xx'), ('command', 'RCPT'))): 1.0,
        ('smtp_stack_policy_decisions_total',
         (('policy', 'recipients'), ('result', 'reject'))): 1.0,
        ('smtp_stack_policy_decisions_total',
         (('policy', 'refuse_spam'), ('result', 'reject'))): 1.0,
        ('smtp_stack_commands_total', (('class', '2xx'), ('command', 'DATA'))): 3.0,
        ('smtp_stack_commands_total', (('class', '5xx'), ('command', 'DATA'))): 2.0,
        ('smtp_stack_commands_total', (('class', '2xx'), ('command', 'RCPT'))): 5.0,
        ('smtp_stack_commands_total', (('class', '5xx'), ('command', 'RCPT'))): 1.0,
        ('smtp_stack_commands_total', (('class', '5xx'), ('command', 'AUTH'))): 1.0,
        ('smtp_stack_commands_total', (('class', '2xx'), ('command', 'STARTTLS'))): 2.0,
        ('smtp_stack_workers', ()): 1.0,
    }

    def counted() -> bool:      # the last session's summary comes after its socket closed
        found = served.samples()
        return all(found.get(name) == value for name, value in expected.items())

    if not wait_until(counted):
        found = served.samples()
        assert {name: found.get(name) for name in expected} == expected
    assert served.get('/livez') == (200, 'text/plain; charset=utf-8', 'ok\n')
    assert served.get('/readyz') == (200, 'text/plain; charset=utf-8', 'ready\n')
    assert served.get('/nothing')[0] == 404
    assert served.get('/metrics', 'POST')[0] == 405


def test_promtool_accepts_the_text(exported, tmp_path):
    promtool = peers.program('promtool', 'prometheus')
    peers.python_module('prometheus_client', 'metrics')
    served = exported(size=100, middleware=[policies.recipients(domains=['example.com'])])
    with smtplib.SMTP(*served.server.address, timeout=WAIT) as smtp:
        smtp.sendmail('a@example.org', ['b@example.com'], b'Subject: x\r\n\r\nhi\r\n')
        smtp.mail('a@example.org')
        smtp.rcpt('b@example.org')
        smtp.rcpt('b@example.com')
        smtp.data(b'y' * 500)
    status, content_type, text = served.get('/metrics')
    assert status == 200 and content_type.startswith('text/plain; version=0.0.4')
    assert 'smtp_stack_refusals_total{' in text     # labelled series, not only the HELP
    checked = subprocess.run([promtool, 'check', 'metrics'], input=text, capture_output=True,
                             text=True, timeout=WAIT)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, '', '')


def test_an_address_in_use_names_itself(exported):
    peers.python_module('prometheus_client', 'metrics')
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = SmtpServer(name='mx.test', log_level=LogLevels.SILENT)
        with pytest.raises(OSError) as raised:
            Metrics(server).serve('127.0.0.1', port)
    assert raised.value.filename == f'127.0.0.1:{port}'


def test_stop_hands_the_events_back_to_the_log():
    server = SmtpServer(name='mx.test', log_level=LogLevels.SILENT)
    log = server.events
    counted = Metrics(server)
    assert isinstance(server.events, Counted) and server.events.inner is log
    counted.stop()
    assert server.events is log


# -- metrics: in the YAML, --metrics -------------------------------------------------

@pytest.mark.parametrize('text, where', [
    ('127.0.0.1:9125', ('127.0.0.1', 9125)), ('[::1]:9125', ('::1', 9125)),
    ('localhost:0', ('localhost', 0)), (' 10.0.0.1:80 ', ('10.0.0.1', 80)),
    ('127.0.0.1', None), (':9125', None), ('127.0.0.1:65536', None), ('::1:9125', None),
    ('http://127.0.0.1:9125', None),
])
def test_hostport_of(text, where):
    assert hostport_of(text) == where


def test_metrics_in_the_yaml_and_on_the_command_line(tmp_path):
    assert parse({}, str(tmp_path)).metrics is None
    assert parse({'metrics': '127.0.0.1:9125'}, str(tmp_path)).metrics == ('127.0.0.1', 9125)
    assert parse({'metrics': '127.0.0.1:9125'}, str(tmp_path),
                 metrics='[::1]:9200').metrics == ('::1', 9200)
    for wrong in ('9125', 9125, ['127.0.0.1', 9125]):
        with pytest.raises(ConfigError) as raised:
            parse({'metrics': wrong}, str(tmp_path))
        assert raised.value.errors == [
            ('metrics', 'must be HOST:PORT, such as 127.0.0.1:9125 or [::1]:9125')]


def test_check_config_accepts_metrics_and_rejects_a_bad_one(tmp_path):
    from clirunner import smtp_stack
    good = tmp_path / 'good.yaml'
    good.write_text('metrics: 127.0.0.1:9125\n')
    assert smtp_stack('check-config', str(good), cwd=tmp_path).returncode == 0
    bad = tmp_path / 'bad.yaml'
    bad.write_text('metrics: everywhere\n')
    checked = smtp_stack('check-config', str(bad), cwd=tmp_path)
    assert checked.returncode == 1
    assert 'metrics: must be HOST:PORT' in checked.stdout + checked.stderr


# -- docs/operating.md lists every metric ----------------------------------------------

def test_the_operating_doc_lists_every_metric_with_its_labels():
    text = open(os.path.join(ROOT, 'docs', 'operating.md'), encoding='utf-8').read()
    rows = re.findall(r'^\| `(smtp_stack_\w+)(?:\{([\w, ]*)\})?` \| (\w+) \|', text, re.M)
    documented = {name: (kind, tuple(each.strip() for each in labels.split(',') if each.strip()))
                  for name, labels, kind in rows}
    assert documented == {m.name: (m.kind, m.labels) for m in S.METRICS}

