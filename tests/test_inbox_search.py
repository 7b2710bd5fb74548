"""smtp_stack.inbox.search: Mailpit's search syntax into SQL (pure), and
the same queries run by the store."""
from __future__ import annotations

import threading

import pytest

from inbox_helpers import WAIT
from smtp_stack.inbox.search import MAX_QUERY, QueryError, Term, compile_query, tokenize
from smtp_stack.inbox.store import INDEX_BATCH, Store


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
    # A Message-ID of their own: a generated one is random and could hold
    # the letters a query looks for ('ze'), as every field is searched.
    for number, (sender, to, subject, body) in enumerate(mails):
        s.add(f'Message-ID: <m{number}@example.test>\r\nFrom: {sender}\r\nTo: {to}\r\n'
              f'Subject: {subject}\r\nContent-Type: text/plain; '
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


@pytest.mark.parametrize('query, terms', [
    ('is:flagged has:wings', [Term(None, 'is:flagged'), Term(None, 'has:wings')]),
    ('larger:10k smaller:1.5mb larger:huge', [Term('larger', '10k'), Term('smaller', '1.5mb'),
                                              Term(None, 'larger:huge')]),
    ('tag:"two words" -is:tagged', [Term('tag', 'two words'), Term('is', 'tagged', True)]),
    ('has:inlines has:attachments', [Term('has', 'inlines'), Term('has', 'attachments')]),
])
def test_mailpits_filters_and_what_is_a_word(query, terms):
    """An unknown is:/has: value or a size that is none are words, as in
    Mailpit: searched for, never a 400 (waitForMessage would throw)."""
    assert tokenize(query) == terms


@pytest.mark.parametrize('value, size', [('10', 10), ('2k', 2048), ('2.5KB', 2560),
                                         ('1m', 1 << 20), ('1 mb', 1 << 20), ('2g', 0),
                                         ('abc', 0), ('0', 0)])
def test_sizes(value, size):
    from smtp_stack.inbox.search import size_in_bytes
    assert size_in_bytes(value) == size


def test_after_and_before_in_a_time_zone():
    assert compile_query('after:2026-01-01')[1] == [1767225600.0]
    assert compile_query('after:2026-01-01', 'Pacific/Auckland')[1] == [1767178800.0]
    assert compile_query('after:2026-01-01', 'No/Such_Zone')[1] == [1767225600.0]


@pytest.fixture
def sized(tmp_path):
    """Three messages: small, large (2,000 bytes of body), and one with a Reply-To."""
    s = Store(str(tmp_path / 'sized.db'))
    for subject, extra, body in (('small', '', 'x'), ('large', '', 'x' * 2000),
                                 ('replied', 'Reply-To: replies@c.example\r\n', 'x')):
        s.add(f'From: ann@a.example\r\nTo: bob@b.example\r\n{extra}Subject: {subject}\r\n'
              f'\r\n{body}\r\n'.encode())
    return s


@pytest.mark.parametrize('query, subjects', [
    ('addressed:replies', {'replied'}),                 # Reply-To too, as Mailpit
    ('addressed:ann@a', {'small', 'large', 'replied'}), # and From
    ('larger:1k', {'large'}),
    ('smaller:1k', {'small', 'replied'}),
    ('-larger:1k', {'small', 'replied'}),
    ('larger:1x', set()),                               # no size: the word "larger:1x"
    ('is:flagged', set()),
    ('-is:flagged', {'small', 'large', 'replied'}),
])
def test_store_search_mailpits_filters(sized, query, subjects):
    assert {m['Subject'] for m in sized.listing(query=query)['messages']} == subjects


def test_tags_by_search(store):
    ids = {m['Subject']: m['ID'] for m in store.listing()['messages']}
    store.set_tags([ids['Quarterly report'], ids['Über café']], ['Finance', 'q1'])
    assert {m['Subject'] for m in store.listing(query='tag:finance')['messages']} == {
        'Quarterly report', 'Über café'}
    assert {m['Subject'] for m in store.listing(query='-is:tagged')['messages']} == {
        'Re: Quarterly report'}
    assert store.listing(query='tag:"q1" tag:nothing')['messages_count'] == 0


def word_mail(word: str) -> bytes:
    return (f'Message-ID: <{word}@example.test>\r\nFrom: a@example.test\r\nTo: b@example.test\r\n'
            f'Subject: about {word}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
            f'the word is {word}\r\n').encode()


def test_words_go_into_the_index_a_batch_at_a_time(tmp_path):
    """A new message's words wait (Store.unindexed) until INDEX_BATCH of
    them go into the index in one transaction."""
    store = Store(str(tmp_path / 's.db'))
    for n in range(INDEX_BATCH - 1):
        store.add(word_mail(f'batch{n:03d}x'))
    assert store.unindexed() == INDEX_BATCH - 1
    store.add(word_mail('lastofbatch'))
    assert store.unindexed() == 0
    store.add(word_mail('afterbatch'))
    assert store.unindexed() == 1


def test_a_search_finds_every_message_whose_words_still_wait(tmp_path):
    """Each kind of search, from another thread's connection (as the web
    side of another process), finds a message not yet in the index: it puts
    the waiting words there first. Beyond ASCII too, where only the index
    folds case."""
    path = str(tmp_path / 's.db')
    store = Store(path)
    searches = {
        'ÄRGERLICH': lambda web: web.listing(query='ärgerlich')['messages_count'] == 1,
        'zebrafish': lambda web: web.latest('zebrafish') is not None,
        'quokka': lambda web: web.set_read(True, query='quokka') == 1,
        'wombat': lambda web: web.delete_matching('wombat') == 1,
    }
    found: dict[str, bool] = {}

    def web_side(word: str) -> None:
        web = Store(path)
        found[word] = searches[word](web) and web.unindexed() == 0
        web.close()
    for word in searches:
        store.add(word_mail(word))
        assert store.unindexed() == 1
        thread = threading.Thread(target=web_side, args=(word,))
        thread.start()
        thread.join(WAIT)
    assert found == dict.fromkeys(searches, True)


def test_a_message_deleted_while_its_words_wait_takes_them_along(tmp_path):
    store = Store(str(tmp_path / 's.db'))
    kept = store.add(word_mail('keepsake'))
    gone = store.add(word_mail('vanishing'))
    assert store.delete([gone['ID']]) == 1
    assert store.unindexed() == 1
    assert store.listing(query='vanishing')['messages_count'] == 0
    assert [m['ID'] for m in store.listing(query='keepsake')['messages']] == [kept['ID']]
