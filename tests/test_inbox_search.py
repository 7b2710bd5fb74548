"""smtp_stack.inbox.search: Mailpit's search syntax into SQL (pure), and
the same queries run by the store."""
from __future__ import annotations

import pytest

from smtp_stack.inbox.search import MAX_QUERY, QueryError, Term, compile_query, tokenize
from smtp_stack.inbox.store import Store


@pytest.mark.parametrize('query, terms', [
    ('', []),
    ('hello world', [Term(None, 'hello'), Term(None, 'world')]),
    ('"hello world"', [Term(None, 'hello world')]),
    ('from:ann to:"Bob B"', [Term('from', 'ann'), Term('to', 'Bob B')]),
    ('FROM:Ann', [Term('from', 'Ann')]),
    ('-spam !ham', [Term(None, 'spam', True), Term(None, 'ham', True)]),
    ('-subject:"no thanks"', [Term('subject', 'no thanks', True)]),
    ('is:unread has:attachment', [Term('is', 'unread'), Term('has', 'attachment')]),
    ('http://example.com', [Term(None, 'http://example.com')]),
    ('"unterminated phrase', [Term(None, 'unterminated phrase')]),
    ('  -  " ', []),
    ('after:2026-01-01 before:2026-02-01', [Term('after', '2026-01-01'), Term('before', '2026-02-01')]),
])
def test_tokenize(query, terms):
    assert tokenize(query) == terms


@pytest.mark.parametrize('query', ['after:tomorrow', 'x' * (MAX_QUERY + 1),
                                   ' '.join(['w'] * 33)])
def test_queries_refused(query):
    with pytest.raises(QueryError):
        compile_query(query)


def test_sql_is_parameterised():
    sql, params = compile_query('subject:"a\'; DROP TABLE messages; --"')
    assert 'DROP' not in sql and params == ['{subject} : "a\'; DROP TABLE messages; --"']
    sql, params = compile_query('5%')        # under three characters: LIKE, escaped
    assert params[0] == r'%5\%%' and "ESCAPE" in sql


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / 's.db'))
    mails = [
        ('Ann <ann@a.example>', 'bob@b.example', 'Quarterly report', 'numbers inside'),
        ('Bob <bob@b.example>', 'ann@a.example', 'Re: Quarterly report', 'thanks "quoted" text'),
        ('Zed <zed@z.example>', 'ann@a.example', 'Über café', 'naïve 100% sure'),
    ]
    for sender, to, subject, body in mails:
        s.add(f'From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nContent-Type: text/plain; '
              f'charset=utf-8\r\n\r\n{body}\r\n'.encode(), [to])
    return s


@pytest.mark.parametrize('query, subjects', [
    ('quarterly', {'Quarterly report', 'Re: Quarterly report'}),
    ('QUARTERLY -re:', {'Quarterly report'}),
    ('from:ann', {'Quarterly report'}),
    ('to:ann', {'Re: Quarterly report', 'Über café'}),
    ('addressed:bob', {'Quarterly report', 'Re: Quarterly report'}),   # From too, as Mailpit
    ('über', {'Über café'}),            # case-insensitive beyond ASCII (trigram folds case)
    ('café', {'Über café'}),
    ('"quoted"', {'Re: Quarterly report'}),
    ('100%', {'Über café'}),
    ('ze', {'Über café'}),
    ('-ze', {'Quarterly report', 'Re: Quarterly report'}),
    ('tag:anything', set()),
    ('-tag:anything', {'Quarterly report', 'Re: Quarterly report', 'Über café'}),
    ('after:2000-01-01', {'Quarterly report', 'Re: Quarterly report', 'Über café'}),
    ('before:2000-01-01', set()),
])
def test_store_search(store, query, subjects):
    assert {m['Subject'] for m in store.listing(query=query)['messages']} == subjects
