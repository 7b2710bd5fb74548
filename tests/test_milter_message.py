"""smtp_stack.milter.message and facts, and the Envelope's milter additions:
pure pieces, driven by a scripted channel (the packets an MTA sends)."""
import io
import tracemalloc

import pytest

from smtp_stack.addresses import Address
from smtp_stack.milter import facts as F
from smtp_stack.milter import message as M
from smtp_stack.milter import protocol as P
from smtp_stack.milter.protocol import Packet
from smtp_stack.session import Envelope, Session

ALL_ACTIONS = 0x1FF


class Script:
    """A Channel whose MTA sends `packets` and records what it is answered."""

    def __init__(self, packets, flags=0):
        self.packets = list(packets)
        self.flags = flags
        self.owed = None
        self.answers = []
        self.macros = []

    def read_packet(self):
        return self.packets.pop(0)

    def answer(self, data):
        self.answers.append((self.owed, data))
        self.owed = None

    def expects(self, command):
        return P.expects_reply(command, self.flags)

    def take_macros(self, packet):
        self.macros.append(P.read_macros(packet))


def content(*items):
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append(Packet(P.HEADER, P.encode((P.STR, P.STR), list(item))))
        elif item == 'EOH':
            out.append(Packet(P.EOH, b''))
        elif item == 'EOB':
            out.append(Packet(P.EOB, b''))
        else:
            out.append(Packet(P.BODY, item))
    return out


def read_all(reader):
    pieces = []
    while (piece := reader.pull()) is not None:
        pieces.append(piece)
    return b''.join(pieces)


@pytest.mark.parametrize('leading_space, headers, expected', [
    (True, [('Subject', ' hi'), ('X-Long', ' a\n\tb')], b'Subject: hi\r\nX-Long: a\r\n\tb\r\n'),
    (False, [('Subject', 'hi')], b'Subject: hi\r\n'),
])
def test_headers_come_back_as_the_client_sent_them(leading_space, headers, expected):
    channel = Script(content(*headers, 'EOH', b'body\r\n', 'EOB'), flags=0x1FFFFF)
    reader = M.MessageReader(channel, None, leading_space)
    assert read_all(reader) == expected + b'\r\nbody\r\n'
    assert reader.ended and channel.owed == P.EOB
    assert reader.headers == headers


def test_each_packet_the_mta_waits_for_is_answered_once_before_the_next():
    """Protocol 2: every header field and body chunk awaits SMFIR_CONTINUE."""
    packets = content(('Subject', ' x'), 'EOH', b'a', b'b', 'EOB')
    channel = Script(packets[1:], flags=0)
    reader = M.MessageReader(channel, packets[0], True)
    assert read_all(reader) == b'Subject: x\r\n\r\nab'
    assert [owed for owed, _ in channel.answers] == [P.HEADER, P.EOH, P.BODY, P.BODY]
    assert channel.owed == P.EOB            # the verdict is the connection's to give


def test_macros_inside_a_message_are_taken_not_an_end():
    packets = [Packet(P.MACRO, b'Ni\0Q1\0'), *content('EOH'), Packet(P.MACRO, b'Ei\0Q1\0'),
               *content(b'x', 'EOB')]
    channel = Script(packets, flags=0x1FFFFF)
    reader = M.MessageReader(channel, None, True)
    assert read_all(reader) == b'\r\nx'
    assert not reader.aborted and [m for _, m in channel.macros] == [{'i': 'Q1'}] * 2


@pytest.mark.parametrize('ending, quit, pushback', [
    (Packet(P.ABORT, b''), False, None),
    (Packet(P.QUIT, b''), True, None),
    (Packet(P.MAIL, b'<a@b.example>\0'), False, P.MAIL),
])
def test_a_message_abandoned(ending, quit, pushback):
    channel = Script([*content(('Subject', ' x')), ending], flags=0x1FFFFF)
    reader = M.MessageReader(channel, None, True)
    read_all(reader)
    assert reader.aborted and reader.quit == quit
    assert (reader.pushback.command if reader.pushback else None) == pushback


def test_a_refusal_waits_for_the_packet_the_mta_waits_for():
    channel = Script(content(('Subject', ' x'), 'EOH', b'a', 'EOB'), flags=0x1FFFFF)
    reader = M.MessageReader(channel, None, True)
    assert reader.answer_when_asked(b'refusal')
    assert channel.answers == [(P.EOB, b'refusal')]


def test_fields_past_the_header_budget_go_to_a_file_and_come_back():
    fields = [('A', ' ' + 'x' * 50), ('B', ' y'), ('C', ' \xe9t\xe9\n\tfolded')]
    channel = Script(content(*fields, 'EOB'), flags=0x1FFFFF)
    reader = M.MessageReader(channel, None, True, budget=40)
    read_all(reader)
    assert reader.overflow and reader.headers == []
    assert list(reader.fields()) == fields
    reader.close()
    assert not reader.overflow and list(reader.fields()) == []


def test_a_spilled_field_longer_than_a_chunk_comes_back_whole():
    fields = [('X-Small', ' s'), ('X-Long', ' ' + 'v' * (P.CHUNK_SIZE * 2 + 7)), ('X-End', ' e')]
    reader = M.MessageReader(Script(content(*fields, 'EOB'), flags=0x1FFFFF), None, True,
                             budget=0)
    read_all(reader)
    assert list(reader.fields()) == fields
    reader.close()


class Section:
    """A Channel whose MTA sends a header section of `count` fields made
    as they are read (the test holds none of them), then the body."""

    def __init__(self, count, last):
        self.owed = None
        self.packets = self._packets(count, last)

    @staticmethod
    def _packets(count, last):
        yield from content(('Authentication-Results', ' other.example; dkim=pass'))
        for number in range(count):
            yield from content((f'X-Pad-{number}', ' ' + 'p' * 180))
        yield from content(('authentication-results', last), 'EOH', b'body\r\n', 'EOB')

    def read_packet(self):
        return next(self.packets)

    def answer(self, data):
        self.owed = None

    def expects(self, command):
        return P.expects_reply(command, 0x1FFFFF)

    def take_macros(self, packet):
        pass


def test_a_removal_past_the_header_budget_with_memory_bounded():
    """A forged field after 3.8 MB of others is still removed (CHGHEADER,
    index 2 among the fields of its name, counted in any case), and
    memory is the budget and a chunk, not the section."""
    envelope = Envelope()
    envelope.remove_header('Authentication-Results', lambda v: v.startswith('milter.test'))
    tracemalloc.start()
    try:
        reader = M.MessageReader(Section(20_000, ' milter.test; spf=pass'), None, True,
                                 budget=64 << 10)
        size = 0
        while (piece := reader.pull()) is not None:
            size += len(piece)
        got = packets_of(M.changes(envelope, reader.fields(), None, [], ALL_ACTIONS, True, []))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reader.close()
    assert size > 3_800_000
    assert got == [(P.CHGHEADER, [2, 'authentication-results', ''])]
    assert peak < 1 << 20, f'{peak} bytes at the peak for a {size}-byte header section'


def test_removals_count_the_fields_of_their_name_in_any_case():
    """What the MTA needs to find each field (a regression test: 27ebdfd
    changed how the fields are counted, not what this pins): the index
    among the fields of its name in any case alone (X-Keep between them
    is not counted), the test of each rule on each field's value, the
    name as the field wrote it, and the order: highest index first (a
    deletion never moves a field not reached yet). Counting every field,
    or each spelling apart, or sending lowest first fails it."""
    envelope = Envelope()
    envelope.remove_header('x-drop')
    envelope.remove_header('X-Test', lambda v: v == 'b')
    fields = [('X-Drop', ' 1'), ('X-Test', ' a'), ('X-Keep', ' k'), ('x-test', ' b'),
              ('X-DROP', ' 2'), ('X-Test', ' b')]
    got = packets_of(M.changes(envelope, fields, None, [], ALL_ACTIONS, True, []))
    assert got == [(P.CHGHEADER, [3, 'X-Test', '']), (P.CHGHEADER, [2, 'x-test', '']),
                   (P.CHGHEADER, [2, 'X-DROP', '']), (P.CHGHEADER, [1, 'X-Drop', ''])]


# -- what changed at the end of the message ---------------------------------------------

def packets_of(wire):
    reader = P.PacketReader()
    reader.feed(b''.join(wire))
    out = []
    while (packet := reader.next_packet()) is not None:
        out.append((packet.command, P.read_reply(packet)))
    return out


def test_nothing_changed_nothing_sent():
    envelope = Envelope()
    envelope.mail_from = Address('a@example.org')
    envelope.rcpt_to = [Address('b@example.org')]
    warn = []
    assert list(M.changes(envelope, [], ('<a@example.org>', Address('a@example.org')),
                          [('<b@example.org>', Address('b@example.org'))], ALL_ACTIONS,
                          True, warn)) == []
    assert warn == []


def test_recipients_and_sender_changes():
    envelope = Envelope()
    envelope.mail_from = Address('new@example.org', {'BODY': '8BITMIME'})
    b = Address('b@example.org')
    envelope.rcpt_to = [b, Address('c@example.org', {'NOTIFY': 'NEVER'}), Address('d@example.org')]
    sent = [('<b@example.org>', b), ('<gone@example.org>', Address('gone@example.org'))]
    got = packets_of(M.changes(envelope, [], ('<a@example.org>', Address('a@example.org')), sent,
                               ALL_ACTIONS, True, []))
    assert got == [(P.CHGFROM, ['<new@example.org>', 'BODY=8BITMIME']),
                   (P.DELRCPT, ['<gone@example.org>']),
                   (P.ADDRCPT_PAR, ['<c@example.org>', 'NOTIFY=NEVER']),
                   (P.ADDRCPT, ['<d@example.org>'])]


def test_a_replaced_body_from_a_file_goes_in_chunks():
    envelope = Envelope()
    envelope.replace_body(io.BytesIO(b'z' * (P.CHUNK_SIZE + 10)))
    got = packets_of(M.changes(envelope, [], None, [], ALL_ACTIONS, True, []))
    assert [len(fields[0]) for _, fields in got] == [P.CHUNK_SIZE, 10]


def test_a_folded_added_header_uses_lf_between_its_lines():
    envelope = Envelope()
    envelope.add_header('X-Long', ' '.join(['word'] * 30))
    ((command, (index, name, value)),) = packets_of(
        M.changes(envelope, [], None, [], ALL_ACTIONS, False, []))
    assert (command, index, name) == (P.INSHEADER, 0, 'X-Long')
    assert '\n\t' in value or '\n ' in value
    assert '\r' not in value and not value.startswith(' ')


# -- facts ----------------------------------------------------------------------------

def test_macros_fill_the_session():
    session = Session('', 0, '192.0.2.1', 1234)
    facts = F.MilterFacts('127.0.0.1:5')
    told = F.apply(session, facts, {'daemon_addr': '198.51.100.1', 'daemon_port': '25',
                                    'tls_version': 'TLSv1.3', 'cipher': 'X', 'cipher_bits': '128',
                                    'auth_type': 'LOGIN', 'auth_authen': 'bob', 'i': 'Q9'})
    assert told == [F.TLS_SEEN, F.LOGIN_SEEN]
    assert (session.local_address, session.local_port) == ('198.51.100.1', 25)
    assert session.tls['version'] == 'TLSv1.3' and session.tls['bits'] == 128 and session.secure
    assert (session.auth.method, session.auth.username) == ('LOGIN', 'bob')
    assert facts.queue_id == 'Q9'
    assert F.apply(session, facts, {'tls_version': 'TLSv1.3', 'cipher': 'X',
                                    'auth_authen': 'bob'}) == []    # nothing new


# -- the Envelope's additions -------------------------------------------------------------

def test_envelope_replace_body_quarantine_drop():
    envelope = Envelope()
    assert (envelope.replaced_body, envelope.quarantined, envelope.dropped) == (None,) * 3
    envelope.replace_body(b'x')
    envelope.quarantine('why')
    envelope.drop()
    assert (envelope.replaced_body, envelope.quarantined, envelope.dropped) == (b'x', 'why', '')
    with pytest.raises(TypeError):
        envelope.replace_body('text')
    with pytest.raises(ValueError):
        envelope.quarantine('two\nlines')
    with pytest.raises(ValueError):
        envelope.drop('nul\0')
    assert Envelope().quarantined is None       # class defaults: nothing shared
