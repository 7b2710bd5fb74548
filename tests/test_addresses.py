"""smtp_stack.addresses: MAIL/RCPT paths (RFC 5321 4.1.2), ESMTP parameters
and the DSN / SIZE / BODY / AUTH parameter checks. Every rejection is an
`SmtpError` carrying the reply code and enhanced code the client gets."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_stack.addresses import (
    Address, check_auth_param, check_body, check_envid, check_flag, check_notify,
    check_orcpt, check_ret, check_size, parse_mailbox, parse_params, parse_path,
    parse_path_argument, parse_path_general,
)
from smtp_stack.errors import SmtpError

FAST = settings(max_examples=200, deadline=None)


def error_of(fn, *args, **kwargs) -> SmtpError:
    with pytest.raises(SmtpError) as info:
        fn(*args, **kwargs)
    return info.value


# --- parse_path_argument --------------------------------------------------------
# (arg, keyword, lenient, (path, params))
PATH_ARGS = [
    ('FROM:<user@example.com>', 'FROM', False, ('user@example.com', '')),
    ('from:<user@example.com>', 'FROM', False, ('user@example.com', '')),
    ('FROM:<>', 'FROM', False, ('', '')),
    ('FROM: <user@example.com>', 'FROM', False, ('user@example.com', '')),
    ('FROM:  <a@b.c> SIZE=10', 'FROM', False, ('a@b.c', ' SIZE=10')),
    ('FROM:<a@b.c> SIZE=10 BODY=8BITMIME', 'FROM', False, ('a@b.c', ' SIZE=10 BODY=8BITMIME')),
    ('TO:<a@b.c> NOTIFY=NEVER', 'TO', False, ('a@b.c', ' NOTIFY=NEVER')),
    ('To:<Postmaster>', 'TO', False, ('Postmaster', '')),
    ('TO:<"a>b"@x.org>', 'TO', False, ('"a>b"@x.org', '')),
    ('TO:<"a\\">"@x.org> X=1', 'TO', False, ('"a\\">"@x.org', ' X=1')),
    ('TO:<"a<b"@x.org>', 'TO', False, ('"a<b"@x.org', '')),
    ('TO:<@r1,@r2:u@x.org>', 'TO', False, ('@r1,@r2:u@x.org', '')),
    ('FROM:<a@b.c> ', 'FROM', False, ('a@b.c', ' ')),
    # lenient: no angle brackets
    ('FROM:user@example.com', 'FROM', True, ('user@example.com', '')),
    ('FROM: user@example.com SIZE=5', 'FROM', True, ('user@example.com', 'SIZE=5')),
    ('TO:user@example.com', 'TO', True, ('user@example.com', '')),
    ('FROM:<a@b.c>', 'FROM', True, ('a@b.c', '')),
]


@pytest.mark.parametrize('arg, keyword, lenient, expected', PATH_ARGS)
def test_parse_path_argument(arg, keyword, lenient, expected):
    assert parse_path_argument(arg, keyword, lenient) == expected


# (arg, keyword, lenient, enhanced)
BAD_PATH_ARGS = [
    ('', 'FROM', False, '5.5.4'),
    ('TO:<a@b.c>', 'FROM', False, '5.5.4'),
    ('FROM:<a@b.c>', 'TO', False, '5.5.4'),
    ('FROM <a@b.c>', 'FROM', False, '5.5.4'),
    ('FROM :<a@b.c>', 'FROM', False, '5.5.4'),
    ('FROMX:<a@b.c>', 'FROM', False, '5.5.4'),
    ('FROM:a@b.c', 'FROM', False, '5.1.7'),
    ('TO:a@b.c', 'TO', False, '5.1.3'),
    ('FROM:', 'FROM', False, '5.1.7'),
    ('FROM:', 'FROM', True, '5.1.7'),
    ('TO: ', 'TO', True, '5.1.3'),
    ('FROM:<a@b.c', 'FROM', False, '5.1.7'),
    ('TO:<a@b.c', 'TO', True, '5.1.3'),
    ('TO:<<a@b.c>>', 'TO', False, '5.1.3'),
    ('TO:<"a>@b.c', 'TO', False, '5.1.3'),        # '>' inside an unclosed quote
    ('FROM:<a@b.c>SIZE=1', 'FROM', False, '5.5.4'),
    ('FROM:<a@b.c>>', 'FROM', False, '5.5.4'),
]


@pytest.mark.parametrize('arg, keyword, lenient, enhanced', BAD_PATH_ARGS)
def test_parse_path_argument_errors(arg, keyword, lenient, enhanced):
    err = error_of(parse_path_argument, arg, keyword, lenient)
    assert (err.code, err.enhanced) == (501, enhanced)


def test_keyword_error_names_the_command():
    assert 'MAIL FROM' in error_of(parse_path_argument, 'X', 'FROM').message
    assert 'RCPT TO' in error_of(parse_path_argument, 'X', 'TO').message


# --- parse_mailbox --------------------------------------------------------------
GOOD_MAILBOXES = [
    'user@example.com',
    'first.last@sub.example.com',
    "o'brien+tag@example.com",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    'a-b@a-b.example',
    'user@localhost',
    'user@xn--bcher-kva.example',
    'USER@EXAMPLE.COM',
    '"john doe"@example.com',
    '"a>b"@example.com',
    '"a<b"@example.com',
    '"a@b"@example.com',
    '"a\\"b"@example.com',
    '"a\\\\b"@example.com',
    '"a\\ b"@example.com',
    '"a.."@example.com',
    '"é"@example.com',
    'user@[192.0.2.1]',
    'user@[IPv6:2001:db8::1]',
    'user@[ipv6:2001:db8::1]',
    'user@[IPv6:::1]',
    'user@[IPv6:::ffff:192.0.2.1]',
    'user@[x-tag:anything]',
    'üser@exämple.com',
    '用户@例子.广告',
    'почта@пример.рф',
    'a' * 64 + '@example.com',
    'é' * 32 + '@example.com',            # 64 octets of UTF-8
]


@pytest.mark.parametrize('path', GOOD_MAILBOXES)
@pytest.mark.parametrize('lenient', [False, True], ids=['strict', 'lenient'])
def test_parse_mailbox_accepts(path, lenient):
    assert parse_mailbox(path, lenient=lenient) == path


@pytest.mark.parametrize('path, address', [
    ('@relay.example:user@example.com', 'user@example.com'),
    ('@a.example,@b.example:user@example.com', 'user@example.com'),
    ('@1.example,@b-c.example,@d:"q u"@example.com', '"q u"@example.com'),
])
def test_source_routes_are_ignored(path, address):
    assert parse_mailbox(path) == address


def test_null_path_only_where_allowed():
    assert parse_mailbox('', allow_null=True) == ''
    err = error_of(parse_mailbox, '', bad='5.1.7')
    assert (err.code, err.enhanced) == (501, '5.1.7')


@pytest.mark.parametrize('path', ['Postmaster', 'postmaster', 'POSTMASTER', 'PostMaster'])
def test_postmaster_without_domain_for_rcpt(path):
    assert parse_mailbox(path, allow_postmaster=True) == path
    err = error_of(parse_mailbox, path)
    assert (err.code, err.enhanced) == (501, '5.1.3')


def test_postmaster_with_domain_is_an_ordinary_address():
    assert parse_mailbox('postmaster@example.com') == 'postmaster@example.com'


BAD_MAILBOXES = [
    'user',
    '@example.com',
    'user@',
    'user@@example.com',
    'user.@example.com',
    '.user@example.com',
    'a..b@example.com',
    'us er@example.com',
    'user\t@example.com',
    'us(er)@example.com',
    'us,er@example.com',
    'a"b@example.com',
    '"unterminated@example.com',
    '"a"b"@example.com',
    '"a\x00"@example.com',
    '"a\\\x01"@example.com',
    'user@-example.com',
    'user@example-.com',
    'user@exa mple.com',
    'user@example..com',
    'user@.example.com',
    'user@example.com.',
    'user@under_score.example.com',
    'user@exam\x00ple.com',
    'user@[192.0.2.1',
    'user@192.0.2.1]',
    'user@[]',
    'user@[1.2.3]',
    'user@[256.1.1.1]',
    'user@[IPv6:zz::1]',
    'user@[IPv6:1.2.3.4]',
    'user@[:x]',
    'user@[tag:a b]',
    '@:user@example.com',
    '@relay,user@example.com',
    '@relay user@example.com',
    '@',
]


@pytest.mark.parametrize('path', BAD_MAILBOXES)
@pytest.mark.parametrize('bad', ['5.1.3', '5.1.7'])
def test_parse_mailbox_rejects_strict(path, bad):
    err = error_of(parse_mailbox, path, bad=bad)
    assert (err.code, err.enhanced) == (501, bad)


LENIENT_ONLY = [
    'user.@example.com',
    '.user@example.com',
    'a..b@example.com',
    'user@under_score.example.com',
    'user@_dmarc.example.com',
    'user@example.com.',
]


@pytest.mark.parametrize('path', LENIENT_ONLY)
def test_lenient_accepts_common_broken_forms(path):
    assert parse_mailbox(path, lenient=True) == path
    assert error_of(parse_mailbox, path).code == 501


@pytest.mark.parametrize('path', [
    'user', 'us er@example.com', 'user@-example.com', 'user@example..com',
    'user@', 'a"b@example.com', 'user@example.com..',
])
def test_lenient_still_rejects_real_garbage(path):
    assert error_of(parse_mailbox, path, lenient=True).code == 501


def _domain(length: int) -> str:
    """A syntactically valid domain of exactly `length` octets."""
    labels = []
    while length > 0:
        size = min(63, length if length <= 63 else length - 2)
        labels.append('d' * size)
        length -= size + 1
    domain = '.'.join(labels)
    assert len(domain) == sum(len(lab) for lab in labels) + len(labels) - 1
    return domain


@pytest.mark.parametrize('length', [1, 100, 254, 255, 256, 300])
def test_domain_helper(length):
    assert len(_domain(length)) == length


@pytest.mark.parametrize('path, code, word', [
    ('a' * 64 + '@example.com', None, None),
    ('a' * 65 + '@example.com', 553, 'local'),
    ('é' * 33 + '@example.com', 553, 'local'),           # 66 octets
    ('"' + 'a' * 62 + '"@example.com', None, None),        # 64 with the quotes
    ('"' + 'a' * 63 + '"@example.com', 553, 'local'),
    ('a@' + _domain(252), None, None),                     # 254 octets in all
    ('a@' + _domain(256), 553, 'domain'),
    ('a@' + _domain(300), 553, 'domain'),
    ('a@' + _domain(255), 553, 'address'),                 # domain fits, path doesn't
    ('a' * 64 + '@' + _domain(200), 553, 'address'),
])
@pytest.mark.parametrize('bad', ['5.1.3', '5.1.7'])
def test_length_limits(path, code, word, bad):
    # RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets
    if code is None:
        assert parse_mailbox(path, bad=bad) == path
    else:
        err = error_of(parse_mailbox, path, bad=bad)
        assert (err.code, err.enhanced) == (code, bad)
        assert word in err.message


@pytest.mark.parametrize('content_length', [255, 256])
def test_path_limit_counts_the_angle_brackets(content_length):
    path = 'a' * 64 + '@' + _domain(content_length - 65)
    assert len(path) == content_length
    assert error_of(parse_mailbox, path).code == 553


def test_ipv6_literal_with_zone_id_is_rejected():
    assert error_of(parse_mailbox, 'user@[IPv6:fe80::1%eth0]').code == 501


def test_general_address_literal_may_contain_at_sign():
    assert parse_mailbox('user@[x-tag:a@b]') == 'user@[x-tag:a@b]'


# --- parse_params --------------------------------------------------------------
PARAMS = [
    ('', {}),
    ('   ', {}),
    ('SIZE=100', {'SIZE': '100'}),
    (' SIZE=100', {'SIZE': '100'}),
    ('size=100 body=8BITMIME smtputf8', {'SIZE': '100', 'BODY': '8BITMIME', 'SMTPUTF8': True}),
    ('BODY=8bitmime', {'BODY': '8bitmime'}),                   # values keep their case
    ('SIZE=1   BODY=7BIT  ', {'SIZE': '1', 'BODY': '7BIT'}),
    ('SMTPUTF8', {'SMTPUTF8': True}),
    ('X-VENDOR-FLAG', {'X-VENDOR-FLAG': True}),
    ('8BIT=x', {'8BIT': 'x'}),
    ('ENVID=QQ+2Bx', {'ENVID': 'QQ+2Bx'}),
    ('ORCPT=rfc822;user@example.com', {'ORCPT': 'rfc822;user@example.com'}),
    ('AUTH=<>', {'AUTH': '<>'}),
    ('X=!"#$%&\'()*+,-./:;<>?@[\\]^_`{|}~', {'X': '!"#$%&\'()*+,-./:;<>?@[\\]^_`{|}~'}),
    ('X=üñí', {'X': 'üñí'}),
    ('X=日本', {'X': '日本'}),
    ('SIZE=1\tBODY=7BIT', {'SIZE': '1', 'BODY': '7BIT'}),
]


@pytest.mark.parametrize('text, expected', PARAMS)
def test_parse_params(text, expected):
    assert parse_params(text) == expected


BAD_PARAMS = [
    'SIZE=',
    '=100',
    '=',
    'SI_ZE=1',
    '-SIZE=1',
    'SIZE=1=2',
    'X=a=b',
    'KÉY=1',
    'X=\x7f',
    'X=\x00',
    'X=\x01',
    'SIZE=1 SIZE=2',
    'size=1 SIZE=2',
    'SMTPUTF8 smtputf8',
    'SMTPUTF8 SMTPUTF8=yes',
]


@pytest.mark.parametrize('text', BAD_PARAMS)
def test_parse_params_errors(text):
    err = error_of(parse_params, text)
    assert (err.code, err.enhanced) == (501, '5.5.4')


def test_duplicate_parameter_is_named():
    assert 'SIZE' in error_of(parse_params, 'size=1 SIZE=2').message


def test_utf8_values_are_kept_as_sent():
    assert parse_params('X=abc') == {'X': 'abc'}
    assert parse_params('X=ü') == {'X': 'ü'}


# --- check_* ------------------------------------------------------------------
BODY_TYPES = frozenset({'7BIT', '8BITMIME', 'BINARYMIME'})

GOOD_CHECKS = [
    (check_size, ('0',), 0),
    (check_size, ('10485760',), 10485760),
    (check_size, ('1' * 20,), int('1' * 20)),
    (check_size, ('007',), 7),
    (lambda v: check_body(v, BODY_TYPES), ('8bitmime',), '8BITMIME'),
    (lambda v: check_body(v, BODY_TYPES), ('7BIT',), '7BIT'),
    (lambda v: check_body(v, BODY_TYPES), ('BinaryMIME',), 'BINARYMIME'),
    (check_flag, ('SMTPUTF8', True), True),
    (check_ret, ('full',), 'FULL'),
    (check_ret, ('HDRS',), 'HDRS'),
    (check_envid, ('QQ314159',), 'QQ314159'),
    (check_envid, ('a+2Bb+3D',), 'a+2Bb+3D'),
    (check_envid, ('x' * 100,), 'x' * 100),
    (check_notify, ('NEVER',), 'NEVER'),
    (check_notify, ('never',), 'NEVER'),
    (check_notify, ('SUCCESS',), 'SUCCESS'),
    (check_notify, ('success,failure',), 'SUCCESS,FAILURE'),
    (check_notify, ('DELAY,FAILURE,SUCCESS',), 'DELAY,FAILURE,SUCCESS'),
    (check_orcpt, ('rfc822;user@example.com',), 'rfc822;user@example.com'),
    (check_orcpt, ('RFC822;a+2Bb@example.com',), 'RFC822;a+2Bb@example.com'),
    (check_orcpt, ('utf-8;üser@example.com',), 'utf-8;üser@example.com'),
    (check_orcpt, ('x-type;' + 'a' * 400,), 'x-type;' + 'a' * 400),
    (check_auth_param, ('<>',), '<>'),
    (check_auth_param, ('user@example.com',), 'user@example.com'),
    (check_auth_param, ('a+2Bb@example.com',), 'a+2Bb@example.com'),
]


@pytest.mark.parametrize('fn, args, expected', GOOD_CHECKS)
def test_check_accepts(fn, args, expected):
    assert fn(*args) == expected


BAD_CHECKS = [
    (check_size, (True,)),
    (check_size, ('',)),
    (check_size, ('-1',)),
    (check_size, ('+1',)),
    (check_size, ('1.5',)),
    (check_size, ('1e3',)),
    (check_size, ('0x10',)),
    (check_size, (' 1',)),
    (check_size, ('1' * 21,)),
    (lambda v: check_body(v, BODY_TYPES), (True,)),
    (lambda v: check_body(v, BODY_TYPES), ('BINARY',)),
    (lambda v: check_body(v, frozenset({'7BIT', '8BITMIME'})), ('BINARYMIME',)),
    (check_flag, ('SMTPUTF8', 'yes')),
    (check_flag, ('REQUIRETLS', '')),
    (check_ret, (True,)),
    (check_ret, ('NONE',)),
    (check_ret, ('',)),
    (check_envid, (True,)),
    (check_envid, ('x' * 101,)),
    (check_envid, ('a+2b',)),
    (check_envid, ('a+',)),
    (check_envid, ('a=b',)),
    (check_envid, ('é',)),
    (check_notify, (True,)),
    (check_notify, ('',)),
    (check_notify, ('NEVER,SUCCESS',)),
    (check_notify, ('SUCCESS,SUCCESS',)),
    (check_notify, ('SUCCESS,',)),
    (check_notify, ('SOMETIMES',)),
    (check_orcpt, (True,)),
    (check_orcpt, ('rfc822',)),
    (check_orcpt, (';user@example.com',)),
    (check_orcpt, ('rfc822;',)),
    (check_orcpt, ('rfc_822;a@b',)),
    (check_orcpt, ('rfc822;a+zz',)),
    (check_orcpt, ('rfc822;üser@example.com',)),
    (check_orcpt, ('rfc822;' + 'a' * 500,)),
    (check_auth_param, (True,)),
    (check_auth_param, ('a=b',)),
    (check_auth_param, ('a+4',)),
    (check_auth_param, ('üser@example.com',)),
]


@pytest.mark.parametrize('fn, args', BAD_CHECKS)
def test_check_rejects(fn, args):
    err = error_of(fn, *args)
    assert (err.code, err.enhanced) == (501, '5.5.4')


def test_size_with_superscript_digit_is_a_syntax_error():
    err = error_of(check_size, '²')
    assert (err.code, err.enhanced) == (501, '5.5.4')


def test_size_with_non_ascii_digits_is_a_syntax_error():
    err = error_of(check_size, '١٢')
    assert (err.code, err.enhanced) == (501, '5.5.4')


# --- Address ----------------------------------------------------------------
def test_address_value():
    a = Address('user@example.com', {'SIZE': '10'})
    assert str(a) == 'user@example.com'
    assert not a.is_null
    assert Address('').is_null
    assert Address('x@y').args == {}
    assert Address('x@y').args is not Address('x@y').args


# --- property: only SmtpError escapes -------------------------------------------
_path_chars = st.sampled_from(list('<>@"\\.:,[]-_ +=aZ09é\x00\t;') + ['IPv6:', 'FROM:', 'TO:'])
_pathish = st.lists(_path_chars, max_size=30).map(''.join)


@FAST
@given(text=st.one_of(st.text(max_size=60), _pathish),
       keyword=st.sampled_from(['FROM', 'TO']),
       lenient=st.booleans())
def test_random_path_arguments_raise_only_smtp_error(text, keyword, lenient):
    for arg in (text, keyword + ':' + text, keyword + ':<' + text):
        try:
            path, params = parse_path_argument(arg, keyword, lenient)
        except SmtpError as err:
            assert err.code == 501
            continue
        try:
            parse_mailbox(path, lenient=lenient, allow_null=keyword == 'FROM',
                          allow_postmaster=keyword == 'TO')
        except SmtpError as err:
            assert err.code in (501, 553)
        try:
            parse_params(params)
        except SmtpError as err:
            assert err.code == 501


@FAST
@given(text=st.one_of(st.text(max_size=80), _pathish), lenient=st.booleans())
def test_random_mailboxes_raise_only_smtp_error(text, lenient):
    try:
        result = parse_mailbox(text, lenient=lenient, allow_null=True, allow_postmaster=True)
    except SmtpError as err:
        assert err.code in (501, 553)
    else:
        assert result in text


@FAST
@given(text=st.text(max_size=80))
def test_random_params_raise_only_smtp_error(text):
    try:
        params = parse_params(text)
    except SmtpError as err:
        assert err.code == 501
    else:
        assert all(key == key.upper() for key in params)


# --- parse_path: the one-match fast path agrees with the general parser -----------
def _outcome(fn, *args):
    try:
        return fn(*args)
    except SmtpError as err:
        return (err.code, err.enhanced, err.message)


_simple_chars = st.sampled_from(list('aZ09.-_+=@<> "\\[]:é\u212a\t') + ['FROM:', 'TO:', 'SIZE=1', 'x' * 64])
_label_chars = st.sampled_from(list('aZ09.-_') + ['x' * 63])
_simple_args = st.builds(
    lambda kw, local, domain, tail: f'{kw}<{local}@{domain}>{tail}',
    st.sampled_from(['FROM:', 'from:', 'To:', 'TO:', 'FROM: ', 'TO:<', 'fRoM:']),
    st.lists(_simple_chars, max_size=12).map(''.join),
    st.one_of(st.lists(_simple_chars, max_size=12), st.lists(_label_chars, max_size=12)).map(''.join),
    st.sampled_from(['', ' ', ' SIZE=10', ' BODY=8BITMIME SMTPUTF8', 'x', ' =bad', '  NOTIFY=NEVER']))


@pytest.mark.parametrize('arg', [
    'FROM:<user@example.com>', 'from:<a.b+c@sub.example.org> SIZE=100 BODY=8BITMIME',
    'TO:<' + 'l' * 64 + '@example.com>', 'TO:<' + 'l' * 65 + '@example.com>',
    'TO:<x@' + ('a' * 63 + '.') * 4 + 'com>', 'TO:<postmaster>', 'FROM:<>',
    'TO:<"quoted"@example.com>', 'TO:<a..b@example.com>', 'TO:<a@-example.com>',
    'TO:<a@example.com>SIZE=1', 'TO:<a@example.com> SIZE=1 SIZE=2', 'TO:<@r.example:a@b.example>',
    'TO: <a@b.example>', 'TO:<a@[127.0.0.1]>', 'TO:<\u212aelvin@example.com>',
    'FROM:<a@b.example> ', 'TO:<a@b_c.example>', 'TO:<a@_b.example>', 'TO:<a@b-.example>',
    'TO:<a@.example>', 'TO:<a@b.example.>', 'TO:<a.@b.example>', 'TO:<.a@b.example>',
    'TO:<a@b..example>', 'TO:<a@@b.example>', 'TO:<a@b.example>\t', 'TO:<a@b.example>\n',
])
@pytest.mark.parametrize('keyword', ['FROM', 'TO'])
@pytest.mark.parametrize('lenient', [False, True])
def test_parse_path_is_the_general_parser(arg, keyword, lenient):
    assert (_outcome(parse_path, arg, keyword, lenient)
            == _outcome(parse_path_general, arg, keyword, lenient))


@settings(max_examples=500, deadline=None)
@given(arg=st.one_of(_simple_args, st.text(max_size=40)), keyword=st.sampled_from(['FROM', 'TO']),
       lenient=st.booleans())
def test_random_paths_parse_as_the_general_parser_does(arg, keyword, lenient):
    assert (_outcome(parse_path, arg, keyword, lenient)
            == _outcome(parse_path_general, arg, keyword, lenient))


# --- the character classes ---------------------------------------------------------
# Each class of addresses.py is written as the ASCII characters it leaves out;
# here, as the grammar writes it: its ASCII characters, plus every non-ASCII
# character (RFC 6531 3.3). The two must be the same set, over all of Unicode.
UTF8 = '\u0080-\U0010ffff'
ATEXT_ASCII = r"\-A-Za-z0-9!#$%&'*+/=?^_`{|}~"
CLASSES = [
    ('ATEXT', rf'[{ATEXT_ASCII}{UTF8}]'),
    ('DOT_ATEXT', rf'[.{ATEXT_ASCII}{UTF8}]'),
    ('QTEXT', rf'[\x20\x21\x23-\x5b\x5d-\x7e{UTF8}]'),
    ('LET_DIG', rf'[A-Za-z0-9{UTF8}]'),
    ('LDH', rf'[A-Za-z0-9{UTF8}-]'),
    ('LENIENT_LET_DIG', rf'[A-Za-z0-9_{UTF8}]'),
    ('LENIENT_LDH', rf'[A-Za-z0-9_{UTF8}-]'),
    ('VALUE_CHAR', rf'[\x21-\x3c\x3e-\x7e{UTF8}]'),
]
EVERY_CHARACTER = ''.join(map(chr, range(0x110000)))


@pytest.mark.parametrize('name, grammar', CLASSES, ids=[name for name, _ in CLASSES])
def test_each_character_class_is_the_grammars_set(name, grammar):
    import re

    from smtp_stack import addresses
    ours = re.findall(getattr(addresses, name), EVERY_CHARACTER)
    assert ours == re.findall(grammar, EVERY_CHARACTER)
