"""20 SMTP clients and 10 HTTP pollers at once against one inbox.

Every message the server accepted (250) must be listed exactly once, none
lost, none twice; no HTTP request may take longer than BOUND seconds. The
run lasts DURATION seconds (bounded in count too); the numbers measured
are printed (`-s` shows them).
"""
from __future__ import annotations

import threading
import time
from urllib.parse import quote

from inbox_helpers import Http, InboxThread, make_mail, send

SMTP_CLIENTS = 20
POLLERS = 10
DURATION = 3.0
MAX_PER_CLIENT = 40
BOUND = 2.0         # seconds, any single HTTP request


def test_concurrent_smtp_sessions_and_http_pollers(tmp_path):
    accepted, errors, latencies = [], [], []
    lock = threading.Lock()
    with InboxThread(tmp_path / 'busy.db', max_messages=10_000) as inbox:
        deadline = time.monotonic() + DURATION

        def sender(n):
            for i in range(MAX_PER_CLIENT):
                if time.monotonic() > deadline:
                    return
                subject = f'client {n} message {i}'
                try:
                    send(inbox.smtp, make_mail(subject=subject, text=f'body {n}-{i}\n'))
                except Exception as exc:    # noqa: BLE001 - counted: must stay empty
                    with lock:
                        errors.append(f'smtp {subject}: {exc!r}')
                    return
                with lock:
                    accepted.append(subject)

        def poller(n):
            web = Http(inbox.url)
            paths = ['/api/v1/messages?limit=50', f'/api/v1/search?query={quote("message 1")}',
                     '/api/v1/search?query=is:unread', '/livez', '/api/v1/message/latest']
            k = 0
            while time.monotonic() < deadline:
                path = paths[(n + k) % len(paths)]
                k += 1
                started = time.monotonic()
                reply = web.get(path)
                took = time.monotonic() - started
                with lock:
                    latencies.append((took, path))
                    if reply.status not in (200, 404):      # 404: latest before the first mail
                        errors.append(f'{path}: {reply.status} {reply.text[:100]}')
            web.close()

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(SMTP_CLIENTS)]
        threads += [threading.Thread(target=poller, args=(n,)) for n in range(POLLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 30)
            assert not t.is_alive()
        web = Http(inbox.url)
        listed = []
        start = 0
        while True:
            page = web.json('GET', f'/api/v1/messages?start={start}&limit=1000')
            listed += [m['Subject'] for m in page['messages']]
            start += len(page['messages'])
            if not page['messages']:
                break
        total = page['total']
    assert errors == []
    assert len(accepted) > SMTP_CLIENTS * 3, 'the load was too small to mean anything'
    assert sorted(listed) == sorted(accepted), 'every accepted message listed once'
    assert total == len(accepted)
    times = sorted(t for t, _ in latencies)
    slowest = max(latencies)
    p99 = times[int(len(times) * 0.99) - 1]
    print(f'\n{len(accepted)} messages from {SMTP_CLIENTS} clients, {len(latencies)} HTTP requests '
          f'from {POLLERS} pollers in {DURATION} s; HTTP median {times[len(times) // 2] * 1000:.1f} ms, '
          f'p99 {p99 * 1000:.1f} ms, max {slowest[0] * 1000:.1f} ms ({slowest[1]})')
    assert slowest[0] < BOUND, slowest
