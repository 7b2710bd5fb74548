"""Where a milter's header fields go, and as what (delivery/header_edits.py,
milter/mta_message.SentFields and apply): Postfix's cleanup appends an
ADDHEADER field after the last field, inserts an INSHEADER field at its
index (its own Received counted first), changes a field in place, and
keeps the value as the milter wrote it. Pure: a spooled message in, the
bytes the deliveries write out."""
from __future__ import annotations

import io
import tracemalloc

import pytest

from smtp_stack.addresses import Address
from smtp_stack.delivery.header_edits import (HeaderEdits, client_message, edits_of,
                                              field_line, top_block)
from smtp_stack.headers import fold
from smtp_stack.milter import protocol as P
from smtp_stack.milter.mta_message import NAMES_BUDGET, SentFields, apply
from smtp_stack.session import Envelope
from smtp_stack.spool import Spool

MESSAGE = (b'From: a@example.test\r\nTo: b@mx.test\r\nSubject: hi\r\n'
           b'X-Drop: forged\r\n\r\nbody\r\n')
RECEIVED = b'Received: by mx.test\r\n'


class Spooled:
    """What Envelope.spool() asks of its data stream: the body, spooled."""

    def __init__(self, data: bytes) -> None:
        self._spool = Spool()
        self._spool.write(data)
        self._spool.finish()

    def spool(self) -> Spool:
        return self._spool


def envelope_of(data: bytes = MESSAGE) -> Envelope:
    envelope = Envelope()
    envelope.mail_from = Address('a@example.test')
    envelope.rcpt_to = [Address('b@mx.test'), Address('c@mx.test')]
    envelope.data_stream = Spooled(data)        # type: ignore[assignment]
    return envelope


@pytest.fixture(autouse=True, params=['names kept', 'read again'])
def walks(request):
    """Each test twice: the requests find the client's fields in the index
    kept from the first reading, and in the spool read again (a section
    whose index is past its budget)."""
    global NAMES
    NAMES = NAMES_BUDGET if request.param == 'names kept' else 0
    yield
    NAMES = NAMES_BUDGET


NAMES = NAMES_BUDGET


def shown(envelope: Envelope) -> tuple[SentFields, list[tuple[str, str]], bytes]:
    """What a milter is shown: the fields, the body."""
    sent = SentFields(envelope, names_budget=NAMES)
    try:
        fields = list(sent.fields())
        body = b''.join(sent.body())
    finally:
        sent.close()
    return sent, fields, body


def milter(envelope: Envelope, *changes: tuple[str, list], space: str = ' ') -> list[str]:
    """One milter's turn: shown the message, its requests applied."""
    sent, _, _ = shown(envelope)
    warn: list[str] = []
    apply(list(changes), envelope, sent, 'milter t', warn, space)
    return warn


def written(envelope: Envelope, data: bytes = MESSAGE) -> bytes:
    """The message as a delivery writes it (less Return-Path), this
    server's Received between the fields on top and the client's."""
    return top_block(envelope) + RECEIVED + b''.join(client_message([data], envelope))


def test_addheader_goes_after_the_last_field_with_its_folding_as_sent():
    envelope = envelope_of()
    milter(envelope, (P.ADDHEADER, ['X-Signed', 'v=1;\n\tb=AbC\n d=x']))
    assert written(envelope) == (RECEIVED + MESSAGE[:-8]
                                 + b'X-Signed: v=1;\r\n\tb=AbC\r\n d=x\r\n\r\nbody\r\n')


def test_the_leading_space_is_the_milters_when_it_keeps_it():
    envelope = envelope_of()
    milter(envelope, (P.ADDHEADER, ['X-A', '  two spaces']), space='')
    assert b'\r\nX-A:  two spaces\r\n\r\n' in written(envelope)


@pytest.mark.parametrize('index, where', [
    (0, b'X-New: 1\r\n' + RECEIVED + b'From'),          # above Received (Postfix's own first)
    (1, RECEIVED + b'X-New: 1\r\nFrom'),                # below it, above the first shown
    (3, b'To: b@mx.test\r\nX-New: 1\r\nSubject'),       # before the third field as delivered
    (99, b'X-Drop: forged\r\nX-New: 1\r\n\r\n'),         # past the end: appended
])
def test_insheader_counts_this_servers_received_as_postfix_does(index, where):
    envelope = envelope_of()
    milter(envelope, (P.INSHEADER, [index, 'X-New', '1']))
    assert where in written(envelope)


def test_insheader_among_the_fields_this_server_added():
    envelope = envelope_of()
    envelope.add_header('X-Old', '1')
    envelope.add_header('X-Newer', '2')             # on top of X-Old
    milter(envelope, (P.INSHEADER, [1, 'X-Mid', 'm']), (P.INSHEADER, [0, 'X-Top', 't']))
    envelope.add_header('X-Later', '3')             # added after the milter: on top of all
    assert written(envelope).startswith(b'X-Later: 3\r\nX-Top: t\r\nX-Newer: 2\r\nX-Mid: m\r\n'
                                        b'X-Old: 1\r\n' + RECEIVED + b'From:')


def test_chgheader_changes_and_deletes_in_place():
    envelope = envelope_of()
    warn = milter(envelope, (P.CHGHEADER, [1, 'subject', 'new\n\tline']),
                  (P.CHGHEADER, [1, 'X-Drop', '']), (P.CHGHEADER, [2, 'To', '']),
                  (P.CHGHEADER, [1, 'X-Absent', 'added']))
    assert warn == []
    assert written(envelope) == (RECEIVED + b'From: a@example.test\r\nTo: b@mx.test\r\n'
                                 b'subject: new\r\n\tline\r\nX-Absent: added\r\n\r\nbody\r\n')


def test_a_later_milter_sees_and_changes_an_earlier_ones_fields():
    envelope = envelope_of()
    milter(envelope, (P.ADDHEADER, ['X-One', 'first']), (P.INSHEADER, [0, 'X-Top', 'one']))
    _, fields, body = shown(envelope)
    assert fields == [('X-Top', ' one'), ('From', ' a@example.test'), ('To', ' b@mx.test'),
                      ('Subject', ' hi'), ('X-Drop', ' forged'), ('X-One', ' first')]
    assert body == b'body\r\n'
    assert milter(envelope, (P.CHGHEADER, [1, 'X-One', 'second']),
                  (P.CHGHEADER, [1, 'X-Top', ''])) == []
    assert written(envelope) == RECEIVED + MESSAGE[:-8] + b'X-One: second\r\n\r\nbody\r\n'


def test_fields_another_policy_added_are_changed_and_deleted_in_place():
    """As Postfix's later milters change the fields Postfix added before them."""
    envelope = envelope_of()
    envelope.add_header('X-Ours', 'old')
    envelope.add_header('X-Mid', 'm')
    envelope.add_header('X-Ours', 'newer')          # on top: the first X-Ours shown
    warn = milter(envelope, (P.CHGHEADER, [2, 'X-Ours', 'changed']),
                  (P.CHGHEADER, [1, 'x-mid', '']))
    assert warn == []
    assert written(envelope).startswith(b'X-Ours: newer\r\nX-Ours: changed\r\n' + RECEIVED)
    # A later milter sees it so, and may change it again; add_header after it goes on top.
    _, fields, _ = shown(envelope)
    assert fields[:2] == [('X-Ours', ' newer'), ('X-Ours', ' changed')]
    milter(envelope, (P.CHGHEADER, [1, 'X-Ours', '']), (P.INSHEADER, [1, 'X-Ins', 'i']))
    envelope.add_header('X-Last', 'l')
    assert written(envelope).startswith(b'X-Last: l\r\nX-Ours: changed\r\nX-Ins: i\r\n'
                                        + RECEIVED + b'From:')


def test_a_field_placed_between_added_ones_stays_there_when_one_below_goes():
    envelope = envelope_of()
    for name in ('X-A1', 'X-A2', 'X-A3'):
        envelope.add_header(name, '1')
    milter(envelope, (P.CHGHEADER, [1, 'X-A1', '']), (P.INSHEADER, [1, 'X-P', 'p']))
    assert written(envelope).startswith(b'X-A3: 1\r\nX-P: p\r\nX-A2: 1\r\n' + RECEIVED)


def test_remove_header_takes_the_clients_fields_and_leaves_the_milters():
    envelope = envelope_of()
    milter(envelope, (P.INSHEADER, [2, 'X-Drop', 'the milter says']))
    envelope.remove_header('X-Drop')            # after the milter, as an outer policy would
    assert written(envelope) == (RECEIVED + b'From: a@example.test\r\n'
                                 b'X-Drop: the milter says\r\nTo: b@mx.test\r\n'
                                 b'Subject: hi\r\n\r\nbody\r\n')


def test_a_field_removed_before_the_milter_is_not_shown_nor_counted():
    envelope = envelope_of()
    envelope.remove_header('To')
    _, fields, _ = shown(envelope)
    assert [name for name, _ in fields] == ['From', 'Subject', 'X-Drop']
    milter(envelope, (P.INSHEADER, [2, 'X-New', '1']))      # before the 2nd shown: Subject
    assert b'From: a@example.test\r\nX-New: 1\r\nSubject: hi\r\n' in written(envelope)


def test_fields_after_a_line_that_is_no_field_are_still_removed():
    data = b'From: a@example.test\r\nnot a field\r\nX-Drop: forged\r\n\r\nbody\r\n'
    envelope = envelope_of(data)
    envelope.remove_header('X-Drop')
    milter(envelope, (P.ADDHEADER, ['X-New', '1']))
    assert written(envelope, data) == (RECEIVED + b'From: a@example.test\r\nX-New: 1\r\n'
                                       b'not a field\r\n\r\nbody\r\n')


def test_changes_apply_past_a_mebibyte_of_header_section_without_holding_it():
    """As Postfix's cleanup, which looks for a field in its queue file at
    each request: an index of the fields is kept (their numbers per name,
    within NAMES_BUDGET), or the section is read again from the spool;
    never held whole."""
    count = 1200                                    # about 1.2 MB of fields
    value = b'v' * 490 + b'\r\n\t' + b'w' * 490
    data = b''.join(b'X-F%04d: %s\r\n' % (i, value) for i in range(count)) + b'\r\nbody\r\n'
    envelope = envelope_of(data)
    milter(envelope, (P.INSHEADER, [3, 'X-Early', 'e']))
    sent = SentFields(envelope, names_budget=NAMES)
    try:
        for _ in sent.fields():                     # shown, as a milter is, not kept
            pass
        tracemalloc.start()
        try:
            warn: list[str] = []
            apply([(P.CHGHEADER, [1, 'X-F1190', 'changed']), (P.CHGHEADER, [1, 'x-f1195', '']),
                   (P.INSHEADER, [count - 1, 'X-Late', 'l']),      # X-F1195 gone, X-Early in
                   (P.CHGHEADER, [1, 'X-Early', 'moved on']), (P.ADDHEADER, ['X-Last', 'l'])],
                  envelope, sent, 'milter t', warn)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        sent.close()
    assert warn == [] and (sent.names is None) == (NAMES == 0)
    assert peak < 300_000, peak                     # the chunks read, not the section
    out = written(envelope, data)
    assert out.index(b'X-Early: moved on') < out.index(b'X-F0002:')
    assert b'\r\nX-F1190: changed\r\nX-F1191:' in out
    assert b'X-F1195' not in out
    assert b'\r\nX-Late: l\r\nX-F1198: ' in out
    assert out.endswith(b'X-F1199: ' + value + b'\r\nX-Last: l\r\n\r\nbody\r\n')
    _, fields, _ = shown(envelope)                  # a later milter sees it all so
    assert len(fields) == count + 2 and ('X-F1190', ' changed') in fields


@pytest.mark.parametrize('value, line', [
    ('a\nb', b'X: a\r\n\tb\r\n'),                     # a break without white space: a tab
    ('a\r\n b', b'X: a\r\n b\r\n'),
    ('nul\0here', b'X: nul here\r\n'),
])
def test_field_lines(value, line):
    assert field_line('X', value) == line


def test_a_line_too_long_is_folded():
    line = field_line('X-Long', ' '.join(['word'] * 300))
    assert all(len(part) <= 998 for part in line.split(b'\r\n'))
    assert line.replace(b'\r\n', b'') == b'X-Long: ' + b' '.join([b'word'] * 300)


def test_no_edits_no_record():
    envelope = envelope_of()
    milter(envelope, (P.CHGHEADER, [1, 'X-Absent', '']))
    assert edits_of(envelope) is None and not HeaderEdits()


def test_envelope_requests():
    envelope = envelope_of()
    milter(envelope, (P.CHGFROM, ['<z@example.test>', 'BODY=8BITMIME']),
           (P.DELRCPT, ['<B@mx.test>']), (P.ADDRCPT_PAR, ['<d@mx.test>', 'NOTIFY=NEVER']),
           (P.QUARANTINE, ['look at\n it']))
    assert envelope.mail_from == Address('z@example.test', {'BODY': '8BITMIME'})
    assert envelope.rcpt_to == [Address('c@mx.test'), Address('d@mx.test', {'NOTIFY': 'NEVER'})]
    assert envelope.quarantined == 'look at it'


def test_fold_keeps_the_space_it_folds_at():
    """headers.fold (add_header's fields): unfolding gives the value back
    byte for byte (RFC 5322 2.2.3); a tab in place of the space would not."""
    value = ' '.join(f'word{i}' for i in range(60)) + '  two  spaces'
    text = fold('X-Long', value)
    lines = text.split('\r\n')
    assert len(lines) > 2 and all(line.startswith(' ') for line in lines[1:-1])
    assert text[:-2].replace('\r\n', '') == f'X-Long: {value}'


def test_a_later_milter_is_shown_the_body_an_earlier_one_wrote():
    envelope = envelope_of()
    envelope.replace_body(io.BytesIO(b'new body\r\n'))
    _, _, body = shown(envelope)
    assert body == b'new body\r\n'
    assert envelope.replaced_body.read() == b'new body\r\n'     # put back for the delivery
