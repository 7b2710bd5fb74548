"""canonical.py against dkimpy: the same split of a message into header
fields and body, the same canonical forms (RFC 6376 3.4), on generated
input made of the characters where the algorithms differ (WSP, CR, LF,
colons, tabs, 8-bit bytes)."""
from __future__ import annotations

import os

import peers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

dkim = peers.python_module('dkim', 'policies')
from dkim.canonicalization import (CanonicalizationPolicy,  # noqa: E402
                                   InvalidCanonicalizationPolicyError, Relaxed, Simple)

from smtp_stack.policies import canonical  # noqa: E402
from smtp_stack.policies.canonical import (canonicalisation, relaxed_body,  # noqa: E402
                                           relaxed_header, simple_body, split_message)

SCALE = max(1, int(os.environ.get('SMTP_STACK_FUZZ', '1')))
FUZZ = settings(max_examples=500 * SCALE, deadline=None)
PIECES = [b'a', b'b', b'Zz', b' ', b'  ', b'\t', b'\r', b'\n', b'\r\n', b'\r\n\r\n', b':',
          b'x:', b'From ', b'From: ', b'\x00', b'\xc3\xa9', b'\x7f', b'\x0b']
text = st.lists(st.sampled_from(PIECES), max_size=40).map(b''.join)
# header lines: a name, a colon, a value; continuation lines; the odd broken line
line = st.one_of(
    st.tuples(st.sampled_from([b'Subject', b'From', b'To', b'X-a', b':odd', b'Sub ject', b'']),
              st.sampled_from([b':', b' :', b'']), text).map(b''.join),
    st.tuples(st.sampled_from([b' ', b'\t']), text).map(b''.join),
    st.sampled_from([b'From sender@example.test Mon Jan  1', b'']))
message = st.tuples(st.lists(line, max_size=8), st.sampled_from([b'\r\n', b'\n', b'\r\r\n']),
                    text).map(lambda t: t[1].join(t[0]) + t[1] + t[1] + t[2])


def dkimpy_split(data: bytes):
    try:
        headers, body = dkim.rfc822_parse(data)
    except (dkim.MessageFormatError, IndexError):
        return 'error'
    return [tuple(field) for field in headers], body


def our_split(data: bytes):
    try:
        split = split_message(data)
    except dkim.MessageFormatError:
        return 'error'
    return split.headers, split.body


@FUZZ
@given(message)
@example(b'\r\nbody\r\n')
@example(b'Subject: a\r\n folded\r\n\r\n')
@example(b' continuation first\r\n\r\n')
@example(b'Subject : obsolete syntax\r\n\r\n')
@example(b'::x\r\n\r\n')
@example(b'A: 1\nB: 2\n\nbody\nline\r\n')
@example(b'A: 1\r\n')
@example(b'A: 1')
def test_split_as_dkimpys_parser(data):
    assert our_split(data) == dkimpy_split(data)


@FUZZ
@given(text)
@example(b'')
@example(b'\r\n')
@example(b'\r\n\r\n')
@example(b'abc\r\r\n')
@example(b'abc\n\r\n')
@example(b'a \t \r\n\r\n \r\n')
@example(b'\r\n' * 100)
@example(b'x' + b'\r\n' * 100)
def test_body_canonicalisation_as_dkimpys(body):
    assert simple_body(body) == Simple.canonicalize_body(body)
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@FUZZ
@given(st.sampled_from([b'Subject', b'FROM', b'x-A']), text)
@example(b'Subject', b' a \r\n\tb  \r\n')
@example(b'Subject', b'\r\r\n\n')
def test_header_canonicalisation_as_dkimpys(name, value):
    assert relaxed_header((name, value)) == Relaxed.canonicalize_headers([(name, value)])[0]
    assert canonical.simple_header((name, value)) == (name, value)


@given(st.one_of(st.none(), st.lists(st.sampled_from([b'simple', b'relaxed', b'/', b'Relaxed',
                                                      b'', b'x']), max_size=4).map(b''.join)))
def test_c_values_as_dkimpy_reads_them(c):
    try:
        policy = CanonicalizationPolicy.from_c_value(c)
    except InvalidCanonicalizationPolicyError:
        with pytest.raises(dkim.MessageFormatError):
            canonicalisation(c)
        return
    header, body = canonicalisation(c)
    assert header.__name__.split('_')[0] == policy.header_algorithm.name.decode()
    assert body.__name__.split('_')[0] == policy.body_algorithm.name.decode()


def test_a_long_run_of_line_ends_and_spaces_is_cheap():
    """The canonicalisation of a 4 MiB body that is one run of spaces, or
    of line ends, stays linear (each pass halves the runs)."""
    import time
    for body in (b'a' + b' ' * (4 << 20) + b'\r\n', b'a' + b'\r\n' * (2 << 20)):
        start = time.process_time()
        assert relaxed_body(body) == b'a\r\n'
        assert time.process_time() - start < 1.0


@given(st.lists(st.sampled_from(['Alice <a@example.test>', '"B, c" <b@x.test>',
                                 'Jos\u00e9 <j@ex\u00e4mple.test>', '(c) d@e.test', '']),
                min_size=1, max_size=3),
       st.sampled_from(['\r\n ', '\r\n\t', ' ', '']))
def test_from_values_as_the_standard_library_reads_them(values, fold):
    from email.parser import BytesHeaderParser
    head = b''.join(b'From: ' + v.replace(' ', fold, 1).encode() + b'\r\n' for v in values)
    head += b'Subject: x\r\n\r\n'
    theirs = [str(v) for v in BytesHeaderParser().parsebytes(head).get_all('From')]
    assert canonical.field_values(split_message(head).headers, b'from') == theirs
