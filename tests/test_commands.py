"""Every command and reply code of plain SMTP, over a real socket."""
import smtplib

import pytest


def test_greeting_and_banner(serve, client):
    server = serve(banner='welcome')
    c = client(server, greeting=None)
    code, text = c.reply()
    assert code == 220 and text == 'mx.test ESMTP welcome'


def test_ehlo_advertises_extensions(serve, client):
    c = client(serve(size=1000))
    text = c.expect(250, 'EHLO client.example')
    lines = text.split('\n')
    assert lines[0].startswith('mx.test ')
    for keyword in ('PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE 1000', 'DSN'):
        assert keyword in lines
    # RFC 2034: the EHLO reply itself carries no enhanced codes
    assert not any(line.startswith('2.') for line in lines)


def test_disabled_commands_are_not_advertised_and_get_502(serve, client):
    c = client(serve(disabled_commands=['VRFY', 'SIZE', 'PIPELINING', 'ENHANCEDSTATUSCODES']))
    lines = c.expect(250, 'EHLO x').split('\n')
    assert 'PIPELINING' not in lines and not any(line.startswith('SIZE') for line in lines)
    assert c.cmd('VRFY user') == (502, 'Error: command not implemented')


def test_enhanced_codes_regardless_of_ehlo_rfc2034(serve, client):
    # RFC 2034 4: codes on every reply but the greeting and the HELO/EHLO
    # reply, whether or not the client sent EHLO.
    c = client(serve(), greeting=None)
    assert c.reply() == (220, 'mx.test ESMTP')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
    assert c.cmd('HELO x') == (250, 'mx.test Nice to meet you, [127.0.0.1]')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
    assert c.cmd('MAIL FROM:<a@b.example>') == (250, '2.1.0 Accepted')
    assert c.cmd('RSET') == (250, '2.0.0 Flushed')
    lines = c.expect(250, 'EHLO x').split('\n')
    assert lines[0] == 'mx.test Nice to meet you, [127.0.0.1]'
    assert not any(line[:2] in ('2.', '4.', '5.') for line in lines)
    assert c.cmd('NOOP') == (250, '2.0.0 OK')
    assert c.cmd('QUIT') == (221, '2.0.0 mx.test closing connection')
    # not offered, never used
    c = client(serve(disabled_commands=['ENHANCEDSTATUSCODES']))
    assert c.cmd('NOOP') == (250, 'OK')
    c.expect(250, 'HELO x')
    assert c.cmd('NOOP') == (250, 'OK')
    assert 'ENHANCEDSTATUSCODES' not in c.expect(250, 'EHLO x').split('\n')
    assert c.cmd('NOOP') == (250, 'OK')
    assert c.cmd('RCPT TO:<c@d.example>') == (503, 'Error: need MAIL command')


@pytest.mark.parametrize('line, code', [
    ('HELO', 501), ('EHLO', 501), ('LHLO x', 500), ('FOO', 500), ('', 500),
    ('EXPN list', 502), ('VRFY', 501), ('VRFY someone', 252), ('NOOP anything', 250),
    ('RSET now', 501), ('HELP', 214), ('HELP MAIL', 214), ('HELP NOPE', 504),
    ('DATA', 503), ('RCPT TO:<a@b.example>', 503), ('MAIL FROM:<a@b.example>', 503),
])
def test_reply_codes_before_a_transaction(serve, client, line, code):
    c = client(serve())
    assert c.cmd(line)[0] == code


def test_mail_requires_helo_then_full_transaction(serve, client):
    c = client(serve())
    assert c.cmd('MAIL FROM:<a@b.example>')[0] == 503
    c.expect(250, 'EHLO x')
    assert c.cmd('RCPT TO:<c@d.example>') == (503, '5.5.1 Error: need MAIL command')
    assert c.cmd('DATA')[0] == 503
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd('MAIL FROM:<a@b.example>') == (503, '5.5.1 Error: nested MAIL command')
    assert c.cmd('DATA') == (554, '5.5.1 Error: no valid recipients')
    c.expect(250, 'RCPT TO:<c@d.example>')
    assert c.cmd('DATA x')[0] == 501
    c.expect(354, 'DATA')
    c.send('Subject: t\r\n\r\nbody\r\n.\r\n')
    assert c.reply() == (250, '2.0.0 OK: message queued')
    assert c.cmd('QUIT')[0] == 221
    assert c.closed()


def test_rset_clears_the_envelope(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<c@d.example>')
    assert c.cmd('RSET') == (250, '2.0.0 Flushed')
    assert c.cmd('DATA')[0] == 503
    c.expect(250, 'MAIL FROM:<a@b.example>')


@pytest.mark.parametrize('line, code, enhanced', [
    ('MAIL FROM:<>', 250, '2.1.0'),
    ('MAIL FROM:<"quoted local"@example.com>', 250, '2.1.0'),
    ('MAIL FROM:<user@[192.0.2.1]>', 250, '2.1.0'),
    ('MAIL FROM:<user@[IPv6:2001:db8::1]>', 250, '2.1.0'),
    ('MAIL FROM:<@relay.example:user@example.com>', 250, '2.1.0'),
    ('MAIL FROM: <user@example.com>', 250, '2.1.0'),
    ('MAIL FROM:user@example.com', 501, '5.1.7'),
    ('MAIL FROM:<user.@example.com>', 501, '5.1.7'),
    ('MAIL FROM:<user@example.com', 501, '5.1.7'),
    ('MAIL TO:<user@example.com>', 501, '5.5.4'),
    ('MAIL FROM:<üser@example.com>', 553, '5.6.7'),
    ('MAIL FROM:<üser@example.com> SMTPUTF8', 250, '2.1.0'),
    ('MAIL FROM:<a@b.example> BODY=8BITMIME', 250, '2.1.0'),
    ('MAIL FROM:<a@b.example> BODY=7BIT', 250, '2.1.0'),
    ('MAIL FROM:<a@b.example> BODY=BINARY', 501, '5.5.4'),
    ('MAIL FROM:<a@b.example> SIZE=abc', 501, '5.5.4'),
    ('MAIL FROM:<a@b.example> SIZE=100 SIZE=100', 501, '5.5.4'),
    ('MAIL FROM:<a@b.example> FOO=bar', 555, '5.5.4'),
    ('MAIL FROM:<a@b.example> RET=HDRS ENVID=abc+2Bdef', 250, '2.1.0'),
    ('MAIL FROM:<a@b.example> RET=ALL', 501, '5.5.4'),
    ('MAIL FROM:<a@b.example> ENVID=a+zz', 501, '5.5.4'),
    ('MAIL FROM:<a@b.example> SMTPUTF8=yes', 501, '5.5.4'),
    ('MAIL FROM:<' + 'a' * 65 + '@b.example>', 553, '5.1.7'),
])
def test_mail_from_paths_and_parameters(serve, client, line, code, enhanced):
    c = client(serve())
    c.expect(250, 'EHLO x')
    got = c.cmd(line)
    assert got[0] == code and got[1].startswith(enhanced + ' '), got


def test_lenient_addresses(serve, client):
    c = client(serve(lenient_addresses=True))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<user.@example.com>')
    c.expect(250, 'RCPT TO:other@example.com')


@pytest.mark.parametrize('line, code', [
    ('RCPT TO:<Postmaster>', 250),
    ('RCPT TO:<>', 501),
    ('RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.example', 250),
    ('RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS', 501),
    ('RCPT TO:<c@d.example> ORCPT=nosemicolon', 501),
    ('RCPT TO:<c@d.example> SIZE=10', 555),
    ('RCPT TO:<ü@d.example>', 553),
    ('RCPT FROM:<c@d.example>', 501),
])
def test_rcpt_to(serve, client, line, code):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    assert c.cmd(line)[0] == code


def test_utf8_recipient_with_smtputf8_transaction(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example> SMTPUTF8')
    c.expect(250, 'RCPT TO:<用户@例子.广告>')


def test_parameters_after_helo_get_555(serve, client):
    c = client(serve())
    c.expect(250, 'HELO x')
    assert c.cmd('MAIL FROM:<a@b.example> BODY=8BITMIME')[0] == 555
    c.expect(250, 'MAIL FROM:<a@b.example>')


def test_size_declared_too_big_gets_552(serve, client):
    c = client(serve(size=1000))
    c.expect(250, 'EHLO x')
    assert c.cmd('MAIL FROM:<a@b.example> SIZE=1001') == (
        552, '5.3.4 Error: message exceeds fixed maximum message size')
    c.expect(250, 'MAIL FROM:<a@b.example> SIZE=1000')


def test_max_recipients_gets_452(serve, client):
    c = client(serve(max_recipients=2))
    c.expect(250, 'EHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')
    c.expect(250, 'RCPT TO:<1@d.example>')
    c.expect(250, 'RCPT TO:<2@d.example>')
    assert c.cmd('RCPT TO:<3@d.example>') == (452, '4.5.3 Error: too many recipients')


def test_line_too_long_discards_the_rest_and_goes_on(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.send('NOOP ' + 'x' * 5000 + '\r\n')
    assert c.reply() == (500, '5.5.6 Error: line too long')
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_bad_bytes_in_commands(serve, client):
    c = client(serve())
    c.expect(250, 'EHLO x')
    c.send(b'NOOP \xff\xfe\r\n')
    assert c.reply()[0] == 500
    c.send(b'NOOP a\x00b\r\n')
    assert c.reply()[0] == 500
    c.send(b'NOOP bare\n')
    assert c.reply()[0] == 500
    assert c.cmd('NOOP') == (250, '2.0.0 OK')


def test_bare_lf_commands_allowed_when_normalizing(serve, client):
    c = client(serve(bare_newline='normalize'))
    c.send(b'EHLO x\n')
    assert c.reply()[0] == 250


def test_quit_closes(serve, client):
    c = client(serve())
    assert c.cmd('QUIT') == (221, '2.0.0 mx.test closing connection')
    assert c.closed()


def test_lmtp_needs_lhlo(serve, client):
    c = client(serve(lmtp=True), greeting=None)
    code, text = c.reply()
    assert code == 220 and 'LMTP' in text
    assert c.cmd('EHLO x')[0] == 500
    assert c.cmd('HELO x')[0] == 500
    assert c.cmd('MAIL FROM:<a@b.example>')[0] == 503
    c.expect(250, 'LHLO x')
    c.expect(250, 'MAIL FROM:<a@b.example>')


def test_smtplib_sendmail_and_session_fields(serve):
    seen = {}

    def spy(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            s = ctx.session
            seen.update(helo=s.helo, type=s.transmission_type, ip=s.remote_address,
                        port=s.remote_port, local_port=s.local_port, host=s.client_hostname,
                        transaction=s.transaction, mail_from=s.envelope.mail_from.address,
                        rcpt=[a.address for a in s.envelope.rcpt_to],
                        body=ctx.data_stream.read())
    server = serve(middleware=[spy])
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.ehlo('client.example')
        local_port = smtp.sock.getsockname()[1]
        smtp.sendmail('a@b.example', ['c@d.example', 'e@f.example'], b'Subject: hi\r\n\r\nhello\r\n')
    assert seen == dict(helo='client.example', type='ESMTP', ip='127.0.0.1', port=local_port,
                        local_port=server.address[1], host='[127.0.0.1]', transaction=1,
                        mail_from='a@b.example', rcpt=['c@d.example', 'e@f.example'],
                        body=b'Subject: hi\r\n\r\nhello\r\n')


def test_transaction_counter_and_envelope_reset(serve):
    transactions = []

    def spy(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            transactions.append((ctx.session.transaction, len(ctx.session.envelope.rcpt_to)))
    server = serve(middleware=[spy])
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.sendmail('a@b.example', ['c@d.example'], b'one\r\n')
        smtp.sendmail('a@b.example', ['c@d.example', 'x@y.example'], b'two\r\n')
    assert transactions == [(1, 1), (2, 2)]


def test_reverse_lookup_fills_client_hostname(serve):
    names = []
    server = serve(disable_reverse_lookup=False,
                   on_connect=lambda session: names.append(session.client_hostname))
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.noop()
    assert names and names[0] != '[127.0.0.1]'   # /etc/hosts names 127.0.0.1
