"""`Inbox`: the SMTP server and the web side of `smtp-stack inbox` in one hub.

`InboxParts` is what the command and the `inbox:` section of `smtp-stack
serve` share: the store, the web side, POP3, pruning and the webhook.
They serve in greenlets of the same gevent hub; the store is shared, so a
new message nudges the websocket broker at once. New messages are stored by a
process of its own (store_process.py; `store_process=False`: by a thread
of this one, capture.py); the web handlers' SQLite work runs in the hub's
thread pool (`offload`).

SMTP defaults suit a development catcher, as Mailpit's do: no AUTH
(a client that tries gets 502) unless `accept_any_auth`, which takes any
user name and password over PLAIN, LOGIN or CRAM-MD5 (and records the
name), or `smtp_users` (Mailpit's --smtp-auth-file: those users, over
PLAIN or LOGIN, and no mail without AUTH); no STARTTLS unless `starttls`
(with the `key`/`cert` server options, or a self-signed certificate
generated at start); no limit on the messages of one connection
(SmtpServer's `max_messages` is 0: Mailpit's SMTP server, a fork of
mhale/smtpd, has none, and a test suite may send thousands in one
session). Mailboxes by user need that AUTH: without it every message
would go to the default mailbox, so the two are asked together. Mailpit's
recipient allowlist and STARTTLS requirement are smtp_rules.py's.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import gevent
import gevent.ssl
from gevent.pywsgi import WSGIHandler, WSGIServer

from .. import logs
from ..options import LogLevels
from ..server import SmtpServer, hostport
from ..tls import create_context
from ..users import User, Users
from .app import InboxApp
from .capture import Capture
from .chaos import ChaosMiddleware
from .maxage import INTERVAL as PRUNE_INTERVAL
from .maxage import AgePruner
from .mailboxes import BY_USER, OFF, Routing
from .pop3_server import Pop3Server
from .rspamd_check import RspamdChecker
from .smtp_rules import RecipientRule, RequireStarttls
from .spamd import SpamdClient
from .store import Store
from .webhook import LIMIT as WEBHOOK_LIMIT
from .webhook import Webhook

if TYPE_CHECKING:
    from ..session import Session
    from .release import Relay
    from .tags import TagRule

log = logs.get('smtp_stack.inbox')

DEFAULT_SMTP = ('127.0.0.1', 1025)
DEFAULT_HTTP = ('127.0.0.1', 8025)


class _Handler(WSGIHandler):  # type: ignore[misc]  # gevent has no type information
    """gevent's handler, with access logging through `logging` at DEBUG."""

    def log_request(self) -> None:
        if log.logger.isEnabledFor(10):
            log.debug('%s', self.format_request())


class InboxParts:
    """The inbox but its SMTP side: the store, the web side, and what the
    options add (POP3, pruning by age, the webhook, the spam check), started
    and stopped together in the hub that serves them.

    `Inbox` adds its own SMTP server (`smtp-stack inbox`); the `inbox:`
    section of `smtp-stack serve` is the delivery of the configured servers
    (section.py). Both take the same keywords, named as the command's
    options are. A bad value is a ValueError saying why, raised before
    anything is opened."""

    def __init__(self, db: str = 'inbox.db', *, http: tuple[str, int] = DEFAULT_HTTP,
                 max_messages: int = 500, mailboxes: str = OFF,
                 mailbox_pattern: str | None = None, users: dict[str, str] | None = None,
                 relay: Relay | None = None, name: str = 'localhost',
                 pop3: tuple[str, int] | None = None, pop3_users: dict[str, str] | None = None,
                 pop3_tls: ssl.SSLContext | None = None, pop3_tls_implicit: bool = False,
                 max_age: float | None = None, prune_interval: float = PRUNE_INTERVAL,
                 webhook_url: str | None = None, webhook_limit: float = WEBHOOK_LIMIT,
                 tag_rules: Sequence[TagRule] = (), tags_disable: Collection[str] = (),
                 tags_username: bool = False, spamassassin: str | None = None,
                 stats: dict[str, int] | None = None, store_process: bool = True,
                 verbose: bool = False, rspamd: str | None = None,
                 tags_title_case: bool = False, use_message_dates: bool = False,
                 webhook_delay: float = 0.0, hide_delete_all_button: bool = False,
                 http_tls: ssl.SSLContext | None = None, ignore_duplicate_ids: bool = False,
                 send_users: dict[str, str] | None = None, send_accept_any: bool = False,
                 prometheus: str | None = None):
        routing = Routing.of(mailboxes, mailbox_pattern)     # ValueError saying why
        metrics_at = _metrics_address(prometheus)             # ValueError saying why
        _check_web_tls(http_tls)
        if pop3 is not None and not pop3_users:
            raise ValueError('POP3 needs users (Mailpit too serves it only with them)')
        if spamassassin and rspamd:
            raise ValueError('the spam check asks spamd or rspamd: '
                             '--enable-spamassassin or --enable-rspamd, not both')
        spam_checker = (SpamdClient(spamassassin) if spamassassin
                        else RspamdChecker(rspamd) if rspamd else None)
        self.store = Store(db, max_messages, routing)
        self.store.tag_rules = list(tag_rules)      # Mailpit's --tag and --tags-config
        self.store.tags_disabled = frozenset(tags_disable)
        self.store.tag_username = tags_username
        self.store.tags_title_case = tags_title_case        # Mailpit's --tags-title-case
        self.store.use_message_dates = use_message_dates    # ... and --use-message-dates
        self.store.ignore_duplicate_ids = ignore_duplicate_ids  # ... and --ignore-duplicate-ids
        # store_process: the messages stored by a process of its own (store_process.py)
        # verbose: a line for each message stored (Mailpit's --verbose)
        self.capture = Capture(self.store, stats, store_process=store_process, verbose=verbose)
        self.app = InboxApp(self.store, relay=relay, users=users, stats=self.capture.stats)
        self.app.hide_delete_all_button = hide_delete_all_button
        self.app.send_users = send_users            # Mailpit's --send-api-auth-file
        self.app.send_accept_any = send_accept_any  # ... and --send-api-auth-accept-any
        # /metrics on the web side for 'true' alone
        self.app.prometheus = 'true' if (prometheus or '').strip().lower() == 'true' else None
        self._metrics_at = metrics_at
        self.metrics_server: WSGIServer | None = None     # Mailpit's separate metrics server
        # Mailpit's --enable-spamassassin HOST:PORT, or our --enable-rspamd URL
        self.app.spam_checker = spam_checker
        # --max-age: older messages are deleted every prune_interval seconds
        self.pruner = AgePruner(self.store, max_age, prune_interval) if max_age else None
        # --webhook-url: a POST per new message, from the events broker's stream
        self.webhook = (Webhook(webhook_url, self.app.broker, limit=webhook_limit,
                                delay=webhook_delay) if webhook_url else None)
        self.pop3: Pop3Server | None = None
        if pop3 is not None and pop3_users:
            # STLS, or TLS from the first byte, with the given context, else a
            # self-signed certificate for `name`
            self.pop3 = Pop3Server(self.store, pop3_users, pop3, name=name,
                                   tls=pop3_tls or create_context(hostname=name),
                                   implicit_tls=pop3_tls_implicit)
        self._http_at = http
        self.http_tls = http_tls        # Mailpit's --ui-tls-cert: the web side over HTTPS
        # made in start_parts(): a gevent server belongs to the hub that runs it
        self.http: WSGIServer | None = None

    @property
    def http_address(self) -> tuple[Any, ...]:
        """Where the web side listens (host, port, ...), once started."""
        address: tuple[Any, ...] = self._web().address
        return address

    def _web(self) -> WSGIServer:
        if self.http is None:
            raise RuntimeError('the inbox is not started')
        return self.http

    @property
    def url(self) -> str:
        host, port = self.http_address[:2]
        host = f'[{host}]' if ':' in host else host
        return f'{"https" if self.http_tls else "http"}://{host}:{port}/'

    @property
    def pop3_address(self) -> tuple[Any, ...] | None:
        """Where POP3 listens, once started (None without --pop3)."""
        return self.pop3.address if self.pop3 is not None else None

    def start_parts(self) -> None:
        """Listen on HTTP (and POP3), and start pruning and the webhook; an
        address that cannot be bound is an OSError naming it, and leaves
        nothing listening."""
        self.http = start_web(self._http_at, self.app, self.http_tls)
        try:
            if self.pop3 is not None:
                self.pop3.start()
        except BaseException:
            self.http.stop(timeout=0)
            self.http = None
            raise
        if self._metrics_at is not None:
            from .prometheus import metrics_app
            try:
                self.metrics_server = WSGIServer(self._metrics_at, metrics_app(self.app),
                                                 handler_class=_Handler, log=None,
                                                 error_log=None)
                _bound(self.metrics_server, self._metrics_at)
            except BaseException:
                self.metrics_server = None
                self.stop_parts()
                raise
        if self.pruner is not None:
            self.pruner.start()
        if self.webhook is not None:
            self.webhook.start()

    def stop_parts(self) -> None:
        if self.pruner is not None:
            self.pruner.stop()
        if self.webhook is not None:
            self.webhook.stop()
        if self.pop3 is not None:
            self.pop3.stop(timeout=1)
        if self.metrics_server is not None:
            self.metrics_server.stop(timeout=1)
            self.metrics_server = None
        if self.http is not None:
            self.http.stop(timeout=1)
            self.http = None
        self.capture.close()

    def serving(self) -> list[gevent.Greenlet]:
        """Greenlets serving HTTP (and POP3) until they are stopped."""
        sides = [gevent.spawn(self._web().serve_forever)]
        if self.metrics_server is not None:
            sides.append(gevent.spawn(self.metrics_server.serve_forever))
        if self.pop3 is not None:
            sides.append(gevent.spawn(self.pop3.serve_forever))
        return sides

    def describe_parts(self) -> str:
        """', POP3 on 127.0.0.1:1110' ... for the start-up line."""
        metrics = ''
        if self.metrics_server is not None:
            host, port = self.metrics_server.address[:2]
            metrics = f', metrics on http://{host}:{port}/metrics'
        if self.pop3_address is None:
            return metrics
        host, port = self.pop3_address[:2]
        host = f'[{host}]' if ':' in host else host
        return (f', POP3{"S" if self.pop3 and self.pop3.implicit_tls else ""} on {host}:{port}'
                + metrics)

    def kept(self) -> str:
        """'newest 500 kept' (per mailbox, and how, with mailboxes)."""
        kept = (f'newest {self.store.max_messages} kept' if self.store.max_messages
                else 'every message kept')
        if self.store.routing.on:
            kept += f' per mailbox, mailboxes {self.store.routing.mode}'
        return kept


class Inbox(InboxParts):
    """`smtp-stack inbox`: an SMTP server of its own, storing into the parts."""

    def __init__(self, db: str = 'inbox.db', *, smtp: tuple[str, int] = DEFAULT_SMTP,
                 http: tuple[str, int] = DEFAULT_HTTP, max_messages: int = 500,
                 accept_any_auth: bool = False, starttls: bool = False,
                 users: dict[str, str] | None = None, relay: Relay | None = None,
                 name: str = 'localhost', pop3: tuple[str, int] | None = None,
                 pop3_users: dict[str, str] | None = None,
                 pop3_tls: ssl.SSLContext | None = None, pop3_tls_implicit: bool = False,
                 max_age: float | None = None, prune_interval: float = PRUNE_INTERVAL,
                 webhook_url: str | None = None, webhook_limit: float = WEBHOOK_LIMIT,
                 tag_rules: Sequence[TagRule] = (), tags_disable: Collection[str] = (),
                 tags_username: bool = False, spamassassin: str | None = None,
                 mailboxes: str = OFF, mailbox_pattern: str | None = None,
                 store_process: bool = True, verbose: bool = False, rspamd: str | None = None,
                 tags_title_case: bool = False, use_message_dates: bool = False,
                 webhook_delay: float = 0.0, hide_delete_all_button: bool = False,
                 http_tls: ssl.SSLContext | None = None, ignore_duplicate_ids: bool = False,
                 send_users: dict[str, str] | None = None, send_accept_any: bool = False,
                 prometheus: str | None = None, smtp_users: Mapping[str, str] | None = None,
                 allowed_recipients: str | None = None,
                 ignore_rejected_recipients: bool = False, require_starttls: bool = False,
                 **server_options: Any):
        if mailboxes == BY_USER and not (accept_any_auth or smtp_users):
            raise ValueError('mailboxes by-user need SMTP AUTH (--smtp-auth-accept-any or '
                             '--smtp-auth-file): without it every message goes to the '
                             'default mailbox')
        if accept_any_auth and smtp_users:
            raise ValueError('SMTP AUTH checks the users of --smtp-auth-file or accepts '
                             'anyone (--smtp-auth-accept-any), not both')
        if require_starttls and not starttls:
            raise ValueError('STARTTLS cannot be required without STARTTLS '
                             '(--smtp-starttls or --smtp-tls-cert)')
        # before anything is opened: a bad expression is a ValueError saying why
        recipient_rule = (RecipientRule(allowed_recipients, ignore_rejected_recipients)
                          if allowed_recipients else None)
        super().__init__(db, http=http, max_messages=max_messages, mailboxes=mailboxes,
                         mailbox_pattern=mailbox_pattern, users=users, relay=relay, name=name,
                         pop3=pop3, pop3_users=pop3_users, pop3_tls=pop3_tls,
                         pop3_tls_implicit=pop3_tls_implicit, max_age=max_age,
                         prune_interval=prune_interval, webhook_url=webhook_url,
                         webhook_limit=webhook_limit, tag_rules=tag_rules,
                         tags_disable=tags_disable, tags_username=tags_username,
                         spamassassin=spamassassin, store_process=store_process,
                         verbose=verbose, rspamd=rspamd, tags_title_case=tags_title_case,
                         use_message_dates=use_message_dates, webhook_delay=webhook_delay,
                         hide_delete_all_button=hide_delete_all_button, http_tls=http_tls,
                         ignore_duplicate_ids=ignore_duplicate_ids, send_users=send_users,
                         send_accept_any=send_accept_any, prometheus=prometheus)
        disabled = list(server_options.pop('disabled_commands', ()))
        if not (accept_any_auth or smtp_users):
            disabled.append('AUTH')
        if not starttls:
            disabled.append('STARTTLS')
        server_options.setdefault('disable_reverse_lookup', True)
        # the sessions' lines (connect, accepted, refusals) only when verbose
        server_options.setdefault('log_level', LogLevels.INFO if verbose else LogLevels.WARN)
        if accept_any_auth:
            server_options.setdefault('auth_methods', ['PLAIN', 'LOGIN', 'CRAM-MD5'])
            server_options.setdefault('allow_insecure_auth', True)
            server_options.setdefault('on_auth', _anyone)
        elif smtp_users:
            # Mailpit's --smtp-auth-file: those users only, and no mail without
            # AUTH (its AuthRequired); over TLS unless allow_insecure_auth
            server_options.setdefault('auth_methods', ['PLAIN', 'LOGIN'])
            server_options.setdefault('auth_optional', False)
            server_options.setdefault('on_auth', Users(
                User(user, password_hash=hashed) for user, hashed in smtp_users.items()
            ).on_auth)
        # `max_messages` above is the store's; the server's per connection is off
        self.smtp = SmtpServer(name=name, disabled_commands=disabled, max_messages=0,
                               **server_options)
        if require_starttls:            # Mailpit's --smtp-require-starttls
            self.smtp.use(RequireStarttls())
        self.smtp.use(ChaosMiddleware(self.app.chaos))     # PUT /api/v1/chaos fails commands
        if recipient_rule is not None:  # Mailpit's --smtp-allowed-recipients
            recipient_rule.stats = self.capture.stats
            self.smtp.use(recipient_rule)
        self.smtp.use(self.capture.delivery())
        self._smtp_at = smtp

    @property
    def smtp_address(self) -> tuple[str, int] | None:
        """Where SMTP listens (the real port when 0 was asked for), once started."""
        return self.smtp.address

    def start(self) -> Inbox:
        self.smtp.start(self._smtp_at[1], self._smtp_at[0])
        try:
            self.start_parts()
            if self.capture.store_process:  # its imports take a moment: not at the first message
                self.capture.process().start()
        except BaseException:
            self.stop_parts()
            self.smtp.stop(0)
            raise
        return self

    def serve_forever(self) -> None:
        gevent.joinall([gevent.spawn(self.smtp.serve_forever), *self.serving()])

    def stop(self, timeout: float | None = None) -> None:
        self.stop_parts()
        self.smtp.stop(timeout)
        self.capture.close()    # again: a session finishing meanwhile may have started one

    def describe(self) -> str:
        if self.smtp.address is None:
            raise RuntimeError('the inbox is not started')
        host, port = self.smtp.address[:2]
        host = f'[{host}]' if ':' in host else host
        return (f'inbox: SMTP on {host}:{port}, web and API on {self.url}'
                f'{self.describe_parts()}, stored in {self.store.path} ({self.kept()})')


def start_web(address: tuple[str, int], app: InboxApp,
              tls: ssl.SSLContext | None = None) -> WSGIServer:
    """`web_server(address, app, tls)`, started. An address that cannot be
    bound is an OSError naming it in `filename` ('127.0.0.1:8025'), as
    SmtpServer's is (gevent appends it to strerror as a tuple)."""
    http = web_server(address, app, tls)
    _bound(http, address)
    return http


def _bound(server: WSGIServer, address: tuple[str, int]) -> None:
    """`server.start()`; an address that cannot be bound an OSError naming it."""
    try:
        server.start()
    except OSError as exc:
        raise OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc),
                      hostport(*address)) from None


def web_server(address: tuple[str, int], app: InboxApp,
               tls: ssl.SSLContext | None = None) -> WSGIServer:
    """gevent's WSGI server for the inbox app; access log at DEBUG; over
    TLS with `tls` (the websocket too: it is the same connection). Bound
    to a loopback address, it answers only requests that name a loopback
    host, so a page on a rebinding DNS name cannot read the inbox."""
    if _loopback(address[0]):
        app.allowed_hosts = LOOPBACK_HOSTS
    _check_web_tls(tls)
    if tls is None:
        return WSGIServer(address, app, handler_class=_Handler, log=None, error_log=None)
    return _TlsWsgiServer(address, app, handler_class=_Handler, log=None, error_log=None,
                          ssl_context=tls)


class _TlsWsgiServer(WSGIServer):  # type: ignore[misc]  # gevent has no type information
    """gevent's WSGI server over TLS, where a handshake that fails (a browser
    refusing the certificate, plain HTTP to the port, a scan) is a DEBUG line
    and a closed socket: gevent's own lets the error end the greenlet, and
    the hub prints its traceback on stderr for every such client."""

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
        try:
            tls = self.wrap_socket(client_socket, **self.ssl_args)
        except OSError as exc:          # ssl.SSLError is an OSError
            log.debug('inbox: TLS handshake with %s failed: %s', address, exc)
            client_socket.close()
            return None
        try:
            return self.handle(tls, address)
        finally:
            tls.close()


LOOPBACK_HOSTS = frozenset({'localhost', '127.0.0.1', '::1'})


def _metrics_address(prometheus: str | None) -> tuple[str, int] | None:
    """Mailpit's --enable-prometheus: None for off or 'true' (the web side's
    /metrics), else the HOST:PORT of a listener of its own. The metrics
    extra is asked for here, before anything opens."""
    if not prometheus or prometheus.strip().lower() in ('false', 'true'):
        address = None
    else:
        from .release import parse_hostport
        address = parse_hostport(prometheus, '0.0.0.0')
    if prometheus and prometheus.strip().lower() != 'false':
        from ..extras import needs_extra
        with needs_extra('metrics', '--enable-prometheus'):
            import prometheus_client  # noqa: F401 - the text format's writer
    return address


def _check_web_tls(tls: ssl.SSLContext | None) -> None:
    if tls is not None and not isinstance(tls, gevent.ssl.SSLContext):
        raise ValueError("the web side's TLS context must be gevent.ssl's (a stdlib one "
                         'makes sockets that block the hub): create_context(..., '
                         'context_class=gevent.ssl.SSLContext)')


def _loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def _anyone(session: Session) -> dict[str, str]:
    """--smtp-auth-accept-any: every name and password is good."""
    auth = session.auth
    return {'name': auth.username if auth is not None else ''}
