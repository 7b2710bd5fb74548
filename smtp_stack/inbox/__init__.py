"""The development inbox: catch mail over SMTP, read it on a web page or
through Mailpit's API v1 (docs/inbox.md).

    smtp-stack inbox                       # SMTP :1025, web and API :8025
    app = smtp_stack.inbox.wsgi_app('inbox.db')   # mount under gunicorn/Flask

Layout. Pure: `parse` (a message into the API's fields), `arrival` (what
is written into a message as it is stored), `unsubscribe`
(List-Unsubscribe), `render` (stored fields as Mailpit's JSON), `search`
(Mailpit's search syntax into SQL), `tags` (tag rules, and their SQL),
`send` (a send request into a message), `chaos` (SMTP errors on demand,
and their middleware), `swagger` (the API's description). Storage:
`schema` (versions and migrations), `database` (connections,
transactions, the event log), `store` (the messages). Web: `http`
(requests, replies, errors), `api` and `api_extra` (the Mailpit
endpoints), `pages` (the page and /view), `events` (the websocket), `app`
(routes and auth). Checks: `linkcheck`, `spamd` (sa-check through
SpamAssassin), `thumbnail` (Pillow, optional). SMTP and the rest:
`mailboxes` (which mailbox a message goes to, and their names),
`capture` (the SMTP side's delivery), `release`, `pop3` (the protocol,
pure) and `pop3_server` (its sockets), `maxage` (pruning by age),
`webhook` (a POST per new message), `service` (every side in one hub),
`section` (in `smtp-stack serve`), `command` (the CLI).

Imports are lazy, so that the CLI can describe the command without the
`inbox` extra (wsproto) installed; using a name that needs it without it
raises MissingExtra (an ImportError) saying which extra to install.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..extras import needs_extra

if TYPE_CHECKING:
    from .app import InboxApp
    from .service import Inbox
    from .store import Store

__all__ = ['wsgi_app', 'Inbox', 'Store', 'InboxApp']


def wsgi_app(db_path: str = 'inbox.db', *, max_messages: int = 500, relay: str | None = None,
             ui_auth_file: str | None = None, mailboxes: str = 'off',
             allow_internal_http_requests: bool = False) -> InboxApp:
    """The web page, the API and the events over the inbox file `db_path`.

    Another process (`smtp-stack inbox`, or `smtp-stack serve` with an
    `inbox:` section) may be the one receiving mail into the same file:
    the page and `/api/events` see its messages within half a second.
    `mailboxes` is that process's `--mailboxes`: with it, the other
    mailboxes are served under `/mailbox/NAME/` (by-user: to their users).
    `allow_internal_http_requests` lets the link check ask internal hosts.
    """
    with needs_extra('inbox', 'smtp_stack.inbox.wsgi_app'):
        from .app import InboxApp, load_users
    from .mailboxes import Routing
    from .release import Relay, parse_hostport
    from .store import Store
    routing = Routing.of(mailboxes)
    users = load_users(ui_auth_file) if ui_auth_file else None
    relay_to = Relay(*parse_hostport(relay)) if relay else None
    return InboxApp(Store(db_path, max_messages, routing), relay=relay_to, users=users,
                    allow_internal_http_requests=allow_internal_http_requests)


def __getattr__(name: str) -> type:
    if name == 'Inbox':
        with needs_extra('inbox', 'smtp_stack.inbox.Inbox'):
            from .service import Inbox
        return Inbox
    if name == 'Store':
        from .store import Store
        return Store
    if name == 'InboxApp':
        with needs_extra('inbox', 'smtp_stack.inbox.InboxApp'):
            from .app import InboxApp
        return InboxApp
    raise AttributeError(name)
