"""smtp_stack.forwarding: XCLIENT and XFORWARD attributes, without sockets."""
import pytest
from hypothesis import given, settings, strategies as st

from smtp_stack import forwarding
from smtp_stack.errors import SmtpError
from smtp_stack.forwarding import (
    XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, parse_attributes, parse_xclient, parse_xforward,
    xclient_capability, xforward_capability,
)
from smtp_stack.xtext import encode_xtext

ABC = frozenset({'A', 'B', 'C'})


def rejected(function, *args, **kwargs) -> str:
    with pytest.raises(SmtpError) as info:
        function(*args, **kwargs)
    assert (info.value.code, info.value.enhanced) == (501, '5.5.4')
    return info.value.message


def test_attribute_sets():
    assert XCLIENT_ATTRIBUTES == {'NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN', 'DESTADDR', 'DESTPORT'}
    assert XFORWARD_ATTRIBUTES == {'NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'IDENT', 'SOURCE'}
    assert isinstance(XCLIENT_ATTRIBUTES, frozenset) and isinstance(XFORWARD_ATTRIBUTES, frozenset)


# -- the shared parser -------------------------------------------------------

@pytest.mark.parametrize('args, expected', [
    (['A=1'], {'A': '1'}),
    (['a=1', 'b=2'], {'A': '1', 'B': '2'}),
    (['c=3', 'A=1'], {'C': '3', 'A': '1'}),
    (['A=x+20y'], {'A': 'x y'}),
    (['A=a+3Db+2Bc'], {'A': 'a=b+c'}),
    (['A=+5BUNAVAILABLE+5D'], {'A': None}),
    (['A=[UNAVAILABLE]', 'B=[TEMPUNAVAIL]', 'C=[unavailable]'], {'A': None, 'B': None, 'C': None}),
    (['A=[TempUnavail]'], {'A': None}),
    (['A=[UNAVAILABLE]x'], {'A': '[UNAVAILABLE]x'}),
    (['A=[UNKNOWN]'], {'A': '[UNKNOWN]'}),
    (['A=' + encode_xtext('J\u00fcrgen')], {'A': 'J\u00fcrgen'}),
    (['A=' + 'x' * 255], {'A': 'x' * 255}),
    (['A=~!#$%&*'], {'A': '~!#$%&*'}),
])
def test_parse_attributes_accepts(args, expected):
    result = parse_attributes(args, ABC)
    assert result == expected
    assert list(result) == list(expected)       # the order given


@pytest.mark.parametrize('args, message', [
    ([], 'Syntax: command attribute=value...'),
    (['A'], 'Bad command parameter syntax: A'),
    (['A=1', 'B'], 'Bad command parameter syntax: B'),
    (['=1'], 'Bad command parameter syntax: =1'),
    (['D=1'], 'Bad command attribute name: D'),
    (['AB=1'], 'Bad command attribute name: AB'),
    (['A =1'], 'Bad command attribute name: A'),
    (['A=1', 'a=2'], 'Bad command syntax: attribute A given twice'),
    (['A=[UNAVAILABLE]', 'A=1'], 'attribute A given twice'),
    (['A='], 'Bad command A syntax: empty value'),
    (['A=+2'], 'Bad command A syntax: invalid xtext'),
    (['A=+'], 'invalid xtext'),
    (['A=+zz'], 'invalid xtext'),
    (['A=+2b'], 'invalid xtext'),
    (['A=a+'], 'invalid xtext'),
    (['A=a=b'], 'invalid xtext'),
    (['A=a b'], 'invalid xtext'),
    (['A=a\tb'], 'invalid xtext'),
    (['A=\u00e9'], 'invalid xtext'),
    (['A=+FF'], 'Bad command A syntax: invalid xtext'),
    (['A=+C3'], 'invalid xtext'),   # escaped bytes must form UTF-8
    (['A=x+0Ay'], 'Bad command A syntax: control character in value'),
    (['A=x+0D+0Ay'], 'control character'),
    (['A=+00'], 'control character'),
    (['A=+7F'], 'control character'),
    (['A=+C2+85'], 'control character'),         # U+0085, a C1 control
    (['A=' + 'x' * 256], 'Bad command A syntax: longer than 255 characters'),
    (['A=' + '+41' * 86], 'longer than 255 characters'),     # 258 sent, 86 decoded
])
def test_parse_attributes_rejects(args, message):
    assert message in rejected(parse_attributes, args, ABC)


def test_parse_attributes_names_the_command_in_messages():
    assert rejected(parse_attributes, [], ABC, command='XCLIENT') == 'Syntax: XCLIENT attribute=value...'
    assert rejected(parse_attributes, ['D=1'], ABC, command='XFORWARD') == 'Bad XFORWARD attribute name: D'


def test_echoed_names_are_short_and_printable():
    message = rejected(parse_attributes, ['\x1b[31m' + 'N' * 100 + '=1'], ABC)
    assert message == 'Bad command attribute name: [31M' + 'N' * 28 + '...'
    assert '\x1b' not in rejected(parse_attributes, ['\x1b'], ABC)


def test_command_length_limit():
    # 8 arguments of 255 characters each ('A=' + 253) plus 7 spaces = 2047.
    args = ['A=' + 'x' * 253] + [f'{n}=' + 'x' * 253 for n in 'BCDEFGH']
    names = frozenset('ABCDEFGH')
    assert sum(map(len, args)) + len(args) - 1 == 2047
    assert len(parse_attributes(args, names)) == 8
    assert len(parse_attributes(args[:-1] + [args[-1] + 'x'], names)) == 8      # 2048
    over = args[:-1] + [args[-1] + 'xx']                                          # 2049
    assert 'longer than 2048 characters' in rejected(parse_attributes, over, names)


# -- XCLIENT ------------------------------------------------------------------

@pytest.mark.parametrize('args, expected', [
    (['NAME=spike.porcupine.org'], {'NAME': 'spike.porcupine.org'}),
    (['NAME=[TEMPUNAVAIL]'], {'NAME': None}),
    (['ADDR=168.100.189.2'], {'ADDR': '168.100.189.2'}),
    (['ADDR=IPV6:2001:DB8::1'], {'ADDR': '2001:db8::1'}),
    (['ADDR=ipv6:2001:db8:0:0:0:0:0:1'], {'ADDR': '2001:db8::1'}),
    (['addr=IPv6:::1'], {'ADDR': '::1'}),
    (['ADDR=IPV6:::ffff:192.0.2.1'], {'ADDR': '::ffff:c000:201'}),
    (['ADDR=[UNAVAILABLE]'], {'ADDR': None}),
    (['PORT=0'], {'PORT': '0'}),
    (['PORT=25'], {'PORT': '25'}),
    (['PORT=00025'], {'PORT': '25'}),
    (['PORT=65535'], {'PORT': '65535'}),
    (['PORT=[UNAVAILABLE]'], {'PORT': None}),
    (['PROTO=SMTP'], {'PROTO': 'SMTP'}),
    (['proto=esmtp'], {'PROTO': 'ESMTP'}),
    (['HELO=client.example.com'], {'HELO': 'client.example.com'}),
    (['HELO=[192.0.2.1]'], {'HELO': '[192.0.2.1]'}),
    (['HELO=[UNAVAILABLE]'], {'HELO': None}),
    (['LOGIN=user@example.com'], {'LOGIN': 'user@example.com'}),
    (['LOGIN=John+20Smith'], {'LOGIN': 'John Smith'}),
    (['LOGIN=[UNAVAILABLE]'], {'LOGIN': None}),
    (['DESTADDR=192.0.2.25'], {'DESTADDR': '192.0.2.25'}),
    (['DESTADDR=IPV6:2001:db8::25'], {'DESTADDR': '2001:db8::25'}),
    (['DESTPORT=587'], {'DESTPORT': '587'}),
    (['NAME=mx.example.com', 'ADDR=192.0.2.1', 'PORT=51000', 'PROTO=ESMTP', 'HELO=mx.example.com',
      'LOGIN=alice', 'DESTADDR=192.0.2.25', 'DESTPORT=25'],
     {'NAME': 'mx.example.com', 'ADDR': '192.0.2.1', 'PORT': '51000', 'PROTO': 'ESMTP',
      'HELO': 'mx.example.com', 'LOGIN': 'alice', 'DESTADDR': '192.0.2.25', 'DESTPORT': '25'}),
])
def test_parse_xclient_accepts(args, expected):
    assert parse_xclient(args) == expected


@pytest.mark.parametrize('args, message', [
    ([], 'Syntax: XCLIENT attribute=value...'),
    (['IDENT=abc'], 'Bad XCLIENT attribute name: IDENT'),
    (['SOURCE=LOCAL'], 'Bad XCLIENT attribute name: SOURCE'),
    (['ADDR=192.0.2.1', 'addr=192.0.2.2'], 'attribute ADDR given twice'),
    (['ADDR=2001:db8::1'], 'Bad XCLIENT ADDR syntax: not an IPv4 address or IPV6: and an IPv6 address'),
    (['ADDR=IPV6:192.0.2.1'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=IPV6:fe80::1%25eth0'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=IPV6:'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=IPV4:192.0.2.1'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=+5B192.0.2.1+5D'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=192.0.2.01'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=192.0.2'], 'Bad XCLIENT ADDR syntax'),
    (['ADDR=mx.example.com'], 'Bad XCLIENT ADDR syntax'),
    (['DESTADDR=256.0.0.1'], 'Bad XCLIENT DESTADDR syntax'),
    (['PORT=65536'], 'Bad XCLIENT PORT syntax: not a port number 0..65535'),
    (['PORT=-1'], 'Bad XCLIENT PORT syntax'),
    (['PORT=+2B1'], 'Bad XCLIENT PORT syntax'),
    (['PORT=123456'], 'Bad XCLIENT PORT syntax'),
    (['PORT=0x19'], 'Bad XCLIENT PORT syntax'),
    (['PORT=\u0661'], 'invalid xtext'),
    (['DESTPORT=smtp'], 'Bad XCLIENT DESTPORT syntax'),
    (['PROTO=LMTP'], 'Bad XCLIENT PROTO syntax: not SMTP or ESMTP'),
    (['PROTO=ESMTPS'], 'Bad XCLIENT PROTO syntax'),
    (['HELO=a+0Db'], 'Bad XCLIENT HELO syntax: control character'),
    (['NAME='], 'Bad XCLIENT NAME syntax: empty value'),
])
def test_parse_xclient_rejects(args, message):
    assert message in rejected(parse_xclient, args)


# -- XFORWARD -----------------------------------------------------------------

@pytest.mark.parametrize('args, expected', [
    (['NAME=spike.porcupine.org', 'ADDR=168.100.189.2', 'PROTO=ESMTP'],
     {'NAME': 'spike.porcupine.org', 'ADDR': '168.100.189.2', 'PROTO': 'ESMTP'}),
    (['HELO=spike.porcupine.org'], {'HELO': 'spike.porcupine.org'}),
    (['ADDR=IPV6:2001:db8::1', 'PORT=4711'], {'ADDR': '2001:db8::1', 'PORT': '4711'}),
    (['ADDR=[UNAVAILABLE]'], {'ADDR': None}),
    (['PROTO=SMTP'], {'PROTO': 'SMTP'}),
    (['PROTO=ESMTPSA'], {'PROTO': 'ESMTPSA'}),
    (['PROTO=lmtp'], {'PROTO': 'lmtp'}),
    (['PROTO=' + 'P' * 64], {'PROTO': 'P' * 64}),
    (['PROTO=[UNAVAILABLE]'], {'PROTO': None}),
    (['IDENT=3CF6B2AAE8'], {'IDENT': '3CF6B2AAE8'}),
    (['SOURCE=LOCAL'], {'SOURCE': 'LOCAL'}),
    (['source=remote'], {'SOURCE': 'REMOTE'}),
    (['SOURCE=[UNAVAILABLE]'], {'SOURCE': None}),
])
def test_parse_xforward_accepts(args, expected):
    assert parse_xforward(args) == expected


@pytest.mark.parametrize('args, message', [
    ([], 'Syntax: XFORWARD attribute=value...'),
    (['LOGIN=alice'], 'Bad XFORWARD attribute name: LOGIN'),
    (['DESTADDR=192.0.2.1'], 'Bad XFORWARD attribute name: DESTADDR'),
    (['DESTPORT=25'], 'Bad XFORWARD attribute name: DESTPORT'),
    (['SOURCE=LOCAL', 'Source=REMOTE'], 'attribute SOURCE given twice'),
    (['SOURCE=INTERNAL'], 'Bad XFORWARD SOURCE syntax: not LOCAL or REMOTE'),
    (['PROTO=' + 'P' * 65], 'Bad XFORWARD PROTO syntax: not a protocol name of at most 64 characters'),
    (['PROTO=E+20SMTP'], 'Bad XFORWARD PROTO syntax'),
    (['ADDR=::1'], 'Bad XFORWARD ADDR syntax'),
    (['PORT=99999'], 'Bad XFORWARD PORT syntax'),
    (['IDENT=a+09b'], 'control character'),
])
def test_parse_xforward_rejects(args, message):
    assert message in rejected(parse_xforward, args)


# -- EHLO keywords --------------------------------------------------------------

def test_capabilities():
    assert xclient_capability() == 'XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT'
    assert xforward_capability() == 'XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE'
    assert xclient_capability(['port', 'ADDR', 'name']) == 'XCLIENT NAME ADDR PORT'
    assert xclient_capability(XCLIENT_ATTRIBUTES) == xclient_capability()
    assert xforward_capability({'SOURCE', 'IDENT'}) == 'XFORWARD IDENT SOURCE'


@pytest.mark.parametrize('function, attributes', [
    (xclient_capability, ['IDENT']),
    (xclient_capability, []),
    (xforward_capability, ['LOGIN']),
    (xforward_capability, ['NAME', 'BOGUS']),
])
def test_capabilities_reject_unknown_or_no_attributes(function, attributes):
    with pytest.raises(ValueError):
        function(attributes)


# -- properties -------------------------------------------------------------------

@settings(max_examples=500)
@given(st.lists(st.text(max_size=40), max_size=6))
def test_random_arguments_only_ever_raise_smtp_error(args):
    for function in (parse_xclient, parse_xforward):
        try:
            result = function(args)
        except SmtpError as exc:
            assert (exc.code, exc.enhanced) == (501, '5.5.4')
            assert exc.message.isprintable() and exc.message.isascii()
        else:
            assert result and set(result) <= XCLIENT_ATTRIBUTES | XFORWARD_ATTRIBUTES


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(['A=', 'a=', 'B=', 'C=', 'D=', '=', 'A']),
                          st.text(st.characters(min_codepoint=32, max_codepoint=127), max_size=12)),
                max_size=4))
def test_random_near_valid_arguments_only_ever_raise_smtp_error(pairs):
    try:
        parse_attributes([name + value for name, value in pairs], ABC)
    except SmtpError as exc:
        assert exc.code == 501


printable = st.text(st.characters(blacklist_categories=('Cc', 'Cs', 'Zl', 'Zp', 'Cf', 'Co', 'Cn', 'Zs'))
                    | st.just(' '), min_size=1, max_size=50)


@given(st.dictionaries(st.sampled_from(sorted(ABC)), printable, min_size=1))
def test_encode_then_parse_round_trip(values):
    args = [f'{name.lower()}={encode_xtext(value)}' for name, value in values.items()]
    expected = {name: None if value.upper() in forwarding.UNAVAILABLE else value
                for name, value in values.items()}
    encoded_ok = all(len(encode_xtext(value)) <= 255 for value in values.values())
    if encoded_ok:
        assert parse_attributes(args, ABC) == expected
    else:
        assert 'longer than 255' in rejected(parse_attributes, args, ABC)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_address_and_port_round_trip(address, port):
    text = f'IPV6:{address}' if address.version == 6 else str(address)
    assert parse_xclient([f'ADDR={encode_xtext(text)}', f'DESTPORT={port}']) == {
        'ADDR': str(address), 'DESTPORT': str(port)}
    assert parse_xforward([f'ADDR={encode_xtext(text)}', f'PORT={port}']) == {
        'ADDR': str(address), 'PORT': str(port)}
