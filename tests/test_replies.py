"""smtp_stack.replies: reply wire format (RFC 5321 4.2), enhanced status
codes (RFC 2034 / RFC 3463) and the predeclared replies."""
from __future__ import annotations

import re

import pytest

from smtp_stack import replies
from smtp_stack.replies import Reply, default_enhanced, format_reply, validate_code

# (code, message, enhanced, use_enhanced, wire)
FORMAT_CASES = [
    (250, 'OK', None, False, b'250 OK\r\n'),
    (250, 'OK', None, True, b'250 2.0.0 OK\r\n'),
    (250, 'Accepted', '2.1.5', True, b'250 2.1.5 Accepted\r\n'),
    (250, 'Accepted', '2.1.5', False, b'250 Accepted\r\n'),
    (550, 'No such user', None, True, b'550 5.0.0 No such user\r\n'),
    (550, 'No such user', '5.1.1', True, b'550 5.1.1 No such user\r\n'),
    # enhanced=False: this reply never carries one (the EHLO reply, RFC 2034)
    (250, 'mx.test', False, True, b'250 mx.test\r\n'),
    (250, 'mx.test', False, False, b'250 mx.test\r\n'),
    # 1xx/3xx have no enhanced code
    (354, 'End data with <CR><LF>.<CR><LF>', None, True, b'354 End data with <CR><LF>.<CR><LF>\r\n'),
    (334, 'VXNlcm5hbWU6', None, True, b'334 VXNlcm5hbWU6\r\n'),
    # already starts with an enhanced code: not doubled
    (550, '5.7.1 Denied', None, True, b'550 5.7.1 Denied\r\n'),
    (550, '5.7.1 Denied', '5.7.1', True, b'550 5.7.1 Denied\r\n'),
    (250, '2.0.0', None, True, b'250 2.0.0\r\n'),
    (421, '4.123.456 Busy', None, True, b'421 4.123.456 Busy\r\n'),
    # looks like one but is not
    (250, '2.0 OK', None, True, b'250 2.0.0 2.0 OK\r\n'),
    (250, '2.0.0OK', None, True, b'250 2.0.0 2.0.0OK\r\n'),
    (250, '3.0.0 OK', None, True, b'250 2.0.0 3.0.0 OK\r\n'),
    (250, 'OK 2.0.0', None, True, b'250 2.0.0 OK 2.0.0\r\n'),
    # multi-line: list or '\n'
    (250, ['mx.test', 'PIPELINING', '8BITMIME'], False, True,
     b'250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n'),
    (250, 'a\nb\nc', None, False, b'250-a\r\n250-b\r\n250 c\r\n'),
    (250, 'a\r\nb', None, False, b'250-a\r\n250 b\r\n'),
    (214, ['a', 'b'], None, True, b'214-2.0.0 a\r\n214 2.0.0 b\r\n'),
    (550, 'a\nb', '5.7.1', True, b'550-5.7.1 a\r\n550 5.7.1 b\r\n'),
    (250, ('x', 'y'), None, False, b'250-x\r\n250 y\r\n'),
    (250, [1, 2], None, False, b'250-1\r\n250 2\r\n'),
    (250, [], None, True, b'250 2.0.0\r\n'),
    (250, '', None, True, b'250 2.0.0\r\n'),
    # text is UTF-8 (SMTPUTF8); surrogate escapes give the original bytes back
    (250, 'héllo', None, False, '250 héllo\r\n'.encode()),
    (250, 'x\udcff', None, False, b'250 x\xff\r\n'),
]


@pytest.mark.parametrize('code, message, enhanced, use_enhanced, wire', FORMAT_CASES)
def test_format_reply(code, message, enhanced, use_enhanced, wire):
    assert format_reply(code, message, enhanced, use_enhanced) == wire


def test_format_reply_default_is_without_enhanced_codes():
    assert format_reply(250, 'OK') == b'250 OK\r\n'


@pytest.mark.parametrize('message', ['', []])
def test_empty_message_is_one_reply_line(message):
    wire = format_reply(250, message)
    assert wire in (b'250\r\n', b'250 \r\n')


@pytest.mark.parametrize('message', ['a\nb\nc', ['a', 'b', 'c'], 'x\n', '\n'])
def test_multiline_shape(message):
    lines = format_reply(451, message, None, True).split(b'\r\n')
    assert lines[-1] == b''
    lines = lines[:-1]
    assert all(line[:3] == b'451' for line in lines)
    assert [line[3:4] for line in lines] == [b'-'] * (len(lines) - 1) + [b' ']
    assert all(line[4:9] == b'4.3.0' for line in lines)


DEFAULTS = [
    (211, '2.0.0'), (214, '2.0.0'), (220, '2.0.0'), (221, '2.0.0'), (235, '2.7.0'),
    (250, '2.0.0'), (251, '2.1.5'), (252, '2.1.5'),
    (421, '4.3.0'), (450, '4.2.0'), (451, '4.3.0'), (452, '4.3.1'), (454, '4.7.0'),
    (455, '4.5.4'),
    (500, '5.5.2'), (501, '5.5.4'), (502, '5.5.1'), (503, '5.5.1'), (504, '5.5.4'),
    (521, '5.3.2'), (530, '5.7.0'), (534, '5.7.9'), (535, '5.7.8'), (538, '5.7.11'),
    (550, '5.0.0'), (551, '5.1.6'), (552, '5.3.4'), (553, '5.1.3'), (554, '5.0.0'),
    (555, '5.5.4'),
    # not in the table: class.0.0
    (200, '2.0.0'), (299, '2.0.0'), (400, '4.0.0'), (459, '4.0.0'), (599, '5.0.0'),
    # no enhanced code outside 2xx/4xx/5xx
    (334, None), (354, None), (300, None), (199, None), (100, None), (600, None),
    (0, None), (-250, None),
]


@pytest.mark.parametrize('code, enhanced', DEFAULTS)
def test_default_enhanced(code, enhanced):
    assert default_enhanced(code) == enhanced


@pytest.mark.parametrize('code', [200, 250, 334, 354, 421, 599])
def test_validate_code_accepts(code):
    assert validate_code(code) == code


@pytest.mark.parametrize('code', [199, 600, 0, -250, 1000, True, False, '250', 250.0, None, b'250'])
def test_validate_code_rejects(code):
    with pytest.raises(ValueError):
        validate_code(code)


def test_reply_defaults():
    reply = Reply(250, 'OK')
    assert reply.enhanced is None
    assert (reply.code, reply.message) == (250, 'OK')


PREDECLARED = sorted((name, value) for name, value in vars(replies).items()
                     if isinstance(value, Reply))


def test_there_are_predeclared_replies():
    assert len(PREDECLARED) > 20


@pytest.mark.parametrize('name, reply', PREDECLARED, ids=[n for n, _ in PREDECLARED])
def test_predeclared_reply_is_consistent(name, reply):
    assert validate_code(reply.code) == reply.code
    assert reply.message
    if reply.code // 100 in (2, 4, 5):
        assert re.fullmatch(r'[245]\.\d{1,3}\.\d{1,3}', reply.enhanced)
        assert reply.enhanced[0] == str(reply.code)[0]
    else:
        assert reply.enhanced in (None, False)
    wire = format_reply(*reply, use_enhanced=True)
    assert wire.startswith(f'{reply.code} '.encode())
    assert wire.endswith(b'\r\n') and wire.count(b'\r\n') == 1
