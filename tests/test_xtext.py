"""smtp_stack.xtext: RFC 3461 section 4 xtext, decoded strictly."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.xtext import XtextError, decode_xtext, encode_xtext

FAST = settings(max_examples=200, deadline=None)

DECODE = [
    ('', ''),
    ('abc', 'abc'),
    ('QQ314159', 'QQ314159'),
    ('+2B', '+'),
    ('+3D', '='),
    ('a+20b', 'a b'),
    ('+41+42', 'AB'),
    ('+2B+2B', '++'),
    ('user@example.com', 'user@example.com'),
    ('!~', '!~'),
    ('+00+7F', '\x00\x7f'),
    ('+0D+0A', '\r\n'),
    ('a+2Bb+3Dc', 'a+b=c'),
]


@pytest.mark.parametrize('text, value', DECODE)
def test_decode(text, value):
    assert decode_xtext(text) == value


BAD = [
    '+',            # '+' at the end
    '+2',
    'a+',
    'a+4',
    '+2b',          # hex digits must be upper case
    '+aB',
    '+Ab',
    '+G0',
    '+ 2B',
    '+-1',
    '=',
    'a=b',
    ' ',
    'a b',
    '\t',
    '\x7f',
    '\x00',
    'é',
    'a+20é',
    '+2B=',
]


@pytest.mark.parametrize('text', BAD)
def test_decode_rejects(text):
    with pytest.raises(XtextError):
        decode_xtext(text)


def test_xtext_error_is_a_value_error():
    assert issubclass(XtextError, ValueError)


ENCODE = [
    ('', ''),
    ('abc', 'abc'),
    ('a b', 'a+20b'),
    ('+', '+2B'),
    ('=', '+3D'),
    ('!~', '!~'),
    ('\x7f', '+7F'),
    ('\r\n', '+0D+0A'),
    ('é', '+C3+A9'),
    ('日', '+E6+97+A5'),
    (b'\x00\xff', '+00+FF'),
    (b'a+b', 'a+2Bb'),
]


@pytest.mark.parametrize('value, text', ENCODE)
def test_encode(value, text):
    assert encode_xtext(value) == text


@FAST
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_round_trip(value):
    assert decode_xtext(encode_xtext(value)) == value


@FAST
@given(st.one_of(st.text(), st.binary()))
def test_encoded_text_is_valid_xtext(value):
    text = encode_xtext(value)
    assert all(33 <= ord(ch) <= 126 and ch != '=' for ch in text)
    if isinstance(value, str):
        decode_xtext(text)      # never raises for what was text


@FAST
@given(st.text(alphabet='ABCDEF0123456789+=xyz ', max_size=12))
def test_decode_raises_only_xtext_error(text):
    try:
        decode_xtext(text)
    except XtextError:
        pass


@pytest.mark.parametrize('value', ['é', 'üser@exämple.com', '日本'])
def test_non_ascii_round_trip(value):
    assert decode_xtext(encode_xtext(value)) == value
