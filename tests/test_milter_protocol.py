"""smtp_stack.milter.protocol: framing, layouts, the negotiation, replies."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.milter import facts as F
from smtp_stack.milter import protocol as P
from smtp_stack.milter.protocol import Negotiation, Packet, PacketReader, ProtocolError


def frame(command: str, data: bytes = b'') -> bytes:
    return struct.pack('>I', len(data) + 1) + command.encode('latin-1') + data


# -- framing --------------------------------------------------------------------

@pytest.mark.parametrize('wire, packets', [
    (b'', []),
    (frame('Q'), [Packet('Q', b'')]),
    (frame('H', b'client\0') + frame('Q'), [Packet('H', b'client\0'), Packet('Q', b'')]),
    (frame('B', b'x' * 70000), [Packet('B', b'x' * 70000)]),
    (frame('Q')[:3], []),                   # a length not complete yet
    (frame('H', b'abc\0')[:-1], []),        # data not complete yet
])
def test_packet_reader_splits_a_stream(wire, packets):
    reader = PacketReader()
    reader.feed(wire)
    out = []
    while (packet := reader.next_packet()) is not None:
        out.append(packet)
    assert out == packets


def test_packet_reader_takes_a_packet_split_at_every_byte():
    wire = frame('M', b'<a@example.org>\0SIZE=10\0') + frame('A')
    for cut in range(len(wire) + 1):
        reader = PacketReader()
        reader.feed(wire[:cut])
        got = []
        while (packet := reader.next_packet()) is not None:
            got.append(packet)
        reader.feed(wire[cut:])
        while (packet := reader.next_packet()) is not None:
            got.append(packet)
        assert got == [Packet('M', b'<a@example.org>\0SIZE=10\0'), Packet('A', b'')], cut


def test_an_oversize_length_is_refused_before_its_data_arrives():
    reader = PacketReader(max_size=1000)
    reader.feed(struct.pack('>I', 1001))
    with pytest.raises(ProtocolError, match='1001 bytes, over the limit of 1000'):
        reader.next_packet()


def test_a_zero_length_is_refused():
    reader = PacketReader()
    reader.feed(b'\0\0\0\0')
    with pytest.raises(ProtocolError, match='length 0'):
        reader.next_packet()


def test_the_buffer_does_not_grow_with_the_packets_read():
    reader = PacketReader()
    chunk = frame('B', b'y' * 60000)
    for _ in range(200):
        for piece in (chunk[:3], chunk[3:30000], chunk[30000:]):
            reader.feed(piece)
        assert reader.next_packet() == Packet('B', b'y' * 60000)
        assert reader.pending == 0
    assert len(reader._rest) + reader._parted <= 2 * len(chunk)


def test_packets_after_a_split_one_come_from_the_same_bytes():
    """A recv() that ends one packet and holds the next ones whole."""
    wire = frame('H', b'client\0') + frame('D', b'Ci\0Q1\0') + frame('E')
    reader = PacketReader()
    reader.feed(wire[:6])
    assert reader.next_packet() is None
    reader.feed(wire[6:])
    assert [reader.next_packet() for _ in range(4)] == [
        Packet('H', b'client\0'), Packet('D', b'Ci\0Q1\0'), Packet('E', b''), None]


@pytest.mark.parametrize('wire, held, packets', [
    # the macros of skipped stages: held, without their stage letter; an empty one dropped
    (frame('D', b'Cj\0mx\0') + frame('D', b'H') + frame('D', b'Ti\0Q1\0') + frame('E'),
     [b'j\0mx\0', b'i\0Q1\0'], [Packet('E', b'')]),
    # after a packet that waits in `ready`, macros wait there too (their order is kept)
    (frame('E') + frame('D', b'Ci\0Q2\0') + frame('Q'),
     [], [Packet('E', b''), Packet('D', b'Ci\0Q2\0'), Packet('Q', b'')]),
    # not well formed: for the connection to refuse (no NUL at the end, no stage
    # letter) or trim (a name without its value)
    (frame('D', b'Cname\0value'), [], [Packet('D', b'Cname\0value')]),
    (frame('D'), [], [Packet('D', b'')]),
    (frame('D', b'Clone\0') + frame('D', b'Ha\0b\0'), [],
     [Packet('D', b'Clone\0'), Packet('D', b'Ha\0b\0')]),
])
def test_a_reader_with_held_keeps_the_macros_apart(wire, held, packets):
    kept: list[bytes] = []
    reader = PacketReader(held=kept)
    reader.feed(wire)
    assert kept == held
    assert list(reader.ready) == packets


def test_without_held_macros_are_packets_like_any_other():
    reader = PacketReader()
    reader.feed(frame('D', b'Ci\0Q1\0') + frame('E'))
    assert list(reader.ready) == [Packet('D', b'Ci\0Q1\0'), Packet('E', b'')]


# -- layouts --------------------------------------------------------------------------

@pytest.mark.parametrize('packet, fields', [
    (Packet(P.CONNECT, b'mx.example\x004\x00\x19192.0.2.1\0'), ['mx.example', '4', 25,
                                                                '192.0.2.1']),
    (Packet(P.CONNECT, b'unknown\0U'), ['unknown', 'U', None, None]),
    (Packet(P.HELO, b'client.example\0'), ['client.example']),
    (Packet(P.MAIL, b'<a@example.org>\0SIZE=10\0BODY=8BITMIME\0'),
     [['<a@example.org>', 'SIZE=10', 'BODY=8BITMIME']]),
    (Packet(P.RCPT, b'<b@example.org>\0'), [['<b@example.org>']]),
    (Packet(P.HEADER, b'Subject\0 hello\0'), ['Subject', ' hello']),
    (Packet(P.BODY, b'any\0bytes'), [b'any\0bytes']),
    (Packet(P.OPTNEG, struct.pack('>III', 6, 0x1FF, 0x1FFFFF)), [6, 0x1FF, 0x1FFFFF]),
    (Packet(P.MACRO, b'Ci\0ABC123\0{daemon_name}\0smtpd\0'),
     ['C', ['i', 'ABC123', '{daemon_name}', 'smtpd']]),
    (Packet(P.EOH, b''), []),
    (Packet(P.HEADER, b'X-Bytes\0\xff\xfe\0'), ['X-Bytes', '\udcff\udcfe']),
])
def test_commands_are_read_by_their_layout(packet, fields):
    assert P.read_command(packet) == fields


@pytest.mark.parametrize('packet, why', [
    (Packet(P.HELO, b'no nul'), 'terminating NUL'),
    (Packet(P.HEADER, b'Subject\0'), 'terminating NUL'),
    (Packet(P.OPTNEG, b'\0\0\0\6'), 'where a 4-byte number belongs'),
    (Packet(P.CONNECT, b'host\0'), 'one-byte field is missing'),
    (Packet(P.QUIT, b'x'), '1 bytes after the last field'),
    (Packet(P.MAIL, b'<a@b>\0junk'), 'terminating NUL'),
    (Packet('Z', b''), "unknown command 'Z'"),
])
def test_malformed_commands_raise_protocol_error(packet, why):
    with pytest.raises(ProtocolError, match=why):
        P.read_command(packet)


@pytest.mark.parametrize('letter, fields', [
    (P.REPLYCODE, ['550 5.7.1 no']),
    (P.INSHEADER, [0, 'X-Spam', ' yes']),
    (P.CHGHEADER, [2, 'Authentication-Results', '']),
    (P.CHGFROM, ['<new@example.org>', None]),
    (P.CHGFROM, ['<new@example.org>', 'SIZE=10']),
    (P.ADDRCPT_PAR, ['<c@example.org>', 'NOTIFY=NEVER']),
    (P.OPTNEG, [6, 0x1, 0x2, {0: 'j {daemon_name}', 5: 'i'}]),
    (P.REPLBODY, [b'new body\r\n']),
])
def test_replies_read_back_as_written(letter, fields):
    wire = P.reply(letter, *fields)
    reader = PacketReader()
    reader.feed(wire)
    packet = reader.next_packet()
    assert packet is not None and packet.command == letter
    assert P.read_reply(packet) == fields


def test_a_string_with_nul_cannot_be_written():
    with pytest.raises(ValueError, match='NUL'):
        P.reply(P.ADDHEADER, 'X-A', 'a\0b')


# -- the negotiation ------------------------------------------------------------------

POSTFIX_V6 = Negotiation(6, 0x1FF, 0x1FFFFF)
POSTFIX_V2 = Negotiation(2, 0x3F, 0x7F)     # milter_protocol = 2 ([milter8] V2 masks)


def test_version_6_answer_skips_unknown_and_leaves_content_unanswered():
    answer = P.answer_negotiation(POSTFIX_V6, actions=0x0FF, steps='CHMRTLNB',
                                  answered='CHMRT', macros={0: 'j'})
    assert answer.version == 6
    assert answer.actions == 0x0FF | P.SET_SYMLIST
    assert answer.protocol & P.NOUNKNOWN
    assert answer.protocol & (P.NR_HDR | P.NR_EOH | P.NR_BODY) == P.NR_HDR | P.NR_EOH | P.NR_BODY
    assert not answer.protocol & (P.NR_CONN | P.NR_HELO | P.NR_MAIL | P.NR_RCPT | P.NR_DATA)
    assert not answer.protocol & (P.NOCONNECT | P.NOHDRS | P.NOBODY | P.NODATA)
    assert answer.protocol & P.HDR_LEADSPC
    assert answer.macros == {0: 'j'}


def test_version_2_answer_asks_for_nothing_the_mta_did_not_offer():
    answer = P.answer_negotiation(POSTFIX_V2, actions=0x0FF, steps='CHMRTLNB',
                                  answered='CHMRT', macros={0: 'j'})
    assert answer.version == 2
    assert answer.actions == 0x0FF & 0x3F       # no CHGFROM, no SETSYMLIST in v2
    assert answer.protocol & ~0x7F == 0         # only v2's flags
    assert answer.macros == {}
    wire = P.negotiation_reply(answer)
    assert len(wire) == 4 + 1 + 12              # no macro lists after the three numbers


@pytest.mark.parametrize('version', [0, 1])
def test_versions_before_2_are_refused(version):
    with pytest.raises(ProtocolError, match='2 or later'):
        P.read_negotiation(Packet(P.OPTNEG, struct.pack('>III', version, 0, 0)))


def test_a_version_above_6_is_answered_with_6():
    answer = P.answer_negotiation(Negotiation(7, 0x1FF, 0x1FFFFF), actions=1, steps='C',
                                  answered='C')
    assert answer.version == 6


def test_a_negotiation_must_come_first():
    with pytest.raises(ProtocolError, match='SMFIC_HELO before the option negotiation'):
        P.read_negotiation(Packet(P.HELO, b'x\0'))


def test_expects_reply_follows_the_no_reply_flags():
    assert P.expects_reply(P.RCPT, 0)
    assert not P.expects_reply(P.RCPT, P.NR_RCPT)
    assert not P.expects_reply(P.MACRO, 0)
    assert not P.expects_reply(P.ABORT, 0)
    assert P.expects_reply(P.EOB, 0x1FFFFF)     # the end of the message: always


# -- macros and reply texts ---------------------------------------------------------------

def test_macros_lose_their_braces_and_a_lone_name_is_dropped():
    stage, macros = P.read_macros(Packet(P.MACRO, b'M{auth_authen}\0alice\0i\0Q1\0odd\0'))
    assert stage == 'M'
    assert macros == {'auth_authen': 'alice', 'i': 'Q1'}


@pytest.mark.parametrize('code, lines, enhanced, text', [
    (550, ['No such user'], '5.1.1', '550 5.1.1 No such user'),
    (451, ['Try later'], '4.7.1', '451 4.7.1 Try later'),
    (550, ['a', 'b'], '5.7.1', '550-5.7.1 a\r\n550 5.7.1 b'),
    (550, ['100% spam'], None, '550 100%% spam'),
    (550, ['mismatch'], '4.7.1', '550 mismatch'),    # Postfix refuses 550 4.x.x
    (421, ['bye\r\nnow'], '4.3.0', '421 4.3.0 bye  now'),
    (554, [], None, '554 '),
])
def test_reply_text(code, lines, enhanced, text):
    assert P.reply_text(code, lines, enhanced) == text


@pytest.mark.parametrize('code', [250, 354, 600])
def test_reply_text_is_for_refusals_only(code):
    with pytest.raises(ValueError):
        P.reply_text(code, ['x'], None)


# -- fuzzing: the reader and the layouts take anything ----------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_any_bytes_split_anywhere_give_packets_or_protocol_error(wire, cuts):
    """Whatever arrives, in whatever pieces: packets, None, or ProtocolError
    (never another exception); each packet's data read by its command's
    layout likewise; and the packets are the same however the bytes were split."""
    def read(pieces):
        reader = PacketReader(max_size=4096)
        out = []
        try:
            for piece in pieces:
                reader.feed(piece)
                while (packet := reader.next_packet()) is not None:
                    out.append(packet)
                    try:
                        if packet.command in P.COMMAND_LAYOUTS:
                            P.read_command(packet)
                        if packet.command == P.MACRO:
                            P.read_macros(packet)
                        if packet.command == P.OPTNEG:
                            P.read_negotiation(packet)
                    except ProtocolError:
                        pass
        except ProtocolError:
            out.append('error')
        return out

    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(wire[pos:pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    assert read(pieces) == read([wire])


macro_data = st.one_of(
    st.lists(st.text(max_size=8), max_size=7).map(      # even or odd, well formed
        lambda strings: b'C' + b''.join(s.replace('\0', '').encode() + b'\0' for s in strings)),
    st.binary(max_size=12))                              # anything
stream = st.lists(st.one_of(
    macro_data.map(lambda data: frame('D', data)),
    st.sampled_from([frame('E'), frame('A'), frame('H', b'client\0'), frame('Q')])), max_size=12)


@settings(max_examples=400, deadline=None)
@given(stream, st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_held_macros_reach_each_event_as_packets_would(packets, cuts):
    """The connection's view, with the reader holding macros or not: each
    event comes with the macros sent before it (read_pairs of what was
    held), a malformed SMFIC_MACRO raises at its place, whatever the
    pieces the bytes came in (the transport feeds the reader only when
    `ready` is empty, as here)."""
    wire = b''.join(packets)

    def events(pieces, holding):
        held: list[bytes] = []
        reader = PacketReader(max_size=4096, held=held if holding else None)
        out = []
        try:
            for piece in pieces:
                reader.feed(piece)
                while (packet := reader.next_packet()) is not None:
                    if packet.command == P.MACRO:
                        held.append(F.held_form(packet.data))
                    else:
                        out.append((F.read_pairs(held), packet))
                        held.clear()
        except ProtocolError:
            out.append('error')
        return out, F.read_pairs(held)

    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(wire[pos:pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    assert events(pieces, holding=True) == events([wire], holding=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(P.COMMAND_LAYOUTS)), st.binary(max_size=200))
def test_any_data_for_a_known_command_reads_or_raises_protocol_error(command, data):
    try:
        fields = P.read_command(Packet(command, data))
    except ProtocolError:
        return
    assert len(fields) == len(P.COMMAND_LAYOUTS[command])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters='\0', blacklist_categories=('Cs',)),
                       max_size=30), max_size=6))
def test_strings_survive_a_round_trip(strings):
    data = P.encode((P.STRS,), [strings])
    assert P.decode((P.STRS,), data) == [strings]
