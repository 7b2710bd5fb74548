"""envelope.add_header: checked fields, folded, on top of every stored or
relayed message; envelope.remove_header and HeaderFilter: fields taken out
of the message's own header section as it streams."""
from __future__ import annotations

import itertools
import os
import re
import smtplib

import pytest
from hypothesis import given, settings, strategies as st

from smtp_stack.delivery import CallableDelivery, MaildirDelivery, RelayDelivery
from smtp_stack.headers import (HeaderFilter, check_field, fold, header_block, remove_fields,
                                without_fields)
from smtp_stack.session import Envelope
from smtp_stack.testing import MailSink

from conftest import WAIT

BODY = b'From: a@b.example\r\nSubject: headed\r\n\r\nbody\r\n'
AR = 'mx.test; spf=pass smtp.mailfrom=b.example'
SPAM = 'No, score=-0.1'


# -- pure: names, values, folding ---------------------------------------------------

@pytest.mark.parametrize('name', ['Authentication-Results', 'X-Spam-Status', 'a', '!#$%&*+-.^_`|~'])
def test_field_names_of_rfc5322_syntax_are_accepted(name):
    assert check_field(name, 'v') == (name, 'v')


@pytest.mark.parametrize('name', ['', 'With Space', 'Colon:', 'Tab\t', 'Ünicode', 'new\nline',
                                  None, 5, 'DEL\x7f'])
def test_bad_field_names_are_refused(name):
    with pytest.raises(ValueError):
        check_field(name, 'v')


@pytest.mark.parametrize('value', ['a\r\nX-Injected: 1', 'a\rb', 'a\nb', 'a\0b', b'bytes'])
def test_values_with_cr_lf_nul_or_not_text_are_refused(value):
    with pytest.raises(ValueError):
        check_field('X-Test', value)


def test_a_long_value_is_folded_at_white_space_into_short_lines():
    value = ' '.join(f'word{i}' for i in range(60))
    text = fold('X-Long', value)
    lines = text.split('\r\n')
    assert lines[-1] == '' and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(' ') for line in lines[1:-1])
    # Unfolding (RFC 5322 2.2.3: remove CRLF before WSP) gives the value back, byte for byte.
    assert text[:-2].replace('\r\n', '') == f'X-Long: {value}'


def test_a_word_too_long_for_any_line_is_kept_whole_up_to_998():
    assert fold('X-Token', 'a' * 900) == f'X-Token: {"a" * 900}\r\n'
    with pytest.raises(ValueError):
        fold('X-Token', 'a' * 1000)


def test_the_last_added_field_goes_on_top():
    assert header_block([('A', '1'), ('B', '2')]) == b'B: 2\r\nA: 1\r\n'


def test_envelope_records_checked_fields_in_call_order():
    envelope = Envelope()
    envelope.add_header('X-One', '1')
    envelope.add_header('X-Two', '2')
    with pytest.raises(ValueError):
        envelope.add_header('X-Bad', 'evil\r\nBcc: victim@d.example')
    with pytest.raises(ValueError):
        envelope.add_header('X-Huge', 'x' * 2000)
    assert envelope.added_headers == [('X-One', '1'), ('X-Two', '2')]
    envelope.added_headers.append(('X-Sneaky', 'unchecked'))     # a copy: no way around the checks
    assert len(envelope.added_headers) == 2


# -- over sockets: every delivery puts them on top, in the documented order ---------------

def adds_headers(ctx, next):
    if ctx.command_name == 'DATA':
        ctx.session.envelope.add_header('Authentication-Results', AR)
        ctx.session.envelope.add_header('X-Spam-Status', SPAM)
    next()


def header_names(raw: bytes, count: int) -> list:
    """The names of the first `count` header fields, folded lines joined."""
    names = []
    for line in raw.split(b'\n'):
        if line[:1] in (b' ', b'\t'):
            continue
        names.append(line.split(b':', 1)[0].decode())
        if len(names) == count:
            return names
    return names


def test_maildir_order_is_return_path_added_fields_received_then_the_message(serve, tmp_path):
    maildir = tmp_path / 'Maildir'
    server = serve(middleware=[MaildirDelivery(str(maildir)), adds_headers])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [name] = os.listdir(maildir / 'new')
    raw = (maildir / 'new' / name).read_bytes()
    assert header_names(raw, 6) == ['Return-Path', 'X-Spam-Status', 'Authentication-Results',
                                    'Received', 'From', 'Subject']
    assert f'Authentication-Results: {AR}\n'.encode() in raw
    assert raw.endswith(BODY.replace(b'\r\n', b'\n'))


def test_relay_sends_added_fields_above_its_received_to_a_real_upstream(serve):
    with MailSink() as upstream:
        relay = RelayDelivery('127.0.0.1', upstream.address[1])
        server = serve(middleware=[relay, adds_headers], on_close=relay.session_closed)
        with smtplib.SMTP(*server.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        [msg] = upstream.wait_for(1)
    assert header_names(msg.raw, 5) == ['X-Spam-Status', 'Authentication-Results', 'Received',
                                        'From', 'Subject']
    assert msg['Authentication-Results'] == AR
    assert msg.raw.endswith(BODY)


def test_callable_body_starts_with_added_fields_and_received(serve):
    bodies = []
    delivery = CallableDelivery(lambda session, envelope, body: bodies.append(body.read()))
    server = serve(middleware=[delivery, adds_headers])
    with smtplib.SMTP(*server.address, timeout=WAIT) as c:
        c.sendmail('a@b.example', ['c@d.example'], BODY)
    [raw] = bodies
    assert header_names(raw, 5) == ['X-Spam-Status', 'Authentication-Results', 'Received',
                                    'From', 'Subject']
    assert raw.endswith(BODY)


def test_mailsink_messages_carry_the_added_fields_on_top():
    with MailSink() as sink:
        sink.server.use(adds_headers)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        [msg] = sink.wait_for(1)
    assert list(msg.keys())[:4] == ['X-Spam-Status', 'Authentication-Results', 'From', 'Subject']
    assert msg['X-Spam-Status'] == SPAM
    assert msg.raw == f'X-Spam-Status: {SPAM}\r\nAuthentication-Results: {AR}\r\n'.encode() + BODY


def test_a_bad_header_from_middleware_is_refused_where_it_is_added(serve, client):
    seen = []

    def injects(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            try:
                ctx.session.envelope.add_header('X-Filter', 'ok\r\nBcc: victim@d.example')
            except ValueError as exc:
                seen.append(exc)
                raise

    with MailSink() as sink:
        sink.server.use(injects)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert refused.value.smtp_code == 451
        assert sink.messages == [] and len(seen) == 1


def test_mailsink_refuses_a_body_a_middleware_took_without_spooling():
    """A middleware under test that reads data_stream itself leaves the sink
    nothing whole to keep: 451 (as the deliveries answer), never a cut message;
    one that spools composes."""
    def reads(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.data_stream.read()

    def spools(ctx, next):
        next()
        if ctx.command_name == 'DATA':
            ctx.session.envelope.spool()

    with MailSink() as sink:
        sink.server.use(reads)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert refused.value.smtp_code == 451 and sink.messages == []
    with MailSink() as sink:
        sink.server.use(spools)
        with smtplib.SMTP(*sink.address, timeout=WAIT) as c:
            c.sendmail('a@b.example', ['c@d.example'], BODY)
        assert sink.wait_for(1)[0].raw == BODY



# -- pure: HeaderFilter ---------------------------------------------------------------

AR_NAME = 'Authentication-Results'
ALL_AR = [(AR_NAME, None)]


def ours(value: str) -> bool:
    return value.lower().startswith('mx.test')


OURS = [(AR_NAME, ours)]


@pytest.mark.parametrize('message, removals, expected', [
    # the plain case, and the body is never looked at
    (b'A: 1\r\nAuthentication-Results: mx.test; x\r\nB: 2\r\n\r\n'
     b'Authentication-Results: mx.test\r\n',
     ALL_AR, b'A: 1\r\nB: 2\r\n\r\nAuthentication-Results: mx.test\r\n'),
    # a folded field goes with all its continuation lines (SP and HTAB)
    (b'Authentication-Results: mx.test;\r\n\tdkim=pass\r\n  header.d=x\r\nB: 2\r\n\r\nbody',
     ALL_AR, b'B: 2\r\n\r\nbody'),
    # the name in any case, with white space before the colon (RFC 5322 4.5.8)
    (b'authentication-RESULTS: a\r\nAuthentication-Results \t: b\r\nC: 3\r\n\r\n',
     ALL_AR, b'C: 3\r\n\r\n'),
    # a longer or shorter name is another field
    (b'Authentication-Results-X: a\r\nAuthentication-Result: b\r\n\r\n', ALL_AR,
     b'Authentication-Results-X: a\r\nAuthentication-Result: b\r\n\r\n'),
    # the predicate decides field by field
    (b'Authentication-Results: other.test; x\r\nAuthentication-Results: MX.test; y\r\n\r\n',
     OURS, b'Authentication-Results: other.test; x\r\n\r\n'),
    # LF-only and lone-CR line ends are line ends (as Python's email parser reads them)
    (b'A: 1\nAuthentication-Results: mx.test;\n x\nB: 2\n\nAuthentication-Results: mx.test\n',
     ALL_AR, b'A: 1\nB: 2\n\nAuthentication-Results: mx.test\n'),
    (b'X-Hide: a\rAuthentication-Results: mx.test\r\r\nbody', ALL_AR, b'X-Hide: a\r\r\nbody'),
    # a line that is no field stays, and the fields after it are still judged
    (b'not a field\r\n continued\r\nAuthentication-Results: mx.test\r\nB: 2\r\n\r\n', ALL_AR,
     b'not a field\r\n continued\r\nB: 2\r\n\r\n'),
    (b'From a@b.example Mon Jan 1 10:00:00 2024\r\nAuthentication-Results: mx.test\r\n\r\n',
     ALL_AR, b'From a@b.example Mon Jan 1 10:00:00 2024\r\n\r\n'),
    # a continuation line before any field passes
    (b' leading\r\nAuthentication-Results: mx.test\r\n\r\n', ALL_AR, b' leading\r\n\r\n'),
    # no header section at all; no body; no empty line; the last line unended
    (b'\r\nAuthentication-Results: mx.test\r\n', ALL_AR,
     b'\r\nAuthentication-Results: mx.test\r\n'),
    (b'A: 1\r\nAuthentication-Results: mx.test\r\n', ALL_AR, b'A: 1\r\n'),
    (b'A: 1\r\nAuthentication-Results: mx.test', ALL_AR, b'A: 1\r\n'),
    (b'Authentication-Results: mx.test\r\nA: 1', ALL_AR, b'A: 1'),
    (b'', ALL_AR, b''),
    # nothing to remove: every byte as it was
    (b'A: 1\r\n\r\n', [], b'A: 1\r\n\r\n'),
    # 8-bit bytes in a header (SMTPUTF8, or undeclared) are carried through
    (b'Subject: J\xf6rg \xe2\x82\xac\r\nAuthentication-Results: mx.test\r\n\r\n', ALL_AR,
     b'Subject: J\xf6rg \xe2\x82\xac\r\n\r\n'),
])
def test_header_filter_table(message, removals, expected):
    assert remove_fields(message, removals) == expected


def test_the_predicate_gets_the_unfolded_value_without_surrounding_white_space():
    seen = []
    remove_fields(b'Authentication-Results:  mx.test;\r\n\tdkim=pass\r\n header.d=x  \r\n'
                  b'Authentication-Results: J\xf6rg\r\n\r\n',
                  [(AR_NAME, lambda value: seen.append(value))])
    assert seen == ['mx.test;\tdkim=pass header.d=x', 'J\udcf6rg']


def test_several_rules_for_one_name_any_of_them_removes():
    rules = [(AR_NAME, lambda v: v.startswith('a')), ('authentication-results', lambda v: v == 'b')]
    assert remove_fields(b'Authentication-Results: a\r\nAuthentication-Results: b\r\n'
                         b'Authentication-Results: c\r\n\r\n', rules) == \
        b'Authentication-Results: c\r\n\r\n'


def test_a_field_over_the_limit_goes_unjudged_when_listed_and_streams_when_not():
    long_value = b'mx.test; ' + b'x' * 500
    listed = b'Authentication-Results: (' + b'c' * 500 + b') mx.test; dmarc=pass\r\n'
    other = b'X-Long: ' + b'y' * 500 + b'\r\n\tmore\r\n'
    message = listed + other + b'Authentication-Results: other.test\r\n\r\nbody'
    strip = HeaderFilter(OURS, limit=100)
    out = b''.join(strip.feed(message[i:i + 7]) for i in range(0, len(message), 7)) + strip.end()
    assert out == other + b'Authentication-Results: other.test\r\n\r\nbody'
    assert remove_fields(b'Authentication-Results: ' + long_value + b'\r\n\r\n', OURS) == b'\r\n'
    # a listed name padded with white space past the limit is still that name
    padded = b'Authentication-Results' + b' ' * 200 + b': mx.test\r\nB: 2\r\n\r\n'
    strip = HeaderFilter(ALL_AR, limit=100)
    assert strip.feed(padded) + strip.end() == b'B: 2\r\n\r\n'


def test_the_body_streams_through_uncopied():
    strip = HeaderFilter(ALL_AR)
    assert strip.feed(b'A: 1\r\n\r\nfirst') == b'A: 1\r\n\r\nfirst'
    piece = b'Authentication-Results: mx.test\r\n' * 1000
    assert strip.feed(piece) is piece
    assert strip.end() == b''


def test_a_cr_at_the_end_of_a_piece_waits_for_the_next_byte():
    strip = HeaderFilter(ALL_AR)
    assert strip.feed(b'A: 1\r') == b'A: 1'
    assert strip.feed(b'\nAuthentication-Results: mx.test\r') == b'\r\n'
    assert strip.feed(b'\n\r') == b''
    assert strip.feed(b'\nbody\r') == b'\r\nbody\r'


def test_without_fields_passes_the_pieces_themselves_when_nothing_is_removed():
    pieces = [b'A: 1\r\n', b'\r\nbody']
    assert list(without_fields(iter(pieces), [])) == pieces
    assert b''.join(without_fields(iter([b'Authentication-Results: x\r', b'\n\r\nb']), ALL_AR)) \
        == b'\r\nb'


def test_envelope_records_removals_in_call_order_and_checks_them():
    envelope = Envelope()
    envelope.remove_header('Authentication-Results', ours)
    envelope.remove_header('X-Spam-Status')
    assert envelope.removed_headers == [('Authentication-Results', ours), ('X-Spam-Status', None)]
    for bad in ('With Space', 'Colon:', '', None):
        with pytest.raises(ValueError):
            envelope.remove_header(bad)
    with pytest.raises(ValueError):
        envelope.remove_header('X-Ok', 'not callable')
    envelope.removed_headers.append(('X-Sneaky', None))      # a copy
    assert len(envelope.removed_headers) == 2
    assert Envelope().removed_headers == []


# An independent model: the whole message split into lines and fields at
# once, kept or dropped field by field (no limit: fields here are short).

_LINES = re.compile(rb'[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z')


def model(message: bytes, removals) -> bytes:
    lines = _LINES.findall(message)
    assert b''.join(lines) == message
    fields, rest = [], []
    for index, line in enumerate(lines):
        if line in (b'\r\n', b'\r', b'\n'):
            rest = lines[index:]
            break
        if line[:1] in (b' ', b'\t') and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for field in fields:
        text = b''.join(field)
        name, colon, value = text.partition(b':')
        name = name.rstrip(b' \t')
        gone = False
        if colon and re.fullmatch(rb'[\x21-\x39\x3b-\x7e]+', name):
            unfolded = re.sub(rb'\r\n|\r|\n', b'', value).decode('utf-8', 'surrogateescape')
            unfolded = unfolded.strip(' \t')
            gone = any(n.lower() == name.decode().lower() and (p is None or p(unfolded))
                       for n, p in removals)
        if not gone:
            kept.append(text)
    return b''.join(kept) + b''.join(rest)


_EOLS = st.sampled_from([b'\r\n', b'\r\n', b'\n', b'\r'])
_NAMES = st.sampled_from([b'Authentication-Results', b'authentication-results',
                          b'AUTHENTICATION-RESULTS \t', b'Authentication-Results-X', b'Subject',
                          b'X-Other', b'not a name'])
_WORDS = st.sampled_from([b'mx.test;', b'MX.Test', b'other.test;', b'dmarc=pass', b'(c)',
                          b'\xc3\xa9', b'\xff', b':', b'', b'x' * 40])


@st.composite
def messages(draw):
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            parts.append(draw(st.sampled_from([b' ', b'\t'])) + draw(_WORDS) + draw(_EOLS))
        elif kind == 1:
            parts.append(draw(_WORDS) + draw(_EOLS))            # no field
        else:
            parts.append(draw(_NAMES) + b':' + b' '.join(draw(st.lists(_WORDS, max_size=4)))
                         + draw(_EOLS))
            for _ in range(draw(st.integers(0, 2))):           # folded
                parts.append(draw(st.sampled_from([b' ', b'\t'])) + draw(_WORDS) + draw(_EOLS))
    if draw(st.booleans()):
        parts.append(draw(_EOLS) + b'Authentication-Results: mx.test\r\n' + draw(st.binary()))
    elif parts and draw(st.booleans()):
        parts[-1] = parts[-1].rstrip(b'\r\n')                   # the last line unended
    return b''.join(parts)


def chunked(data, message: bytes) -> list:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(message)), max_size=12)))
    bounds = [0] + cuts + [len(message)]
    return [message[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(st.data(), messages(), st.sampled_from([ALL_AR, OURS, [], [('Subject', None)] + OURS]))
def test_any_chunking_gives_what_the_model_gives(data, message, removals):
    pieces = chunked(data, message)
    strip = HeaderFilter(removals)
    out = b''.join(strip.feed(piece) for piece in pieces) + strip.end()
    assert out == model(message, removals)
    assert b''.join(without_fields(iter(pieces), removals)) == out


@settings(max_examples=300, deadline=None)
@given(st.data(), st.binary(max_size=300), st.integers(4, 40))
def test_arbitrary_bytes_any_chunking_and_limit_give_one_answer(data, message, limit):
    """Whatever the bytes and however they are cut, the result is that of
    the whole message at once; with nothing listed, the bytes themselves."""
    pieces = chunked(data, message)
    for removals in ([], [('A', None)], ALL_AR):
        strip, whole = HeaderFilter(removals, limit), HeaderFilter(removals, limit)
        out = b''.join(strip.feed(piece) for piece in pieces) + strip.end()
        assert out == whole.feed(message) + whole.end()
        if not removals:
            assert out == message
