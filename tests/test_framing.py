"""smtp_stack.framing: command-line framing (LineBuffer) and the DATA decoder.

Pure byte-level tests, no sockets. Every DataDecoder case is checked whole
and split at every pair of cut points: a decoder that depends on where the
network happened to cut the stream is the SMTP smuggling bug class
(CVE-2023-51764), so no split may change (body, rest, bare_newline).
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.framing import TOO_LONG, DataDecoder, DotStuffer, LineBuffer, dot_stuff

FAST = settings(max_examples=150, deadline=None)


# --- LineBuffer helpers ------------------------------------------------------
def drain_lines(buf: LineBuffer, max_length: int) -> list:
    """Every result next_line() gives until it needs more bytes, as
    (line, last_bare) pairs; TOO_LONG appears as (TOO_LONG, None)."""
    out = []
    while True:
        line = buf.next_line(max_length)
        if line is None:
            return out
        out.append((TOO_LONG, None) if line is TOO_LONG else (line, buf.last_bare))


def lines_of(chunks, max_length: int) -> list:
    buf = LineBuffer()
    out = []
    for chunk in chunks:
        buf.feed(chunk)
        out += drain_lines(buf, max_length)
    return out


def all_single_splits(data: bytes):
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]     # byte by byte


# (name, input, max_length, expected [(line, bare)])
LINE_CASES = [
    ('crlf', b'EHLO x\r\n', 510, [(b'EHLO x', False)]),
    ('bare-lf', b'EHLO x\n', 510, [(b'EHLO x', True)]),
    ('mixed', b'A\nB\r\nC\n', 510, [(b'A', True), (b'B', False), (b'C', True)]),
    ('empty-crlf', b'\r\n', 510, [(b'', False)]),
    ('empty-lf', b'\n', 510, [(b'', True)]),
    ('cr-inside-kept', b'a\rb\r\n', 510, [(b'a\rb', False)]),
    ('cr-cr-lf', b'a\r\r\n', 510, [(b'a\r', False)]),
    ('incomplete-tail', b'one\r\ntwo', 510, [(b'one', False)]),
    ('pipelined', b'MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n', 510,
     [(b'MAIL FROM:<a@b>', False), (b'RCPT TO:<c@d>', False), (b'DATA', False)]),
    ('binary', b'\x00\xff\r\n', 510, [(b'\x00\xff', False)]),
    ('exact-limit-lf', b'abcde\nok\r\n', 5, [(b'abcde', True), (b'ok', False)]),
    ('under-limit-crlf', b'abcd\r\nok\r\n', 5, [(b'abcd', False), (b'ok', False)]),
    ('one-over-limit', b'abcdef\r\nok\r\n', 5, [(TOO_LONG, None), (b'ok', False)]),
    ('far-over-limit', b'x' * 50 + b'\r\nok\r\n', 5, [(TOO_LONG, None), (b'ok', False)]),
    ('two-long-lines', b'x' * 9 + b'\ny\r\n' + b'z' * 9 + b'\r\n', 5,
     [(TOO_LONG, None), (b'y', False), (TOO_LONG, None)]),
    ('long-then-bare', b'x' * 9 + b'\n\n', 5, [(TOO_LONG, None), (b'', True)]),
]


@pytest.mark.parametrize('data, max_length, expected',
                         [c[1:] for c in LINE_CASES], ids=[c[0] for c in LINE_CASES])
def test_line_buffer_table_any_split(data, max_length, expected):
    for chunks in all_single_splits(data):
        assert lines_of(chunks, max_length) == expected, chunks


def test_line_of_exactly_max_length_with_crlf_in_one_piece():
    assert lines_of([b'abcde\r\nok\r\n'], 5) == [(b'abcde', False), (b'ok', False)]


def test_line_of_exactly_max_length_cr_and_lf_in_separate_pieces():
    # 510 octets + CRLF is a legal command line (RFC 5321 4.5.3.1.4: 512 with
    # CRLF); whether the LF arrives in the same packet as the CR must not matter.
    assert lines_of([b'abcde\r', b'\nok\r\n'], 5) == [(b'abcde', False), (b'ok', False)]


def test_too_long_is_reported_once_and_the_rest_of_the_line_skipped():
    buf = LineBuffer()
    results = []
    for _ in range(100):
        buf.feed(b'x' * 7)
        results += drain_lines(buf, 5)
        assert buf.pending <= 5          # the over-long line is never kept
    buf.feed(b'tail of the long line\r\nNOOP\r\n')
    results += drain_lines(buf, 5)
    assert results == [(TOO_LONG, None), (b'NOOP', False)]


def test_skipped_tail_arriving_byte_by_byte_is_not_buffered_beyond_limit():
    buf = LineBuffer()
    results = []
    for byte in b'y' * 1000:
        buf.feed(bytes([byte]))
        results += drain_lines(buf, 8)
        assert buf.pending <= 9     # the limit plus a CR that may end the line
    buf.feed(b'\nQUIT\r\n')
    results += drain_lines(buf, 8)
    assert results == [(TOO_LONG, None), (b'QUIT', False)]


def test_line_after_over_long_line_starts_fresh():
    buf = LineBuffer()
    buf.feed(b'x' * 20)
    assert buf.next_line(5) is TOO_LONG
    buf.feed(b'\r\nabc')
    assert buf.next_line(5) is None
    buf.feed(b'\r\n')
    assert buf.next_line(5) == b'abc'


def test_needs_more_bytes_returns_none_and_keeps_them():
    buf = LineBuffer()
    buf.feed(b'EH')
    assert buf.next_line(510) is None
    assert buf.pending == 2
    buf.feed(b'LO x')
    assert buf.next_line(510) is None
    buf.feed(b'\r\n')
    assert buf.next_line(510) == b'EHLO x'
    assert buf.pending == 0


def test_scanned_prefix_is_not_searched_again_but_new_bytes_are():
    # After a search found no LF in 'abc', the LF fed later must still be found,
    # including when it is the very first byte of the new data.
    buf = LineBuffer()
    buf.feed(b'abc')
    assert buf.next_line(510) is None
    buf.feed(b'\n')
    assert buf.next_line(510) == b'abc'
    assert buf.last_bare


def test_a_line_is_found_across_feeds():
    buf = LineBuffer()
    assert buf.next_line(510) is None
    buf.feed(b'NOOP')
    assert buf.next_line(510) is None
    buf.feed(b'\r\nQU')
    assert buf.next_line(510) == b'NOOP'
    assert buf.next_line(510) is None
    buf.feed(b'IT\n')
    assert buf.next_line(510) == b'QUIT'


def test_unread_puts_bytes_in_front_and_they_are_searched():
    buf = LineBuffer()
    buf.feed(b'later')
    assert buf.next_line(510) is None     # 'later' searched: no LF
    buf.unread(b'QUIT\r\n')
    assert buf.next_line(510) == b'QUIT'
    assert buf.next_line(510) is None
    buf.feed(b'\r\n')
    assert buf.next_line(510) == b'later'


def test_unread_of_a_partial_line_joins_the_buffered_bytes():
    buf = LineBuffer()
    buf.feed(b'LO x\r\n')
    buf.unread(b'EH')
    assert buf.next_line(510) == b'EHLO x'


def test_unread_nothing_is_a_no_op():
    buf = LineBuffer()
    buf.feed(b'ab')
    buf.unread(b'')
    assert buf.pending == 2
    assert buf.next_line(510) is None


def test_take_hands_over_everything_and_empties_the_buffer():
    buf = LineBuffer()
    buf.feed(b'DATA\r\nbody line\r\npartial')
    assert buf.next_line(510) == b'DATA'
    assert buf.next_line(510) == b'body line'
    assert buf.next_line(510) is None
    assert buf.take() == b'partial'
    assert buf.pending == 0
    assert buf.take() == b''
    buf.feed(b'x\n')            # the scan position was reset too
    assert buf.next_line(510) == b'x'


def test_discard_drops_buffered_bytes_and_returns_their_count():
    buf = LineBuffer()
    buf.feed(b'injected\r\nMAIL FROM:<a@b>\r\n')
    assert buf.discard() == len(b'injected\r\nMAIL FROM:<a@b>\r\n')
    assert buf.pending == 0
    assert buf.next_line(510) is None
    assert buf.discard() == 0
    buf.feed(b'EHLO x\r\n')
    assert buf.next_line(510) == b'EHLO x'


def test_discard_after_partial_scan_then_new_line_found():
    buf = LineBuffer()
    buf.feed(b'abcdef')
    assert buf.next_line(510) is None
    buf.discard()
    buf.feed(b'\n')
    assert buf.next_line(510) == b''


def test_last_bare_follows_the_last_returned_line():
    buf = LineBuffer()
    assert buf.last_bare is False
    buf.feed(b'a\nb\r\n')
    buf.next_line(510)
    assert buf.last_bare is True
    buf.next_line(510)
    assert buf.last_bare is False


@pytest.mark.parametrize('chunk', [
    b'MAIL FROM:<a@b>\r\n', b'x\n', b'\r\n', b'\n', b'a\rb\r\n', b'1234567\r\n',
    b'12345678\r\n', b'123456\n', b'1234567\n', b'a\r\nb\r\n', b'no end', b'',
])
def test_next_line_after_is_feed_then_next_line(chunk):
    fast, slow = LineBuffer(), LineBuffer()
    slow.feed(chunk)
    assert fast.next_line_after(chunk, 6) == slow.next_line(6)
    assert fast.last_bare == slow.last_bare
    assert fast.take() == slow.take()


@FAST
@given(chunks=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b'x', b'\n')), max_size=8),
       max_length=st.integers(min_value=0, max_value=8))
def test_next_line_after_equals_feed_then_next_line_for_any_input(chunks, max_length):
    """The one-line shortcut gives what feed() and next_line() give, however
    the input is cut, over-long lines and their skipped tails included."""
    fast, slow = LineBuffer(), LineBuffer()
    for chunk in chunks:
        slow.feed(chunk)
        got = fast.next_line_after(chunk, max_length)
        assert got == slow.next_line(max_length)
        if got is not None and got is not TOO_LONG:
            assert fast.last_bare == slow.last_bare
        while got is not None:      # what a reader does next: drain the buffer
            got = fast.next_line(max_length)
            assert got == slow.next_line(max_length)
    assert fast.take() == slow.take()


def _split(data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[i:j] for i, j in zip([0] + points, points + [len(data)], strict=True)]


_cmd_line = st.binary(max_size=14).map(lambda b: b.replace(b'\n', b''))


@FAST
@given(lines=st.lists(st.tuples(_cmd_line, st.booleans()), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_lines_property_any_split(lines, cuts):
    # a bare-LF line never ends in CR (that would make it a CRLF line)
    lines = [(line.rstrip(b'\r') if bare else line, bare) for line, bare in lines]
    data = b''.join(line + (b'\n' if bare else b'\r\n') for line, bare in lines)
    assert lines_of(_split(data, cuts), 100) == lines


@FAST
@given(lines=st.lists(st.tuples(_cmd_line, st.booleans()), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_over_long_lines_property_any_split(lines, cuts):
    max_length = 6
    lines = [(line.rstrip(b'\r') if bare else line, bare) for line, bare in lines]
    lines = [(line, bare) for line, bare in lines if bare or len(line) != max_length]
    data = b''.join(line + (b'\n' if bare else b'\r\n') for line, bare in lines)
    expected = [(TOO_LONG, None) if len(line) > max_length else (line, bare)
                for line, bare in lines]
    buf = LineBuffer()
    got = []
    for chunk in _split(data, cuts):
        buf.feed(chunk)
        got += drain_lines(buf, max_length)
    assert got == expected


# --- DataDecoder -------------------------------------------------------------
def decode(chunks, normalize=False):
    """Feed the chunks; return (body, rest, bare_newline). rest is None while
    the terminator has not been seen, else every byte that followed it."""
    dec = DataDecoder(normalize=normalize)
    body = []
    rest = None
    for chunk in chunks:
        out, after = dec.feed(chunk)
        body.append(out)
        if after is not None:
            rest = (rest or b'') + after
    return b''.join(body), rest, dec.bare_newline


# (name, wire bytes after the 354, body, rest, bare_newline)
DATA_CASES = [
    ('empty-message', b'.\r\n', b'', b'', False),
    ('one-line', b'hello\r\n.\r\n', b'hello\r\n', b'', False),
    ('two-lines-and-pipelined-rest', b'a\r\nb\r\n.\r\nQUIT\r\n', b'a\r\nb\r\n', b'QUIT\r\n', False),
    ('rest-without-newline', b'.\r\nrest', b'', b'rest', False),
    ('rest-holding-another-terminator', b'a\r\n.\r\n.\r\n', b'a\r\n', b'.\r\n', False),
    ('rest-holding-a-second-message', b'a\r\n.\r\nb\r\n.\r\n', b'a\r\n', b'b\r\n.\r\n', False),
    ('empty-lines', b'\r\n\r\n.\r\n', b'\r\n\r\n', b'', False),
    ('blank-first-line', b'\r\n.\r\n', b'\r\n', b'', False),
    ('stuffed-first-line', b'..x\r\n.\r\n', b'.x\r\n', b'', False),
    ('stuffed-dot-alone-first', b'..\r\n.\r\n', b'.\r\n', b'', False),
    ('stuffed-dot-alone-later', b'a\r\n..\r\n.\r\n', b'a\r\n.\r\n', b'', False),
    ('stuffed-three-dots', b'a\r\n...b\r\n.\r\n', b'a\r\n..b\r\n', b'', False),
    ('unstuffed-dot-removed', b'.x\r\n.\r\n', b'x\r\n', b'', False),        # RFC 5321 4.5.2
    ('dot-inside-line-kept', b'a.b\r\nc .\r\n.\r\n', b'a.b\r\nc .\r\n', b'', False),
    ('eight-bit-and-nul', b'\xff\x00\xe9\r\n.\r\n', b'\xff\x00\xe9\r\n', b'', False),
    ('terminator-after-long-line', b'x' * 40 + b'\r\n.\r\n', b'x' * 40 + b'\r\n', b'', False),
    # bare CR / LF: kept (or normalized) and flagged, never a line end
    ('bare-lf-in-line', b'a\nb\r\n.\r\n', b'a\nb\r\n', b'', True),
    ('bare-cr-in-line', b'a\rb\r\n.\r\n', b'a\rb\r\n', b'', True),
    ('mixed-bare', b'a\rb\nc\r\n.\r\n', b'a\rb\nc\r\n', b'', True),
    ('cr-cr-lf', b'a\r\r\n.\r\n', b'a\r\r\n', b'', True),
    ('lf-cr', b'a\n\r.\r\n', b'a\n\r.\r\n', None, True),
    # the smuggling forms: none of them ends the data
    ('smuggle-lf-dot-lf', b'a\n.\nMAIL FROM:<x@y>\r\n.\r\n', b'a\n.\nMAIL FROM:<x@y>\r\n', b'', True),
    ('smuggle-cr-dot-cr', b'a\r.\rMAIL\r\n.\r\n', b'a\r.\rMAIL\r\n', b'', True),
    ('smuggle-lf-dot-crlf', b'a\n.\r\nMAIL\r\n.\r\n', b'a\n.\r\nMAIL\r\n', b'', True),
    # '.\n' after CRLF: the line is '.<LF>MAIL', a period followed by other
    # characters, so its first character is deleted (RFC 5321 4.5.2)
    ('smuggle-crlf-dot-lf', b'a\r\n.\nMAIL\r\n.\r\n', b'a\r\n\nMAIL\r\n', b'', True),
    ('smuggle-crlf-dot-cr', b'a\r\n.\rMAIL\r\n.\r\n', b'a\r\n\rMAIL\r\n', b'', True),
    ('smuggle-crlf-dot-cr-crlf', b'a\r\n.\r\r\n.\r\n', b'a\r\n\r\r\n', b'', True),
    ('smuggle-at-start-lf-dot-lf', b'\n.\n.\r\n', b'\n.\n.\r\n', None, True),
    ('smuggle-at-start-dot-lf', b'.\nx\r\n.\r\n', b'\nx\r\n', b'', True),
    # unterminated: rest stays None; the held-back bytes never come out early
    ('unterminated-line', b'x\r\n', b'x\r\n', None, False),
    ('unterminated-dot', b'x\r\n.', b'x\r\n', None, False),
    ('unterminated-dot-cr', b'x\r\n.\r', b'x\r\n', None, False),
    ('unterminated-cr', b'x\r', b'x', None, False),
    ('unterminated-lf-dot-crlf', b'x\n.\r\n', b'x\n.\r\n', None, True),
    ('unterminated-cr-dot-crlf', b'x\r.\r\n', b'x\r.\r\n', None, True),
]

_BARE = re.compile(rb'\r\n|\r|\n')


def normalized(body: bytes) -> bytes:
    return _BARE.sub(b'\r\n', body)


@pytest.mark.parametrize('wire, body, rest, bare', [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_data_decoder_whole(wire, body, rest, bare):
    assert decode([wire]) == (body, rest, bare)


@pytest.mark.parametrize('wire, body, rest, bare', [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize('normalize', [False, True], ids=['keep', 'normalize'])
def test_data_decoder_every_pair_of_cut_points(wire, body, rest, bare, normalize):
    expected = (normalized(body) if normalize else body, rest, bare)
    n = len(wire)
    for i in range(n + 1):
        for j in range(i, n + 1):
            chunks = [wire[:i], wire[i:j], wire[j:]]
            assert decode(chunks, normalize) == expected, chunks


@pytest.mark.parametrize('wire, body, rest, bare', [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_data_decoder_byte_by_byte(wire, body, rest, bare):
    assert decode([wire[i:i + 1] for i in range(len(wire))]) == (body, rest, bare)


@pytest.mark.parametrize('wire, body', [
    (b'a\nb\r\n.\r\n', b'a\r\nb\r\n'),
    (b'a\rb\r\n.\r\n', b'a\r\nb\r\n'),
    (b'a\r\r\n.\r\n', b'a\r\n\r\n'),
    (b'a\n.\nb\r\n.\r\n', b'a\r\n.\r\nb\r\n'),
    (b'clean\r\n.\r\n', b'clean\r\n'),
])
def test_normalize_rewrites_bare_newlines_as_crlf(wire, body):
    got, rest, bare = decode([wire], normalize=True)
    assert got == body
    assert rest == b''
    assert bare == (wire != b'clean\r\n.\r\n')


def test_body_keeps_crlf_and_excludes_the_terminator():
    body, rest, _ = decode([b'Subject: x\r\n\r\nhi\r\n.\r\n'])
    assert body == b'Subject: x\r\n\r\nhi\r\n'
    assert not body.endswith(b'.\r\n')
    assert rest == b''


def test_complete_lines_come_out_without_waiting_for_the_next_packet():
    dec = DataDecoder()
    assert dec.feed(b'line one\r\n') == (b'line one\r\n', None)
    assert dec.feed(b'two\r\n') == (b'two\r\n', None)
    assert dec.feed(b'.\r\n') == (b'', b'')


def test_empty_chunk_changes_nothing():
    dec = DataDecoder()
    assert dec.feed(b'') == (b'', None)
    assert dec.feed(b'x\r\n.') == (b'x\r\n', None)
    assert dec.feed(b'') == (b'', None)
    assert dec.feed(b'\r\n') == (b'', b'')


def test_after_the_end_everything_is_rest():
    dec = DataDecoder()
    assert dec.feed(b'.\r\nNO') == (b'', b'NO')
    assert dec.done
    assert dec.feed(b'OP\r\n') == (b'', b'OP\r\n')
    assert dec.feed(b'') == (b'', b'')


def test_done_is_false_until_the_terminator():
    dec = DataDecoder()
    dec.feed(b'a\r\n.')
    assert not dec.done
    dec.feed(b'\r')
    assert not dec.done
    dec.feed(b'\n')
    assert dec.done


def test_bare_newline_stays_set_once_seen():
    dec = DataDecoder()
    dec.feed(b'a\nb\r\n')
    assert dec.bare_newline
    dec.feed(b'clean\r\n.\r\n')
    assert dec.bare_newline


@pytest.mark.parametrize('body, wire', [
    (b'', b''),
    (b'a\r\n', b'a\r\n'),
    (b'.a\r\n', b'..a\r\n'),
    (b'a\r\n.\r\n', b'a\r\n..\r\n'),
    (b'a\r\n..b\r\n', b'a\r\n...b\r\n'),
    (b'a\n.b\r\n', b'a\n.b\r\n'),       # a bare LF starts no line for the receiver
    (b'no end', b'no end\r\n'),          # the last line is completed
])
def test_dot_stuff(body, wire):
    assert dot_stuff(body) == wire


@pytest.mark.parametrize('cut', range(1, 18))
def test_dot_stuffer_gives_the_same_wire_however_the_body_is_cut(cut):
    body = b'.a\r\n.\r\nb\r\n..c\n.d'
    stuffer = DotStuffer()
    assert stuffer(body[:cut]) + stuffer(body[cut:]) + stuffer.end() == dot_stuff(body)


# random lines, some starting with '.', some holding bare CR/LF or a '.'
_line = st.one_of(
    st.binary(max_size=10),
    st.binary(max_size=6).map(lambda b: b'.' + b),
    st.sampled_from([b'.', b'..', b'.\r', b'.\n', b'\r.', b'\n.', b'\r\n.', b'.\r\n.']),
)


def _encode(lines, trailing):
    body = b''.join(line + b'\r\n' for line in lines)
    return body, dot_stuff(body) + b'.\r\n' + trailing


_chunks = _split


def _has_bare(body: bytes) -> bool:
    crlf = body.count(b'\r\n')
    return body.count(b'\r') != crlf or body.count(b'\n') != crlf


@FAST
@given(lines=st.lists(_line, max_size=10),
       trailing=st.binary(max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_decode_of_dot_stuffed_body_gives_it_back_for_any_split(lines, trailing, cuts):
    body, wire = _encode(lines, trailing)
    assert decode(_chunks(wire, cuts)) == (body, trailing, _has_bare(body))


@FAST
@given(lines=st.lists(_line, max_size=10),
       trailing=st.binary(max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_normalized_decode_equals_normalized_body_for_any_split(lines, trailing, cuts):
    body, wire = _encode(lines, trailing)
    got, rest, bare = decode(_chunks(wire, cuts), normalize=True)
    assert (got, rest, bare) == (normalized(body), trailing, _has_bare(body))


@FAST
@given(data=st.binary(max_size=60),
       cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_arbitrary_bytes_decode_the_same_for_any_split(data, cuts):
    assert decode(_chunks(data, cuts)) == decode([data])
