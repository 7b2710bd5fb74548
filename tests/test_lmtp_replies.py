"""engine/body.as_told: the LMTP replies after the body (RFC 2033 4.2)
when the chain changed the recipients after they were told 250: one per
recipient the client sent, in its order. Pure: Address and Reply values."""
from __future__ import annotations

import pytest

from smtp_stack import replies as R
from smtp_stack.addresses import Address
from smtp_stack.engine.body import as_told
from smtp_stack.replies import Reply

BOB, CAROL, DAN = Address('bob@mx.test'), Address('carol@mx.test'), Address('dan@mx.test')
ADDED, OTHER = Address('added@mx.test'), Address('other@mx.test')
OK = Reply(250, 'OK: queued as 1', '2.0.0')
FULL = Reply(452, 'Mailbox full', '4.2.2')
NO_DISK = Reply(451, 'Cannot store', '4.3.0')
GONE = Reply(550, 'No such user', '5.1.1')


@pytest.mark.parametrize('told, now, replies, expected', [
    # nothing changed: each its own
    ([BOB, CAROL], [BOB, CAROL], [OK, FULL], [OK, FULL]),
    # bob deleted: 250 for him, carol her own
    ([BOB, CAROL], [CAROL], [FULL], [R.QUEUED, FULL]),
    ([BOB, CAROL], [CAROL], [OK], [OK, OK]),
    # every recipient deleted, none added
    ([BOB, CAROL], [], [], [R.QUEUED, R.QUEUED]),
    # one added, delivered: no reply of its own
    ([BOB, CAROL], [BOB, CAROL, ADDED], [OK, FULL, OK], [OK, FULL]),
    # one added, not delivered: its failure instead of each 2xx
    ([BOB, CAROL], [BOB, CAROL, ADDED], [OK, GONE, NO_DISK], [NO_DISK, GONE]),
    # the first temporary failure of the added ones, else the first permanent
    ([BOB], [BOB, ADDED, OTHER], [OK, GONE, NO_DISK], [NO_DISK]),
    # a permanent failure of an added one never reaches a recipient whose copy was stored
    ([BOB], [BOB, ADDED, OTHER], [OK, GONE, GONE], [OK]),
    ([BOB, CAROL], [CAROL, ADDED], [OK, GONE], [GONE, OK]),
    # a redirect: bob's reply is the new recipient's outcome
    ([BOB], [ADDED], [OK], [OK]),
    ([BOB], [ADDED], [FULL], [FULL]),
    ([BOB], [ADDED], [GONE], [GONE]),
    # taken out and put in again (new parameters, another case): its own reply
    ([BOB, CAROL], [Address('bob@mx.test', {'NOTIFY': 'NEVER'}), Address('Carol@MX.test')],
     [OK, FULL], [OK, FULL]),
    ([BOB, CAROL], [Address('carol@mx.test'), Address('bob@mx.test')], [FULL, OK], [OK, FULL]),
    # the same address sent twice: each RCPT is its own
    ([BOB, DAN, Address('bob@mx.test')], [DAN], [FULL], [R.QUEUED, FULL, R.QUEUED]),
])
def test_replies_follow_the_rcpts_sent(told, now, replies, expected):
    assert as_told(told, now, replies) == expected
