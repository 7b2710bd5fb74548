"""smtp_stack.inbox.store_wire: the frames between the SMTP process and its
store process, pure (no socket): any split of the byte stream gives the
same frames, and every field comes back as it went."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_stack.inbox.store_wire import (Frames, frame, message_head, read_message, read_reply,
                                         reply)

addresses = st.lists(st.text(min_size=1, max_size=30), max_size=4)
names = st.none() | st.text(max_size=20)


@given(seq=st.integers(1, 2**32 - 1), recipients=addresses, username=names, sender=names,
       raw=st.binary(max_size=300))
def test_a_message_comes_back_as_it_went(seq, recipients, username, sender, raw):
    data = message_head(seq, recipients, username, sender, len(raw)) + raw
    [payload] = Frames().feed(data)
    assert read_message(payload) == (seq, (raw, recipients, username, sender))


@given(payloads=st.lists(st.binary(max_size=200), max_size=8),
       cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_split_of_the_stream_gives_the_same_frames(payloads, cuts):
    stream = b''.join(frame(p) for p in payloads)
    frames, got, start = Frames(), [], 0
    for cut in sorted(set(c for c in cuts if c <= len(stream))) + [len(stream)]:
        got += frames.feed(stream[start:cut])
        start = cut
    assert got == payloads
    assert frames.pending == 0


def test_a_part_of_a_frame_waits_for_the_rest():
    frames = Frames()
    data = frame(b'hello') + frame(b'world')
    assert frames.feed(data[:7]) == []
    assert frames.pending == 7
    assert frames.feed(data[7:12]) == [b'hello']
    assert frames.feed(data[12:]) == [b'world']


@given(seq=st.integers(0, 2**32 - 1), deleted=st.integers(0, 2**32 - 1),
       error=st.text(max_size=100))
def test_a_reply_comes_back_as_it_went(seq, deleted, error):
    [payload] = Frames().feed(reply(seq, deleted, error, duplicate=seq % 2 == 1))
    assert read_reply(payload) == (seq, deleted, seq % 2 == 1,
                                   error.encode('utf-8', 'replace').decode())


def test_a_message_too_large_for_a_frame_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match='too large'):
        message_head(1, ['a@example.com'], None, 'b@example.com', 2**32)
