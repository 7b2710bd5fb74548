"""smtp_stack.milter.facts: SMFIC_MACRO packets, decoded one at a time or
held and decoded together (what the connection does with the packets of
the stages an MTA skips)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.milter import facts as F
from smtp_stack.milter.protocol import ProtocolError


@pytest.mark.parametrize('packets, macros', [
    ([b'Ci\0Q1\0'], {'i': 'Q1'}),
    ([b'C{daemon_name}\0smtpd\0_\0host [192.0.2.1]\0'],
     {'daemon_name': 'smtpd', '_': 'host [192.0.2.1]'}),
    ([b'C', b'H', b'Mi\0\0'], {'i': ''}),                     # stages with no macro
    ([b'Ci\0Q1\0', b'Ei\0Q2\0'], {'i': 'Q2'}),                # the later packet wins
    ([b'Ca\0b\0lone\0', b'Hc\0d\0'], {'a': 'b', 'c': 'd'}),   # a name without its value
    ([b'Clone\0', b'Hc\0d\0'], {'c': 'd'}),
    ([b'\0a\0b\0'], {'a': 'b'}),                              # a NUL stage letter
    ([b'C{}\0x\0{a}b}\0y\0'], {'{}': 'x', 'a}b': 'y'}),       # only a whole {...} is bare
    ([b'Cv\0\xff\0'], {'v': '\udcff'}),                       # not UTF-8: kept escaped
])
def test_held_packets_decode_together(packets, macros):
    assert F.read_held(packets) == macros


def test_one_packet_reads_as_held():
    assert F.read_macros(b'M{auth_authen}\0alice\0i\0Q1\0odd\0') == {
        'auth_authen': 'alice', 'i': 'Q1'}


@pytest.mark.parametrize('data, why', [
    (b'', 'a one-byte field is missing'),
    (b'Cname\0value', 'without its terminating NUL'),
])
def test_malformed_macro_packets_are_refused(data, why):
    with pytest.raises(ProtocolError, match=why):
        F.check_macros(data)


pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from('CHMRTEN'), pairs, st.booleans()), max_size=6))
def test_held_packets_read_as_each_in_turn(stages):
    """Decoding the packets together gives what decoding them one by one,
    later ones winning, gives: the join never moves a name or a value."""
    packets = []
    for stage, items, lone in stages:
        strings = [s.replace('\0', '') for pair in items for s in pair]
        if lone:
            strings.append('lone')
        packets.append(stage.encode() + b''.join(s.encode() + b'\0' for s in strings))
    expected: dict = {}
    for data in packets:
        F.check_macros(data)
        strings = data[1:].decode('utf-8', 'surrogateescape').split('\0')[:-1]
        for name, value in zip(strings[0::2], strings[1::2], strict=False):  # a lone: dropped
            if len(name) > 2 and name[0] == '{' and name[-1] == '}':
                name = name[1:-1]
            expected[name] = value
    assert F.read_held(packets) == expected
