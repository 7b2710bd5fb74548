"""Middleware and hooks as docs/api.md defines them, run by the engine over a real socket."""
import smtplib

import pytest

from smtp_stack import SmtpError


def recorder(log, name):
    def middleware(ctx, next):
        log.append(f'{name}>{ctx.command_name}')
        next()
        log.append(f'{name}<{ctx.reply.code}')
    return middleware


@pytest.mark.parametrize('count', [1, 2, 3])
def test_registration_order_first_is_outermost(serve, client, count):
    log = []
    names = ['a', 'b', 'c'][:count]
    c = client(serve(middleware=[recorder(log, n) for n in names]))
    c.expect(250, 'NOOP')
    assert log == [f'{n}>NOOP' for n in names] + [f'{n}<250' for n in reversed(names)]


def test_middleware_answers_without_next(serve, client):
    def custom(ctx, next):
        if ctx.command_name == 'XPING':
            ctx.send(250, 'pong')
            return
        next()
    c = client(serve(middleware=[custom]))
    assert c.cmd('XPING') == (250, '2.0.0 pong')
    assert c.cmd('XOTHER')[0] == 500


def test_middleware_overrides_builtin_reply_after_next(serve, client):
    def override(ctx, next):
        next()
        if ctx.command_name == 'RCPT' and ctx.reply.code == 250:
            ctx.send(550, 'No such user here', '5.1.1')
    c = client(serve(middleware=[override]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('RCPT TO:<c@d.example>') == (550, '5.1.1 No such user here')
    # a refused RCPT leaves no trace in the envelope, even refused after next()
    assert c.cmd('DATA') == (554, '5.5.1 Error: no valid recipients')


def test_rejected_rcpt_before_next_leaves_no_trace(serve, client):
    seen = []

    def validate(ctx, next):
        if ctx.command_name == 'RCPT' and ctx.address.address.startswith('bad'):
            raise SmtpError(550, 'Unknown user', '5.1.1')
        next()
        if ctx.command_name == 'DATA':
            seen.append([a.address for a in ctx.session.envelope.rcpt_to])
    c = client(serve(middleware=[validate]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<>')
    assert c.cmd('RCPT TO:<bad@d.example>') == (550, '5.1.1 Unknown user')
    c.expect(250, 'RCPT TO:<good@d.example>')
    c.expect(354, 'DATA')
    c.send('x\r\n.\r\n')
    c.expect(250)
    assert seen == [['good@d.example']]


def test_middleware_rewrites_address_before_next(serve, client):
    seen = []

    def rewrite(ctx, next):
        if ctx.command_name == 'RCPT':
            ctx.address.address = ctx.address.address.lower()
        next()
        if ctx.command_name == 'RCPT':
            seen.append(ctx.session.envelope.last_to.address)
    c = client(serve(middleware=[rewrite]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<MiXeD@D.Example>')
    assert seen == ['mixed@d.example']


def test_middleware_exceptions(serve, client):
    def broken(ctx, next):
        if ctx.command_name == 'NOOP':
            raise ValueError('bug')
        if ctx.command_name == 'VRFY':
            raise SmtpError(550, 'Nope', '5.7.1')
        next()
    c = client(serve(middleware=[broken]))
    c.expect(250, 'EHLO x')
    assert c.cmd('NOOP') == (451, '4.3.0 Error: local error in processing')
    assert c.cmd('VRFY x') == (550, '5.7.1 Nope')
    c.expect(250, 'MAIL FROM:<a@b.example>')   # the session goes on


def test_no_reply_set_gets_451_and_next_twice_is_an_error(serve, client):
    def silent(ctx, next):
        if ctx.command_name == 'NOOP':
            ctx.reply = None
            return
        if ctx.command_name == 'RSET':
            next()
            next()
            return
        next()
    c = client(serve(middleware=[silent]))
    assert c.cmd('NOOP')[0] == 451
    assert c.cmd('RSET')[0] == 451


def test_ctx_close_closes_after_the_reply(serve, client):
    def closer(ctx, next):
        next()
        if ctx.command_name == 'NOOP':
            ctx.close()
    c = client(serve(middleware=[closer]))
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
    assert c.closed()


def test_ctx_fields(serve, client):
    seen = []

    def spy(ctx, next):
        seen.append((ctx.command, ctx.command_name, ctx.command_args, ctx.server is server,
                     ctx.address and (ctx.address.address, ctx.address.args)))
        next()
    server = serve(middleware=[spy])
    c = client(server)
    c.expect(250, 'ehlo client')
    c.expect(250, 'mail from:<a@b.example> body=8bitmime SMTPUTF8')
    assert seen == [
        ('ehlo client', 'EHLO', ['client'], True, None),
        ('mail from:<a@b.example> body=8bitmime SMTPUTF8', 'MAIL',
         ['from:<a@b.example>', 'body=8bitmime', 'SMTPUTF8'], True,
         ('a@b.example', {'BODY': '8BITMIME', 'SMTPUTF8': True})),
    ]


def test_next_command_is_read_only_after_the_chain_returned(serve, client):
    """Pipelined commands never overlap: the chain of one ends before the next starts."""
    log = []

    def slow(ctx, next):
        log.append(('start', ctx.command_name))
        next()
        log.append(('end', ctx.command_name))
    c = client(serve(middleware=[slow]))
    c.send('EHLO x\r\nNOOP\r\nRSET\r\n')
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    assert log == [('start', 'EHLO'), ('end', 'EHLO'), ('start', 'NOOP'), ('end', 'NOOP'),
                   ('start', 'RSET'), ('end', 'RSET')]


# --- hooks -----------------------------------------------------------------

def test_hooks_are_called_inside_next(serve, client):
    log = []

    def outer(ctx, next):
        log.append('before')
        next()
        log.append('after')
    server = serve(middleware=[outer],
                   on_mail_from=lambda session, address: log.append(('mail', address.address)),
                   on_rcpt_to=lambda session, address: log.append(('rcpt', address.address)))
    c = client(server)
    c.expect(250, 'EHLO x')
    log.clear()
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    assert log == ['before', ('mail', 'a@b.example'), 'after',
                   'before', ('rcpt', 'c@d.example'), 'after']


def test_hook_smtp_error_cancels_the_command(serve, client):
    def on_rcpt_to(session, address):
        if address.address == 'no@d.example':
            raise SmtpError(550, 'Mailbox unavailable', '5.1.1')
    c = client(serve(on_rcpt_to=on_rcpt_to))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('RCPT TO:<no@d.example>') == (550, '5.1.1 Mailbox unavailable')
    c.expect(250, 'RCPT TO:<yes@d.example>')


def test_hook_other_exception_replies_421_and_closes(serve, client):
    def on_mail_from(session, address):
        raise RuntimeError('database down')
    c = client(serve(on_mail_from=on_mail_from))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example>')[0] == 421
    assert c.closed()


def test_on_connect_can_refuse(serve, client):
    def on_connect(session):
        raise SmtpError(554, 'Go away', '5.7.1')
    c = client(serve(on_connect=on_connect), greeting=None)
    assert c.reply() == (554, '5.7.1 Go away')   # RFC 2034 4: only the 220 greeting goes without
    assert c.closed()


def test_on_connect_failure_gives_421(serve, client):
    c = client(serve(on_connect=lambda session: 1 / 0), greeting=None)
    assert c.reply()[0] == 421
    assert c.closed()


def test_on_close_is_called_with_the_session(serve):
    import threading
    closed = threading.Event()
    sessions = []

    def on_close(session):
        sessions.append(session)
        closed.set()
    server = serve(on_close=on_close)
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.noop()
    assert closed.wait(10)
    assert sessions[0].remote_address == '127.0.0.1'


def test_on_socket_raising_closes_silently(serve, client):
    def on_socket(sock, address):
        raise ConnectionRefusedError('blocked')
    c = client(serve(on_socket=on_socket), greeting=None)
    assert c.closed() and c.buf == b''


def test_on_data_refuses_before_354(serve, client):
    def on_data(session):
        raise SmtpError(554, 'No mail from you', '5.7.1')
    c = client(serve(on_data=on_data))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    assert c.cmd('DATA') == (554, '5.7.1 No mail from you')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_on_data_may_read_the_body_and_reject_after_it(serve, client):
    def on_data(session):
        body = session.envelope.data_stream.read()
        if b'viagra' in body:
            raise SmtpError(550, 'Spam', '5.7.1')
    c = client(serve(on_data=on_data))
    c.expect(250, 'EHLO x')
    for body, code in ((b'buy viagra\r\n', 550), (b'hello\r\n', 250)):
        c.expect(250, 'MAIL FROM:<a@b.example>')
        c.expect(250, 'RCPT TO:<c@d.example>')
        c.expect(354, 'DATA')
        c.send(body + b'.\r\n')
        assert c.reply()[0] == code


def test_events(serve):
    from smtp_stack import SmtpServer
    from smtp_stack.testing import ServerThread
    events = []
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True)
    server.on('listening', lambda address: events.append(('listening', address)))
    server.on('close', lambda: events.append('close'))
    with pytest.raises(ValueError):
        server.on('nope', print)
    with ServerThread(server):
        pass
    assert events == [('listening', server.address), 'close']


def test_mail_refused_after_next_leaves_no_trace(serve, client):
    def refuse_sender(ctx, next):
        next()
        if ctx.command_name == 'MAIL' and ctx.address.address.startswith('spam'):
            ctx.send(550, 'Sender refused', '5.7.1')
    c = client(serve(middleware=[refuse_sender]))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<spam@b.example>') == (550, '5.7.1 Sender refused')
    c.expect(250, 'MAIL FROM:<good@b.example>')     # not a nested MAIL
