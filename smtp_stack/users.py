"""Users for AUTH: salted password hashes and the `on_auth` hook that checks them.

Passwords are stored as self-describing strings in the PHC string format
(`$id$params$salt$hash`, base64 without padding), made with hashlib:

    $scrypt$ln=15,r=8,p=1$<salt>$<hash>        (the default)
    $pbkdf2-sha256$i=600000$<salt>$<hash>

`smtp-stack hash-password` makes one. A hash can only check a password that
the client sends in the clear (PLAIN, LOGIN, inside TLS). CRAM-MD5 proves
knowledge of the password without sending it, so the server needs the
password itself, and XOAUTH2 needs the expected token: such users carry a
plain `secret` instead, which then also works for PLAIN and LOGIN.

Hashing costs tens of milliseconds of CPU on purpose; it runs in the hub's
thread pool (hashlib releases the GIL), so other sessions keep going.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .offload import offload

if TYPE_CHECKING:
    from .sasl import AuthInfo
    from .session import Session

SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 15, 8, 1     # RFC 7914 parameters; 32 MiB, ~0.1 s
PBKDF2_ITERATIONS = 600_000                       # OWASP 2023 for PBKDF2-HMAC-SHA256
SALT_BYTES = 16
HASH_BYTES = 32
SCHEMES = ('scrypt', 'pbkdf2-sha256')

_PHC = re.compile(r'\$([a-z0-9-]+)\$([a-z]+=[0-9]+(?:,[a-z]+=[0-9]+)*)'
                  r'\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)\Z')
# Upper bounds against a hash crafted to make each login burn the CPU or memory.
_LIMITS = {'ln': (10, 20), 'r': (1, 32), 'p': (1, 16), 'i': (1000, 10_000_000)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii').rstrip('=')


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + '=' * (-len(text) % 4))


def _derive(scheme: str, params: dict[str, int], password: bytes, salt: bytes,
            length: int) -> bytes:
    if scheme == 'scrypt':
        n, r, p = 1 << params['ln'], params['r'], params['p']
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length,
                              maxmem=128 * r * n * p + (1 << 20))
    return hashlib.pbkdf2_hmac('sha256', password, salt, params['i'], length)


def hash_password(password: str, scheme: str = 'scrypt') -> str:
    """A new salted hash of `password` in the PHC string format."""
    if not password:
        raise ValueError('empty password')
    salt = os.urandom(SALT_BYTES)
    if scheme == 'scrypt':
        params = {'ln': SCRYPT_LOG_N, 'r': SCRYPT_R, 'p': SCRYPT_P}
    elif scheme == 'pbkdf2-sha256':
        params = {'i': PBKDF2_ITERATIONS}
    else:
        raise ValueError(f'unknown scheme {scheme!r}; known: {", ".join(SCHEMES)}')
    digest = _derive(scheme, params, password.encode('utf-8'), salt, HASH_BYTES)
    text = ','.join(f'{k}={v}' for k, v in params.items())
    return f'${scheme}${text}${_b64(salt)}${_b64(digest)}'


def parse_hash(stored: str) -> tuple[str, dict[str, int], bytes, bytes]:
    """(scheme, params, salt, digest); ValueError when it is not one of ours."""
    match = _PHC.match(stored) if isinstance(stored, str) else None
    if not match:
        raise ValueError('not a salted hash (make one with: smtp-stack hash-password)')
    scheme, text, salt_text, digest_text = match.groups()
    params = dict((k, int(v)) for k, v in (item.split('=') for item in text.split(',')))
    need = {'scrypt': {'ln', 'r', 'p'}, 'pbkdf2-sha256': {'i'}}.get(scheme)
    if need is None:
        raise ValueError(f'unknown hash scheme {scheme!r}; known: {", ".join(SCHEMES)}')
    if set(params) != need:
        raise ValueError(f'{scheme} hash needs exactly the parameters {sorted(need)}')
    for key, value in params.items():
        low, high = _LIMITS[key]
        if not low <= value <= high:
            raise ValueError(f'{scheme} parameter {key}={value} is outside {low}..{high}')
    salt, digest = _unb64(salt_text), _unb64(digest_text)
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError('salt or hash too short')
    return scheme, params, salt, digest


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches the hash; compared in constant time."""
    scheme, params, salt, digest = parse_hash(stored)
    if not password:
        return False
    candidate = _derive(scheme, params, password.encode('utf-8'), salt, len(digest))
    return hmac.compare_digest(candidate, digest)


# A hash to check against when the user does not exist, so that the reply
# takes as long for a bad user name as for a bad password.
_DUMMY: str | None = None


def _dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(os.urandom(16).hex())
    return _DUMMY


class User:
    __slots__ = ('username', 'password_hash', 'secret')

    def __init__(self, username: str, password_hash: str | None = None,
                 secret: str | None = None) -> None:
        if password_hash is not None:
            parse_hash(password_hash)
        if not password_hash and not secret:
            raise ValueError('a user needs password_hash or secret')
        self.username = username
        self.password_hash = password_hash
        self.secret = secret

    def __repr__(self) -> str:
        return f'User({self.username!r})'


class Users:
    """The users AUTH accepts; `users.on_auth` is the SmtpServer hook.

    `replace()` swaps the whole table at once (SIGHUP reload): a login in
    progress sees either the old table or the new one.
    """

    def __init__(self, users: Iterable[User] = ()) -> None:
        self._table = {u.username: u for u in users}

    def replace(self, users: Users | Iterable[User]) -> None:
        self._table = dict(users._table) if isinstance(users, Users) else {
            u.username: u for u in users}

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, username: object) -> bool:
        return username in self._table

    def check(self, auth: AuthInfo | None) -> bool:
        """Does `auth` (a session.auth AuthInfo) prove one of our users?"""
        if auth is None:
            return False
        user = self._table.get(auth.username)
        method = auth.method
        if auth.authzid and auth.authzid != auth.username:
            return False        # acting as someone else is not supported
        if method == 'XCLIENT':
            # The login name comes from a trusted proxy (use_xclient), not
            # from the client: no proof to check, the name must exist.
            return user is not None
        if method in ('PLAIN', 'LOGIN'):
            if user is not None and user.password_hash:
                return offload(verify_password, user.password_hash, auth.password or '')
            if user is not None and user.secret:
                return auth.validate(user.secret)
            offload(verify_password, _dummy_hash(), auth.password or '')
            return False
        # CRAM-MD5, XOAUTH2: only a plain secret can be checked.
        return bool(user is not None and user.secret and auth.validate(user.secret))

    def on_auth(self, session: Session) -> dict[str, str] | None:
        """SmtpServer `on_auth` hook: the user (a dict) or None."""
        auth = session.auth
        if auth is not None and self.check(auth):
            return {'name': auth.username}
        return None


