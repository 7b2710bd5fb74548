"""Components (docs/api.md, "Components"): middleware that hears of its
sessions and servers, driven over real sockets. The example of api.md is
run as it is printed there."""
from __future__ import annotations

import logging
import os
import pathlib
import re
import socket
import threading

import pytest

from smtp_stack import LogLevels, SmtpServer
from smtp_stack.delivery import RelayDelivery
from smtp_stack.testing import MailSink, ServerThread

from conftest import WAIT, RawClient, wait_until

API_MD = pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'api.md'


def documented_example() -> dict:
    """The namespace of the first Python block of api.md's Components section."""
    text = API_MD.read_text(encoding='utf-8')
    section = text[text.index('\n## Components\n'):]
    code = re.search(r'```python\n(.*?)```', section, re.DOTALL)[1]
    namespace: dict = {}
    exec(compile(code, f'{API_MD}:Components', 'exec'), namespace)
    return namespace


def server(**options) -> SmtpServer:
    options.setdefault('name', 'mx.test')
    options.setdefault('disable_reverse_lookup', True)
    options.setdefault('log_level', LogLevels.WARN)
    return SmtpServer(**options)


@pytest.fixture
def running():
    """running(server) -> the server, started in its own thread, stopped after the test."""
    threads = []

    def start(smtp: SmtpServer) -> SmtpServer:
        threads.append(ServerThread(smtp).start())
        return smtp

    yield start
    for thread in threads:
        thread.stop(timeout=2)


def greeted(smtp: SmtpServer) -> RawClient:
    client = RawClient(smtp.address)
    client.expect(220)
    return client


class Recorder:
    """A component that records each call, and the order of them all."""

    def __init__(self, name: str, events: list):
        self.name = name
        self.events = events

    def __call__(self, ctx, next):
        next()

    def session_opened(self, session):
        self.events.append((self.name, 'opened', session.id))

    def session_closed(self, session):
        self.events.append((self.name, 'closed', session.id))

    def start(self, smtp):
        self.events.append((self.name, 'start'))

    def stop(self, smtp):
        self.events.append((self.name, 'stop'))


def test_the_documented_session_log_over_two_servers(tmp_path, running):
    """One SessionLog on two servers: one line per session, written when the
    session ends (QUIT or a vanished client); the file opens with the first
    server and closes with the last."""
    SessionLog = documented_example()['SessionLog']
    path = tmp_path / 'sessions.log'
    log = SessionLog(str(path))
    first, second = server(), server()
    first.use(log)
    second.use(log)
    running(first)
    assert log.file is not None and not log.file.closed
    running(second)
    quitter = greeted(first)
    quitter.expect(250, 'EHLO client.example')
    quitter.expect(221, 'QUIT')
    vanisher = greeted(second)
    vanisher.expect(250, 'EHLO client.example')
    vanisher.expect(250, 'MAIL FROM:<a@example.com>')
    vanisher.close()            # no QUIT: the client is just gone
    assert wait_until(lambda: path.exists() and len(path.read_text().splitlines()) == 2)
    lines = path.read_text().splitlines()
    assert all(re.fullmatch(r'127\.0\.0\.1 \d+\.\d{3}s EHLO (MAIL|QUIT)', line)
               for line in lines), lines
    assert sorted(line.rsplit(' ', 1)[1] for line in lines) == ['MAIL', 'QUIT']
    assert log.sessions == {}           # no state left behind
    first.stop()
    assert not log.file.closed          # the second server still runs
    second.stop()
    assert log.file.closed
    assert log.describe() == f'session log {path}'


def test_session_closed_runs_however_the_session_ends_and_before_on_close(running):
    events: list = []
    smtp = server(on_close=lambda session: events.append(('on_close', 'closed', session.id)),
                  socket_timeout=0.3)
    smtp.use(Recorder('a', events))
    smtp.use(Recorder('b', events))
    running(smtp)
    idle = greeted(smtp)            # says nothing: the idle timeout ends its session
    assert idle.reply()[0] == 421
    assert wait_until(lambda: any(e[0] == 'on_close' for e in events))
    [session] = {e[2] for e in events if len(e) == 3}
    assert [e for e in events if len(e) == 3] == [
        ('a', 'opened', session), ('b', 'opened', session),
        ('b', 'closed', session), ('a', 'closed', session),     # newest first
        ('on_close', 'closed', session)]


def test_start_and_stop_once_per_server_newest_first(running):
    events: list = []
    smtp = server()
    smtp.use(Recorder('a', events))
    smtp.use(lambda ctx, next: next())          # a plain middleware: no lifecycle
    smtp.use(Recorder('b', events))
    running(smtp)
    smtp.start(0, '127.0.0.1')                 # a second listening socket: no second start
    smtp.stop()
    assert events == [('a', 'start'), ('b', 'start'), ('b', 'stop'), ('a', 'stop')]


def test_a_component_registered_after_start_is_started_at_once(running):
    events: list = []
    smtp = running(server())
    smtp.use(Recorder('late', events))
    assert events == [('late', 'start')]
    client = greeted(smtp)
    client.expect(221, 'QUIT')
    assert wait_until(lambda: len(events) == 3)
    assert [e[1] for e in events] == ['start', 'opened', 'closed']


def test_plain_middleware_costs_no_lifecycle_call():
    """What a session looks at when it opens and ends: empty tuples."""
    smtp = server()
    smtp.use(lambda ctx, next: next())
    smtp.use(RelayDelivery('127.0.0.1', 25))
    assert smtp.lifecycle.opened == ()
    assert [hook.__qualname__ for hook in smtp.lifecycle.closed] == [
        'RelayDelivery.session_closed']
    assert smtp.lifecycle.serving == ()


class Broken:
    """Every lifecycle method raises."""

    def __call__(self, ctx, next):
        next()

    def session_opened(self, session):
        raise RuntimeError('opened broke')

    def session_closed(self, session):
        raise RuntimeError('closed broke')

    def stop(self, smtp):
        raise RuntimeError('stop broke')


def test_a_failing_component_is_logged_and_the_others_go_on(running, caplog):
    events: list = []
    errors: list = []
    smtp = server(log_level=LogLevels.INFO)
    smtp.use(Recorder('before', events))
    smtp.use(Broken())
    smtp.use(Recorder('after', events))
    smtp.on('error', errors.append)
    running(smtp)
    with caplog.at_level(logging.ERROR, logger='smtp_stack'):
        client = greeted(smtp)          # the session goes on
        client.expect(250, 'EHLO client.example')
        client.expect(221, 'QUIT')
        assert wait_until(lambda: ('before', 'closed') in [e[:2] for e in events])
        smtp.stop()
    assert [e[:2] for e in events] == [('before', 'start'), ('after', 'start'),
                                       ('before', 'opened'), ('after', 'opened'),
                                       ('after', 'closed'), ('before', 'closed'),
                                       ('after', 'stop'), ('before', 'stop')]
    assert [str(exc) for exc in errors] == ['opened broke', 'closed broke', 'stop broke']
    messages = [record.getMessage() for record in caplog.records]
    assert any(re.search(r"^\w+: Broken\.session_opened failed: RuntimeError\('opened broke'\)",
                         m) for m in messages), messages     # '<session id>: ...
    assert any('Broken.session_closed failed' in m for m in messages), messages
    assert any("Broken.stop failed: RuntimeError('stop broke')" in m for m in messages)


class CannotStart:
    def __call__(self, ctx, next):
        next()

    def start(self, smtp):
        raise OSError(98, 'Address already in use', '127.0.0.1:8025')


def test_a_component_that_cannot_start_fails_start_and_nothing_listens():
    events: list = []
    smtp = server()
    smtp.use(Recorder('first', events))
    smtp.use(CannotStart())
    smtp.use(Recorder('never', events))
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError) as raised:
        smtp.start(port, '127.0.0.1')
    assert raised.value.filename == '127.0.0.1:8025'
    assert events == [('first', 'start'), ('first', 'stop')]
    with socket.socket() as probe:      # the port was let go
        probe.bind(('127.0.0.1', port))


def test_a_relay_whose_session_object_is_kept_alive_still_hangs_up(running):
    """No on_close, and the application keeps every session object (so no
    garbage collection would ever free it): the upstream connection still
    closes when the client vanishes."""
    upstream_closed = threading.Event()
    kept = []
    with MailSink(on_close=lambda session: upstream_closed.set()) as sink:
        relay = RelayDelivery('127.0.0.1', sink.address[1])
        smtp = server(on_connect=kept.append)
        smtp.use(relay)
        running(smtp)
        client = greeted(smtp)
        client.expect(250, 'EHLO client.example')
        client.expect(250, 'MAIL FROM:<a@example.com>')      # the upstream link is open now
        assert len(relay._links) == 1
        client.close()
        assert upstream_closed.wait(WAIT)
        assert relay._links == {} and len(kept) == 1


class PidLog:
    """Appends 'event pid' lines to a file shared by the master and its workers."""

    def __init__(self, path: str):
        self.path = path

    def _write(self, event: str) -> None:
        with open(self.path, 'a', encoding='ascii') as f:
            f.write(f'{event} {os.getpid()}\n')

    def __call__(self, ctx, next):
        next()

    def session_opened(self, session):
        self._write('opened')

    def session_closed(self, session):
        self._write('closed')

    def start(self, smtp):
        self._write('start')

    def stop(self, smtp):
        self._write('stop')


def test_with_workers_start_runs_in_the_master_and_sessions_in_the_workers(tmp_path):
    path = tmp_path / 'pids'
    smtp = server(workers=2, close_timeout=2)
    smtp.use(PidLog(str(path)))
    thread = ServerThread(smtp).start()
    try:
        assert wait_until(lambda: len(smtp.worker_pids) == 2)
        workers = set(smtp.worker_pids)
        client = greeted(smtp)
        client.expect(221, 'QUIT')
        assert wait_until(lambda: 'closed' in path.read_text())
    finally:
        thread.stop(timeout=5)
    lines = [line.split() for line in path.read_text().splitlines()]
    master = str(os.getpid())
    assert lines[0] == ['start', master] and lines[-1] == ['stop', master]
    assert [event for event, _ in lines[1:-1]] == ['opened', 'closed']
    assert lines[1][1] == lines[2][1] and int(lines[1][1]) in workers


def test_a_failing_listener_is_logged_with_its_event_and_the_others_run(running, caplog):
    heard = []

    def broken(address):
        raise ValueError('listener bug')

    smtp = server(log_level=LogLevels.INFO)
    smtp.on('listening', broken)
    smtp.on('listening', heard.append)
    with caplog.at_level(logging.ERROR, logger='smtp_stack'):
        running(smtp)
    assert heard == [smtp.address]
    [record] = [r for r in caplog.records if 'listener' in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == ("A listener of 'listening' failed: test_a_failing_listener_"
                                   "is_logged_with_its_event_and_the_others_run.<locals>.broken: "
                                   "ValueError('listener bug')")
