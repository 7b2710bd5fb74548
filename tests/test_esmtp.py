"""CHUNKING/BDAT, BINARYMIME, DSN, REQUIRETLS and LMTP over raw sockets."""
import socket
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_stack import MessageRefused, SmtpError
from smtp_stack.framing import dot_stuff

from conftest import RawClient


def collector(bodies):
    """Appends (command, body or the MessageRefused reading it raised, stream);
    a MessageRefused is re-raised."""
    def collect(ctx, next):
        next()
        if ctx.data_stream is not None and ctx.reply and ctx.reply.code == 250:
            try:
                body = ctx.data_stream.read()
            except MessageRefused as exc:
                bodies.append((ctx.command_name, exc, ctx.data_stream))
                raise
            bodies.append((ctx.command_name, body, ctx.data_stream))
    return collect


def transaction(c, body_param=''):
    c.expect(250, 'EHLO x')
    c.expect(250, f'MAIL FROM:<a@b.example>{body_param}')
    c.expect(250, 'RCPT TO:<c@d.example>')


def test_ehlo_advertises_chunking_and_binarymime(serve, client):
    c = client(serve())
    lines = c.expect(250, 'EHLO x').split('\n')
    assert 'CHUNKING' in lines and 'BINARYMIME' in lines and 'REQUIRETLS' not in lines


def test_disabled_extensions_disappear(serve, client):
    c = client(serve(disabled_commands=['CHUNKING', 'DSN', 'BINARYMIME']))
    lines = c.expect(250, 'EHLO x').split('\n')
    assert 'CHUNKING' not in lines and 'DSN' not in lines and 'BINARYMIME' not in lines
    assert c.cmd('MAIL FROM:<a@b.example> RET=FULL')[0] == 555
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    assert c.cmd('BDAT 0 LAST')[0] == 502


def test_bdat_chunks_in_separate_writes(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 5\r\nhello')
    assert c.reply() == (250, '2.0.0 5 octets received')
    c.send(b'BDAT 7\r\n, world')
    assert c.reply() == (250, '2.0.0 12 octets received')
    c.send(b'BDAT 2 LAST\r\n\r\n')
    assert c.reply() == (250, '2.0.0 OK: message queued')
    assert [(name, body) for name, body, _ in bodies] == [('BDAT', b'hello, world\r\n')]


def test_bdat_pipelined_in_one_write_with_binary_content(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c, ' BODY=BINARYMIME')
    payload = bytes(range(256)) + b'\r\n.\r\n\n\r'
    c.send(b'BDAT 100\r\n' + payload[:100] + b'BDAT %d LAST\r\n' % (len(payload) - 100)
           + payload[100:] + b'NOOP\r\n')
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    assert bodies[0][1] == payload       # byte-exact: no dot-stuffing, bare CR/LF kept


def test_bdat_chunk_split_across_writes(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 10 LA')
    c.send(b'ST\r\n01234')
    c.send(b'56789')
    assert c.reply()[0] == 250
    assert bodies[0][1] == b'0123456789'


def test_bdat_0_last(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 5\r\nabcde')
    c.expect(250)
    c.expect(250, 'BDAT 0 LAST')
    assert bodies[0][1] == b'abcde'


def test_bdat_size_enforced_across_chunks(serve, client):
    bodies = []
    c = client(serve(size=10, middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 6\r\n123456BDAT 6\r\n789012BDAT 3 LAST\r\nxyz')
    assert c.reply()[0] == 250
    assert c.reply()[0] == 552
    assert c.reply()[0] == 552
    assert c.cmd('NOOP')[0] == 250          # in sync after the discarded bytes
    assert bodies and not bodies[0][2].acceptable
    refused = bodies[0][1]
    assert isinstance(refused, MessageRefused) and bodies[0][2].refused is refused
    assert refused.reply == (552, 'Error: message exceeds fixed maximum message size', '5.3.4')


def test_bdat_errors_read_the_chunk_to_stay_in_sync(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.send(b'BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n')     # no MAIL: 503, chunk skipped
    assert c.reply()[0] == 503
    assert c.cmd('NOOP') == (250, '2.0.0 OK')      # not two extra NOOP replies
    assert c.cmd('BDAT x')[0] == 501
    assert c.cmd('BDAT 1 FIRST')[0] == 501


def test_on_data_refusing_a_bdat_message_reads_its_chunks(serve, client):
    def on_data(session):
        raise SmtpError(554, 'No thanks', '5.7.1')
    c = client(serve(on_data=on_data))
    transaction(c)
    c.send(b'BDAT 4 LAST\r\nabcd')
    assert c.reply() == (554, '5.7.1 No thanks')
    assert c.cmd('NOOP')[0] == 250


def test_bdat_then_data_is_refused(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 3\r\nabc')
    c.expect(250)
    assert c.cmd('DATA')[0] == 503
    assert bodies and not bodies[0][2].acceptable
    refused = bodies[0][1]
    assert isinstance(refused, MessageRefused) and bodies[0][2].refused is refused
    assert refused.reply == (554, 'Error: message transfer abandoned by the client', '5.6.0')


def test_rset_abandons_a_bdat_message(serve, client):
    bodies = []
    c = client(serve(middleware=[collector(bodies)]))
    transaction(c)
    c.send(b'BDAT 3\r\nabc')
    c.expect(250)
    c.expect(250, 'RSET')
    assert bodies[0][2].aborted
    refused = bodies[0][1]
    assert isinstance(refused, MessageRefused) and bodies[0][2].refused is refused
    assert refused.reply == (554, 'Error: message transfer abandoned by the client', '5.6.0')
    transaction_again = c.cmd('MAIL FROM:<a@b.example>')
    assert transaction_again[0] == 250


def test_binarymime_requires_bdat(serve, client):
    c = client(serve())
    transaction(c, ' BODY=BINARYMIME')
    assert c.cmd('DATA') == (503, '5.5.1 Error: BODY=BINARYMIME requires BDAT')


def test_binarymime_needs_chunking(serve, client):
    c = client(serve(disabled_commands=['CHUNKING']))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example> BODY=BINARYMIME')[0] == 501


@pytest.mark.parametrize('params, code', [
    (' RET=FULL ENVID=QQ+2Bx', 250), (' RET=NONE', 501), (' ENVID=' + 'x' * 101, 501),
])
def test_dsn_mail_parameters(serve, client, params, code):
    c = client(serve())
    c.expect(250, 'EHLO x')
    assert c.cmd(f'MAIL FROM:<a@b.example>{params}')[0] == code


def test_dsn_parameters_are_kept_in_address_args(serve, client):
    seen = []

    def spy(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            env = ctx.session.envelope
            seen.append((env.mail_from.args, env.rcpt_to[0].args))
    c = client(serve(middleware=[spy]))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> RET=hdrs ENVID=id+2B1')
    c.expect(250, 'RCPT TO:<c@d.example> NOTIFY=success,delay ORCPT=rfc822;c@d.example')
    c.expect(354, 'DATA')
    c.send(b'x\r\n.\r\n')
    c.expect(250)
    assert seen == [({'RET': 'HDRS', 'ENVID': 'id+2B1'},
                     {'NOTIFY': 'SUCCESS,DELAY', 'ORCPT': 'rfc822;c@d.example'})]


def test_requiretls(serve, client):
    server = serve()
    c = client(server)
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example> REQUIRETLS') == (530, '5.7.10 Error: REQUIRETLS needs a TLS session')
    c.expect(220, 'STARTTLS')
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock, server_hostname='mx.test')
    assert 'REQUIRETLS' in c.expect(250, 'EHLO x').split('\n')
    c.expect(250, 'MAIL FROM:<a@b.example> REQUIRETLS')


def test_lmtp_bdat_one_reply_per_recipient(serve, client):
    def per_recipient(ctx, next):
        next()
        if ctx.command_name == 'BDAT':
            ctx.data_stream.read()
            ctx.send([(250, 'ok'), (550, 'no such user'), (250, 'ok')])
    c = client(serve(lmtp=True, middleware=[per_recipient]))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    for rcpt in ('a', 'b', 'c'):
        c.expect(250, f'RCPT TO:<{rcpt}@d.example>')
    c.send(b'BDAT 3 LAST\r\nabc')
    assert [c.reply()[0] for _ in range(3)] == [250, 550, 250]
    assert c.cmd('NOOP')[0] == 250


def test_lmtp_middleware_refuses_one_of_three_after_data(serve, client):
    """smtplib.LMTP reads one reply after DATA; raw sockets see all three."""
    def refuse_b(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()
            ctx.send([(550, 'refused') if r.address.startswith('b@') else (250, 'delivered')
                      for r in ctx.session.envelope.rcpt_to])
    c = client(serve(lmtp=True, middleware=[refuse_b]))
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    for rcpt in ('a', 'b', 'c'):
        c.expect(250, f'RCPT TO:<{rcpt}@d.example>')
    c.expect(354, 'DATA')
    c.send(b'Subject: x\r\n\r\nbody\r\n.\r\n')
    assert [c.reply() for _ in range(3)] == [(250, '2.0.0 delivered'), (550, '5.0.0 refused'),
                                             (250, '2.0.0 delivered')]


@pytest.fixture(scope='module')
def shared_server():
    from smtp_stack import SmtpServer, LogLevels
    from smtp_stack.testing import ServerThread
    bodies = []
    server = SmtpServer(name='mx.test', disable_reverse_lookup=True, log_level=LogLevels.WARN)
    server.use(collector(bodies))
    with ServerThread(server):
        yield server, bodies


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=3000).map(lambda b: b.replace(b'\r', b'').replace(b'\n', b'\r\n') + b'\r\n'),
       cuts=st.lists(st.integers(min_value=1, max_value=700), max_size=8))
def test_bdat_chunks_arrive_identical_to_data(shared_server, body, cuts):
    server, bodies = shared_server
    bodies.clear()
    c = RawClient(server.address)
    try:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.expect(220)
        transaction(c)
        c.expect(354, 'DATA')
        c.send(dot_stuff(body) + b'.\r\n')
        c.expect(250)
        c.expect(250, 'MAIL FROM:<a@b.example>')
        c.expect(250, 'RCPT TO:<c@d.example>')
        chunks, rest = [], body
        for cut in cuts:
            if not rest:
                break
            chunks.append(rest[:cut])
            rest = rest[cut:]
        chunks.append(rest)
        wire = b''.join(b'BDAT %d%s\r\n' % (len(chunk), b' LAST' if i == len(chunks) - 1 else b'')
                        + chunk for i, chunk in enumerate(chunks))
        c.send(wire)
        for _ in chunks:
            assert c.reply()[0] == 250
    finally:
        c.close()
    assert [b for _, b, _ in bodies] == [body, body]
