"""Salted password hashes and the users' on_auth hook."""
import hashlib
import hmac

import pytest

from smtp_stack.sasl import AuthInfo
from smtp_stack.users import User, Users, hash_password, parse_hash, verify_password

SCRYPT = hash_password('pw')
PBKDF2 = hash_password('pw', 'pbkdf2-sha256')


@pytest.mark.parametrize('stored', [SCRYPT, PBKDF2], ids=['scrypt', 'pbkdf2-sha256'])
def test_hash_round_trip(stored):
    assert verify_password(stored, 'pw')
    assert not verify_password(stored, 'pw ') and not verify_password(stored, '')


def test_hashes_are_salted_and_self_describing():
    assert hash_password('pw') != SCRYPT
    assert SCRYPT.startswith('$scrypt$ln=15,r=8,p=1$')
    assert PBKDF2.startswith('$pbkdf2-sha256$i=600000$')


@pytest.mark.parametrize('stored, message', [
    ('hunter2', 'not a salted hash'),
    ('$md5$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', "unknown hash scheme 'md5'"),
    ('$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', 'ln=30 is outside 10..20'),
    ('$pbkdf2-sha256$i=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', 'i=1 is outside'),
    ('$scrypt$ln=14,r=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', 'needs exactly the parameters'),
])
def test_bad_hashes_are_refused_before_use(stored, message):
    with pytest.raises(ValueError, match=message):
        parse_hash(stored)


def cram(username, secret, challenge='<1.2@mx.test>'):
    digest = hmac.new(secret.encode(), challenge.encode(), hashlib.md5).hexdigest()
    return AuthInfo('CRAM-MD5', username, challenge=challenge, response=digest)


USERS = Users([User('alice', password_hash=PBKDF2), User('robot', secret='tok')])


@pytest.mark.parametrize('auth, ok', [
    (AuthInfo('PLAIN', 'alice', password='pw'), True),
    (AuthInfo('LOGIN', 'alice', password='pw'), True),
    (AuthInfo('PLAIN', 'alice', password='nope'), False),
    (AuthInfo('PLAIN', 'alice', authzid='robot', password='pw'), False),
    (AuthInfo('PLAIN', 'nobody', password='pw'), False),
    (cram('alice', 'pw'), False),           # a hash cannot check CRAM-MD5
    (cram('robot', 'tok'), True),
    (cram('robot', 'toc'), False),
    (AuthInfo('XOAUTH2', 'robot', access_token='tok'), True),
    (AuthInfo('XOAUTH2', 'robot', access_token='bad'), False),
    (AuthInfo('PLAIN', 'robot', password='tok'), True),
    (AuthInfo('XCLIENT', 'alice'), True),   # a trusted proxy vouches; the name must exist
    (AuthInfo('XCLIENT', 'mallory'), False),
])
def test_users_check_every_mechanism(auth, ok):
    assert USERS.check(auth) is ok


def test_on_auth_returns_the_user_or_none():
    class S:
        auth = AuthInfo('PLAIN', 'alice', password='pw')
    assert USERS.on_auth(S) == {'name': 'alice'}
    S.auth = AuthInfo('PLAIN', 'alice', password='x')
    assert USERS.on_auth(S) is None


def test_replace_swaps_the_whole_table():
    users = Users([User('a', secret='1')])
    users.replace([User('b', secret='2')])
    assert 'a' not in users and 'b' in users and len(users) == 1
