"""sasl.decode_base64_by_pattern, what AUTH decodes with on Python 3.10 (its
binascii has no strict_mode), accepts and refuses exactly what Python
3.11's a2b_base64(strict_mode=True) does."""
import binascii
import itertools
import sys

import pytest
from hypothesis import given, settings, strategies as st

from smtp_stack import sasl

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason='Python 3.10 has no strict_mode'),
    pytest.mark.may_skip_in_ci('the Python version, not a missing peer'),
]


def strict(data: bytes):
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return 'refused'


def by_pattern(data: bytes):
    try:
        return sasl.decode_base64_by_pattern(data)
    except binascii.Error:
        return 'refused'


# Every string of up to 6 characters over letters, '+', '=' and bytes
# outside the alphabet, and of up to 13 over 'A' and '=': padding in every
# place it can and cannot go.
SMALL = [bytes(chars) for alphabet, longest in ((b'AQ+=a \n!', 6), (b'A=', 13))
         for length in range(longest + 1)
         for chars in itertools.product(alphabet, repeat=length)]


def test_the_pattern_decides_every_short_string_as_strict_mode_does():
    differ = [data for data in SMALL if by_pattern(data) != strict(data)]
    assert differ == []


@pytest.mark.parametrize('data, expected', [
    (b'', b''),
    (b'QUJD', b'ABC'),
    (b'QUI=', b'AB'),
    (b'QQ==', b'A'),
    (b'QUJD=', b'ABC'),         # '=' after whole quads: accepted by 3.11 too
    (b'QUI', 'refused'),        # padding missing
    (b'QQ=', 'refused'),
    (b'QUI==', 'refused'),      # too much padding for the last quad
    (b'=QUJD', 'refused'),      # leading padding
    (b'QQ==QQ==', 'refused'),   # data after padding
    (b'QU JD', 'refused'),      # white space
    (b'QUJD\n', 'refused'),
])
def test_cases_named(data, expected):
    assert by_pattern(data) == expected == strict(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text('ABCxyz019+/= \r\n-_', max_size=40).map(str.encode))
def test_random_strings_are_decided_as_strict_mode_does(data):
    assert by_pattern(data) == strict(data)


def test_auth_decodes_with_strict_mode_on_this_python():
    assert sasl.decode_base64 is not sasl.decode_base64_by_pattern
