"""smtp_stack.stream.DataStream over a fake `pull` (a list of pieces, then None)."""
from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.errors import ClientDisconnected, MessageRefused, SmtpError
from smtp_stack.framing import DataDecoder
from smtp_stack.stream import DataStream

FAST = settings(max_examples=150, deadline=None)


class FakePull:
    """Hands out the pieces, then None; pulling past the end is a test failure."""

    def __init__(self, pieces, log=None):
        self.pieces = list(pieces)
        self.calls = 0
        self.log = log

    def __call__(self):
        self.calls += 1
        if self.log is not None:
            self.log.append('pull')
        if self.pieces is None:
            raise AssertionError('pulled again after the end')
        if not self.pieces:
            self.pieces = None
            return None
        return self.pieces.pop(0)


def stream(pieces, **kw) -> DataStream:
    return DataStream(FakePull(pieces), **kw)


PIECES = [b'Subject: hi\r\n', b'', b'\r\nline one\r\nli', b'ne two\r\n', b'end']
WHOLE = b''.join(PIECES)


def test_is_a_readable_binary_file():
    s = stream([])
    assert isinstance(s, io.BufferedIOBase)
    assert s.readable()


def test_read_all():
    s = stream(PIECES)
    assert s.read() == WHOLE
    assert s.read() == b''
    assert s.finished
    assert s.bytes_read == len(WHOLE)


@pytest.mark.parametrize('size', [None, -1])
def test_read_all_spellings(size):
    assert stream(PIECES).read(size) == WHOLE


def test_read_empty_body():
    s = stream([])
    assert s.read() == b''
    assert s.read(10) == b''
    assert s.readline() == b''
    assert s.read1() == b''
    assert s.finished


@pytest.mark.parametrize('size', [1, 2, 3, 5, 7, 13, 14, 100])
def test_read_n_across_pieces(size):
    s = stream(PIECES)
    out = []
    while True:
        part = s.read(size)
        if not part:
            break
        out.append(part)
    assert b''.join(out) == WHOLE
    # every read but the last returns exactly `size` bytes (pieces are joined)
    assert all(len(p) == size for p in out[:-1])
    assert 0 < len(out[-1]) <= size


def test_read_zero_pulls_nothing():
    s = stream(PIECES)
    assert s.read(0) == b''
    assert s._pull.calls == 0


def test_read_after_partial_read_returns_the_rest():
    s = stream([b'abcdef', b'gh'])
    assert s.read(2) == b'ab'
    assert s.read() == b'cdefgh'


def test_read1_returns_at_most_one_piece():
    s = stream([b'abc', b'', b'defg'])
    assert s.read1() == b'abc'
    assert s.read1(2) == b'de'
    assert s.read1(-1) == b'fg'
    assert s.read1() == b''


def test_read1_size_smaller_than_piece():
    s = stream([b'abcdef'])
    assert s.read1(4) == b'abcd'
    assert s.read1(4) == b'ef'
    assert s.read1(4) == b''


def test_readinto_fills_across_pieces():
    s = stream([b'ab', b'cde', b'f'])
    buf = bytearray(4)
    assert s.readinto(buf) == 4
    assert buf == b'abcd'
    assert s.readinto(buf) == 2
    assert buf[:2] == b'ef'
    assert s.readinto(buf) == 0


def test_readinto_memoryview_and_empty_buffer():
    s = stream([b'xyz'])
    assert s.readinto(bytearray()) == 0
    target = bytearray(5)
    assert s.readinto(memoryview(target)[1:]) == 3
    assert target == b'\x00xyz\x00'


def test_readinto1_reads_at_most_one_piece():
    s = stream([b'ab', b'cde'])
    buf = bytearray(10)
    assert s.readinto1(buf) == 2
    assert buf[:2] == b'ab'
    assert s.readinto1(buf) == 3
    assert buf[:3] == b'cde'
    assert s.readinto1(buf) == 0
    assert s.readinto1(bytearray()) == 0


def test_readinto1_smaller_buffer():
    s = stream([b'abcdef'])
    buf = bytearray(4)
    assert s.readinto1(buf) == 4 and buf == b'abcd'
    assert s.readinto1(buf) == 2 and buf[:2] == b'ef'


# (pieces, limit, expected lines from repeated readline(limit))
READLINE = [
    ([b'a\r\nb\r\n'], -1, [b'a\r\n', b'b\r\n']),
    ([b'a\r', b'\nb', b'c\r\n', b'tail'], -1, [b'a\r\n', b'bc\r\n', b'tail']),
    ([b'one line spanning ', b'', b'three ', b'pieces\n'], None, [b'one line spanning three pieces\n']),
    ([b'\n\n'], -1, [b'\n', b'\n']),
    ([b'abcdef\n'], 4, [b'abcd', b'ef\n']),
    ([b'ab', b'cd', b'ef\n'], 3, [b'abc', b'def', b'\n']),
    ([b'ab\ncd\n'], 3, [b'ab\n', b'cd\n']),
    ([b'ab\n'], 3, [b'ab\n']),
    ([b'abc\n'], 3, [b'abc', b'\n']),
    ([b'no newline at all'], -1, [b'no newline at all']),
    ([b'x', b'y', b'z'], 2, [b'xy', b'z']),
]


@pytest.mark.parametrize('pieces, limit, lines', READLINE)
def test_readline(pieces, limit, lines):
    s = stream(pieces)
    got = []
    while True:
        line = s.readline(limit)
        if not line:
            break
        got.append(line)
    assert got == lines


def test_readline_zero():
    s = stream([b'abc\n'])
    assert s.readline(0) == b''
    assert s.readline() == b'abc\n'


def test_readline_then_read():
    s = stream([b'Subject: x\r\n\r\nbody', b' more'])
    assert s.readline() == b'Subject: x\r\n'
    assert s.read(2) == b'\r\n'
    assert s.read() == b'body more'


def test_iteration_yields_lines():
    s = stream(PIECES)
    assert list(s) == [b'Subject: hi\r\n', b'\r\n', b'line one\r\n', b'line two\r\n', b'end']


def test_readlines():
    assert stream([b'a\nb', b'\nc']).readlines() == [b'a\n', b'b\n', b'c']


# --- limit --------------------------------------------------------------------
TOO_BIG = (552, 'Error: message exceeds fixed maximum message size', '5.3.4')

# (pieces, limit, seen, pulled): what the reader sees before the refusal (the
# whole body when it is within the limit) and the bytes pulled when the server
# knows (None: not refused). The piece crossing the limit is never handed out.
LIMITS = [
    ([b'abc', b'def', b'gh'], 0, b'abcdefgh', None),         # 0: no limit
    ([b'abc', b'def', b'gh'], 8, b'abcdefgh', None),         # exactly the limit
    ([b'abc', b'def', b'gh'], 100, b'abcdefgh', None),
    ([b'abc', b'def', b'gh'], 7, b'abcdef', 8),
    ([b'abc', b'def', b'gh'], 6, b'abcdef', 8),              # at a piece boundary
    ([b'abc', b'def', b'gh'], 4, b'abc', 6),
    ([b'abc', b'def', b'gh'], 3, b'abc', 6),                 # at a piece boundary
    ([b'abc', b'def', b'gh'], 1, b'', 3),
    ([b'abcdefgh'], 5, b'', 8),
    ([b'abc', b'', b'def'], 6, b'abcdef', None),
]

READERS = {
    'read': lambda s: s.read(), 'read n': lambda s: s.read(2), 'read1': lambda s: s.read1(),
    'readline': lambda s: s.readline(), 'readinto': lambda s: s.readinto(bytearray(4)),
    'readinto1': lambda s: s.readinto1(bytearray(4)), 'iter': lambda s: next(iter(s)),
    'readlines': lambda s: s.readlines(),
}


def assert_refused_on_every_read(s, refused):
    """Every reader raises the same MessageRefused again."""
    for name, reader in READERS.items():
        with pytest.raises(MessageRefused) as again:
            reader(s)
        assert again.value is refused, name


@pytest.mark.parametrize('pieces, limit, seen, pulled', LIMITS)
def test_limit_read_all(pieces, limit, seen, pulled):
    s = stream(pieces, limit=limit)
    if pulled is None:
        assert s.read() == seen
        assert not s.size_exceeded and s.refused is None
        assert s.bytes_read == sum(map(len, pieces))       # counts everything
        assert s.finished and s.acceptable
        assert s.read() == b''
        return
    with pytest.raises(MessageRefused) as refused:
        s.read()
    assert refused.value.reply == TOO_BIG
    assert s.size_exceeded and s.refused is refused.value
    assert s.bytes_read == pulled and not s.finished      # known at the piece crossing the limit
    assert_refused_on_every_read(s, refused.value)
    s.drain()                                             # what the server does after the chain
    assert s.bytes_read == sum(map(len, pieces))          # counts everything
    assert s.finished and not s.acceptable
    assert_refused_on_every_read(s, refused.value)


@pytest.mark.parametrize('pieces, limit, seen, pulled', LIMITS)
def test_limit_read_in_small_steps(pieces, limit, seen, pulled):
    s = stream(pieces, limit=limit)
    out = []
    with pytest.raises(MessageRefused) if pulled is not None else contextlib.nullcontext() as refused:
        while True:
            part = s.read(2)
            if not part:
                break
            out.append(part)
    if pulled is None:
        assert b''.join(out) == seen
        assert not s.size_exceeded and s.refused is None
        assert s.bytes_read == sum(map(len, pieces))
        return
    # a read(2) that needs a byte of the refused piece raises, and returns
    # nothing of what it had taken: only whole steps of 2 come out
    assert b''.join(out) == seen[:len(seen) - len(seen) % 2]
    assert refused.value.reply == TOO_BIG
    assert s.size_exceeded and s.refused is refused.value
    assert s.bytes_read == pulled
    assert_refused_on_every_read(s, refused.value)


def test_size_exceeded_is_set_when_the_limit_is_crossed():
    s = stream([b'abc', b'defg', b'h'], limit=5)
    assert s.read(3) == b'abc'
    assert not s.size_exceeded and s.refused is None
    with pytest.raises(MessageRefused) as refused:
        s.read(3)                    # 'defg' crosses the limit: none of it is read
    assert refused.value.reply == TOO_BIG
    assert isinstance(refused.value, SmtpError)
    assert s.size_exceeded and s.refused is refused.value and s.bytes_read == 7
    with pytest.raises(MessageRefused) as again:
        s.read()
    assert again.value is refused.value


def test_limit_with_readline_and_readinto():
    s = stream([b'line1\n', b'line2\n', b'line3\n'], limit=8)
    assert s.readline() == b'line1\n'
    with pytest.raises(MessageRefused) as refused:
        s.readline()
    assert refused.value.reply == TOO_BIG
    buf = bytearray(4)
    with pytest.raises(MessageRefused) as again:
        s.readinto(buf)
    assert again.value is refused.value and buf == bytearray(4)
    assert s.size_exceeded and s.bytes_read == 12       # nothing pulled after the refusal
    s.drain()
    assert s.finished and s.bytes_read == 18
    assert_refused_on_every_read(s, refused.value)


# --- drain --------------------------------------------------------------------
def test_drain_discards_what_nobody_read():
    s = stream([b'abc', b'def', b'ghi'])
    assert s.read(4) == b'abcd'
    s.drain()
    assert s.finished
    assert s.bytes_read == 9
    assert s.read() == b''


def test_drain_of_unread_stream_reads_to_the_end():
    pull = FakePull([b'a' * 10, b'b' * 10])
    s = DataStream(pull, limit=5)
    s.drain()
    assert s.finished and s.size_exceeded and s.bytes_read == 20
    assert pull.calls == 3


def test_drain_after_end_does_not_pull_again():
    s = stream([b'x'])
    assert s.read() == b'x'
    s.drain()
    s.drain()
    assert s.finished


# --- on_first_read / start ------------------------------------------------------
def test_on_first_read_runs_once_before_the_first_pull():
    log = []
    s = DataStream(FakePull([b'ab', b'cd'], log), on_first_read=lambda: log.append('354'))
    assert not s.started
    assert log == []
    assert s.read(1) == b'a'
    assert log == ['354', 'pull']
    assert s.started
    s.read()
    assert log.count('354') == 1
    assert log[0] == '354'


@pytest.mark.parametrize('first', ['read', 'read1', 'readline', 'readinto', 'readinto1',
                                   'drain', 'iter'])
def test_every_reader_triggers_on_first_read(first):
    log = []
    s = DataStream(FakePull([b'x\n'], log), on_first_read=lambda: log.append('354'))
    buf = bytearray(4)
    {'read': lambda: s.read(), 'read1': lambda: s.read1(), 'readline': lambda: s.readline(),
     'readinto': lambda: s.readinto(buf), 'readinto1': lambda: s.readinto1(buf),
     'drain': lambda: s.drain(), 'iter': lambda: list(s)}[first]()
    assert log[:2] == ['354', 'pull']
    assert log.count('354') == 1


def test_start_runs_on_first_read_once():
    calls = []
    s = stream([b'x'], on_first_read=lambda: calls.append(1))
    s.start()
    assert s.started and calls == [1]
    s.start()
    assert s.read() == b'x'
    assert calls == [1]


def test_without_on_first_read_the_stream_counts_as_started():
    s = stream([b'x'])
    assert s.started
    s.start()
    assert s.read() == b'x'


def test_on_first_read_error_propagates_and_nothing_is_pulled():
    def refuse():
        raise RuntimeError('no 354')
    pull = FakePull([b'x'])
    s = DataStream(pull, on_first_read=refuse)
    with pytest.raises(RuntimeError, match='no 354'):
        s.read()
    assert pull.calls == 0


# --- errors from pull -----------------------------------------------------------
def test_exception_from_pull_reaches_the_reader():
    pieces = [b'partial ']

    def pull():
        if pieces:
            return pieces.pop()
        raise ClientDisconnected('client closed the connection')
    s = DataStream(pull)
    assert s.read(8) == b'partial '
    with pytest.raises(ClientDisconnected):
        s.read()
    assert not s.finished


@pytest.mark.parametrize('reader', ['read', 'readline', 'read1', 'drain'])
def test_exception_from_pull_in_every_reader(reader):
    def pull():
        raise ClientDisconnected('gone')
    s = DataStream(pull)
    with pytest.raises(ClientDisconnected):
        getattr(s, reader)()


# --- decoder-facing properties ---------------------------------------------------
def decoding(dec, wire):
    """A pull that decodes the DATA wire pieces as they are pulled, as the server's does."""
    wire = list(wire)

    def pull():
        if dec.done:
            return None
        body, _ = dec.feed(wire.pop(0))
        return body
    return pull


BARE = [b'one\r\n', b'two\nthree\r\n', b'four\r\n.\r\n']


def test_bare_newline_and_acceptable():
    dec = DataDecoder()
    s = DataStream(decoding(dec, [b'one\r\n', b'two\r\n.\r\n']), decoder=dec)
    assert not s.bare_newline
    assert not s.acceptable            # not finished yet
    assert s.read() == b'one\r\ntwo\r\n'
    assert s.finished and s.acceptable and s.refused is None
    dec.bare_newline = True
    assert s.bare_newline


def test_bare_newline_refuses_from_the_piece_that_holds_it():
    dec = DataDecoder()
    s = DataStream(decoding(dec, BARE), decoder=dec)
    assert s.readline() == b'one\r\n'
    assert not s.bare_newline and s.refused is None
    with pytest.raises(MessageRefused) as refused:
        s.readline()                   # the piece with the bare LF is never handed out
    assert refused.value.reply == (554, 'Error: bare <CR> or <LF> in message content', '5.6.0')
    assert s.bare_newline and s.refused is refused.value
    assert not s.acceptable and not s.size_exceeded
    assert_refused_on_every_read(s, refused.value)
    s.drain()
    assert s.finished and not s.acceptable
    assert_refused_on_every_read(s, refused.value)


def test_bare_newline_normalized_is_acceptable():
    dec = DataDecoder(normalize=True)
    s = DataStream(decoding(dec, BARE), decoder=dec)
    assert s.read() == b'one\r\ntwo\r\nthree\r\nfour\r\n'
    assert s.bare_newline
    assert s.finished and s.acceptable and s.refused is None


def test_acceptable_is_false_when_size_exceeded():
    s = stream([b'abcdef'], limit=3)
    with pytest.raises(MessageRefused) as refused:
        s.read()
    assert refused.value.reply == TOO_BIG
    assert not s.acceptable
    s.drain()
    assert s.finished and not s.acceptable and s.refused is refused.value


def test_no_decoder_means_no_bare_newline():
    s = stream([b'a\nb'])
    s.read()
    assert not s.bare_newline
    assert s.acceptable


# --- property: any mix of readers gives back the body ------------------------------
_op = st.one_of(
    st.tuples(st.just('read'), st.integers(min_value=1, max_value=9)),
    st.tuples(st.just('read1'), st.integers(min_value=-1, max_value=9)),
    st.tuples(st.just('readline'), st.integers(min_value=-1, max_value=9)),
    st.tuples(st.just('readinto'), st.integers(min_value=0, max_value=9)),
    st.tuples(st.just('readinto1'), st.integers(min_value=0, max_value=9)),
)


@FAST
@given(pieces=st.lists(st.binary(max_size=10).map(lambda b: b.replace(b'x', b'\n')), max_size=8),
       ops=st.lists(_op, max_size=20),
       limit=st.integers(min_value=0, max_value=40))
def test_mixed_reads_give_back_the_body(pieces, ops, limit):
    s = stream(pieces, limit=limit)
    whole = b''.join(pieces)
    # the piece that crosses the limit, if one does: the refusal comes with it
    crossing, total = None, 0
    for i, piece in enumerate(pieces):
        total += len(piece)
        if limit and total > limit:
            crossing = i
            break
    out = []
    with pytest.raises(MessageRefused) if crossing is not None else contextlib.nullcontext() as refused:
        for name, n in ops:
            if name in ('readinto', 'readinto1'):
                buf = bytearray(n)
                got = getattr(s, name)(buf)
                out.append(bytes(buf[:got]))
            else:
                out.append(getattr(s, name)(n))
        out.append(s.read())
    assert s.size_exceeded == (crossing is not None)
    if crossing is None:
        assert b''.join(out) == whole
        assert s.bytes_read == len(whole)
        assert s.refused is None and s.acceptable
        return
    before = b''.join(pieces[:crossing])
    # nothing of the crossing piece or after it; the read that raised keeps
    # what it had taken of `before`
    assert before.startswith(b''.join(out))
    assert refused.value.reply == TOO_BIG and s.refused is refused.value
    assert s.bytes_read == len(before) + len(pieces[crossing])
    assert_refused_on_every_read(s, refused.value)
    s.drain()
    assert s.bytes_read == len(whole) and not s.acceptable
