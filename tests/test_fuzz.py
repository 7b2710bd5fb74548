"""Property tests of the parsers as a real session runs them.

The pure parsers already have their own property tests (test_framing,
test_addresses, test_xtext, test_sasl, test_proxy, test_forwarding); here
the same kinds of input go through a live server over loopback sockets, where
the framing, the session loop and the reply logic meet. Properties:
- every command line gets exactly one reply, never a crash (451/421), never a hang;
- MAIL/RCPT with random paths and ESMTP parameters: one reply, nothing
  half-accepted;
- SASL payloads: one final reply, credentials never echoed, session goes on;
- PROXY v1/v2: the socket behaves as the pure parser decides, split anywhere;
- DATA: a dot-stuffed body sent in random chunks (TCP_NODELAY) reaches the
  middleware byte-identical, for every split point of a tricky message;
- TLS: garbage for a ClientHello, or garbage records after a real handshake:
  the connection ends (an alert at most), no command runs, the server goes on.
Plus the pure pieces no other test fuzzes: the ESMTP parameter checks and an
independent grammar oracle for xtext.
"""
import base64
import hashlib
import hmac
import ipaddress
import os
import re
import socket
import ssl
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_stack import LogLevels, MessageRefused, SmtpError, SmtpServer
from smtp_stack.addresses import (check_auth_param, check_body, check_envid, check_notify,
                                  check_orcpt, check_ret, check_size)
from smtp_stack.framing import dot_stuff
from smtp_stack.proxy import ProxyError, build_proxy_v1, build_proxy_v2, parse_proxy_header
from smtp_stack.testing import ServerThread
from smtp_stack.xtext import XtextError, decode_xtext, encode_xtext

from conftest import RawClient, wait_until

TIMEOUT = 5.0       # every socket wait in this file

# SMTP_STACK_FUZZ=N runs N times more examples, for a deeper hunt outside CI.
SCALE = max(1, int(os.environ.get('SMTP_STACK_FUZZ', '1')))
SOCKET_FUZZ = settings(max_examples=40 * SCALE, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow, HealthCheck.data_too_large])
PURE_FUZZ = settings(max_examples=300 * SCALE, deadline=None)


@pytest.fixture(scope='module')
def servers():
    """servers(key, **options) -> a running SmtpServer, one per key for the module."""
    running = {}

    def get(key, middleware=(), **options):
        if key not in running:
            options.setdefault('name', 'mx.test')
            options.setdefault('disable_reverse_lookup', True)
            options.setdefault('log_level', LogLevels.SILENT)
            server = SmtpServer(**options)
            for fn in middleware:
                server.use(fn)
            running[key] = (server, ServerThread(server).start())
        return running[key][0]

    yield get
    for _server, runner in running.values():
        runner.stop(timeout=2)


_SHARED: dict = {}


def shared(key: str) -> list:
    """A list that outlives one example: the module's servers keep their middleware."""
    log = _SHARED.setdefault(key, [])
    log.clear()
    return log


def connect(server) -> RawClient:
    c = RawClient(server.address, timeout=TIMEOUT)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def send_in_pieces(c, data: bytes, cuts) -> None:
    """Send `data` split at `cuts`, pausing so each piece tends to be its own segment."""
    points = sorted({cut for cut in cuts if 0 < cut < len(data)})
    for start, end in zip([0] + points, points + [len(data)], strict=True):
        c.send(data[start:end])
        if end != len(data):
            time.sleep(0.001)


# --- command lines through a session -------------------------------------------------

# Commands whose reply is not one line-for-one-reply: they switch the input
# into another mode (a body, a SASL exchange, TLS) or end the session. The
# verb is found as the server does: text before the first space, upper-cased.
MODE_SWITCHING = frozenset({'DATA', 'BDAT', 'AUTH', 'QUIT', 'STARTTLS', 'HELP'})
NEVER = {421, 451}      # closing or "local error": a bug on input without middleware

_arg_char = st.one_of(st.sampled_from(list('<>:@="+.-_[]\\,; \t\x0b\x1c\x7f')),
                      st.characters(codec='utf-8', exclude_characters='\r\n'))
_verb = st.sampled_from(['HELO', 'EHLO', 'LHLO', 'MAIL', 'RCPT', 'RSET', 'NOOP', 'VRFY', 'EXPN',
                         'XCLIENT', 'XFORWARD', 'FOO', '', 'MAIL FROM:', 'RCPT TO:', 'helo', 'Rset'])
_word_line = st.builds(lambda verb, sep, arg: (verb + sep + arg).encode('utf-8', 'surrogatepass'),
                       _verb, st.sampled_from(['', ' ', '  ', '\t']), st.text(_arg_char, max_size=40))
_raw_line = st.binary(max_size=60).map(lambda b: b.replace(b'\n', b''))
_long_line = st.integers(480, 900).map(lambda n: b'NOOP ' + b'x' * n)
_command_line = st.one_of(_word_line, _word_line, _raw_line, _long_line)


def interpreted_verb(line: bytes) -> str | None:
    try:
        return line.decode('utf-8').partition(' ')[0].upper()
    except UnicodeDecodeError:
        return None


def one_line_one_reply(line: bytes) -> bool:
    return interpreted_verb(line) not in MODE_SWITCHING and b'\n' not in line


def replies_until_help(c) -> list:
    codes = []
    while True:
        code, _ = c.reply()
        if code == 214:
            return codes
        codes.append(code)
        assert len(codes) < 1000


@pytest.mark.parametrize('mode', ['smtp', 'normalize', 'lmtp'])
@SOCKET_FUZZ
@given(lines=st.lists(_command_line.filter(one_line_one_reply), min_size=1, max_size=12))
def test_random_command_lines_get_exactly_one_reply_each(servers, mode, lines):
    options = {'smtp': {}, 'normalize': {'bare_newline': 'normalize'}, 'lmtp': {'lmtp': True}}[mode]
    server = servers(mode, max_errors=0, **options)
    c = connect(server)
    try:
        assert c.reply()[0] == 220
        c.send(b''.join(line + b'\r\n' for line in lines) + b'HELP NOOP\r\n')
        codes = replies_until_help(c)
    finally:
        c.close()
    assert len(codes) == len(lines), (lines, codes)
    assert not NEVER & set(codes), (lines, codes)
    assert all(200 <= code < 600 for code in codes)


def test_command_fuzz_recognizes_mode_switching_verbs():
    assert not one_line_one_reply(b'data')
    assert not one_line_one_reply(b'Auth PLAIN x')
    assert one_line_one_reply(b'DATAX')
    assert one_line_one_reply(b'\xff DATA')


# --- MAIL / RCPT paths and ESMTP parameters through a session ----------------------

_local = st.one_of(st.from_regex(r'[a-z0-9!#$%&*+/=?^_`{|}~-]{1,10}(\.[a-z0-9-]{1,5}){0,2}', fullmatch=True),
                   st.from_regex(r'"[ a-z\\.@]{0,10}"', fullmatch=True),
                   st.text(_arg_char, max_size=12),
                   st.sampled_from(['a.', '.a', 'a..b', 'postmaster', '', 'j\u00f6rg', 'x' * 70]))
_domain = st.one_of(st.from_regex(r'[a-z0-9]{1,8}(\.[a-z0-9-]{1,8}){0,3}', fullmatch=True),
                    st.sampled_from(['[192.0.2.1]', '[IPv6:2001:db8::1]', '[IPv6:fe80::1%eth0]',
                                     '[300.1.1.1]', '[tag:x]', 'b.example.', '-b.example',
                                     'b_c.example', '\u00e9x.example', 'a' * 64 + '.example']),
                    st.text(_arg_char, max_size=12))
_path = st.one_of(st.builds(lambda local, d: f'<{local}@{d}>', _local, _domain),
                  st.sampled_from(['<>', '<postmaster>', '<@r.example:a@b.example>', 'a@b.example',
                                   '<a@b.example', '<<a@b.example>>', '']),
                  st.text(_arg_char, max_size=20))
_param_value = st.one_of(st.sampled_from(['7BIT', '8BITMIME', 'BINARYMIME', '100', '0', '99999999999999999999999',
                                          'FULL', 'HDRS', 'NEVER', 'SUCCESS,FAILURE', 'DELAY,NEVER',
                                          'rfc822;a@b.example', 'utf-8;a+2Bb', '<>', 'a+2B', 'a+2',
                                          '', '\u00e9']),
                         st.text(_arg_char, max_size=12))
_param = st.one_of(st.builds(lambda k, v: f'{k}={v}',
                             st.sampled_from(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH',
                                              'NOTIFY', 'ORCPT', 'size', 'X-FOO', 'REQUIRETLS']),
                             _param_value),
                   st.sampled_from(['SMTPUTF8', 'BODY', 'REQUIRETLS', '=', 'SIZE==1']),
                   st.text(_arg_char, max_size=10))
_params = st.lists(_param, max_size=4).map(' '.join)


def envelope_spy(log):
    def spy(ctx, next):
        next()
        envelope = ctx.session.envelope
        log.append((ctx.command_name, ctx.reply.code if ctx.reply else None, ctx.address,
                    envelope.mail_from, list(envelope.rcpt_to)))
    return spy


MAIL_RCPT_CODES = {250, 501, 503, 530, 550, 552, 553, 555, 452, 500}   # 530: REQUIRETLS without TLS


@SOCKET_FUZZ
@given(greeting=st.sampled_from(['EHLO x', 'HELO x']),
       commands=st.lists(st.tuples(st.sampled_from(['MAIL FROM:', 'RCPT TO:', 'mail from: ', 'RCPT TO: ']),
                                   _path, _params), min_size=1, max_size=6))
def test_random_mail_and_rcpt_get_one_reply_and_half_accept_nothing(servers, greeting, commands):
    log = shared('mail-rcpt')
    server = servers('mail-rcpt', max_errors=0, size=1000, middleware=[envelope_spy(log)])
    lines = [(verb + path + (' ' + params if params else '')).encode('utf-8', 'surrogatepass')
             for verb, path, params in commands]
    lines = [line for line in lines if one_line_one_reply(line)]
    c = connect(server)
    try:
        assert c.reply()[0] == 220
        c.send(b''.join(line + b'\r\n' for line in [greeting.encode(), *lines]) + b'HELP NOOP\r\n')
        codes = replies_until_help(c)
    finally:
        c.close()
    server_log = list(log)
    assert len(codes) == len(lines) + 1
    assert set(codes) <= MAIL_RCPT_CODES, codes
    mail_from, rcpt_to = None, []
    for name, code, address, now_from, now_to in server_log[1:]:
        if name == 'MAIL' and code == 250:
            assert now_from is address and all(key == key.upper() for key in address.args)
            mail_from = address
        elif name == 'RCPT' and code == 250:
            assert now_to[-1] is address and now_to[:-1] == rcpt_to
            assert all(key == key.upper() for key in address.args)
            rcpt_to = now_to
        if name in ('MAIL', 'RCPT'):        # a refusal leaves no trace
            assert now_from is mail_from and now_to == rcpt_to


# --- ESMTP parameter checks (pure) ---------------------------------------------------

@PURE_FUZZ
@given(check=st.sampled_from([check_size, check_ret, check_envid, check_notify, check_orcpt,
                              check_auth_param, lambda v: check_body(v, frozenset({'7BIT', '8BITMIME'}))]),
       value=st.one_of(st.just(True), st.text(max_size=40), _param_value))
def test_parameter_checks_return_or_raise_501_only(check, value):
    try:
        check(value)
    except SmtpError as err:
        assert err.code == 501 and err.enhanced.startswith('5.')


@PURE_FUZZ
@given(value=st.one_of(st.integers(0, 10 ** 25).map(str), st.text(max_size=25)))
def test_check_size_accepts_exactly_short_ascii_digit_strings(value):
    valid = re.fullmatch(r'[0-9]{1,20}', value) is not None
    try:
        assert check_size(value) == int(value) and valid
    except SmtpError:
        assert not valid


# --- xtext against an independent grammar ----------------------------------------------

_XTEXT = re.compile(r'(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*')


def oracle_xtext(text: str):
    """RFC 3461 4 read literally; escaped bytes must form UTF-8 (our rule)."""
    if not _XTEXT.fullmatch(text):
        return None
    raw = re.sub(r'\+([0-9A-F]{2})', lambda m: chr(int(m[1], 16)), text).encode('latin-1')
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError:
        return None


@PURE_FUZZ
@given(st.text(alphabet=st.one_of(st.sampled_from('+=ABCDEFabcdef0123456789 \x7f'),
                                  st.characters(max_codepoint=0x2FF)), max_size=24))
def test_decode_xtext_agrees_with_the_grammar(text):
    expected = oracle_xtext(text)
    try:
        assert decode_xtext(text) == expected
    except XtextError:
        assert expected is None


@PURE_FUZZ
@given(st.binary(max_size=40))
def test_any_bytes_encode_to_xtext_that_decodes_back_or_fails_cleanly(data):
    text = encode_xtext(data)
    assert _XTEXT.fullmatch(text)
    try:
        expected = data.decode('utf-8')
    except UnicodeDecodeError:
        with pytest.raises(XtextError):
            decode_xtext(text)
    else:
        assert decode_xtext(text) == expected


# --- SASL payloads through a session -----------------------------------------------

USER, PASSWORD, TOKEN = 'user', 'pw', 'tok-123'


def on_auth(session):
    auth = session.auth
    if auth.username != USER:
        return None
    return USER if auth.validate(TOKEN if auth.method == 'XOAUTH2' else PASSWORD) else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii')


_sasl_line = st.one_of(st.binary(max_size=40).map(b64),
                       st.text(st.characters(codec='utf-8', exclude_characters='\r\n'), max_size=30),
                       st.sampled_from(['*', '=', '', ' ', 'AAAA', 'A===', '====', b64(b'\0user\0pw'),
                                        b64(b'user'), b64(b'pw'), b64(b'\0\0'), b64(b'user\0user\0pw')]))


def valid_response(mechanism: str, challenge: str, step: int) -> str:
    if mechanism == 'PLAIN':
        return b64(f'\0{USER}\0{PASSWORD}'.encode())
    if mechanism == 'LOGIN':
        return b64((USER if step == 0 else PASSWORD).encode())
    if mechanism == 'XOAUTH2':
        return b64(f'user={USER}\x01auth=Bearer {TOKEN}\x01\x01'.encode())
    digest = hmac.new(PASSWORD.encode(), base64.b64decode(challenge), hashlib.md5).hexdigest()
    return b64(f'{USER} {digest}'.encode())


@SOCKET_FUZZ
@given(mechanism=st.sampled_from(['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5', 'plain', 'NTLM']),
       initial=st.one_of(st.none(), _sasl_line),
       lines=st.lists(_sasl_line, max_size=3),
       valid=st.booleans())
def test_random_sasl_exchanges_end_in_one_final_reply_and_never_echo(servers, mechanism, initial, lines, valid):
    server = servers('sasl', max_errors=0, max_auth_failures=1_000_000, allow_insecure_auth=True,
                     auth_methods=['PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'], on_auth=on_auth)
    if valid:
        initial = None
    command = f'AUTH {mechanism}' + (f' {initial}' if initial is not None else '')
    c = connect(server)
    sent = []
    try:
        assert c.reply()[0] == 220
        c.expect(250, 'EHLO x')
        code, text = c.cmd(command)
        step = 0
        while code == 334:
            assert step <= len(lines) + 2, 'the exchange does not end'
            if valid:
                line = valid_response(mechanism.upper(), text, step)
            else:
                line = lines[step] if step < len(lines) else '*'
            sent.append(line)
            code, text = c.cmd(line)
            step += 1
        assert c.cmd('NOOP') == (250, '2.0.0 OK')       # the session goes on
    finally:
        c.close()
    assert code in {235, 535, 501, 500, 504}, (code, text)
    if valid and mechanism.upper() in ('PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5'):
        assert code == 235
    for secret in [initial or '', *sent]:
        if len(secret) >= 6:
            assert secret not in text


# --- PROXY v1/v2 over a socket -------------------------------------------------------

def proxy_spy(seen):
    def spy(ctx, next):
        next()
        seen.append((ctx.session.remote_address, ctx.session.remote_port))
    return spy


_ports = st.integers(0, 65535)
_endpoints = st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                       st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)))
_tlvs = st.lists(st.tuples(st.sampled_from([0x04, 0xE0, 0xEE]), st.binary(max_size=30)), max_size=3)


@SOCKET_FUZZ
@given(version=st.sampled_from([1, 2]), endpoints=_endpoints, sport=_ports, dport=_ports,
       tlvs=_tlvs, crc=st.booleans(), cuts=st.lists(st.integers(1, 120), max_size=4))
def test_valid_proxy_header_split_anywhere_rewrites_the_client(servers, version, endpoints, sport, dport,
                                                               tlvs, crc, cuts):
    seen = shared('proxy-valid')
    server = servers('proxy-valid', use_proxy=True, upgrade_timeout=TIMEOUT, middleware=[proxy_spy(seen)])
    src, dst = endpoints
    if version == 1:
        header = build_proxy_v1(src, sport, dst, dport)
    else:
        header = build_proxy_v2(src, sport, dst, dport, tlvs=tlvs, crc=crc)
    c = connect(server)
    try:
        send_in_pieces(c, header + b'NOOP\r\n', cuts)
        assert c.reply()[0] == 220
        assert c.reply()[0] == 250
    finally:
        c.close()
    [(address, port)] = seen
    assert ipaddress.ip_address(address) == src and port == sport


PROXY_STARTS = [b'', b'PROXY ', b'PROXY TCP4 ', b'PROXY TCP6 ::1 ', b'PROXY UNKNOWN',
                b'\r\n\r\n\x00\r\nQUIT\n', b'\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c']


@SOCKET_FUZZ
@given(start=st.sampled_from(PROXY_STARTS), tail=st.binary(max_size=120),
       cuts=st.lists(st.integers(1, 140), max_size=3))
def test_socket_follows_the_pure_proxy_parser(servers, start, tail, cuts):
    server = servers('proxy-fuzz', use_proxy=True, upgrade_timeout=TIMEOUT)
    data = start + tail
    try:
        verdict = parse_proxy_header(data)
    except ProxyError:
        verdict = 'error'
    c = connect(server)
    try:
        try:
            send_in_pieces(c, data, cuts)
        except OSError:
            assert verdict == 'error'       # aborted at the first impossible byte
        if verdict is None:                 # an incomplete header: then the client hangs up
            c.sock.shutdown(socket.SHUT_WR)
        if verdict in (None, 'error'):
            assert c.closed()
            assert c.buf == b'', 'nothing may be sent before a valid header'
        else:
            assert c.reply()[0] == 220
    finally:
        c.close()


# --- DATA framing over a real socket -------------------------------------------------

def read_body(stream, how: str) -> bytes:
    if how == 'all':
        return stream.read()
    if how == 'lines':
        return b''.join(iter(stream.readline, b''))
    if how == 'small':
        return b''.join(iter(lambda: stream.read(7), b''))
    if how == 'read1':
        return b''.join(iter(lambda: stream.read1(5), b''))
    buffer = bytearray(3)
    parts = []
    while n := stream.readinto(buffer):
        parts.append(bytes(buffer[:n]))
    return b''.join(parts)


READERS = ['all', 'lines', 'small', 'read1', 'into']


def body_reader(bodies):
    """Reads the body the way the sender's local part names ('read1@x')."""
    def reader(ctx, next):
        next()
        if ctx.command_name == 'DATA' and ctx.data_stream is not None and ctx.data_stream.started:
            how = ctx.session.envelope.mail_from.address.split('@')[0]
            try:
                body = read_body(ctx.data_stream, how)
            except MessageRefused as exc:       # noted, and on its way to the client
                bodies.append((exc, ctx.data_stream.acceptable))
                raise
            bodies.append((body, ctx.data_stream.acceptable))
    return reader


def send_message(c, wire: bytes, cuts, how: str = 'all'):
    c.send(f'MAIL FROM:<{how}@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n'.encode())
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    send_in_pieces(c, wire, cuts)
    return c.reply()


TRICKY = (b'.leading dot\r\n..two dots\r\n.\r\n\r\n.x\r\n'
          b'end . \r\n. \r\n..\r\nlast.\r\n.')        # the final line starts with a dot too


def wire_of(body: bytes) -> bytes:
    if body and not body.endswith(b'\r\n'):
        body += b'\r\n'
    return dot_stuff(body) + b'.\r\n'


def test_every_split_point_of_a_dot_stuffed_message_gives_the_same_body(servers):
    bodies = shared('data-exhaustive')
    server = servers('data-exhaustive', middleware=[body_reader(bodies)])
    wire = wire_of(TRICKY)
    expected = TRICKY + b'\r\n'
    assert wire.count(b'\r\n.\r\n') == 1 and wire.endswith(b'\r\n.\r\n')
    c = connect(server)
    try:
        assert c.reply()[0] == 220
        c.expect(250, 'EHLO x')
        for cut in range(len(wire) + 1):
            how = READERS[cut % len(READERS)]
            assert send_message(c, wire, [cut], how)[0] == 250
            # and every pair of cut points around the end-of-data line
            if cut >= len(wire) - 6:
                for second in range(cut + 1, len(wire)):
                    assert send_message(c, wire, [cut, second], how)[0] == 250
    finally:
        c.close()
    assert bodies and all(body == (expected, True) for body in bodies), \
        [i for i, body in enumerate(bodies) if body != (expected, True)]


_body_line = st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b'\r', b'').replace(b'\n', b'')),
                       st.sampled_from([b'', b'.', b'..', b'. ', b'.\r', b'x.', b'\x00', b'.\n']))


@pytest.mark.parametrize('policy', ['reject', 'normalize'])
@SOCKET_FUZZ
@given(lines=st.lists(_body_line, max_size=12), tail=st.binary(max_size=6),
       cuts=st.lists(st.integers(1, 400), max_size=8), how=st.sampled_from(READERS))
def test_random_body_in_random_chunks_arrives_byte_identical(servers, policy, lines, tail, cuts, how):
    bodies = shared(f'data-{policy}')
    server = servers(f'data-{policy}', bare_newline=policy, middleware=[body_reader(bodies)])
    body = b'\r\n'.join(lines) + tail
    wire = wire_of(body)
    sent_body = body if not body or body.endswith(b'\r\n') else body + b'\r\n'
    bare = sent_body.count(b'\r') != sent_body.count(b'\r\n') or sent_body.count(b'\n') != sent_body.count(b'\r\n')
    c = connect(server)
    try:
        assert c.reply()[0] == 220
        c.expect(250, 'EHLO x')
        code, _ = send_message(c, wire, cuts, how)
        assert c.cmd('NOOP')[0] == 250          # one reply, nothing left over
    finally:
        c.close()
    [(received, acceptable)] = bodies
    if policy == 'normalize':
        assert received == re.sub(rb'\r\n|\r|\n', b'\r\n', sent_body)
        assert code == 250 and acceptable
    elif bare:
        assert isinstance(received, MessageRefused)
        assert received.reply == (554, 'Error: bare <CR> or <LF> in message content', '5.6.0')
        assert code == 554 and not acceptable
    else:
        assert received == sent_body
        assert code == 250 and acceptable


# --- the TLS layer: garbage where TLS records belong ---------------------------------

_TLS_RECORD_TYPES = {0x14, 0x15, 0x16, 0x17}    # ChangeCipherSpec, alert, handshake, data


def _after_starttls(server) -> RawClient:
    c = connect(server)
    c.expect(220)
    c.expect(250, 'EHLO a.example')
    c.expect(220, 'STARTTLS')
    return c


def _handshake_by_hand(sock):
    """A TLS client over memory BIOs: after it, raw bytes can still be
    slipped into the TCP stream. Returns (SSLObject, its incoming BIO)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname='mx.test')
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError('closed during the handshake') from None
            incoming.write(data)
    sock.sendall(outgoing.read())       # our Finished
    return tls, incoming


def _application_data(tls, incoming, received: bytes) -> bytes:
    """What the server said inside TLS, decrypted, until the records end or fail."""
    incoming.write(received)
    incoming.write_eof()
    data = b''
    try:
        while True:
            data += tls.read(65536)
    except ssl.SSLError:        # the end, an alert, or our own garbage's damage
        return data


def _server_ends_it_in_tls(c) -> bytes:
    """Say NOOP in plaintext (the server must not answer it), half-close,
    then read until the server closes (bounded): all it sent."""
    try:
        c.send(b'NOOP\r\n')
        c.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass                            # already closed on us
    got = b''
    try:
        while True:
            data = c.sock.recv(65536)
            if not data:
                return got
            got += data
    except ConnectionResetError:
        return got


def _still_serving(server) -> None:
    c = connect(server)
    try:
        c.expect(220)
        c.expect(250, 'EHLO a.example')
    finally:
        c.close()
    assert wait_until(lambda: server.connections == 0)


_record_shaped = st.builds(
    lambda kind, version, length, body: bytes([kind]) + version + length.to_bytes(2, 'big') + body,
    st.sampled_from(sorted(_TLS_RECORD_TYPES) + [0x00, 0x80, 0xff]),
    st.sampled_from([b'\x03\x01', b'\x03\x03', b'\x03\x04', b'\x00\x00']),
    st.integers(0, 0xffff), st.binary(max_size=300))


@SOCKET_FUZZ
@given(garbage=st.one_of(st.binary(min_size=1, max_size=600), _record_shaped))
def test_garbage_for_a_client_hello_ends_only_that_connection(servers, garbage):
    server = servers('tls-fuzz', upgrade_timeout=TIMEOUT)
    c = _after_starttls(server)
    try:
        c.send(garbage)
        said = _server_ends_it_in_tls(c)
        assert not said or said[0] in _TLS_RECORD_TYPES, said[:40]   # an alert at most
    finally:
        c.close()
    _still_serving(server)


@SOCKET_FUZZ
@given(garbage=st.one_of(st.binary(min_size=1, max_size=600), _record_shaped))
def test_garbage_records_after_the_handshake_end_only_that_connection(servers, garbage):
    """A negotiated session fed bytes that are not its records (bad MACs,
    wrong types, lengths past the end): never a plaintext reply, never a
    hang, and the server goes on."""
    server = servers('tls-fuzz', upgrade_timeout=TIMEOUT)
    c = _after_starttls(server)
    try:
        tls, incoming = _handshake_by_hand(c.sock)
        c.send(garbage)
        said = _server_ends_it_in_tls(c)
        assert not said or said[0] in _TLS_RECORD_TYPES, said[:40]
        assert _application_data(tls, incoming, said) == b''    # no command was run
    finally:
        c.close()
    _still_serving(server)
