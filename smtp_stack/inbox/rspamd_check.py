"""`GET /api/v1/message/{ID}/sa-check` through rspamd (ours: Mailpit asks spamd only).

`--enable-rspamd URL` (rspamd's normal worker, `http://127.0.0.1:11333`):
the stored message goes to rspamd's `POST /checkv2` through the HTTP
client the `rspamd` policy uses (rspamd_client.py), and rspamd's reply is
given in Mailpit's SpamAssassinResponse shape (spamd.py), so the page's
spam tab and every Mailpit client read it unchanged:

- `Score`: rspamd's score, rounded down to one decimal as Mailpit's are;
- `IsSpam`: rspamd's action marks or refuses the message as spam
  (`add header`, `rewrite subject`, `reject`), so the site's own rspamd
  thresholds decide, not spamd's 5.0;
- `Rules`: rspamd's symbols, each with its `Name`, its `Score` (rounded
  down) and its `Description` ('' for a symbol without one), the highest
  score first, then by name, as SpamAssassin's report lists its rules.

rspamd that cannot be asked, or that answers something that is no
verdict, is a 200 whose `Error` says why and whose `Rules` is null, as
spamd's trouble is; each check ends within `timeout` (8 s, as spamd's).
Only the message is sent (no envelope: the stored message is what is
checked, as with spamd).
"""
from __future__ import annotations

import io
from typing import Any

from ..rspamd_client import HttpPool, RspamdError, number, reply_json, rspamd_address
from .spamd import TIMEOUT, failure, round_down

SPAM_ACTIONS = frozenset({'reject', 'add header', 'rewrite subject'})
CONNECTIONS = 2             # idle connections kept for the next check


def verdict(data: object) -> dict[str, Any]:
    """Mailpit's SpamAssassinResponse of a checkv2 reply (JSON, decoded)."""
    if not isinstance(data, dict) or not isinstance(data.get('action'), str):
        return failure(f'not an rspamd verdict: {str(data)[:200]!r}')
    symbols = data.get('symbols')
    symbols = symbols if isinstance(symbols, dict) else {}
    found: list[tuple[float, str, str]] = []
    for name, symbol in symbols.items():
        symbol = symbol if isinstance(symbol, dict) else {}
        description = symbol.get('description')
        found.append((round_down(number(symbol.get('score'))), str(name),
                      description if isinstance(description, str) else ''))
    found.sort(key=lambda rule: (-rule[0], rule[1]))
    rules = [{'Score': score, 'Name': name, 'Description': description}
             for score, name, description in found]
    return {'IsSpam': data['action'] in SPAM_ACTIONS, 'Error': '',
            'Score': round_down(number(data.get('score'))), 'Rules': rules}


class RspamdChecker:
    """Asks rspamd's normal worker at `url` about a message."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        host, port = rspamd_address(url)        # ValueError saying why
        self.url = url
        self.pool = HttpPool(host, port, timeout, CONNECTIONS)

    def check(self, message: bytes) -> dict[str, Any]:
        """Mailpit's SpamAssassinResponse for `message`; never raises for rspamd's trouble."""
        try:
            status, body = self.pool.post('/checkv2', [], lambda: io.BytesIO(message),
                                          len(message))
        except RspamdError as exc:
            return failure(f'rspamd {self.pool.authority}: {exc}')
        if status != 200:
            return failure(f'rspamd {self.pool.authority}: HTTP {status}: '
                           f'{body[:200].decode("utf-8", "replace")}')
        try:
            return verdict(reply_json(body))
        except RspamdError as exc:
            return failure(f'rspamd {self.pool.authority}: {exc}')
