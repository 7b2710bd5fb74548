"""policies.rspamd's pure pieces: rspamd's checkv2 reply read into a Verdict
(the action's reply, the milter block's header changes in each form rspamd
writes them), and the field an indexed remove_headers names."""
from __future__ import annotations

import pytest

from smtp_stack.policies.rspamd_http import RspamdError, Verdict, field_value
from smtp_stack.rspamd_client import number, reply_json, rspamd_address
from smtp_stack.replies import Reply


@pytest.mark.parametrize('reply, expected', [
    ({'action': 'reject'}, Reply(554, 'Spam message rejected', '5.7.1')),
    ({'action': 'reject', 'messages': {'smtp_message': 'Gtube pattern'}},
     Reply(554, 'Gtube pattern', '5.7.1')),
    ({'action': 'soft reject'}, Reply(451, 'Try again later', '4.7.1')),
    ({'action': 'soft reject', 'messages': {'smtp_message': 'Ratelimited'}},
     Reply(451, 'Ratelimited', '4.7.1')),
    ({'action': 'soft reject', 'messages': {'smtp_message': 'Try again\r\n later'}},
     Reply(451, 'Try again later', '4.7.1')),
    ({'action': 'greylist'}, None),       # the greylist module would have said soft reject
    ({'action': 'add header'}, None),
    ({'action': 'rewrite subject', 'subject': '[SPAM] hi'}, None),
    ({'action': 'no action'}, None),
    ({'action': 'discard'}, None),
])
def test_the_action_is_the_reply(reply, expected):
    assert Verdict.from_json({'score': 1.5, **reply}).reply == expected


@pytest.mark.parametrize('reply', [None, [], 'reject', {}, {'action': 5}, {'score': 99}])
def test_a_reply_without_an_action_is_no_verdict(reply):
    with pytest.raises(RspamdError, match='without an action'):
        Verdict.from_json(reply)


@pytest.mark.parametrize('body', [
    b'[' * 200_000 + b']' * 200_000,                        # past the parser's depth
    b'{"action": "no action", "score": NaN}',               # not JSON (RFC 8259)
    b'{"action": "reject", "score": -Infinity}',
    b'<html>busy</html>',
])
def test_a_reply_that_is_not_json_is_no_verdict(body):
    with pytest.raises(RspamdError, match='not JSON'):
        reply_json(body)


@pytest.mark.parametrize('value, expected', [
    (2.5, 2.5), (3, 3.0), (1e999, 0.0), (float('nan'), 0.0), (10 ** 400, 0.0),
    (True, 0.0), ('7', 0.0), (None, 0.0)])
def test_a_score_is_a_finite_number_or_zero(value, expected):
    assert number(value) == expected
    assert Verdict.from_json({'action': 'no action', 'score': value}).score == expected


@pytest.mark.parametrize('url', ['http://a..b:11333', 'http://' + 'x' * 64 + '.example'])
def test_a_host_name_no_resolver_could_be_asked_for_is_refused_at_once(url):
    with pytest.raises(ValueError, match='the host name is not one'):
        rspamd_address(url)


def test_the_milter_block_in_each_of_its_forms():
    verdict = Verdict.from_json({
        'action': 'add header', 'score': 7, 'required_score': 15, 'subject': 'x',
        'symbols': {'A': {'score': 2.5}, 'B': {}, 'C': 'junk'},
        'milter': {
            'add_headers': {
                'X-Plain': 'one',
                'X-Ordered': {'value': 'two', 'order': 0},
                'X-Many': [{'value': 'three'}, 'four'],
                'X-Folded': {'value': 'default: False [0.90 / 15.00];\r\n\tA(1.00)[x]'},
                'X-Bad': {'order': 1},
            },
            'remove_headers': {'X-Spam': 0, 'X-Second': 2, 'X-Last': -1, 'X-Junk': 'all',
                               'X-Bool': True},
        }})
    assert verdict.add_headers == [('X-Plain', 'one'), ('X-Ordered', 'two'), ('X-Many', 'three'),
                                   ('X-Many', 'four'),
                                   ('X-Folded', 'default: False [0.90 / 15.00];\tA(1.00)[x]')]
    assert verdict.remove_headers == [('X-Spam', 0), ('X-Second', 2), ('X-Last', -1)]
    assert (verdict.score, verdict.required_score, verdict.subject) == (7.0, 15.0, 'x')
    assert verdict.symbols == {'A': 2.5, 'B': 0.0, 'C': 0.0}


@pytest.mark.parametrize('value, expected', [
    ('v=1; a=rsa-sha256; d=example.test;\r\n\tb=AbC', ['v=1; a=rsa-sha256; d=example.test;\tb=AbC']),
    (['v=1; d=a.test', 'v=1; d=b.test'], ['v=1; d=a.test', 'v=1; d=b.test']),
    (None, []),
    (5, []),
])
def test_dkim_signatures(value, expected):
    assert Verdict.from_json({'action': 'no action', 'dkim-signature': value}).dkim_signatures \
        == expected


def test_a_reply_without_a_milter_block_changes_no_header():
    verdict = Verdict.from_json({'action': 'no action', 'milter': 'junk'})
    assert verdict.add_headers == [] and verdict.remove_headers == []


HEAD = (b'Received: from a\r\n\tby b\r\nX-Tag: first\r\nSubject: hi\r\n'
        b'x-tag :  second,\r\n folded  \r\nX-Tag: third\r\n\r\nX-Tag: in the body\r\n')


@pytest.mark.parametrize('name, index, expected', [
    ('X-Tag', 1, 'first'),
    ('x-tag', 2, 'second, folded'),
    ('X-Tag', 3, 'third'),
    ('X-Tag', -1, 'third'),
    ('X-Tag', -3, 'first'),
    ('X-Tag', 4, None),
    ('X-Tag', -4, None),
    ('Received', 1, 'from a\tby b'),
    ('X-None', 1, None),
])
def test_field_value(name, index, expected):
    assert field_value(HEAD, name, index) == expected


def test_the_factory_stays_callable_after_its_module_is_imported():
    """The module is not named `rspamd`: importing a submodule binds its name
    in the package, which would hide the factory after its first use."""
    from smtp_stack import policies
    first = policies.rspamd('http://127.0.0.1:11333')
    import smtp_stack.policies.rspamd_http  # noqa: F401
    second = policies.rspamd('http://127.0.0.1:11333')
    assert type(first) is type(second) and type(second).__name__ == 'Rspamd'
