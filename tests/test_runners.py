"""smtp_stack.runners: the greenlets that serve connections, reused, bounded,
and gone after stop(); alone in a hub, then under a real server."""
from __future__ import annotations

import smtplib

import gevent
import gevent.event

from conftest import WAIT, RawClient, wait_until
from smtp_stack.runners import SessionRunners


def settle(predicate, rounds: int = 1000) -> bool:
    """Let the hub run its callbacks until `predicate()` (bounded)."""
    for _ in range(rounds):
        if predicate():
            return True
        gevent.sleep(0)
    return bool(predicate())


def test_a_job_runs_and_join_sees_it_done():
    runners = SessionRunners()
    done = []
    runners.spawn(done.append, 'one')
    assert len(runners) == 1
    assert runners.join(WAIT)
    assert done == ['one'] and len(runners) == 0


def test_jobs_one_after_another_share_one_greenlet():
    runners = SessionRunners()
    seen = []
    for _ in range(3):
        runners.spawn(lambda: seen.append(gevent.getcurrent()))
        assert runners.join(WAIT)
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
    assert runners.idle == [seen[0]]


def test_parallel_jobs_get_their_own_runners_and_only_max_idle_stay():
    runners = SessionRunners(max_idle=2)
    release = gevent.event.Event()
    seen = []

    def job():
        seen.append(gevent.getcurrent())
        release.wait(WAIT)

    for _ in range(5):
        runners.spawn(job)
    assert settle(lambda: len(seen) == 5)
    assert len(set(seen)) == 5 and len(runners) == 5
    release.set()
    assert runners.join(WAIT)
    assert len(runners.idle) == 2
    assert settle(lambda: sum(1 for g in seen if g.dead) == 3)


def test_kill_ends_busy_runners_and_none_is_parked_after():
    runners = SessionRunners()
    blocker = gevent.event.Event()
    ended = []

    def job():
        try:
            blocker.wait(WAIT)
        finally:
            ended.append(gevent.getcurrent())

    runners.spawn(job)
    runners.spawn(job)
    assert settle(lambda: len(runners) == 2 and all(runners.busy))
    runners.kill(block=True, timeout=WAIT)
    assert len(ended) == 2 and all(g.dead for g in ended)
    assert runners.idle == [] and len(runners) == 0


def test_close_ends_parked_runners():
    runners = SessionRunners()
    seen = []
    runners.spawn(lambda: seen.append(gevent.getcurrent()))
    assert runners.join(WAIT) and runners.idle
    runners.close()
    assert runners.idle == []
    assert settle(lambda: seen[0].dead)


def test_an_escaping_error_is_reported_and_the_next_job_still_runs(monkeypatch):
    runners = SessionRunners()
    reported = []
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, 'handle_error',
                        lambda context, kind, value, tb: reported.append((context, kind)))

    def broken():
        raise LookupError('a bug')

    runners.spawn(broken)
    assert runners.join(WAIT)
    assert len(reported) == 1 and reported[0][1] is LookupError
    assert reported[0][0].dead and runners.idle == []     # that runner is not reused
    done = []
    runners.spawn(done.append, 'after')
    assert runners.join(WAIT) and done == ['after']


# -- under a real server ------------------------------------------------------

def connect_and_quit(server) -> None:
    c = RawClient(server.address)
    c.expect(220)
    c.expect(221, 'QUIT')
    assert c.closed()
    c.close()


def test_sequential_connections_are_served_by_one_runner(serve):
    served_by = []
    server = serve(on_connect=lambda session: served_by.append(gevent.getcurrent()))
    for _ in range(3):
        connect_and_quit(server)
        assert wait_until(lambda: len(server.runners) == 0)
    assert len(served_by) == 3 and served_by[0] is served_by[1] is served_by[2]


def test_mail_still_flows_through_reused_runners(serve):
    delivered = []

    def collect(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            delivered.append(ctx.session.envelope.data_stream.read())

    server = serve(middleware=[collect])
    for n in range(5):
        with smtplib.SMTP(*server.address, timeout=WAIT) as smtp:
            smtp.sendmail('a@example.com', ['b@example.com'], f'Subject: {n}\r\n\r\nbody {n}\r\n')
        assert wait_until(lambda: len(server.runners) == 0)    # parked before the next
    assert [d.split(b'\r\n')[0] for d in delivered] == [f'Subject: {n}'.encode() for n in range(5)]
    assert wait_until(lambda: len(server.runners.idle) == 1)


def test_stop_leaves_no_runner_alive(serve):
    server = serve()
    clients = [RawClient(server.address) for _ in range(4)]
    for c in clients:
        c.expect(220)
    runners = list(server.runners.busy)
    clients[0].expect(221, 'QUIT')
    assert wait_until(lambda: len(server.runners) == 3)
    server.stop(timeout=2)
    for c in clients[1:]:
        assert c.reply()[0] == 421
        c.close()
    assert server.runners.idle == [] and len(server.runners) == 0
    assert wait_until(lambda: all(g.dead for g in runners))


class Escape(BaseException):
    """Not an Exception: passes every `except Exception` of the session."""


def test_a_session_that_dies_of_an_escaping_error_leaves_the_server_serving(serve, capsys):
    calls = []

    def on_close(session):
        calls.append(session.id)
        if len(calls) == 1:
            raise Escape('from on_close')

    server = serve(on_close=on_close)
    connect_and_quit(server)
    assert wait_until(lambda: len(server.runners) == 0 and not server.runners.idle)
    connect_and_quit(server)
    assert wait_until(lambda: len(calls) == 2)
    assert 'Escape' in capsys.readouterr().err


def test_a_stray_exception_into_a_parked_runner_ends_only_that_runner(monkeypatch):
    """User code may start a gevent.Timeout and never cancel it; if it
    fires while the runner is parked, the runner ends (reported) and the
    hub goes on."""
    runners = SessionRunners()
    reported = []
    monkeypatch.setattr(gevent.get_hub(), 'handle_error',
                        lambda context, kind, value, tb: reported.append(kind))
    seen = []

    def leave_a_timeout_running():
        seen.append(gevent.getcurrent())
        gevent.Timeout(0.01).start()

    runners.spawn(leave_a_timeout_running)
    assert runners.join(WAIT) and runners.idle == seen
    assert settle(lambda: seen[0].dead, rounds=100000)
    assert reported == [gevent.Timeout] and runners.idle == []
    done = []
    runners.spawn(done.append, 'next')
    assert runners.join(WAIT) and done == ['next']


def test_no_context_variable_or_greenlet_local_passes_to_the_next_connection(serve):
    """A new greenlet per connection would start empty; a reused one must
    look the same: ContextVars are per connection, and a runner given
    gevent.local state is not reused."""
    import contextvars
    import gevent.local
    var = contextvars.ContextVar('var', default='unset')
    local = gevent.local.local()
    seen = []

    def look_then_set(ctx, next):
        if ctx.command_name == 'NOOP':
            arg = ctx.command_args[0]
            # Even reading a gevent.local gives this greenlet local state.
            value = getattr(local, 'value', 'unset') if arg in ('local', 'third') else '-'
            seen.append((var.get(), value, gevent.getcurrent()))
            var.set(arg)
            if arg == 'local':
                local.value = 'left behind'
        next()

    server = serve(middleware=[look_then_set])

    def session(arg):
        c = RawClient(server.address)
        c.expect(220)
        c.expect(250, f'NOOP {arg}')
        c.expect(250, f'NOOP {arg}')        # within one connection the values stay
        c.expect(221, 'QUIT')
        assert c.closed()
        c.close()
        assert wait_until(lambda: len(server.runners) == 0)

    session('first')
    session('local')
    session('third')
    assert [s[:2] for s in seen] == [('unset', '-'), ('first', '-'),
                                     ('unset', 'unset'), ('local', 'left behind'),
                                     ('unset', 'unset'), ('third', 'unset')]
    runners = [s[2] for s in seen]
    assert runners[0] is runners[2]         # reused after a ContextVar
    assert runners[4] is not runners[2]     # not after gevent.local state
    assert runners[2].dead

