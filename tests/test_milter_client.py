"""The MTA side's pure pieces (milter/protocol.py's MTA additions,
mta_macros.py, mta_message.py) by tables, and MilterClient's reading of
replies against a peer that answers scripted packets over loopback
(PROGRESS, the no-reply flags, SKIP, a peer that goes silent)."""
from __future__ import annotations

import io
import socket
import struct
import threading
import time

import pytest

from smtp_stack.addresses import Address
from smtp_stack.milter import protocol as P
from smtp_stack.milter.client import MilterClient, MilterFailed, parse_address
from smtp_stack.milter.mta_macros import stage_lists, values
from smtp_stack.milter.mta_message import HeaderSection, _Pieces, unfold
from smtp_stack.session import Session

# -- addresses, replies, negotiation ------------------------------------------------------


@pytest.mark.parametrize('text, expected', [
    ('inet:127.0.0.1:8891', (socket.AF_INET, ('127.0.0.1', 8891))),
    ('inet:8891@127.0.0.1', (socket.AF_INET, ('127.0.0.1', 8891))),
    ('inet:[::1]:8891', (socket.AF_INET6, ('::1', 8891))),
    ('inet6:8891@::1', (socket.AF_INET6, ('::1', 8891))),
    ('unix:/run/milter.sock', (socket.AF_UNIX, '/run/milter.sock')),
    ('local:/run/milter.sock', (socket.AF_UNIX, '/run/milter.sock')),
])
def test_milter_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize('text', ['', 'tcp:1.2.3.4:25', 'inet:host', 'inet:host:0',
                                  'inet:host:65536', 'unix:'])
def test_bad_milter_addresses(text):
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize('text, code, enhanced, lines', [
    ('550 5.7.1 Command rejected', 550, '5.7.1', ['Command rejected']),
    ('451 4.7.1 Try later', 451, '4.7.1', ['Try later']),
    ('554 Spam', 554, None, ['Spam']),
    ('550-5.7.1 first\r\n550 5.7.1 second', 550, '5.7.1', ['first', 'second']),
    ('550 5.7.1 100%% sure', 550, '5.7.1', ['100% sure']),
    ('550 5.7.1 50% off', 550, '5.7.1', ['50 off']),    # a lone % dropped, as Postfix does
])
def test_replycode_texts(text, code, enhanced, lines):
    assert P.parse_reply_text(text) == P.ReplyCode(code, enhanced, lines)


@pytest.mark.parametrize('text', ['250 ok', '5x0 no', '550 4.7.1 class differs',
                                  '550-a\r\n451 b', 'no'])
def test_malformed_replycodes(text):
    with pytest.raises(P.ProtocolError):
        P.parse_reply_text(text)


def test_the_answer_to_the_negotiation():
    lists = {P.STAGE_CONNECT: 'j {client_addr}', P.STAGE_EOM: 'i'}
    packet = P.Packet(P.OPTNEG, P.encode(P.REPLY_LAYOUTS[P.OPTNEG],
                                         [6, P.ADDHDRS | P.SET_SYMLIST, P.NR_HDR, lists]))
    answer = P.read_answer(packet)
    assert (answer.version, answer.actions, answer.protocol) == \
        (6, P.ADDHDRS | P.SET_SYMLIST, P.NR_HDR)
    assert answer.macros == lists


@pytest.mark.parametrize('fields, why', [
    ([7, 0, 0, None], 'version 7'),
    ([1, 0, 0, None], 'version 1'),
    ([6, 0x400, 0, None], 'actions'),
    ([6, 0, P.RCPT_REJ, None], 'protocol flags'),
])
def test_answers_the_mta_side_refuses(fields, why):
    packet = P.Packet(P.OPTNEG, P.encode(P.REPLY_LAYOUTS[P.OPTNEG], fields))
    with pytest.raises(P.ProtocolError, match=why):
        P.read_answer(packet)


def test_macro_packets_name_long_macros_in_braces():
    packet = P.macro_packet(P.MAIL, [('i', 'Q1'), ('mail_addr', 'a@b'), ('{x}', 'y\0z')])
    reader = P.PacketReader()
    reader.feed(packet)
    assert P.read_command(reader.next_packet()) == ['M', ['i', 'Q1', '{mail_addr}', 'a@b',
                                                         '{x}', 'y z']]


# -- macros -----------------------------------------------------------------------------

def test_macro_values_from_the_session():
    session = Session('127.0.0.1', 25, '::ffff:192.0.2.7', 40000)
    session.client_hostname = 'client.example'
    session.envelope.mail_from = Address('a@example.test')
    facts = values(session, 'mx.test', Address('b@mx.test'))
    assert facts['_'] == 'client.example [192.0.2.7]'
    assert facts['{client_addr}'] == '192.0.2.7' and facts['{client_port}'] == '40000'
    assert facts['{daemon_addr}'] == '127.0.0.1' and facts['j'] == 'mx.test'
    assert facts['i'] == f'{session.id}-1'
    assert facts['{mail_addr}'] == 'a@example.test' and facts['{rcpt_addr}'] == 'b@mx.test'
    assert '{auth_authen}' not in facts and '{tls_version}' not in facts
    unknown = Session('127.0.0.1', 25, '192.0.2.8', 1)
    assert values(unknown, 'mx.test')['_'] == 'unknown [192.0.2.8]'


def test_stage_lists_replace_postfix_defaults():
    lists = stage_lists({'rcpt': ['i', 'rcpt_addr'], 'end_of_data': 'i {mail_addr}'})
    assert lists[P.RCPT] == ('i', '{rcpt_addr}')
    assert lists[P.EOB] == ('i', '{mail_addr}')
    assert lists[P.CONNECT] == ('j', '{daemon_name}', '{daemon_addr}', 'v', '_')
    with pytest.raises(ValueError, match='unknown stage'):
        stage_lists({'quit': 'i'})


# -- the message, and what a milter's requests do to it -------------------------------------

def _reader(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(_Pieces(iter([data[i:i + 7] for i in range(0, len(data), 7)])))


@pytest.mark.parametrize('message, fields, body', [
    (b'A: 1\r\nB: 2\r\n  more\r\n\r\nbody\r\n', [('A', ' 1'), ('B', ' 2\n  more')],
     b'body\r\n'),
    (b'A: 1\r\nnot a field\r\nbody\r\n', [('A', ' 1')], b'not a field\r\nbody\r\n'),
    (b'A : spaced\r\n\r\n', [('A', ' spaced')], b''),
    (b'\r\nonly a body\r\n', [], b'only a body\r\n'),
    (b'A: no end', [('A', ' no end')], b''),
])
def test_header_sections(message, fields, body):
    reader = _reader(message)
    section = HeaderSection(reader)
    assert list(section) == fields
    assert section.leftover + reader.read() == body


def test_unfold():
    assert unfold(' a\r\n\tb\n c\rd\0e ') == 'a\tb c d e'


# -- the client against scripted replies ---------------------------------------------------

def _packet(letter: str, data: bytes = b'') -> bytes:
    return struct.pack('>I', len(data) + 1) + letter.encode() + data


class ScriptedPeer:
    """Answers each packet it reads whose letter is in `script` with the
    bytes given there (several replies, PROGRESS, nothing), once each."""

    def __init__(self, script: dict[str, list[bytes]], protocol: int = 0):
        self.script = {k: list(v) for k, v in script.items()}
        self.script.setdefault(P.OPTNEG, [_packet(P.OPTNEG, struct.pack('>III', 6, 0xff,
                                                                       protocol))])
        self.seen: list[str] = []
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.address = f'inet:127.0.0.1:{self.listener.getsockname()[1]}'
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        reader = P.PacketReader()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                reader.feed(data)
                while (packet := reader.next_packet()) is not None:
                    self.seen.append(packet.command)
                    replies = self.script.get(packet.command)
                    if replies:
                        conn.sendall(replies.pop(0))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def peer():
    made = []

    def make(script, protocol=0):
        made.append(ScriptedPeer(script, protocol))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_progress_restarts_the_wait_and_changes_come_before_the_decision(peer):
    progress = _packet(P.PROGRESS)
    eom = b''.join([progress, _packet(P.ADDHEADER, b'X-A\0b\0'), progress,
                    _packet(P.REPLBODY, b'new '), _packet(P.REPLBODY, b'body'),
                    _packet(P.CONTINUE)])
    milter = peer({P.EOB: [eom], P.MAIL: [_packet(P.CONTINUE)]})
    client = MilterClient(milter.address, command_timeout=2, content_timeout=2)
    client.open()
    assert client.event(P.MAIL, ['<a@b>']).action == 'continue'
    chunks: list[bytes] = []
    answer = client.end_of_message(chunks.append)
    assert (answer.action, answer.changes) == ('continue', [(P.ADDHEADER, ['X-A', 'b'])])
    assert chunks == [b'new ', b'body']
    client.quit()


def test_no_reply_flags_and_skipped_steps_are_honoured(peer):
    milter = peer({P.RCPT: [_packet(P.REPLYCODE, b'550 5.1.1 nobody\0')]},
                  protocol=P.NOHELO | P.NR_MAIL)
    client = MilterClient(milter.address, command_timeout=2)
    client.open()
    assert client.event(P.HELO, 'client.example').action == 'continue'      # not sent
    assert client.event(P.MAIL, ['<a@b>']).action == 'continue'             # not awaited
    answer = client.event(P.RCPT, ['<c@d>'])
    assert answer.action == 'reject'
    assert (answer.reply.code, answer.reply.message, answer.reply.enhanced) == \
        (550, 'nobody', '5.1.1')
    client.quit()
    milter.thread.join(5)
    assert milter.seen == [P.OPTNEG, P.MAIL, P.RCPT, P.QUIT]


def test_skip_ends_the_body_chunks(peer):
    milter = peer({P.BODY: [_packet(P.SKIP)], P.EOB: [_packet(P.ACCEPT)]}, protocol=P.SKIP_OK)
    client = MilterClient(milter.address, content_timeout=2)
    client.open()
    assert client.event(P.BODY, b'one', content=True).action == 'skip'
    assert client.event(P.BODY, b'two', content=True).action == 'continue'  # not sent
    assert client.end_of_message(lambda chunk: None).action == 'accept'
    client.quit()
    milter.thread.join(5)
    assert milter.seen == [P.OPTNEG, P.BODY, P.EOB, P.QUIT]


def test_a_modification_before_the_end_of_the_message_is_nonsense(peer):
    milter = peer({P.MAIL: [_packet(P.ADDHEADER, b'X\0y\0')]})
    client = MilterClient(milter.address, command_timeout=2)
    client.open()
    with pytest.raises(MilterFailed, match='only the end of the message'):
        client.event(P.MAIL, ['<a@b>'])
    client.close()


def test_a_silent_milter_costs_the_content_timeout(peer):
    milter = peer({P.EOB: []})
    client = MilterClient(milter.address, command_timeout=2, content_timeout=0.3)
    client.open()
    began = time.monotonic()
    with pytest.raises(MilterFailed, match='no reply to SMFIC_BODYEOB in 0.3 s') as failed:
        client.end_of_message(lambda chunk: None)
    assert failed.value.slow and 0.3 <= time.monotonic() - began < 2
    client.close()


def test_waiting_for_a_silent_milter_never_blocks_the_hub():
    """The client's waits are gevent's: a greenlet ticking every 10 ms
    keeps ticking while the negotiation waits out its timeout."""
    import gevent
    longest = 0.0

    def tick() -> None:
        nonlocal longest
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            longest, last = max(longest, now - last), now

    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(4)            # connections complete in the backlog; nothing answers
        ticker = gevent.spawn(tick)
        gevent.sleep(0.02)
        client = MilterClient(f'inet:127.0.0.1:{silent.getsockname()[1]}', command_timeout=0.5)
        began = time.monotonic()
        try:
            with pytest.raises(MilterFailed, match='no reply to SMFIC_OPTNEG in 0.5 s'):
                client.open()
        finally:
            ticker.kill()
            client.close()
    assert 0.5 <= time.monotonic() - began < 1.5
    assert longest < 0.2, longest
