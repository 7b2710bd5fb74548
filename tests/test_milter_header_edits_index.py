"""What a milter's header requests cost on a long header section
(milter/mta_message.SentFields): found in the index of the first reading
without reading the spool again; past the index's budget, walked again
with the hub turning and within WALK_BUDGET; the index and the walk agree."""
from __future__ import annotations

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.addresses import Address
from smtp_stack.delivery.header_edits import client_message, top_block
from smtp_stack.milter import mta_message
from smtp_stack.milter import protocol as P
from smtp_stack.milter.mta_message import NAMES_BUDGET, SentFields, apply
from smtp_stack.session import Envelope
from smtp_stack.spool import Spool


class CountedSpool(Spool):
    """A spool that counts its readers: each is a reading of the section."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def open(self):
        self.readings += 1
        return super().open()


class Spooled:
    def __init__(self, data: bytes) -> None:
        self._spool = CountedSpool()
        self._spool.write(data)
        self._spool.finish()

    def spool(self) -> CountedSpool:
        return self._spool


def envelope_of(data: bytes) -> Envelope:
    envelope = Envelope()
    envelope.mail_from = Address('a@example.test')
    envelope.rcpt_to = [Address('b@mx.test')]
    envelope.data_stream = Spooled(data)        # type: ignore[assignment]
    return envelope


def shown(envelope: Envelope, budget: int = NAMES_BUDGET) -> SentFields:
    sent = SentFields(envelope, names_budget=budget)
    try:
        for _ in sent.fields():
            pass
        for _ in sent.body():
            pass
    finally:
        sent.close()
    return sent


def section(count: int, name: bytes = b'X-Filler') -> bytes:
    line = b'%s: %s\r\n' % (name, b'a' * 60)
    return b'From: a@example.test\r\n' + line * count + b'X-Last: l\r\n\r\nbody\r\n'


def test_requests_past_a_few_thousand_fields_read_the_spool_once():
    """rspamd deletes the names it adds, present or not: on 20,000 fields
    (1.4 MB), ten absent names, a field near the end changed and one
    inserted there cost no reading of the spool again (each was a reading
    of the whole section, on the hub, past 3,600 fields)."""
    envelope = envelope_of(section(20_000))
    sent = shown(envelope)
    requests = [(P.CHGHEADER, [1, f'X-Spam-{i}', '']) for i in range(10)]
    requests += [(P.CHGHEADER, [1, 'x-last', 'changed']),
                 (P.CHGHEADER, [19_999, 'X-Filler', '']),
                 (P.INSHEADER, [20_001, 'X-Before-Last', 'b'])]
    warn: list[str] = []
    apply(requests, envelope, sent, 'milter t', warn)
    assert warn == [] and envelope.data_stream.spool().readings == 1
    out = top_block(envelope) + b''.join(client_message([section(20_000)], envelope))
    assert out.count(b'X-Filler: ') == 19_999
    assert out.endswith(b'X-Filler: ' + b'a' * 60 + b'\r\nX-Before-Last: b\r\n'
                        b'x-last: changed\r\n\r\nbody\r\n')


def test_past_the_index_budget_the_walks_stop_at_the_walk_budget(monkeypatch):
    """Without the index (names_budget 0 stands for a section past it),
    the bytes walked again are bounded per milter and message: the
    request past them is not applied, and said so."""
    monkeypatch.setattr(mta_message, 'WALK_BUDGET', 2 << 20)
    data = section(20_000)                                  # 1.4 MB walked per request
    envelope = envelope_of(data)
    sent = shown(envelope, budget=0)
    warn: list[str] = []
    apply([(P.CHGHEADER, [1, 'X-Last', 'first']), (P.CHGHEADER, [1, 'X-Last', 'second']),
           (P.CHGHEADER, [1, 'X-Absent', ''])], envelope, sent, 'milter t', warn)
    assert warn == [f'SMFIR_CHGHEADER not applied: more than {2 << 20} bytes of header '
                    'section walked for this milter'] * 2
    out = b''.join(client_message([data], envelope))
    assert out.endswith(b'\r\nX-Last: first\r\n\r\nbody\r\n')


def test_the_hub_turns_during_a_walk():
    envelope = envelope_of(section(20_000))
    sent = shown(envelope, budget=0)
    turns = []

    def other() -> None:
        while True:
            turns.append(1)
            gevent.sleep(0)

    ticker = gevent.spawn(other)
    warn: list[str] = []
    work = gevent.spawn(apply, [(P.CHGHEADER, [1, 'X-Absent', ''])], envelope, sent,
                        'milter t', warn)
    try:
        work.get(timeout=60)
    finally:
        ticker.kill(timeout=5)
    assert warn == [] and len(turns) >= 1_400_000 // mta_message.WALK_TURN


NAMES = ['A', 'b', 'C', 'Received', 'D']
field_names = st.sampled_from(NAMES)
requests = st.lists(st.one_of(
    st.tuples(st.just(P.ADDHEADER), st.tuples(field_names, st.just('n'))),
    st.tuples(st.just(P.INSHEADER), st.tuples(st.integers(0, 12), field_names, st.just('i'))),
    st.tuples(st.just(P.CHGHEADER), st.tuples(st.integers(0, 4), field_names,
                                              st.sampled_from(['', 'c'])))), max_size=5)


@settings(max_examples=300, deadline=None)
@given(client=st.lists(st.sampled_from(NAMES[:4]), max_size=8),
       added=st.lists(st.sampled_from(NAMES[:3]), max_size=2), remove=st.booleans(),
       milters=st.lists(requests, min_size=1, max_size=3))
def test_the_index_and_the_walk_agree(client, added, remove, milters):
    """Every request, from the index and from the spool read again: the
    same fields shown to each milter, the same message delivered."""
    data = b''.join(b'%s: v%d\r\n' % (name.encode(), i) for i, name in enumerate(client))
    data += b'\r\nbody\r\n'

    def run(budget: int) -> tuple[list[list[tuple[str, str]]], bytes]:
        envelope = envelope_of(data)
        for number, name in enumerate(added):
            envelope.add_header(name, f'added{number}')
        if remove:
            envelope.remove_header('b')
        seen = []
        for number, changes in enumerate(milters):
            sent = SentFields(envelope, names_budget=budget)
            try:
                seen.append(list(sent.fields()))
                b''.join(sent.body())
            finally:
                sent.close()
            apply([(letter, [*fields[:-1], f'{fields[-1]}{number}' if fields[-1] else ''])
                   for letter, fields in changes], envelope, sent, 'm', [])
        return seen, top_block(envelope) + b''.join(client_message([data], envelope))

    assert run(NAMES_BUDGET) == run(0)


@pytest.mark.parametrize('budget', [NAMES_BUDGET, 0])
def test_a_deleted_field_is_not_found_again(budget):
    """The index forgets a field a request deleted: the next request for
    the first of its name finds the one after it."""
    data = b'A: 1\r\nB: x\r\nA: 2\r\nA: 3\r\n\r\nbody\r\n'
    envelope = envelope_of(data)
    sent = shown(envelope, budget)
    apply([(P.CHGHEADER, [1, 'a', '']), (P.CHGHEADER, [1, 'A', 'two']),
           (P.INSHEADER, [3, 'C', 'c'])], envelope, sent, 'm', [])
    out = b''.join(client_message([data], envelope))
    assert out == b'B: x\r\nA: two\r\nC: c\r\nA: 3\r\n\r\nbody\r\n'
