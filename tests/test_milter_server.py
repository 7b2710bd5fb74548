"""MilterServer over loopback, driven packet by packet (postfix_private.MtaClient):
what Postfix and Sendmail send, and what they never should."""
import logging
import os
import struct

import gevent
import peers
import pytest

from conftest import wait_until
from postfix_private import MtaClient, milter_thread
from log_lines import kept_lines
from smtp_stack import LogLevels, MessageRefused, SmtpError
from smtp_stack.milter import MilterServer, parse_listen
from smtp_stack.milter import protocol as P

CONNECT = P.command(P.CONNECT, 'client.example', P.FAMILY_INET, 40000, '192.0.2.7')
HELO = P.command(P.HELO, 'client.example')
MAIL = P.command(P.MAIL, ['<sender@example.org>', 'SIZE=100'])
DATA = P.command(P.DATA)
EOH = P.command(P.EOH)
EOB = P.command(P.EOB, b'')


def rcpt(address, *args):
    return P.command(P.RCPT, [f'<{address}>', *args])


def header(name, value):
    return P.command(P.HEADER, name, value)


def body(data):
    return P.command(P.BODY, data)


def macros(stage, **values):
    strings = []
    for name, value in values.items():
        strings += [name if len(name) == 1 else '{' + name + '}', value]
    return P.command(P.MACRO, stage, strings)


@pytest.fixture
def log():
    with kept_lines('smtp_stack.test_milter') as lines:
        yield lines


def sees_everything(ctx, next):
    """A middleware that declares no stages: the MTA is asked for every step."""
    next()


def accept_connection(session):
    """on_connect set: the MTA waits for a reply to SMFIC_CONNECT."""


def milter(log=None, **options):
    """A MilterServer asking for every step, each answered as these tests
    expect: a middleware declaring nothing, on_connect set (without it
    CONNECT goes unanswered: test_milter_steps.py)."""
    if log is not None:
        options.setdefault('log_backend', logging.getLogger('smtp_stack.test_milter'))
        options.setdefault('log_level', LogLevels.DEBUG)
    options.setdefault('on_connect', accept_connection)
    server = MilterServer(name='milter.test', **options)
    server.use(sees_everything)
    return server


def negotiate(client, **offer):
    """The offer of an MTA that does not take SMFIR_SKIP: body chunks go
    unanswered (with SKIP: test_milter_steps.py)."""
    offer.setdefault('protocol', 0x1FFFFF & ~P.SKIP_OK)
    return client.negotiate(**offer)


def replies(client, count):
    out = []
    for _ in range(count):
        packet = client.reply()
        assert packet is not None, f'the milter closed after {out}'
        out.append(packet)
    return out


def transaction(client, *content, recipients=('rcpt@example.org',)):
    """MAIL, RCPT..., DATA, content, EOB: the replies to each."""
    client.send(HELO, MAIL)
    got = replies(client, 2)
    for address in recipients:
        client.send(rcpt(address))
        got += replies(client, 1)
    client.send(DATA, *content, EOB)
    got += replies(client, 1)
    final = []
    while True:
        packet = client.reply()
        assert packet is not None
        final.append(packet)
        if packet.command in (P.CONTINUE, P.ACCEPT, P.REPLYCODE, P.DISCARD, P.REJECT,
                              P.TEMPFAIL, P.SHUTDOWN):
            return got, final


MESSAGE = (header('From', ' a@example.org'), header('Subject', ' hello'), EOH,
           body(b'line one\r\nline two\r\n'))


# -- the negotiation ------------------------------------------------------------

def test_version_6_offer_gets_macro_lists_and_no_reply_for_content():
    with milter_thread(milter()) as server:
        client = MtaClient(server)
        answer = negotiate(client)
        version, actions, protocol, lists = P.read_reply(answer)
        assert version == 6
        assert actions & P.SET_SYMLIST and actions & P.ADDHDRS and actions & P.CHGHDRS
        assert protocol & (P.NR_HDR | P.NR_EOH | P.NR_BODY | P.NOUNKNOWN | P.HDR_LEADSPC)
        assert not protocol & (P.NR_RCPT | P.NR_MAIL | P.NODATA)
        assert 'auth_authen' in lists[P.STAGE_MAIL] and 'i' in lists[P.STAGE_EOM]
        client.close()


def test_version_2_transaction_answers_every_header():
    """Postfix with milter_protocol = 2: no DATA event, every header
    field and body chunk awaits a reply, no macro lists."""
    seen = []
    server = milter()

    @server.use
    def read(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            seen.append(ctx.data_stream.read())

    with milter_thread(server):
        client = MtaClient(server)
        answer = client.negotiate(version=2, actions=0x3F, protocol=0x7F)
        version, actions, protocol, lists = P.read_reply(answer)
        assert (version, lists) == (2, None)
        assert actions & ~0x3F == 0 and protocol & ~0x7F == 0
        client.send(CONNECT)
        assert client.reply().command == P.CONTINUE
        client.send(HELO, MAIL, rcpt('r@example.org'))
        assert [p.command for p in replies(client, 3)] == [P.CONTINUE] * 3
        for packet in (header('Subject', 'v2'), EOH, body(b'hi\r\n')):
            client.send(packet)
            assert client.reply().command == P.CONTINUE
        client.send(EOB)
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.QUIT))
        assert client.reply() is None       # one reply per packet, not one more
    assert seen == [b'Subject: v2\r\n\r\nhi\r\n']


# -- one transaction --------------------------------------------------------------

def test_the_chain_sees_the_session_and_its_replies_go_back_at_each_stage():
    seen = {}
    server = milter()

    @server.use
    def policy(ctx, next):
        if ctx.command_name == 'RCPT' and ctx.address.address.startswith('nobody'):
            raise SmtpError(550, 'No such user', '5.1.1')
        next()
        if ctx.command_name == 'DATA':
            session = ctx.session
            seen.update(helo=session.helo, client=session.remote_address,
                        name=session.client_hostname, port=session.remote_port,
                        sender=session.envelope.mail_from,
                        rcpts=[a.address for a in session.envelope.rcpt_to],
                        body=ctx.data_stream.read(), queue=session.milter.queue_id,
                        daemon=session.milter.macros.get('daemon_name'))

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(macros('C', daemon_name='smtpd', j='mx.example'), CONNECT)
        assert client.reply().command == P.CONTINUE
        client.send(HELO, MAIL)
        assert [p.command for p in replies(client, 2)] == [P.CONTINUE] * 2
        client.send(rcpt('nobody@example.org'))
        refused = client.reply()
        assert refused == (P.REPLYCODE, b'550 5.1.1 No such user\0')
        client.send(macros('R', i='4XyZ1'), rcpt('rcpt@example.org', 'NOTIFY=NEVER'))
        assert client.reply().command == P.CONTINUE
        client.send(DATA, *MESSAGE, macros('E', i='4XyZ1'), EOB)
        assert [p.command for p in replies(client, 2)] == [P.CONTINUE, P.CONTINUE]
        client.close()
    assert seen['helo'] == 'client.example'
    assert (seen['client'], seen['name'], seen['port']) == ('192.0.2.7', 'client.example', 40000)
    assert seen['sender'].address == 'sender@example.org' and seen['sender'].args == {'SIZE': '100'}
    assert seen['rcpts'] == ['rcpt@example.org']
    assert seen['body'] == (b'From: a@example.org\r\nSubject: hello\r\n\r\n'
                            b'line one\r\nline two\r\n')
    assert seen['queue'] == '4XyZ1' and seen['daemon'] == 'smtpd'


def test_end_of_message_modifications_in_order():
    server = milter()

    @server.use
    def edit(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            envelope = ctx.session.envelope
            envelope.data_stream.read()
            envelope.remove_header('Authentication-Results',
                                   lambda value: value.startswith('mx.example'))
            envelope.add_header('X-Checked', 'yes')
            envelope.add_header('Authentication-Results', 'mx.example; spf=pass')
            envelope.mail_from = type(envelope.mail_from)('bounce@example.org', {})
            envelope.rcpt_to[0] = type(envelope.rcpt_to[0])('other@example.org', {})
            envelope.replace_body(b'new body\r\n')
            envelope.quarantine('looks odd')

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT)
        client.reply()
        _, final = transaction(
            client, header('Authentication-Results', ' other.example; spf=fail'),
            header('Authentication-Results', ' mx.example; dkim=pass (forged)'),
            header('authentication-results', ' mx.example; spf=pass (forged)'),
            header('Subject', ' hi'), EOH, body(b'old\r\n'))
        client.close()
    assert final == [
        (P.CHGHEADER, struct.pack('>I', 3) + b'authentication-results\0\0'),
        (P.CHGHEADER, struct.pack('>I', 2) + b'Authentication-Results\0\0'),
        (P.INSHEADER, struct.pack('>I', 0) + b'X-Checked\0 yes\0'),
        (P.INSHEADER, struct.pack('>I', 0) + b'Authentication-Results\0 mx.example; spf=pass\0'),
        (P.CHGFROM, b'<bounce@example.org>\0'),
        (P.DELRCPT, b'<rcpt@example.org>\0'),
        (P.ADDRCPT, b'<other@example.org>\0'),
        (P.REPLBODY, b'new body\r\n'),
        (P.QUARANTINE, b'looks odd\0'),
        (P.CONTINUE, b''),
    ]


def test_a_modification_the_mta_does_not_allow_is_left_out_with_a_warning(log):
    server = milter(log)

    @server.use
    def edit(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.add_header('X-Checked', 'yes')

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client, actions=P.CHGHDRS)
        client.send(CONNECT)
        client.reply()
        _, final = transaction(client, *MESSAGE)
        client.close()
    assert final == [(P.CONTINUE, b'')]
    assert any('does not allow a milter to add a header field' in line for line in log.lines)


@pytest.mark.parametrize('action, expected', [
    ('drop', (P.DISCARD, b'')),
    ('refuse', (P.REPLYCODE, b'554 5.7.1 Spam\0')),
    ('tempfail', (P.REPLYCODE, b'451 4.7.1 Later\0')),
    ('close', (P.SHUTDOWN, b'')),
    ('crash', (P.REPLYCODE, b'451 4.3.0 Error: local error in processing\0')),
])
def test_the_data_decision(action, expected):
    server = milter()

    @server.use
    def decide(ctx, next):
        next()
        if ctx.command_name != 'DATA':
            return
        body = ctx.data_stream.read()
        assert b'line two' in body
        if action == 'drop':
            ctx.session.envelope.drop('unwanted')
            ctx.session.envelope.add_header('X-Not', 'sent')
        elif action == 'refuse':
            raise SmtpError(554, 'Spam', '5.7.1')
        elif action == 'tempfail':
            ctx.send(451, 'Later', '4.7.1')
        elif action == 'close':
            ctx.close()
        else:
            raise RuntimeError('a bug in the middleware')

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT)
        client.reply()
        _, final = transaction(client, *MESSAGE)
        assert final == [expected]
        if action == 'close':
            assert client.closed()
        client.close()


def test_a_refusal_before_reading_the_body_answers_the_data_event():
    server = milter()

    @server.use
    def refuse(ctx, next):
        if ctx.command_name == 'DATA':
            raise SmtpError(554, 'No mail from you today', '5.7.1')
        next()

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT, HELO, MAIL, rcpt('r@example.org'))
        replies(client, 4)
        client.send(DATA)
        assert client.reply() == (P.REPLYCODE, b'554 5.7.1 No mail from you today\0')
        # Postfix goes on with ABORT and the next transaction.
        client.send(P.command(P.ABORT), MAIL)
        assert client.reply().command == P.CONTINUE
        client.close()


def test_on_connect_refusal_and_hooks():
    def on_connect(session):
        if session.remote_address == '192.0.2.66':
            raise SmtpError(554, 'Go away', '5.7.1')

    with milter_thread(milter(on_connect=on_connect)) as server:
        client = MtaClient(server)
        negotiate(client)
        client.send(P.command(P.CONNECT, 'bad.example', P.FAMILY_INET, 1, '192.0.2.66'))
        assert client.reply() == (P.REPLYCODE, b'554 5.7.1 Go away\0')
        client.close()


def test_macros_become_the_login_and_tls():
    seen = []
    server = milter(on_auth=lambda session: {'name': session.auth.username})

    @server.use
    def look(ctx, next):
        next()
        if ctx.command_name == 'MAIL':
            s = ctx.session
            seen.append((s.user, s.auth.method, s.tls['version'], s.tls['cipher'],
                         s.tls['bits'], s.secure, s.transmission_type))

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT, macros('H', tls_version='TLSv1.3', cipher='TLS_AES_256_GCM_SHA384',
                                    cipher_bits='256'), HELO)
        replies(client, 2)
        client.send(macros('M', auth_type='PLAIN', auth_authen='alice', i='Q1'), MAIL)
        replies(client, 1)
        client.close()
    assert seen == [({'name': 'alice'}, 'PLAIN', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', 256,
                     True, 'ESMTPSA')]


def test_progress_while_the_chain_works_after_the_body():
    server = milter(progress_interval=0.05)

    @server.use
    def slow(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()
            gevent.sleep(0.3)       # a content scan, in the milter's hub

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT)
        client.reply()
        _, final = transaction(client, *MESSAGE)
        client.close()
    assert final[-1] == (P.CONTINUE, b'')
    assert len(final) >= 3 and all(p == (P.PROGRESS, b'') for p in final[:-1])


def test_abort_mid_message_is_a_refused_body_and_an_rset():
    seen = []
    server = milter()

    @server.use
    def read(ctx, next):
        seen.append(ctx.command_name)
        next()
        if ctx.command_name == 'DATA':
            with pytest.raises(MessageRefused):
                ctx.data_stream.read()
            seen.append('refused')

    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT, HELO, MAIL, rcpt('r@example.org'))
        replies(client, 4)
        client.send(DATA, header('Subject', ' x'), P.command(P.ABORT), MAIL)
        assert [p.command for p in replies(client, 2)] == [P.CONTINUE, P.CONTINUE]
        client.close()
    assert seen[-3:] == ['refused', 'RSET', 'MAIL']


def test_quit_nc_ends_one_session_and_starts_another():
    closed = []
    with milter_thread(milter(on_close=lambda s: closed.append(s.id))) as server:
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT)
        client.reply()
        client.send(P.command(P.QUIT_NC), CONNECT)
        assert client.reply().command == P.CONTINUE
        client.send(P.command(P.QUIT))
        assert client.closed()
        client.close()
        assert wait_until(lambda: len(closed) == 2)
    assert closed[0] != closed[1]


# -- bad input: one log line, the connection ends, nothing leaks ----------------------

def deleted_files():
    """This process's open files that are unlinked temporary files (spools)."""
    found = 0
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink(f'/proc/self/fd/{fd}').endswith('(deleted)'):
                found += 1
        except OSError:
            pass
    return found


@pytest.mark.parametrize('wire, reason', [
    (struct.pack('>I', 0), 'a packet of length 0'),
    (struct.pack('>I', 5_000_000) + b'B', 'a packet of 5000000 bytes, over the limit'),
    (P.encode_packet('Z', b'what'), "unknown command 'Z'"),
    (P.encode_packet(P.CONNECT, b'no terminating nul'), 'terminating NUL'),
    (HELO, 'SMFIC_HELO before SMFIC_CONNECT'),
    (P.encode_packet(P.ABORT, b'x'), 'SMFIC_ABORT: 1 bytes after the last field'),
    (P.encode_packet(P.QUIT, b'xy'), 'SMFIC_QUIT: 2 bytes after the last field'),
    (P.encode_packet(P.MACRO, b'Cname\0value'), 'SMFIC_MACRO: a string without its'),
])
def test_bad_input_ends_the_connection_with_one_log_line(log, wire, reason):
    with milter_thread(milter(log)) as server:
        client = MtaClient(server)
        negotiate(client)
        client.send(wire)
        assert client.closed()
        client.close()
        assert wait_until(lambda: len(server.connections) == 0)
    errors = [line for line in log.lines if 'milter protocol error' in line]
    assert len(errors) == 1 and reason in errors[0], log.lines


def test_a_packet_before_the_negotiation_ends_the_connection(log):
    with milter_thread(milter(log)) as server:
        client = MtaClient(server)
        client.send(CONNECT)
        assert client.closed()
        client.close()
    assert any('before the option negotiation' in line for line in log.lines)


def test_an_mta_vanishing_mid_message_leaves_no_spool_and_no_greenlet(log):
    spooled = []
    closed = []
    server = milter(log, on_close=lambda s: closed.append(s.id))

    @server.use
    def spool(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                ctx.session.envelope.spool()
            finally:
                spooled.append(deleted_files())

    before = deleted_files()
    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT, HELO, MAIL, rcpt('r@example.org'))
        replies(client, 4)
        client.send(DATA, *MESSAGE, *[body(b'x' * 60000) for _ in range(40)])
        assert wait_until(lambda: spooled or deleted_files() > before)
        client.sock.close()         # gone, mid-body
        assert wait_until(lambda: closed)
        assert wait_until(lambda: len(server.connections) == 0)
        assert wait_until(lambda: deleted_files() == before)
    lines = [line for line in log.lines if 'mid-message' in line]
    assert len(lines) == 1 and 'MTA connection from' in lines[0]


# -- the server ---------------------------------------------------------------------

@pytest.mark.parametrize('spec, parsed', [
    ('inet:127.0.0.1:8891', ('inet', ('127.0.0.1', 8891))),
    ('inet:8891@127.0.0.1', ('inet', ('127.0.0.1', 8891))),
    ('inet6:8891@[::1]', ('inet', ('::1', 8891))),
    ('inet:[::1]:0', ('inet', ('::1', 0))),
    ('inet:8891', ('inet', ('0.0.0.0', 8891))),
    ('unix:/run/milter.sock', ('unix', '/run/milter.sock')),
    ('local:/run/milter.sock', ('unix', '/run/milter.sock')),
])
def test_listen_addresses(spec, parsed):
    assert parse_listen(spec) == parsed


@pytest.mark.parametrize('spec', ['127.0.0.1:8891', 'inet:host:port', 'tcp:1:2', 'inet:',
                                  'inet:1:70000'])
def test_bad_listen_addresses(spec):
    with pytest.raises(ValueError):
        parse_listen(spec)


def test_unknown_and_smtp_only_options_are_refused():
    with pytest.raises(TypeError, match='no option'):
        MilterServer(secure=True)
    with pytest.raises(TypeError, match='no option'):
        MilterServer(progres_interval=1)
    with pytest.raises(ValueError):
        MilterServer(max_packet=10)
    with pytest.raises(ValueError):
        MilterServer(size='huge')


def test_a_unix_socket(tmp_path):
    path = str(tmp_path / 'milter.sock')
    with milter_thread(milter(), f'unix:{path}') as server:
        assert server.address == path
        client = MtaClient(server)
        negotiate(client)
        client.send(P.command(P.CONNECT, 'localhost', P.FAMILY_UNIX, 0, '/run/client'))
        assert client.reply().command == P.CONTINUE
        client.close()
    assert not os.path.exists(path)


def test_many_connections_at_once():
    with milter_thread(milter()) as server:
        clients = [MtaClient(server) for _ in range(50)]
        for client in clients:
            negotiate(client)
            client.send(CONNECT)
        for client in clients:
            assert client.reply().command == P.CONTINUE
            _, final = transaction(client, *MESSAGE)
            assert final == [(P.CONTINUE, b'')]
            client.send(P.command(P.QUIT))
        for client in clients:
            assert client.closed()
            client.close()
        assert wait_until(lambda: len(server.connections) == 0)


def test_the_policies_run_unchanged():
    """The ready-made middleware of smtp_stack.policies, as on an SmtpServer."""
    policies = peers.python_module('smtp_stack.policies', 'policies')
    server = milter()
    server.use(policies.recipients(domains=['example.org']))
    server.use(policies.greylist(delay=300))
    with milter_thread(server):
        client = MtaClient(server)
        negotiate(client)
        client.send(CONNECT, HELO, MAIL)
        replies(client, 3)
        client.send(rcpt('someone@elsewhere.example'))
        assert client.reply() == (P.REPLYCODE, b'554 5.7.1 Relay access denied\0')
        client.send(rcpt('rcpt@example.org'))
        refused = client.reply()
        assert refused.command == P.REPLYCODE
        assert refused.data.startswith(b'451 4.7.1 Greylisted, please try again in ')
        client.close()
