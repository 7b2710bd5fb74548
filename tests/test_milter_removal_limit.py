"""remove_header's limit in MilterServer (message.MAX_REMOVALS): a message
with more fields to remove than the limit is refused, never passed on with
some of them left; memory and the hub's time stay bounded however many
fields match."""
import logging
import struct
import tracemalloc

import gevent
import pytest

from postfix_private import MtaClient, milter_thread
from log_lines import kept_lines
from smtp_stack import LogLevels
from smtp_stack.milter import MilterServer
from smtp_stack.milter import message as M
from smtp_stack.milter import protocol as P
from smtp_stack.session import Envelope

CONNECT = P.command(P.CONNECT, 'client.example', P.FAMILY_INET, 40000, '192.0.2.7')
HELO = P.command(P.HELO, 'client.example')
MAIL = P.command(P.MAIL, ['<sender@example.org>'])
RCPT = P.command(P.RCPT, ['<rcpt@example.org>'])
DATA = P.command(P.DATA)
EOH = P.command(P.EOH)
EOB = P.command(P.EOB, b'')
ALL_ACTIONS = 0x1FF
REFUSAL = (P.REPLYCODE, b'554 5.6.0 Message refused: too many header fields to remove\0')


@pytest.fixture
def log():
    with kept_lines('smtp_stack.test_milter_removal_limit') as lines:
        yield lines


def spam_filter(log):
    """A MilterServer whose middleware removes every X-Spam field."""
    server = MilterServer(name='milter.test', log_level=LogLevels.DEBUG,
                          log_backend=logging.getLogger('smtp_stack.test_milter_removal_limit'))

    @server.use
    def remove_spam(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.remove_header('X-Spam')

    return server


def end_of_message(server, fields):
    """One transaction over loopback with `fields` (name, value) as the
    header section: the packets answering its end."""
    with milter_thread(server):
        client = MtaClient(server)
        client.negotiate(protocol=0x1FFFFF & ~P.SKIP_OK)
        client.send(CONNECT, HELO, MAIL, RCPT, DATA)
        client.send(*(P.command(P.HEADER, name, value) for name, value in fields))
        client.send(EOH, P.command(P.BODY, b'body\r\n'), EOB)
        final = []
        while True:
            packet = client.reply()
            assert packet is not None, f'the milter closed after {final[-3:]}'
            if packet.command != P.CONTINUE or final:
                final.append(packet)
            if packet.command in (P.CONTINUE, P.REPLYCODE) and final:
                break
        client.close()
    return final


def spam(count):
    return [('Subject', ' hi')] + [('X-Spam', f' forged {n}') for n in range(count)]


def test_as_many_removals_as_the_limit_all_go_highest_index_first(log):
    final = end_of_message(spam_filter(log), spam(M.MAX_REMOVALS))
    assert final[-1] == (P.CONTINUE, b'')
    assert final[:-1] == [(P.CHGHEADER, struct.pack('>I', index) + b'X-Spam\0\0')
                          for index in range(M.MAX_REMOVALS, 0, -1)]


def test_one_removal_past_the_limit_refuses_the_message(log):
    """Skipping removals would pass forged fields on: the message is
    refused, permanently (the same message matches again), and said so."""
    final = end_of_message(spam_filter(log), spam(M.MAX_REMOVALS + 1))
    assert final == [REFUSAL]
    assert any('refused: more than 1000 header fields to remove' in line for line in log.lines)


def spam_fields(count):
    for _ in range(count):
        yield 'X-Spam', ' y'


def test_many_matching_fields_cost_no_memory_per_field():
    """100,000 fields to remove (an attacker's count): refused at the
    limit's first step past, with memory bounded (it grew with each field)."""
    envelope = Envelope()
    envelope.remove_header('x-spam')
    tracemalloc.start()
    try:
        with pytest.raises(M.TooManyRemovals):
            b''.join(M.changes(envelope, spam_fields(100_000), None, [], ALL_ACTIONS, True, []))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400_000, peak


def test_the_limit_of_matching_fields_among_many_others_costs_a_bounded_memory():
    envelope = Envelope()
    envelope.remove_header('X-Spam')

    def fields():
        for number in range(100_000):
            yield ('X-Spam', ' y') if number % 100 == 0 else ('X-Other', ' o')

    tracemalloc.start()
    try:
        wire = b''.join(M.changes(envelope, fields(), None, [], ALL_ACTIONS, True, []))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wire.count(b'X-Spam\0\0') == 1000 and peak < 400_000, peak


def test_the_hub_turns_while_the_fields_are_looked_at():
    """The end of a message looks at every field (a temporary file's worth,
    read back): other greenlets run meanwhile."""
    envelope = Envelope()
    envelope.remove_header('X-Spam')
    turns = []

    def other():
        while True:
            turns.append(1)
            gevent.sleep(0)

    ticker = gevent.spawn(other)
    fields = (('X-Other', ' o') for _ in range(40_000))
    work = gevent.spawn(lambda: b''.join(M.changes(envelope, fields, None, [], ALL_ACTIONS,
                                                   True, [])))
    try:
        assert work.get(timeout=30) == b''
    finally:
        ticker.kill(timeout=5)
    assert len(turns) >= 40_000 // M.FIELDS_PER_TURN


def test_requests_past_a_piece_go_in_order_and_whole(log):
    """The requests are sent as they are made, 256 KiB at a time: a 1 MiB
    replaced body reaches the MTA whole, in order, after the removals."""
    server = spam_filter(log)
    new_body = bytes(range(256)) * 4096

    @server.use
    def replace(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.replace_body(new_body)

    final = end_of_message(server, spam(3))
    assert [packet.command for packet in final[:3]] == [P.CHGHEADER] * 3
    assert {packet.command for packet in final[3:-1]} == {P.REPLBODY}
    assert b''.join(packet.data for packet in final[3:-1]) == new_body
    assert final[-1] == (P.CONTINUE, b'')
