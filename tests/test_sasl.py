"""smtp_stack.sasl: every mechanism, step by step, without sockets."""
import base64
import hashlib
import hmac
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from smtp_stack import sasl
from smtp_stack.errors import SmtpError

USERNAME_PROMPT = base64.b64encode(b'Username:').decode()   # 'VXNlcm5hbWU6'
PASSWORD_PROMPT = base64.b64encode(b'Password:').decode()   # 'UGFzc3dvcmQ6'


def b64(data) -> str:
    if isinstance(data, str):
        data = data.encode('utf-8')
    return base64.b64encode(data).decode('ascii')


def cram_digest(secret, challenge_b64: str) -> str:
    """Computed here, independently of AuthInfo.validate."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, base64.b64decode(challenge_b64), hashlib.md5).hexdigest()


def run(mechanism, initial_response, lines):
    """Drive an exchange like the session loop; return (challenges, AuthInfo)."""
    exchange = sasl.start(mechanism, initial_response, hostname='mx.example.com')
    challenges = []
    feed = iter(lines)
    while exchange.challenge is not None:
        challenges.append(exchange.challenge)
        exchange.respond(next(feed))
    assert next(feed, None) is None, 'exchange finished before all lines were used'
    assert exchange.finished
    return challenges, exchange.result


def expect_error(code, enhanced, call, *args):
    with pytest.raises(SmtpError) as info:
        call(*args)
    assert info.value.code == code
    assert info.value.enhanced == enhanced
    return info.value


# --- Successful exchanges ---------------------------------------------------

XOAUTH2_BOB = b'user=bob@example.com\x01auth=Bearer ya29.token\x01\x01'

SUCCESS = [
    # id, mechanism, initial response, client lines, challenges sent, expected fields
    ('plain-ir', 'PLAIN', b64('\0bob\0secret'), [], [],
     dict(method='PLAIN', username='bob', authzid=None, password='secret')),
    ('plain-ir-authzid', 'PLAIN', b64('admin\0bob\0secret'), [], [],
     dict(method='PLAIN', username='bob', authzid='admin', password='secret')),
    ('plain-no-ir', 'PLAIN', None, [b64('\0bob\0secret')], [''],
     dict(method='PLAIN', username='bob', authzid=None, password='secret')),
    ('plain-utf8', 'PLAIN', b64('\0jürgen\0pässwörd ✓'), [], [],
     dict(username='jürgen', password='pässwörd ✓')),
    ('plain-spaces-in-password', 'PLAIN', b64('\0bob\0 a b '), [], [],
     dict(password=' a b ')),
    ('plain-lower-case-name', 'plain', b64('\0bob\0secret'), [], [],
     dict(method='PLAIN', username='bob')),
    ('login-no-ir', 'LOGIN', None, [b64('bob'), b64('secret')],
     [USERNAME_PROMPT, PASSWORD_PROMPT],
     dict(method='LOGIN', username='bob', password='secret', authzid=None)),
    ('login-ir', 'LOGIN', b64('bob'), [b64('secret')], [PASSWORD_PROMPT],
     dict(method='LOGIN', username='bob', password='secret')),
    ('login-utf8', 'Login', None, [b64('jürgen'), b64('pässwörd')],
     [USERNAME_PROMPT, PASSWORD_PROMPT], dict(username='jürgen', password='pässwörd')),
    ('xoauth2-ir', 'XOAUTH2', b64(XOAUTH2_BOB), [], [],
     dict(method='XOAUTH2', username='bob@example.com', access_token='ya29.token',
          password=None)),
    ('xoauth2-no-ir', 'XOAUTH2', None, [b64(XOAUTH2_BOB)], [''],
     dict(method='XOAUTH2', username='bob@example.com', access_token='ya29.token')),
    ('xoauth2-no-terminator', 'XOAUTH2', b64('user=bob\x01auth=Bearer t'), [], [],
     dict(username='bob', access_token='t')),
    ('xoauth2-extra-keys', 'XOAUTH2',
     b64('host=mx\x01user=bob\x01port=587\x01auth=bearer t\x01\x01'), [], [],
     dict(username='bob', access_token='t')),
    ('whitespace-around-line', 'LOGIN', None, ['  ' + b64('bob') + ' ', b64('pw') + '\t'],
     [USERNAME_PROMPT, PASSWORD_PROMPT], dict(username='bob', password='pw')),
]


@pytest.mark.parametrize('mechanism, initial, lines, challenges, fields',
                         [case[1:] for case in SUCCESS], ids=[case[0] for case in SUCCESS])
def test_successful_exchange(mechanism, initial, lines, challenges, fields):
    sent, auth = run(mechanism, initial, lines)
    assert sent == challenges
    assert isinstance(auth, sasl.AuthInfo)
    for name, value in fields.items():
        assert getattr(auth, name) == value, name


@pytest.mark.parametrize('username', ['bob', 'bob smith', 'jürgen', 'a' * 200])
def test_cram_md5_exchange(username):
    exchange = sasl.start('CRAM-MD5', hostname='mx.example.com')
    challenge = exchange.challenge
    digest = cram_digest('tanstaaftanstaaf', challenge)
    assert exchange.respond(b64(f'{username} {digest}')) is None
    auth = exchange.result
    assert (auth.method, auth.username, auth.response) == ('CRAM-MD5', username, digest)
    assert auth.challenge == base64.b64decode(challenge).decode()
    assert auth.password is None and auth.access_token is None


def test_cram_md5_challenge_is_a_unique_msg_id_for_the_host():
    challenges = {base64.b64decode(sasl.start('CRAM-MD5', hostname='mx.example.com').challenge)
                  for _ in range(50)}
    assert len(challenges) == 50
    for challenge in challenges:
        assert re.fullmatch(rb'<\d+\.\d+@mx\.example\.com>', challenge)


def test_cram_md5_upper_case_digest_is_accepted_and_normalized():
    exchange = sasl.start('CRAM-MD5')
    digest = cram_digest('pw', exchange.challenge)
    exchange.respond(b64('bob ' + digest.upper()))
    assert exchange.result.response == digest
    assert exchange.result.validate('pw')


def test_result_is_none_until_finished():
    exchange = sasl.start('LOGIN')
    assert exchange.result is None and not exchange.finished
    exchange.respond(b64('bob'))
    assert exchange.result is None
    assert exchange.respond(b64('pw')) is None
    assert exchange.result.username == 'bob'


def test_every_supported_mechanism_starts():
    assert sasl.SUPPORTED == ('PLAIN', 'LOGIN', 'XOAUTH2', 'CRAM-MD5')
    for name in sasl.SUPPORTED:
        assert sasl.start(name).mechanism == name


# --- Refused before the exchange starts -------------------------------------

@pytest.mark.parametrize('mechanism', ['GSSAPI', 'DIGEST-MD5', 'OAUTHBEARER', 'PLAINX',
                                       'XCLIENT', '', 'PLAIN LOGIN'])
def test_unknown_mechanism_is_504(mechanism):
    expect_error(504, '5.5.4', sasl.start, mechanism)
    expect_error(504, '5.5.4', sasl.start, mechanism, b64('\0u\0p'))


@pytest.mark.parametrize('initial', ['=', b64('bob 0123456789abcdef0123456789abcdef')])
def test_cram_md5_refuses_an_initial_response(initial):
    # RFC 4954 section 4: the server speaks first in CRAM-MD5.
    expect_error(501, '5.5.2', sasl.start, 'CRAM-MD5', initial)


# --- '=' as the empty initial response --------------------------------------

@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'XOAUTH2'])
def test_equals_sign_is_an_empty_initial_response(mechanism):
    # None of these mechanisms accepts an empty first message, so the empty
    # initial response is parsed (not prompted for) and refused as malformed.
    error = expect_error(501, '5.5.2', sasl.start, mechanism, '=')
    assert 'decode' not in error.message


def test_equals_sign_is_not_an_empty_response_on_later_lines():
    # Only the initial response uses '='; on a 334 line the empty response is
    # an empty line, and '=' is bad base64.
    exchange = sasl.start('LOGIN')
    expect_error(501, '5.5.2', exchange.respond, '=')


# --- Every step, for every mechanism: cancel, bad base64, size ----------------

def steps():
    """(id, mechanism, initial response, good lines before the step under test)."""
    yield 'plain-1', 'PLAIN', None, []
    yield 'login-1', 'LOGIN', None, []
    yield 'login-2', 'LOGIN', None, [b64('bob')]
    yield 'login-ir-2', 'LOGIN', b64('bob'), []
    yield 'xoauth2-1', 'XOAUTH2', None, []
    yield 'cram-md5-1', 'CRAM-MD5', None, []


STEPS = list(steps())


def at_step(mechanism, initial, before):
    exchange = sasl.start(mechanism, initial)
    for line in before:
        exchange.respond(line)
    assert exchange.challenge is not None
    return exchange


def assert_ended(exchange):
    assert exchange.finished and exchange.challenge is None and exchange.result is None
    with pytest.raises(RuntimeError):
        exchange.respond(b64('anything'))


@pytest.mark.parametrize('line', ['*', ' * ', '*\t'])
@pytest.mark.parametrize('mechanism, initial, before', [s[1:] for s in STEPS],
                         ids=[s[0] for s in STEPS])
def test_star_cancels_at_every_step(mechanism, initial, before, line):
    exchange = at_step(mechanism, initial, before)
    error = expect_error(501, '5.7.0', exchange.respond, line)
    assert error.message == 'Authentication aborted'
    assert_ended(exchange)


@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'XOAUTH2'])
def test_star_as_initial_response_cancels(mechanism):
    expect_error(501, '5.7.0', sasl.start, mechanism, '*')


BAD_BASE64 = [
    'not base64!',          # outside the alphabet
    'YQ',                   # missing padding
    'Y',                    # impossible length
    '=YQ=',                 # leading padding
    'YQ==YQ==',             # data after padding
    'Y Q==',                # space inside
    'YWJj\x00',             # NUL
    'YWJj\r\n',             # line end left in
    '**',                   # not a cancel
    'éé==',                 # non-ASCII
    '\udcff\udcfe==',       # undecodable bytes kept by surrogateescape
]


@pytest.mark.parametrize('line', BAD_BASE64)
@pytest.mark.parametrize('mechanism, initial, before', [s[1:] for s in STEPS],
                         ids=[s[0] for s in STEPS])
def test_bad_base64_at_every_step(mechanism, initial, before, line):
    exchange = at_step(mechanism, initial, before)
    error = expect_error(501, '5.5.2', exchange.respond, line)
    assert error.message == 'Error: cannot decode response'
    assert_ended(exchange)


@pytest.mark.parametrize('line', BAD_BASE64)
@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'XOAUTH2'])
def test_bad_base64_initial_response(mechanism, line):
    error = expect_error(501, '5.5.2', sasl.start, mechanism, line)
    assert error.message == 'Error: cannot decode response'


@pytest.mark.parametrize('mechanism, initial, before', [s[1:] for s in STEPS],
                         ids=[s[0] for s in STEPS])
def test_oversized_response_at_every_step(mechanism, initial, before):
    exchange = at_step(mechanism, initial, before)
    expect_error(500, '5.5.6', exchange.respond, 'A' * (sasl.MAX_RESPONSE_LENGTH + 4))
    assert_ended(exchange)


@pytest.mark.parametrize('mechanism', ['PLAIN', 'LOGIN', 'XOAUTH2'])
def test_oversized_initial_response(mechanism):
    expect_error(500, '5.5.6', sasl.start, mechanism, 'A' * (sasl.MAX_RESPONSE_LENGTH + 4))


def test_a_response_of_exactly_the_limit_is_accepted():
    # RFC 4954 section 4: 12,288 octets must be accepted.
    username = 'u' * (sasl.MAX_RESPONSE_LENGTH // 4 * 3)
    line = b64(username)
    assert len(line) == sasl.MAX_RESPONSE_LENGTH == 12288
    _, auth = run('LOGIN', None, [line, b64('pw')])
    assert auth.username == username


def test_oversized_is_checked_before_decoding():
    # Far too long and not even base64: the size decides, not the decoder.
    expect_error(500, '5.5.6', sasl.start('PLAIN').respond, '!' * 100_000)


def test_max_response_is_adjustable():
    expect_error(500, '5.5.6', sasl.start, 'PLAIN', b64('\0bob\0secret'), 'h', 8)
    exchange = sasl.start('PLAIN', max_response=100)
    expect_error(500, '5.5.6', exchange.respond, b64('\0bob\0' + 'x' * 100))


# --- Malformed payloads and bad UTF-8 ----------------------------------------

MALFORMED = [
    # id, mechanism, initial response, client lines (the last one fails)
    ('plain-empty', 'PLAIN', None, [b64(b'')]),
    ('plain-one-nul', 'PLAIN', b64(b'bob\0secret'), []),
    ('plain-no-nul', 'PLAIN', b64(b'bob secret'), []),
    ('plain-three-nuls', 'PLAIN', b64(b'a\0bob\0secret\0'), []),
    ('plain-empty-authcid', 'PLAIN', b64(b'admin\0\0secret'), []),
    ('plain-empty-password', 'PLAIN', b64(b'\0bob\0'), []),
    ('plain-only-nuls', 'PLAIN', b64(b'\0\0'), []),
    ('plain-bad-utf8-authzid', 'PLAIN', b64(b'\xff\0bob\0secret'), []),
    ('plain-bad-utf8-authcid', 'PLAIN', b64(b'\0b\xc3\0secret'), []),
    ('plain-bad-utf8-password', 'PLAIN', None, [b64(b'\0bob\0\xed\xa0\x80')]),
    ('plain-overlong-utf8', 'PLAIN', b64(b'\0bob\0\xc0\xaf'), []),
    ('login-empty-username', 'LOGIN', None, [b64(b'')]),
    ('login-empty-password', 'LOGIN', None, [b64('bob'), b64(b'')]),
    ('login-ir-empty-password', 'LOGIN', b64('bob'), ['']),
    ('login-nul-username', 'LOGIN', None, [b64(b'bob\0admin')]),
    ('login-nul-password', 'LOGIN', None, [b64('bob'), b64(b'pw\0')]),
    ('login-bad-utf8-username', 'LOGIN', None, [b64(b'\xff')]),
    ('login-bad-utf8-password', 'LOGIN', None, [b64('bob'), b64(b'p\xe9')]),
    ('login-ir-bad-utf8', 'LOGIN', b64(b'\x80bob'), []),
    ('xoauth2-empty-line', 'XOAUTH2', None, ['']),
    ('xoauth2-no-user', 'XOAUTH2', b64('auth=Bearer t\x01\x01'), []),
    ('xoauth2-empty-user', 'XOAUTH2', b64('user=\x01auth=Bearer t\x01\x01'), []),
    ('xoauth2-no-auth', 'XOAUTH2', b64('user=bob\x01\x01'), []),
    ('xoauth2-basic', 'XOAUTH2', b64('user=bob\x01auth=Basic dXNlcjpwdw==\x01\x01'), []),
    ('xoauth2-no-token', 'XOAUTH2', b64('user=bob\x01auth=Bearer\x01\x01'), []),
    ('xoauth2-blank-token', 'XOAUTH2', b64('user=bob\x01auth=Bearer   \x01\x01'), []),
    ('xoauth2-wrong-separator', 'XOAUTH2', b64('user=bob auth=Bearer t'), []),
    ('xoauth2-bad-utf8', 'XOAUTH2', b64(b'user=\xff\x01auth=Bearer t\x01\x01'), []),
    ('xoauth2-nul', 'XOAUTH2', b64(b'user=bob\0\x01auth=Bearer t\x01\x01'), []),
    ('cram-empty', 'CRAM-MD5', None, ['']),
    ('cram-no-space', 'CRAM-MD5', None, [b64('bob' + '0' * 32)]),
    ('cram-no-username', 'CRAM-MD5', None, [b64(' ' + '0' * 32)]),
    ('cram-short-digest', 'CRAM-MD5', None, [b64('bob ' + '0' * 31)]),
    ('cram-long-digest', 'CRAM-MD5', None, [b64('bob ' + '0' * 33)]),
    ('cram-not-hex', 'CRAM-MD5', None, [b64('bob ' + 'g' * 32)]),
    ('cram-trailing-space', 'CRAM-MD5', None, [b64('bob ' + '0' * 32 + ' ')]),
    ('cram-only-digest', 'CRAM-MD5', None, [b64('0' * 32)]),
    ('cram-bad-utf8', 'CRAM-MD5', None, [b64(b'b\xffb ' + b'0' * 32)]),
]


@pytest.mark.parametrize('mechanism, initial, lines', [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_payload_is_501(mechanism, initial, lines):
    def exchange_all():
        exchange = sasl.start(mechanism, initial)
        for line in lines:
            exchange.respond(line)
        return exchange

    error = expect_error(501, '5.5.2', exchange_all)
    assert error.message.startswith('Error: ')
    assert 'decode' not in error.message        # not mistaken for bad base64


@pytest.mark.parametrize('payload, what', [
    (b'\0\xff\0pw', 'not valid UTF-8'),
    (b'\0bob\0pw\0', 'authzid NUL authcid NUL password'),
    (b'\0bob\0', 'needs a username and a password'),
])
def test_plain_errors_say_what_is_wrong(payload, what):
    error = expect_error(501, '5.5.2', sasl.start, 'PLAIN', b64(payload))
    assert what in error.message


def test_a_failed_step_ends_the_exchange():
    exchange = sasl.start('PLAIN')
    expect_error(501, '5.5.2', exchange.respond, b64('no nuls'))
    assert_ended(exchange)


@pytest.mark.parametrize('mechanism, initial, lines', [
    ('PLAIN', b64('\0bob\0pw'), []),
    ('LOGIN', None, [b64('b'), b64('p')]),
    ('XOAUTH2', None, [b64(XOAUTH2_BOB)]),
])
def test_respond_after_success_is_a_runtime_error(mechanism, initial, lines):
    exchange = sasl.start(mechanism, initial)
    for line in lines:
        exchange.respond(line)
    assert exchange.result is not None
    with pytest.raises(RuntimeError):
        exchange.respond(b64('more'))
    assert exchange.result is not None        # the result survives the misuse


# --- validate() --------------------------------------------------------------

def finished(mechanism, initial, lines):
    return run(mechanism, initial, lines)[1]


def cram_auth(secret, username='bob'):
    exchange = sasl.start('CRAM-MD5', hostname='mx.example.com')
    exchange.respond(b64(f'{username} {cram_digest(secret, exchange.challenge)}'))
    return exchange.result


VALIDATE = [
    # id, make AuthInfo, secret, expected
    ('plain-right', lambda: finished('PLAIN', b64('\0bob\0secret'), []), 'secret', True),
    ('plain-right-bytes', lambda: finished('PLAIN', b64('\0bob\0secret'), []), b'secret', True),
    ('plain-wrong', lambda: finished('PLAIN', b64('\0bob\0secret'), []), 'Secret', False),
    ('plain-prefix', lambda: finished('PLAIN', b64('\0bob\0secret'), []), 'secre', False),
    ('plain-longer', lambda: finished('PLAIN', b64('\0bob\0secret'), []), 'secret!', False),
    ('plain-utf8', lambda: finished('PLAIN', b64('\0bob\0pässwörd'), []), 'pässwörd', True),
    ('plain-utf8-bytes', lambda: finished('PLAIN', b64('\0bob\0pässwörd'), []),
     'pässwörd'.encode(), True),
    ('plain-empty-secret', lambda: finished('PLAIN', b64('\0bob\0secret'), []), '', False),
    ('plain-authzid-is-not-password', lambda: finished('PLAIN', b64('adm\0bob\0secret'), []),
     'adm', False),
    ('login-right', lambda: finished('LOGIN', b64('bob'), [b64('secret')]), 'secret', True),
    ('login-wrong', lambda: finished('LOGIN', b64('bob'), [b64('secret')]), 'bob', False),
    ('login-bytearray', lambda: finished('LOGIN', b64('bob'), [b64('secret')]),
     bytearray(b'secret'), True),
    ('xoauth2-right', lambda: finished('XOAUTH2', b64(XOAUTH2_BOB), []), 'ya29.token', True),
    ('xoauth2-wrong', lambda: finished('XOAUTH2', b64(XOAUTH2_BOB), []), 'ya29.other', False),
    ('xoauth2-with-scheme', lambda: finished('XOAUTH2', b64(XOAUTH2_BOB), []),
     'Bearer ya29.token', False),
    ('cram-right', lambda: cram_auth('tanstaaftanstaaf'), 'tanstaaftanstaaf', True),
    ('cram-right-bytes', lambda: cram_auth('tanstaaftanstaaf'), b'tanstaaftanstaaf', True),
    ('cram-wrong', lambda: cram_auth('tanstaaftanstaaf'), 'tanstaaf', False),
    ('cram-utf8', lambda: cram_auth('pässwörd'), 'pässwörd', True),
    ('cram-long-secret', lambda: cram_auth('k' * 200), 'k' * 200, True),
    ('cram-empty-secret', lambda: cram_auth(''), '', False),
    ('xclient', lambda: sasl.AuthInfo('XCLIENT', 'bob'), 'anything', False),
    ('xclient-empty', lambda: sasl.AuthInfo('XCLIENT', 'bob'), '', False),
    ('unknown-method-with-password',
     lambda: sasl.AuthInfo('EXTERNAL', 'bob', password='pw'), 'pw', False),
]


@pytest.mark.parametrize('make, secret, expected', [case[1:] for case in VALIDATE],
                         ids=[case[0] for case in VALIDATE])
def test_validate(make, secret, expected):
    assert make().validate(secret) is expected


def test_cram_md5_validates_the_rfc_2195_example():
    # RFC 2195 section 2: user 'tim', secret 'tanstaaftanstaaf'.
    auth = sasl.AuthInfo('CRAM-MD5', 'tim',
                         challenge='<1896.697170952@postoffice.reston.mci.net>',
                         response='b913a602c7eda7a495b4e6e7334d3890')
    assert auth.validate('tanstaaftanstaaf')
    assert not auth.validate('tanstaaf')


def test_validate_uses_a_constant_time_compare(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(sasl.hmac, 'compare_digest',
                        lambda a, b: calls.append((a, b)) or real(a, b))
    for auth, secret in [(finished('PLAIN', b64('\0bob\0pw'), []), 'pw'),
                         (finished('XOAUTH2', b64(XOAUTH2_BOB), []), 'ya29.token'),
                         (cram_auth('pw'), 'pw')]:
        assert auth.validate(secret)
    assert len(calls) == 3


@pytest.mark.parametrize('secret', [None, 123, ['pw']])
def test_validate_rejects_a_secret_of_the_wrong_type(secret):
    auth = finished('PLAIN', b64('\0bob\0pw'), [])
    with pytest.raises(TypeError):
        auth.validate(secret)


# --- Secrets never leak into repr, str or errors ----------------------------

SECRET = 'Sup3r-S3cret-Value'


def leaky_infos():
    yield finished('PLAIN', b64(f'admin\0bob\0{SECRET}'), [])
    yield finished('LOGIN', b64('bob'), [b64(SECRET)])
    yield finished('XOAUTH2', b64(f'user=bob\x01auth=Bearer {SECRET}\x01\x01'), [])
    auth = cram_auth('pw')
    auth.response = SECRET     # the digest is secret-derived: hide it too
    yield auth


@pytest.mark.parametrize('auth', list(leaky_infos()), ids=lambda a: a.method)
def test_repr_never_shows_the_secret(auth):
    for text in (repr(auth), str(auth), f'{auth!r}', str(auth.masked())):
        assert SECRET not in text
        assert '<hidden>' in text
        assert 'bob' in text
    assert auth.masked()['username'] == 'bob'


def test_repr_shows_the_non_secret_fields():
    auth = finished('PLAIN', b64('admin\0bob\0pw'), [])
    assert repr(auth) == ("AuthInfo(method='PLAIN', username='bob', authzid='admin', "
                          'password=<hidden>)')
    assert repr(sasl.AuthInfo('XCLIENT', 'bob')) == "AuthInfo(method='XCLIENT', username='bob')"


def test_masked_keeps_absent_fields_as_none():
    masked = finished('LOGIN', b64('bob'), [b64('pw')]).masked()
    assert masked == {'method': 'LOGIN', 'username': 'bob', 'authzid': None,
                      'password': '<hidden>', 'access_token': None,
                      'challenge': None, 'response': None}


@pytest.mark.parametrize('mechanism, initial, lines', [
    ('PLAIN', b64(f'\0bob\0{SECRET}\0'), []),
    ('PLAIN', b64(f'\0bob\0{SECRET}'.encode() + b'\xff'), []),
    ('LOGIN', b64('bob'), [b64(SECRET.encode() + b'\0')]),
    ('XOAUTH2', b64(f'user=bob\x01auth=Basic {SECRET}'), []),
    ('CRAM-MD5', None, [b64(f'bob {SECRET}')]),
    ('LOGIN', b64('bob'), [SECRET + '!']),
])
def test_errors_never_echo_the_client_data(mechanism, initial, lines):
    def exchange_all():
        exchange = sasl.start(mechanism, initial)
        for line in lines:
            exchange.respond(line)

    with pytest.raises(SmtpError) as info:
        exchange_all()
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_xclient_auth_info_is_constructible():
    auth = sasl.AuthInfo('XCLIENT', 'bob')
    assert (auth.method, auth.username, auth.password, auth.authzid) == ('XCLIENT', 'bob',
                                                                        None, None)
    with pytest.raises(AttributeError):
        auth.extra = 1      # __slots__: no stray attributes


# --- mask_auth_command -------------------------------------------------------

@pytest.mark.parametrize('line, masked', [
    ('AUTH PLAIN AGJvYgBzZWNyZXQ=', 'AUTH PLAIN <hidden>'),
    ('auth plain AGJvYgBzZWNyZXQ=', 'auth plain <hidden>'),
    ('AUTH LOGIN Ym9i', 'AUTH LOGIN <hidden>'),
    ('AUTH XOAUTH2 dXNlcj1ib2IBYXV0aD1CZWFyZXIgdAEB', 'AUTH XOAUTH2 <hidden>'),
    ('AUTH PLAIN =', 'AUTH PLAIN <hidden>'),
    ('AUTH  PLAIN   AGJvYgBzZWNyZXQ=  extra', 'AUTH  PLAIN   <hidden>'),
    ('AUTH\tPLAIN\tAGJvYgBzZWNyZXQ=', 'AUTH\tPLAIN\t<hidden>'),
    ('AUTH PLAIN', 'AUTH PLAIN'),
    ('AUTH PLAIN ', 'AUTH PLAIN '),
    ('AUTH', 'AUTH'),
    ('AUTH CRAM-MD5', 'AUTH CRAM-MD5'),
    ('MAIL FROM:<bob@example.com>', 'MAIL FROM:<bob@example.com>'),
    ('AUTHX PLAIN AGJvYgBzZWNyZXQ=', 'AUTHX PLAIN AGJvYgBzZWNyZXQ='),
    ('', ''),
])
def test_mask_auth_command(line, masked):
    assert sasl.mask_auth_command(line) == masked


# --- xoauth2_error_challenge -------------------------------------------------

@pytest.mark.parametrize('kwargs, expected', [
    ({}, {'status': '401', 'schemes': 'Bearer'}),
    ({'status': '400', 'scope': 'https://mail.google.com/'},
     {'status': '400', 'schemes': 'Bearer', 'scope': 'https://mail.google.com/'}),
    ({'status': 401, 'schemes': 'bearer'}, {'status': '401', 'schemes': 'bearer'}),
])
def test_xoauth2_error_challenge(kwargs, expected):
    challenge = sasl.xoauth2_error_challenge(**kwargs)
    text = base64.b64decode(challenge, validate=True).decode()
    assert json.loads(text) == expected
    assert list(json.loads(text)) == list(expected)    # Gmail's key order
    assert ' ' not in text


def test_xoauth2_error_challenge_is_gmails():
    assert sasl.xoauth2_error_challenge('400', scope='https://mail.google.com/') == (
        b64('{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'))


# --- Properties ----------------------------------------------------------------

def outcome(call):
    try:
        return call()
    except SmtpError as error:
        assert error.code in (500, 501)
        return error


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_any_bytes_as_a_plain_response_parse_or_raise_smtp_error(data):
    result = outcome(lambda: sasl.start('PLAIN', b64(data)).result)
    if isinstance(result, sasl.AuthInfo):
        assert b'\0'.join([(result.authzid or '').encode(), result.username.encode(),
                           result.password.encode()]) == data
    exchange = sasl.start('PLAIN')
    outcome(lambda: exchange.respond(b64(data)))
    assert exchange.finished


@settings(max_examples=300)
@given(st.binary(max_size=64), st.binary(max_size=64), st.booleans())
def test_any_bytes_as_login_responses_parse_or_raise_smtp_error(user, password, use_ir):
    def exchange_all():
        exchange = sasl.start('LOGIN', b64(user) if use_ir else None)
        if not use_ir:
            exchange.respond(b64(user))
        exchange.respond(b64(password))
        return exchange.result

    result = outcome(exchange_all)
    if isinstance(result, sasl.AuthInfo):
        assert (result.username.encode(), result.password.encode()) == (user, password)


@settings(max_examples=300)
@given(st.sampled_from(sasl.SUPPORTED), st.lists(st.text(max_size=40), max_size=3))
def test_any_text_lines_end_in_a_result_or_smtp_error(mechanism, lines):
    exchange = sasl.start(mechanism)
    for line in lines:
        if exchange.finished:
            break
        if isinstance(outcome(lambda line=line: exchange.respond(line)), SmtpError):
            assert_ended(exchange)
            return
    assert exchange.finished == (exchange.challenge is None)


@settings(max_examples=200)
@given(st.sampled_from(['PLAIN', 'LOGIN', 'XOAUTH2']), st.binary(max_size=80))
def test_any_bytes_as_an_initial_response_parse_or_raise_smtp_error(mechanism, data):
    outcome(lambda: sasl.start(mechanism, b64(data)))
