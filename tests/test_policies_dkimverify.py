"""dkimverify.verify_signature against dkimpy's own `DKIM.verify`: the same
verdict for messages signed by dkimpy (rsa-sha256 and ed25519-sha256, each
canonicalisation, with and without l=), then changed in the ways that do
and do not break a signature (white space, folding, case, added fields,
the tags, the key record). The one difference allowed: where dkimpy lets
a Python error escape (a b=, bh= or ed25519 signature that does not
decode, a continuation line first), ours is a MessageFormatError."""
from __future__ import annotations

import os

import peers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dkim = peers.python_module('dkim', 'policies')

from policy_services import Ed25519Key, RsaKey  # noqa: E402

from smtp_stack.policies.canonical import split_message  # noqa: E402
from smtp_stack.policies.dkimcheck import signature_fields  # noqa: E402
from smtp_stack.policies.dkimverify import parse_tags, verify_signature  # noqa: E402

SCALE = max(1, int(os.environ.get('SMTP_STACK_FUZZ', '1')))
FUZZ = settings(max_examples=300 * SCALE, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RSA = RsaKey(1024)
OTHER_RSA = RsaKey(1024)
ED = Ed25519Key()
SIGNERS = {'rsa': (b'rsa1', RSA.private_pem, b'rsa-sha256'),
           'ed': (b'ed1', ED.private_b64, b'ed25519-sha256')}
RECORDS = {'rsa1._domainkey.example.test.': RSA.record().encode(),
           'ed1._domainkey.example.test.': ED.record().encode()}
KEY_CHANGES = {
    'none': None,
    'other key': OTHER_RSA.record().encode(),
    'revoked': b'v=DKIM1; k=rsa; p=',
    'missing': b'',
    'tlsrpt only': RSA.record().encode() + b'; s=tlsrpt',
    'unknown service': RSA.record().encode() + b'; s=web',
    'ed25519 key for rsa': ED.record().encode(),
    'rsa key for ed25519': RSA.record().encode(),
    'bad version': b'v=DKIM2; ' + RSA.record().encode()[9:],
    'garbage p=': b'v=DKIM1; k=rsa; p=!!notbase64',
    'unknown k=': b'v=DKIM1; k=dsa; p=AAAA',
    'no tags': b'just text',
}
WORDS = [b'hello', b'a', b' ', b'  ', b'\t', b'world', b'x \t y', b'\xc3\xa9']
value = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(b''.join)
LINES = [b'Body line', b'', b'  indented', b'tab\there', b'trailing  ', b'\t', b'.', b'x' * 80]
body = st.lists(st.sampled_from(LINES), max_size=12).map(lambda ls: b'\r\n'.join(ls) + b'\r\n')


class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def isEnabledFor(self, level):
        return False


def dnsfunc_for(records):
    def dnsfunc(name, timeout=5):
        return records.get(name.decode() if isinstance(name, bytes) else name)
    return dnsfunc


def outcome(call):
    """What a verification said: True, False, or the error's kind."""
    try:
        return call()
    except dkim.DKIMException as exc:
        return (type(exc).__name__, 'body hash' in str(exc))
    except Exception as exc:        # what dkimpy lets escape
        return ('escaped', type(exc).__name__)


def dkimpys(message, records):
    def call():
        return dkim.DKIM(message, logger=Quiet(), minkey=1024).verify(
            idx=0, dnsfunc=dnsfunc_for(records))
    return outcome(call)


def ours(message, records):
    def call():
        split = split_message(message)
        found = [f for f in signature_fields(split.headers) if f.kind == b'dkim-signature']
        if not found:
            return False
        if found[0].tags is None:
            raise dkim.MessageFormatError('tags')
        return verify_signature(split, found[0].field, found[0].tags, dnsfunc_for(records))
    return outcome(call)


def replace_at(data: bytes, old: bytes, new: bytes, index: int) -> bytes:
    """`old` replaced by `new` at its index-th place (mod how many there are)."""
    places = []
    start = data.find(old)
    while start >= 0:
        places.append(start)
        start = data.find(old, start + 1)
    if not places:
        return data
    at = places[index % len(places)]
    return data[:at] + new + data[at + len(old):]


CHANGES = ['nothing', 'body space', 'body tab', 'body line ends', 'body char', 'body append',
           'header space', 'header space at end', 'header case', 'header fold', 'from on top',
           'subject on top', 'field on top', 'tag', 'b= fold', 'b= char', 'bh= char']
TAG_CHANGES = [
    (b'c=relaxed/simple', b'c=relaxed/relaxed'), (b'c=simple/simple', b'c=simple'),
    (b'c=relaxed/relaxed', b'c=Relaxed/relaxed'), (b'c=', b'c=odd/odd; x'),
    (b'd=example.test', b'd=EXAMPLE.test'), (b'd=example.test', b'd=example.org'),
    (b'q=dns/txt;', b''), (b'q=dns/txt', b'q=http'), (b'v=1', b'v=2'),
    (b'a=rsa-sha256', b'a=ed25519-sha256'), (b'a=ed25519-sha256', b'a=rsa-sha256'),
    (b'a=rsa-sha256', b'a=rsa-sha1'), (b'a=rsa-sha256', b'a=rsa-md5'),
    (b'i=@example.test', b'i=@other.test'), (b'i=@example.test', b'i=u@sub.example.test'),
    (b'l=', b'l=1'), (b'l=', b'l=x'), (b't=', b't=99999999999; x=1; y='),
    (b' s=', b' s=nokey'), (b'h=', b'h=to:subject:'), (b'bh=', b'bh=A===;x='),
    (b'v=1;', b'v=1; v=1;'), (b'; s=', b'; =x; s='), (b'b=', b'b=AAA=')]


def change(signed: bytes, kind: str, i: int) -> bytes:
    """A signed message changed in one way (`i` picks the place and the variant)."""
    body_at = signed.find(b'\r\n\r\n') + 4
    head, rest = (signed[:body_at], signed[body_at:]) if body_at >= 4 else (signed, b'')
    if kind in ('body space', 'body tab'):
        at = i % (len(rest) + 1)
        rest = rest[:at] + (b' ' if kind == 'body space' else b'\t') + rest[at:]
    elif kind == 'body line ends':
        rest += b'\r\n' * (1 + i % 3)
    elif kind == 'body char' and rest:
        at = i % len(rest)
        rest = rest[:at] + (b'Q' if rest[at:at + 1] != b'Q' else b'R') + rest[at + 1:]
    elif kind == 'body append':
        rest += b'appended\r\n'
    elif kind == 'header space':
        head = replace_at(head, [b': ', b' '][i % 2], [b':  ', b' \t'][i % 2], i // 2)
    elif kind == 'header space at end':
        head = replace_at(head, b'\r\n', [b' \r\n', b'\t\r\n'][i % 2], i // 2)
    elif kind == 'header case':
        head = replace_at(head, [b'Subject', b'From', b'To'][i % 3],
                          [b'SUBJECT', b'from', b'tO'][i % 3], 0)
    elif kind == 'header fold':
        head = replace_at(head, b' ', b'\r\n ', i)
    elif kind == 'from on top':
        head = b'From: someone else <evil@example.org>\r\n' + head
    elif kind == 'subject on top':     # signed once: the bottom one is the signed one
        head = b'Subject: another\r\n' + head
    elif kind == 'field on top':
        head = b'X-Added: yes\r\n' + head
    elif kind == 'tag':
        old, new = TAG_CHANGES[i % len(TAG_CHANGES)]
        head = replace_at(head, old, new, 0)
    elif kind == 'b= fold':
        at = head.find(b' b=')
        if at >= 0:
            at += 3 + i % 20
            head = head[:at] + b'\r\n ' + head[at:]
    elif kind in ('b= char', 'bh= char'):
        at = head.find(b' b=' if kind == 'b= char' else b'bh=')
        if at >= 0:
            at += 6 + i % 10
            head = head[:at] + (b'A' if head[at:at + 1] != b'A' else b'B') + head[at + 1:]
    return head + rest


def signed_message(signer: str, canon: tuple[bytes, bytes], names: list[bytes], length: bool,
                   values=(b'Alice', b'Bob', b'hello  world'), text=b'Hi there.\r\n') -> bytes:
    headers = [b'From: ' + values[0] + b' <alice@example.test>',
               b'To: ' + values[1] + b' <bob@example.org>', b'Subject: ' + values[2]]
    message = b'\r\n'.join(headers) + b'\r\n\r\n' + text
    selector, key, algorithm = SIGNERS[signer]
    return dkim.sign(message, selector, b'example.test', key, signature_algorithm=algorithm,
                     canonicalize=canon, include_headers=[b'from', *names], length=length,
                     logger=Quiet()) + message


def same_verdicts(signed: bytes, signer: str, key_change: str = 'none') -> None:
    records = dict(RECORDS)
    if KEY_CHANGES[key_change] is not None:
        records[f'{SIGNERS[signer][0].decode()}._domainkey.example.test.'] = \
            KEY_CHANGES[key_change]
    theirs, found = dkimpys(signed, records), ours(signed, records)
    if theirs in (('escaped', 'Error'), ('escaped', 'IndexError'), ('escaped', 'ValueError')):
        assert found == ('MessageFormatError', False), (theirs, found)
    else:
        assert found == theirs, signed


CANONS = [(h, b) for h in (b'simple', b'relaxed') for b in (b'simple', b'relaxed')]


@pytest.mark.parametrize('kind', CHANGES)
@pytest.mark.parametrize('canon', CANONS, ids=lambda c: b'/'.join(c).decode())
@pytest.mark.parametrize('signer', sorted(SIGNERS))
def test_each_change_judged_as_dkimpy_judges_it(signer, canon, kind):
    signed = signed_message(signer, canon, [b'to', b'subject'], False)
    places = {'tag': len(TAG_CHANGES), 'header space at end': 2 * signed.count(b'\r\n', 0,
                                                                              signed.find(b'\r\n\r\n'))}
    for i in range(places.get(kind, 6)):
        same_verdicts(change(signed, kind, i), signer)


@pytest.mark.parametrize('key_change', sorted(KEY_CHANGES))
@pytest.mark.parametrize('signer', sorted(SIGNERS))
def test_each_key_record_judged_as_dkimpy_judges_it(signer, key_change):
    same_verdicts(signed_message(signer, (b'relaxed', b'simple'), [b'subject'], True), signer,
                  key_change)


@FUZZ
@given(st.data())
def test_the_same_verdicts_as_dkimpy(data):
    draw = data.draw
    signer = draw(st.sampled_from(sorted(SIGNERS)))
    signed = signed_message(
        signer, draw(st.sampled_from(CANONS)),
        draw(st.lists(st.sampled_from([b'to', b'subject', b'date', b'from']), max_size=4)),
        draw(st.booleans()), (draw(value), draw(value), draw(value)), draw(body))
    for _ in range(draw(st.integers(0, 3))):
        signed = change(signed, draw(st.sampled_from(CHANGES)), draw(st.integers(0, 1000)))
    key_change = draw(st.sampled_from(sorted(KEY_CHANGES))) if draw(st.booleans()) else 'none'
    same_verdicts(signed, signer, key_change)


@pytest.mark.parametrize('signer', sorted(SIGNERS))
def test_a_message_signed_by_dkimpy_verifies(signer):
    """The fuzzing above is only worth something if most of it verifies."""
    selector, key, algorithm = SIGNERS[signer]
    message = b'From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n'
    signed = dkim.sign(message, selector, b'example.test', key, signature_algorithm=algorithm,
                       include_headers=[b'from', b'subject']) + message
    assert ours(signed, RECORDS) is True
    assert ours(signed.replace(b'body', b'bodY'), RECORDS) == ('ValidationError', True)
    assert ours(signed.replace(b'Subject: hi', b'Subject: ho'), RECORDS) is False


@given(st.lists(st.sampled_from([b'a', b'b1', b'=', b';', b' ', b'\r\n ', b'h', b'1', b'\xe9',
                                 b'_', b'==', b'v=1']), max_size=20).map(b''.join))
def test_tags_parsed_as_dkimpy_parses_them(text):
    from dkim.util import InvalidTagValueList, parse_tag_value

    def parse(fn):
        try:
            return fn(text)
        except InvalidTagValueList as exc:
            return type(exc).__name__
    assert parse(parse_tags) == parse(parse_tag_value)


def test_a_b_value_that_does_not_decode_is_a_permerror_not_an_exception():
    """dkimpy raised binascii.Error out of verify() for a bh= or b= with bad
    padding (the message got 451 for ever); the verdict is a permerror."""
    from smtp_stack.policies.dkimcheck import verify_dkim

    class Keys:
        def txt(self, name):
            return [RECORDS[name.rstrip('.') + '.']]
    message = b'From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n'
    signed = dkim.sign(message, b'rsa1', b'example.test', RSA.private_pem,
                       include_headers=[b'from', b'subject']) + message
    start = signed.index(b'bh=') + 3
    broken = signed[:start] + b'A===' + signed[signed.index(b';', start):]
    assert dkimpys(broken, RECORDS) == ('escaped', 'Error')
    [result] = verify_dkim(Keys(), broken)
    assert (result.result, result.reason) == ('permerror', 'bh= value is not valid base64')


def test_an_ed25519_signature_of_the_wrong_length_is_a_permerror_not_an_exception():
    """PyNaCl raises ValueError for it, which dkimpy let escape (451 for ever)."""
    from smtp_stack.policies.dkimcheck import verify_dkim

    class Keys:
        def txt(self, name):
            return [RECORDS[name.rstrip('.') + '.']]
    signed = signed_message('ed', (b'relaxed', b'simple'), [b'subject'], False)
    start = signed.index(b' b=') + 3
    short = signed[:start] + b'AAAA' + signed[signed.index(b'\r\nFrom:'):]
    assert dkimpys(short, RECORDS) == ('escaped', 'ValueError')
    [result] = verify_dkim(Keys(), short)
    assert result.result == 'permerror' and 'not an ed25519 signature' in result.reason


TAG_VALUES = {
    b'v': [b'1', b'2', b''], b'a': [b'rsa-sha256', b'ed25519-sha256', b'rsa-sha1', b'rsa-md5'],
    b'b': [b'AAAA', b'AA AA', b'AAA=', b'AA==\r\n ', b'A===', b'AAA', b'', b'=AAA', b'AA=A',
           b'AB+/ \r\n\t==', b'AA!A', b' \r\n', b'AAAA\n'],
    b'bh': [b'AAAA', b'AAA', b'AA AA', b'!!!!', b''],
    b'd': [b'example.test', b'Example.TEST', b'ex[a]mple', b'ex@mple', b'', b'\xe9x.test',
           b'ex,test'],
    b'h': [b'from', b'from:to'], b's': [b'sel', b''],
    b'i': [b'@example.test', b'u@sub.example.test', b'example.test', b'@other.test',
           b'xexample.test', b'u@example.test', b'', b'@EXAMPLE.test'],
    b'l': [b'0', b'12', b'', b'x', b'1' * 76, b'1' * 77, b'12\n', b'-1'],
    b'q': [b'dns/txt', b'dns', b'DNS/TXT'],
    b't': [b'1000000000', b'99999999999', b'', b'12a', b'0', b'1800036000', b'1800036001',
           b'1800000002'],
    b'x': [b'1000000000', b'99999999999', b'1', b'x', b'0', b'1799964000', b'1799963999'],
    b'cv': [b'pass', b'none', b'fail', b'bad'],
}


VALID_TAGS = {b'v': b'1', b'a': b'rsa-sha256', b'b': b'AAAA', b'bh': b'AAAA',
              b'd': b'example.test', b'h': b'from', b's': b'sel'}


def tag_check_outcomes(tags):
    """(dkimpy's, ours) for these tags, at one clock (1,800,000,000)."""
    import time
    from unittest import mock

    from smtp_stack.policies.dkimverify import check_tags

    def outcome(check):
        try:
            check(dict(tags))
        except dkim.ValidationError as exc:
            return str(exc)
        except IndexError:
            return 'IndexError'
        return 'valid'
    with mock.patch.object(time, 'time', lambda: 1_800_000_000):
        return outcome(dkim.validate_signature_fields), outcome(check_tags)


def same_tag_outcomes(tags):
    theirs, found = tag_check_outcomes(tags)
    if theirs == 'IndexError':
        assert found.startswith('i= domain is not a subdomain of d='), tags
    else:
        assert found == theirs, tags


@pytest.mark.parametrize('tag', sorted(TAG_VALUES))
def test_each_tag_value_checked_as_dkimpy_checks_it(tag):
    """Every value of the table in an otherwise valid signature, with t=
    and x= beside it or not."""
    for value in TAG_VALUES[tag]:
        for extra in ({}, {b't': b'1800000000'}, {b'x': b'1800000001', b't': b'1800000000'}):
            same_tag_outcomes({**VALID_TAGS, **extra, tag: value})
    for missing in VALID_TAGS:
        same_tag_outcomes({k: v for k, v in VALID_TAGS.items() if k != missing})


@FUZZ
@given(data=st.data())
def test_tag_checks_as_dkimpys(data):
    """Combinations: check_tags against dkimpy's validate_signature_fields."""
    tags = {}
    for tag, values in TAG_VALUES.items():
        if data.draw(st.integers(0, 9)) > 1 or tag in VALID_TAGS:
            tags[tag] = data.draw(st.sampled_from(values))
    if data.draw(st.booleans()):
        tags.pop(data.draw(st.sampled_from(sorted(tags))))
    same_tag_outcomes(tags)


@FUZZ
@given(st.lists(st.sampled_from([b';', b' ', b'\r', b'\n', b'\t', b'b', b'=', b'a', b'h', b'+',
                                 b'\r\n', b' b=', b'\x0b', b'-', b'/', b'Z']), max_size=40)
       .map(b''.join))
def test_b_value_deleted_as_dkimpy_deletes_it(value):
    from smtp_stack.policies.dkimverify import delete_b_value
    assert delete_b_value(value) == dkim.RE_BTAG.sub(rb'\1', value)
