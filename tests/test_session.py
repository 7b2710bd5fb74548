"""smtp_stack.session: Session and Envelope state (no sockets)."""
from __future__ import annotations

import re

import pytest

from smtp_stack.addresses import Address
from smtp_stack.session import Envelope, Session, new_session_id


def session(lmtp=False) -> Session:
    return Session('127.0.0.1', 25, '192.0.2.7', 40000, lmtp=lmtp)


# (greeting, secure, user, expected) -- RFC 3848 'with' keywords
TRANSMISSION_TYPES = [
    (None, False, False, 'SMTP'),
    ('HELO', False, False, 'SMTP'),
    ('HELO', True, False, 'ESMTPS'),     # RFC 3848 has no SMTPS/SMTPA
    ('HELO', False, True, 'ESMTPA'),
    ('HELO', True, True, 'ESMTPSA'),
    ('EHLO', False, False, 'ESMTP'),
    ('EHLO', True, False, 'ESMTPS'),
    ('EHLO', False, True, 'ESMTPA'),
    ('EHLO', True, True, 'ESMTPSA'),
    ('LHLO', False, False, 'LMTP'),
    ('LHLO', True, False, 'LMTPS'),
    ('LHLO', False, True, 'LMTPA'),
    ('LHLO', True, True, 'LMTPSA'),
]


@pytest.mark.parametrize('greeting, secure, user, expected', TRANSMISSION_TYPES)
def test_transmission_type(greeting, secure, user, expected):
    s = session(lmtp=greeting == 'LHLO')
    s.greeting = greeting
    s.helo = 'client.example' if greeting else None
    s.secure = secure
    s.user = {'name': 'alice'} if user else None
    assert s.transmission_type == expected


def test_lmtp_session_before_lhlo_is_lmtp():
    assert session(lmtp=True).transmission_type == 'LMTP'


def test_new_session_defaults():
    s = session()
    assert (s.local_address, s.local_port, s.remote_address, s.remote_port) == \
        ('127.0.0.1', 25, '192.0.2.7', 40000)
    assert s.client_hostname == '[192.0.2.7]'
    assert s.secure is False and s.tls is None
    assert s.helo is None and s.greeting is None
    assert s.xclient == {} and s.xforward == {}
    assert s.proxy is None and s.auth is None and s.user is None
    assert s.transaction == 1
    assert isinstance(s.envelope, Envelope)
    assert s.envelope.mail_from is None and s.envelope.rcpt_to == []
    assert s.envelope.data_stream is None


def test_client_hostname_without_remote_address():
    assert Session(None, None, None, None).client_hostname == '[unknown]'


def test_reset_without_mail_keeps_the_transaction_number():
    s = session()
    old = s.envelope
    s.reset_envelope()
    assert s.transaction == 1
    assert s.envelope is not old


def test_reset_after_mail_counts_a_transaction():
    s = session()
    s.envelope.mail_from = Address('a@b.c')
    s.reset_envelope()
    assert s.transaction == 2
    s.reset_envelope()                   # nothing started since
    assert s.transaction == 2
    s.envelope.mail_from = Address('')   # the null sender is a MAIL too
    s.reset_envelope()
    assert s.transaction == 3


def test_reset_gives_a_new_envelope_and_leaves_the_old_one_alone():
    s = session()
    env = s.envelope
    env.mail_from = Address('a@b.c', {'SIZE': '10'})
    env.rcpt_to.append(Address('x@y.z'))
    s.reset_envelope()
    assert s.envelope is not env
    assert s.envelope.mail_from is None and s.envelope.rcpt_to == []
    assert env.mail_from == Address('a@b.c', {'SIZE': '10'})     # a kept reference is unchanged
    assert env.rcpt_to == [Address('x@y.z')]


def test_envelopes_do_not_share_recipient_lists():
    assert Envelope().rcpt_to is not Envelope().rcpt_to


def test_last_to():
    env = Envelope()
    assert env.last_to is None
    env.rcpt_to.append(Address('a@x.y'))
    assert env.last_to == Address('a@x.y')
    env.rcpt_to.append(Address('b@x.y'))
    assert env.last_to == Address('b@x.y')


def test_session_and_envelope_take_user_attributes():
    s = session()
    s.custom = 1
    s.envelope.custom = 2
    assert (s.custom, s.envelope.custom) == (1, 2)


def test_ids_are_unique_and_greppable():
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r'[0-9a-f]{16}', i) for i in ids)
    sessions = [session() for _ in range(200)]
    assert len({s.id for s in sessions}) == 200


def test_ids_do_not_repeat_after_a_fork_or_a_seeded_random():
    """Forked workers must not replay each other's ids (the generator is
    reseeded in the child), and an application seeding `random` must not
    make ids repeat."""
    import os
    import random
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: its next ids, then out without pytest's cleanup
        try:
            os.write(write_end, ''.join(new_session_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent_ids = ''.join(new_session_id() for _ in range(3))
    with os.fdopen(read_end, 'rb') as f:
        child_ids = f.read().decode()
    os.waitpid(pid, 0)
    assert len(child_ids) == 48 and child_ids != parent_ids
    random.seed(1)
    first = new_session_id()
    random.seed(1)
    assert new_session_id() != first


def test_repr():
    s = session()
    assert s.id in repr(s)
    s.envelope.mail_from = Address('a@b.c')
    assert 'a@b.c' in repr(s.envelope)
