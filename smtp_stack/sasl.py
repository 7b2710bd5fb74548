"""SASL exchanges for SMTP AUTH (RFC 4954), without sockets.

The session loop starts an exchange, sends each `challenge` after '334 ',
feeds every client line to `respond()`, and reads `result` once `challenge`
is None. Each mechanism is a small generator: it yields the raw challenge
bytes, receives the decoded client response, and returns an `AuthInfo`.
Base64, cancellation and size limits are handled once, in `Exchange`.

Every error is an `SmtpError` whose message never repeats what the client
sent: credentials must not reach replies or logs.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

from . import replies as R
from .errors import SmtpError

__all__ = [
    'SUPPORTED', 'MAX_RESPONSE_LENGTH', 'AuthInfo', 'Exchange', 'start',
    'xoauth2_error_challenge', 'mask_auth_command',
]

SUPPORTED = ('PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5')

# RFC 4954 section 4: servers must accept client response lines of up to
# 12,288 octets. Anything longer is refused before it is decoded; the decoded
# payload is always shorter than its base64 text, so one check bounds both.
MAX_RESPONSE_LENGTH = 12288

HIDDEN = '<hidden>'

_Mechanism = Generator[bytes, bytes, 'AuthInfo']


def _error(message: str) -> SmtpError:
    return SmtpError(501, f'Error: {message}', '5.5.2')


class AuthInfo:
    """What the client proved it knows, and how to check it against a secret.

    `authzid` is None when PLAIN carried an empty one (RFC 4616 section 2: an
    empty authzid means "act as authcid"), and for every other mechanism.
    `repr()` never shows the password, token or CRAM-MD5 digest.
    """

    __slots__ = ('method', 'username', 'authzid', 'password', 'access_token',
                 'challenge', 'response')

    def __init__(self, method: str, username: str, *, authzid: str | None = None,
                 password: str | None = None, access_token: str | None = None,
                 challenge: str | None = None, response: str | None = None):
        self.method = method
        self.username = username
        self.authzid = authzid
        self.password = password
        self.access_token = access_token
        self.challenge = challenge
        self.response = response

    def validate(self, secret: str | bytes) -> bool:
        """True when `secret` matches, compared in constant time.

        `secret` is the password (PLAIN, LOGIN, CRAM-MD5) or the expected
        access token (XOAUTH2). An empty secret never matches, so a missing
        configuration value fails closed. XCLIENT carries no proof: False.
        """
        if isinstance(secret, str):
            secret = secret.encode('utf-8')
        elif not isinstance(secret, (bytes, bytearray)):
            raise TypeError(f'secret must be str or bytes, not {type(secret).__name__}')
        if not secret:
            return False
        if self.method == 'CRAM-MD5':
            if self.challenge is None or self.response is None:
                return False
            expected = hmac.new(bytes(secret), self.challenge.encode('utf-8'),
                                hashlib.md5).hexdigest()
            return hmac.compare_digest(expected.encode('ascii'),
                                       self.response.encode('utf-8'))
        proof = self.access_token if self.method == 'XOAUTH2' else self.password
        if proof is None or self.method not in ('PLAIN', 'LOGIN', 'XOAUTH2'):
            return False
        return hmac.compare_digest(proof.encode('utf-8'), bytes(secret))

    _SECRETS = ('password', 'access_token', 'response')

    def masked(self) -> dict[str, Any]:
        """The fields as a dict fit for logs: secrets replaced by '<hidden>'."""
        return {name: HIDDEN if name in self._SECRETS and getattr(self, name) is not None
                else getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        shown = ', '.join(
            f'{name}={HIDDEN}' if name in self._SECRETS else f'{name}={value!r}'
            for name in self.__slots__ if (value := getattr(self, name)) is not None)
        return f'AuthInfo({shown})'


# --- Mechanisms: generators of raw challenges ------------------------------

def _text(data: bytes, what: str) -> str:
    """Credentials are UTF-8 (RFC 4616 section 2); NUL never belongs in one."""
    try:
        text = data.decode('utf-8', 'strict')
    except UnicodeDecodeError:
        raise _error(f'{what} is not valid UTF-8') from None
    if '\0' in text:
        raise _error(f'{what} contains a NUL character')
    return text


def _plain(initial: bytes | None, hostname: str) -> _Mechanism:
    """RFC 4616: [authzid] NUL authcid NUL passwd; authcid and passwd non-empty."""
    data = initial if initial is not None else (yield b'')
    parts = data.split(b'\0')
    if len(parts) != 3:
        raise _error('PLAIN response must be authzid NUL authcid NUL password')
    authzid, username, password = (_text(p, 'PLAIN response') for p in parts)
    if not username or not password:
        raise _error('PLAIN response needs a username and a password')
    return AuthInfo('PLAIN', username, authzid=authzid or None, password=password)


def _login(initial: bytes | None, hostname: str) -> _Mechanism:
    """The de facto LOGIN: username then password, each after its own prompt.

    Clients that send the username as the initial response skip the first.
    """
    data = initial if initial is not None else (yield b'Username:')
    username = _text(data, 'username')
    if not username:
        raise _error('LOGIN needs a username')
    password = _text((yield b'Password:'), 'password')
    if not password:
        raise _error('LOGIN needs a password')
    return AuthInfo('LOGIN', username, password=password)


def _xoauth2(initial: bytes | None, hostname: str) -> _Mechanism:
    """Google's XOAUTH2: 'user=U' ^A 'auth=Bearer T' ^A ^A.

    Unknown keys are ignored and the closing ^A^A is not insisted on; the
    scheme name is case-insensitive, as HTTP auth schemes are (RFC 7235).
    """
    data = initial if initial is not None else (yield b'')
    fields = {}
    for part in _text(data, 'XOAUTH2 response').split('\x01'):
        key, sep, value = part.partition('=')
        if sep and key not in fields:
            fields[key] = value
    username = fields.get('user', '')
    scheme, _, token = fields.get('auth', '').partition(' ')
    if not username:
        raise _error('XOAUTH2 response needs user=')
    if scheme.lower() != 'bearer' or not token.strip():
        raise _error('XOAUTH2 response needs auth=Bearer <token>')
    return AuthInfo('XOAUTH2', username, access_token=token.strip())


_CRAM_RESPONSE = re.compile(r'(.+) ([0-9a-fA-F]{32})', re.DOTALL)


def _cram_md5(initial: bytes | None, hostname: str) -> _Mechanism:
    """RFC 2195: the server speaks first with a unique msg-id-like string;
    the client answers 'username SP hex(HMAC-MD5(password, challenge))'.
    The username may itself contain spaces, so the digest is the last word.
    """
    challenge = f'<{secrets.randbelow(10 ** 10)}.{int(time.time())}@{hostname}>'
    reply = _text((yield challenge.encode('utf-8')), 'CRAM-MD5 response')
    match = _CRAM_RESPONSE.fullmatch(reply)
    if not match:
        raise _error('CRAM-MD5 response must be username SP 32 hex digits')
    return AuthInfo('CRAM-MD5', match[1], challenge=challenge,
                    response=match[2].lower())


_MECHANISMS: dict[str, Callable[[bytes | None, str], _Mechanism]] = {
    'PLAIN': _plain, 'LOGIN': _login, 'XOAUTH2': _xoauth2, 'CRAM-MD5': _cram_md5,
}
# RFC 4954 section 4: an initial response to a mechanism where the server
# speaks first must be refused with 501.
_SERVER_FIRST = frozenset({'CRAM-MD5'})


# --- The exchange ------------------------------------------------------------

class Exchange:
    """One AUTH command's dialogue. `challenge` is the base64 text to send
    after '334 ', or None once finished; `result` is then the AuthInfo.

    Any SmtpError ends the exchange (RFC 4954 section 4: a 501 or 535 closes
    it); calling `respond()` after the end is a programming error.
    """

    def __init__(self, mechanism: str, initial_response: str | None = None,
                 hostname: str = 'localhost', max_response: int = MAX_RESPONSE_LENGTH):
        name = mechanism.upper()
        if name not in _MECHANISMS:
            raise SmtpError(504, 'Error: unrecognized authentication type', '5.5.4')
        self.mechanism = name
        self.max_response = max_response
        self.challenge: str | None = None
        self.result: AuthInfo | None = None
        self._steps: _Mechanism | None = None
        initial = None
        if initial_response is not None:
            if name in _SERVER_FIRST:
                raise _error(f'{name} does not allow an initial response')
            # RFC 4954 section 4: '=' stands for an empty initial response.
            initial = b'' if initial_response == '=' else self._decode(initial_response)
        steps = self._steps = _MECHANISMS[name](initial, hostname)
        self._advance(lambda: next(steps))

    @property
    def finished(self) -> bool:
        return self._steps is None

    def respond(self, line: str) -> str | None:
        """Feed one client line (base64, without CRLF); return the next challenge."""
        steps = self._steps
        if steps is None:
            raise RuntimeError('the SASL exchange has already finished')
        try:
            data = self._decode(line)
        except SmtpError:
            self._finish()
            raise
        return self._advance(lambda: steps.send(data))

    def _advance(self, step: Callable[[], bytes]) -> str | None:
        try:
            raw = step()
        except StopIteration as done:
            self.result = done.value
            self._finish()
        except BaseException:
            self._finish()
            raise
        else:
            self.challenge = base64.b64encode(raw).decode('ascii')
        return self.challenge

    def _finish(self) -> None:
        if self._steps is not None:
            self._steps.close()
        self._steps = None
        self.challenge = None

    def _decode(self, line: str) -> bytes:
        line = line.strip(' \t')
        if line == '*':     # RFC 4954 section 4: the client cancels
            raise SmtpError(501, 'Authentication aborted', '5.7.0')
        if len(line) > self.max_response:
            raise SmtpError(R.AUTH_LINE_TOO_LONG)
        try:
            return decode_base64(line.encode('ascii'))
        except (UnicodeEncodeError, binascii.Error):
            raise SmtpError(R.AUTH_UNDECODABLE) from None


# Strict base64 (RFC 4954 4: a response that is not base64 gets 501). What
# CPython 3.11's `a2b_base64(strict_mode=True)` accepts, as a pattern for
# Python 3.10, whose binascii has no strict_mode: whole quads, then either
# a last quad padded with '==' or '=', or (oddly, but so does 3.11) any
# number of '=' after whole quads; nothing else, no white space.
_STRICT_BASE64 = re.compile(rb'(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?'
                            rb'|(?:[A-Za-z0-9+/]{4})+=+')


def decode_base64_by_pattern(data: bytes) -> bytes:
    """Strict base64 without strict_mode (Python 3.10); binascii.Error if not."""
    if _STRICT_BASE64.fullmatch(data) is None:
        raise binascii.Error('not strict base64')
    return binascii.a2b_base64(data)


if sys.version_info >= (3, 11):
    def decode_base64(data: bytes) -> bytes:
        """Strict base64; binascii.Error if not."""
        return binascii.a2b_base64(data, strict_mode=True)
else:
    decode_base64 = decode_base64_by_pattern


def start(mechanism: str, initial_response: str | None = None,
          hostname: str = 'localhost', max_response: int = MAX_RESPONSE_LENGTH) -> Exchange:
    """Begin `AUTH mechanism [initial_response]`; see `Exchange`."""
    return Exchange(mechanism, initial_response, hostname, max_response)


def xoauth2_error_challenge(status: str = '401', schemes: str = 'Bearer',
                            scope: str | None = None) -> str:
    """The base64 JSON a server sends as a 334 after a failed XOAUTH2.

    Google's protocol: the client answers it with an empty line, and only
    then gets the final 535.
    """
    error = {'status': str(status), 'schemes': schemes}
    if scope is not None:
        error['scope'] = scope
    text = json.dumps(error, separators=(',', ':'))
    return base64.b64encode(text.encode('utf-8')).decode('ascii')


_AUTH_WITH_RESPONSE = re.compile(r'(\s*AUTH\s+\S+\s+)\S.*', re.IGNORECASE | re.DOTALL)


def mask_auth_command(line: str) -> str:
    """`line` safe for logs: the initial response of an AUTH command hidden.

    Any other line is returned unchanged; the session loop must not log the
    client's lines inside an exchange at all.
    """
    match = _AUTH_WITH_RESPONSE.fullmatch(line)
    return f'{match[1]}{HIDDEN}' if match else line
