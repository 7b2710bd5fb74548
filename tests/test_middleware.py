"""smtp_stack.middleware without sockets: the chain (`compose`) and `Context`."""
from __future__ import annotations

import pytest

from smtp_stack.middleware import Context, compose
from smtp_stack.replies import Reply


def recorder(log, name, call_next=True):
    def middleware(ctx, next):
        log.append(f'{name}:before')
        if call_next:
            next()
        log.append(f'{name}:after')
    middleware.__name__ = name
    return middleware


def innermost_for(log):
    def handler(ctx):
        log.append('handler')
        ctx.send(250, 'OK')
    return handler


# (number of middlewares, expected call order)
ORDERS = [
    (0, ['handler']),
    (1, ['m0:before', 'handler', 'm0:after']),
    (2, ['m0:before', 'm1:before', 'handler', 'm1:after', 'm0:after']),
    (3, ['m0:before', 'm1:before', 'm2:before', 'handler', 'm2:after', 'm1:after', 'm0:after']),
]


@pytest.mark.parametrize('count, expected', ORDERS)
def test_first_registered_is_outermost(count, expected):
    log = []
    dispatch = compose([recorder(log, f'm{i}') for i in range(count)], innermost_for(log))
    ctx = Context('NOOP', None, None)
    dispatch(ctx)
    assert log == expected
    assert ctx.reply == Reply(250, 'OK', None)


def test_no_middleware_returns_the_handler_itself():
    handler = innermost_for([])
    assert compose([], handler) is handler


def test_compose_copies_the_list():
    log = []
    chain = [recorder(log, 'm0')]
    dispatch = compose(chain, innermost_for(log))
    chain.append(recorder(log, 'late'))
    dispatch(Context('NOOP', None, None))
    assert 'late:before' not in log


@pytest.mark.parametrize('skipper, expected', [
    (0, ['m0:before', 'm0:after']),
    (1, ['m0:before', 'm1:before', 'm1:after', 'm0:after']),
    (2, ['m0:before', 'm1:before', 'm2:before', 'm2:after', 'm1:after', 'm0:after']),
])
def test_middleware_that_skips_next_stops_the_chain(skipper, expected):
    log = []
    chain = [recorder(log, f'm{i}', call_next=i != skipper) for i in range(3)]
    dispatch = compose(chain, innermost_for(log))
    dispatch(Context('NOOP', None, None))
    assert log == expected


def test_middleware_answers_by_itself():
    def deny(ctx, next):
        ctx.send(550, 'Denied')
    dispatch = compose([deny], innermost_for([]))
    ctx = Context('MAIL FROM:<a@b.c>', None, None)
    dispatch(ctx)
    assert ctx.reply.code == 550


def test_middleware_overrides_the_reply_after_next():
    def override(ctx, next):
        next()
        assert ctx.reply.code == 250
        ctx.send(451, 'Try later')
    dispatch = compose([override], innermost_for([]))
    ctx = Context('NOOP', None, None)
    dispatch(ctx)
    assert ctx.reply == Reply(451, 'Try later', None)


@pytest.mark.parametrize('position', [0, 1, 2])
def test_next_called_twice_raises(position):
    log = []

    def twice(ctx, next):
        next()
        next()
    chain = [recorder(log, f'm{i}') for i in range(3)]
    chain[position] = twice
    dispatch = compose(chain, innermost_for(log))
    with pytest.raises(RuntimeError, match='twice'):
        dispatch(Context('NOOP', None, None))
    assert log.count('handler') == 1


def test_exceptions_propagate_out_of_the_chain():
    def handler(ctx):
        raise KeyError('inner')
    seen = []

    def outer(ctx, next):
        try:
            next()
        except KeyError:
            seen.append('caught')
            raise
    with pytest.raises(KeyError):
        compose([outer], handler)(Context('NOOP', None, None))
    assert seen == ['caught']


def test_dispatch_is_reusable_for_each_command():
    log = []
    dispatch = compose([recorder(log, 'm0')], innermost_for(log))
    dispatch(Context('NOOP', None, None))
    dispatch(Context('NOOP', None, None))
    assert log.count('handler') == 2


# --- Context --------------------------------------------------------------------
# (raw command, command_name, command_args)
COMMANDS = [
    ('NOOP', 'NOOP', []),
    ('noop', 'NOOP', []),
    ('EHLO client.example', 'EHLO', ['client.example']),
    ('ehlo [192.0.2.1]', 'EHLO', ['[192.0.2.1]']),
    ('MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME', 'MAIL', ['FROM:<a@b.c>', 'SIZE=100', 'BODY=8BITMIME']),
    ('RCPT TO:<x@y.z>  NOTIFY=NEVER ', 'RCPT', ['TO:<x@y.z>', 'NOTIFY=NEVER']),
    ('AUTH PLAIN AGFsaWNlAHNlY3JldA==', 'AUTH', ['PLAIN', 'AGFsaWNlAHNlY3JldA==']),
    ('BDAT 100 LAST', 'BDAT', ['100', 'LAST']),
    ('Data', 'DATA', []),
    ('', '', []),
    ('VRFY \u00fcser', 'VRFY', ['\u00fcser']),
]


@pytest.mark.parametrize('raw, name, args', COMMANDS)
def test_context_parses_the_command(raw, name, args):
    ctx = Context(raw, 'session', 'server')
    assert ctx.command == raw
    assert ctx.command_name == name
    assert ctx.command_args == args
    assert (ctx.session, ctx.server) == ('session', 'server')
    assert ctx.reply is None
    assert ctx.address is None
    assert ctx.close_requested is False
    assert ctx.data_stream is None


def test_context_takes_user_attributes():
    ctx = Context('NOOP', None, None)
    ctx.started_at = 1.5
    assert ctx.started_at == 1.5


# (send arguments, expected reply)
SENDS = [
    ((250, 'OK'), Reply(250, 'OK', None)),
    ((550, 'No such user', '5.1.1'), Reply(550, 'No such user', '5.1.1')),
    ((250,), Reply(250, '', None)),
    ((250, ['line one', 'line two']), Reply(250, ['line one', 'line two'], None)),
    ((Reply(221, 'Bye', '2.0.0'),), Reply(221, 'Bye', '2.0.0')),
    (([(250, 'ok 1'), (550, 'no 2'), (452, 'full 3', '4.2.2')],),
     [Reply(250, 'ok 1', None), Reply(550, 'no 2', None), Reply(452, 'full 3', '4.2.2')]),
    (([Reply(250, 'a', '2.1.5'), (250, 'b')],), [Reply(250, 'a', '2.1.5'), Reply(250, 'b', None)]),
    ((((250, 'only one'),),), [Reply(250, 'only one', None)]),     # a tuple of tuples
]


@pytest.mark.parametrize('args, reply', SENDS)
def test_send(args, reply):
    ctx = Context('DATA', None, None)
    ctx.send(*args)
    assert ctx.reply == reply


def test_last_send_wins():
    ctx = Context('NOOP', None, None)
    ctx.send(250, 'first')
    ctx.send(451, 'second')
    assert ctx.reply == Reply(451, 'second', None)


@pytest.mark.parametrize('args', [
    (199, 'x'), (600, 'x'), ('250', 'OK'), (250.0, 'OK'), (True, 'OK'), (None, 'OK'),
    ([(250, 'ok'), (99, 'bad')],),
    ([(700, 'bad')],),
])
def test_send_invalid_code_is_a_value_error(args):
    ctx = Context('NOOP', None, None)
    with pytest.raises(ValueError):
        ctx.send(*args)
    assert ctx.reply is None


@pytest.mark.parametrize('args', [(Reply(999, 'x'),), ([Reply(99, 'x')],)])
def test_send_reply_with_invalid_code_is_a_value_error(args):
    ctx = Context('NOOP', None, None)
    with pytest.raises(ValueError):
        ctx.send(*args)


def test_close_requests_closing_after_the_reply():
    ctx = Context('QUIT', None, None)
    ctx.close()
    assert ctx.close_requested
    assert ctx.reply is None
    ctx.close()
    assert ctx.close_requested


def test_repr_names_the_command():
    ctx = Context('noop', None, None)
    ctx.send(250, 'OK')
    assert 'NOOP' in repr(ctx) and '250' in repr(ctx)
