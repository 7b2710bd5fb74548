"""`--max-age`: messages older than the age go, checked periodically off the
hub, with the websocket's `prune` event as for `--max-messages`."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from clirunner import smtp_stack
from inbox_helpers import Http, InboxThread, WebSocket, make_mail, send
from smtp_stack.inbox.maxage import AgePruner, parse_max_age
from smtp_stack.inbox.store import Store


@pytest.mark.parametrize('text, seconds', [('1h', 3600), ('12h', 43200), ('7d', 604800),
                                           (' 2d ', 172800)])
def test_ages_as_mailpit_writes_them(text, seconds):
    assert parse_max_age(text) == seconds


@pytest.mark.parametrize('text', ['', '7', '0d', '1.5h', '3w', '-1d', 'd', '10m'])
def test_other_ages_are_refused_with_mailpits_words(text):
    with pytest.raises(ValueError, match='<int>h for hours or <int>d for days'):
        parse_max_age(text)


def test_old_messages_are_pruned_periodically_with_a_prune_event(tmp_path):
    db = tmp_path / 'inbox.db'
    with InboxThread(db, max_age=3600, prune_interval=0.05) as inbox:
        web = Http(inbox.url)
        events = WebSocket(*inbox.http)
        try:
            events.event('stats')
            send(inbox.smtp, subject='fresh')
            # Another writer of the same file stores a message received two hours ago.
            writer = Store(str(db))
            old_id = writer.add(make_mail(subject='stale').as_bytes(), ['bob@example.com'],
                                received=datetime.now(timezone.utc) - timedelta(hours=2))['ID']
            writer.close()
            events.event('prune')
            listing = web.json('GET', '/api/v1/messages')
            assert [m['Subject'] for m in listing['messages']] == ['fresh']
            assert web.get(f'/api/v1/message/{old_id}').status == 404
            assert inbox.inbox.pruner.pruned == 1
        finally:
            events.close()


def test_without_max_age_nothing_is_pruned_by_age(tmp_path):
    db = tmp_path / 'inbox.db'
    Store(str(db)).add(make_mail(subject='ancient').as_bytes(), ['bob@example.com'],
                       received=datetime.now(timezone.utc) - timedelta(days=400))
    with InboxThread(db) as inbox:
        assert inbox.inbox.pruner is None
        listing = Http(inbox.url).json('GET', '/api/v1/messages')
        assert [m['Subject'] for m in listing['messages']] == ['ancient']


def test_a_failing_check_is_logged_once_until_it_works_again(tmp_path, caplog):
    store = Store(str(tmp_path / 'inbox.db'))
    pruner = AgePruner(store, 3600)
    real = store.prune_older

    def broken(cutoff):
        raise OSError('disk gone')

    store.prune_older = broken
    with caplog.at_level('INFO', logger='smtp_stack.inbox'):
        assert pruner.prune_now() == 0
        assert pruner.prune_now() == 0
        store.prune_older = real
        store.add(make_mail().as_bytes(), received=datetime.now(timezone.utc) - timedelta(hours=3))
        assert pruner.prune_now() == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count('inbox: --max-age pruning failed: disk gone') == 1
    assert 'inbox: --max-age pruning works again' in messages


def test_the_command_takes_max_age(tmp_path):
    result = smtp_stack('inbox', '--smtp', '127.0.0.1:0', '--http', '127.0.0.1:0',
                        '--max-age', '3w', cwd=tmp_path)
    assert result.returncode == 2
    assert 'max-age must be either <int>h for hours or <int>d for days: 3w' in result.stderr
    assert '--max-age' in smtp_stack('inbox', '--help', cwd=tmp_path).stdout


def test_pruning_keeps_what_is_younger(tmp_path):
    store = Store(str(tmp_path / 'inbox.db'))
    now = time.time()
    for hours in (0, 1, 5):
        store.add(make_mail(subject=f'{hours}h').as_bytes(),
                  received=datetime.fromtimestamp(now - hours * 3600 - 1, timezone.utc))
    assert store.prune_older(now - 2 * 3600) == 1
    assert [m['Subject'] for m in store.listing()['messages']] == ['1h', '0h']
