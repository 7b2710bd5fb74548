"""The inbox as the delivery of `smtp-stack serve` (its `inbox:` section).

    inbox:
      db: inbox.db              # relative to the config file's directory
      http: 127.0.0.1:8025      # the web page, Mailpit's API, /api/events
      max_messages: 500
      ui_auth_file: web-users   # optional: "name:hash" lines (smtp-stack hash-password)
      relay: 127.0.0.1:25       # optional: where "release" sends a message
      mailboxes: by-user        # ... and every other option of `smtp-stack inbox`
      allow_internal_http_requests: true    # link checks may ask private addresses

With it, the inbox is the delivery: every message the configured servers
accept (with their listeners, TLS, users, policies) is stored in the inbox,
and its web side (and POP3, pruning, the webhook) runs in the same
process. It replaces `deliver:` (both at once are an error: one delivery
per server). The keys are the parameters `InboxDelivery` declares
(params.py), named as the command's options with underscores (`--max-age`
is `max_age:`); the command's SMTP options are the server's own keys
(`listen:`, `users:`, the TLS keys, `name:`, `log_format:`). Each value is
checked alone when the file is read, with the command's rules and words;
the rules between keys (`pop3` needs `pop3_auth_file` ...) once the
section is read (`check_between_keys`, check-config too), and again when
the delivery is made, before anything listens.

A middleware like the other deliveries, and a component
(middleware.Component): its web side runs while the servers it is
registered on run. The Receiver shares one delivery between its servers,
so the web side starts with the first server's start() and stops with
the last one's stop(). config.py stops a file with an `inbox:` section
before it gets here when the `inbox` extra is missing (MissingExtra,
naming the section).
"""
from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from ..params import BOOL, EXISTING_FILE, Kind, Reader
from .app import load_users
from .chaos import ChaosMiddleware, parse_triggers
from .mailboxes import MODES, OFF, Routing
from .maxage import parse_max_age
from .release import Relay, parse_hostport
from .service import DEFAULT_HTTP, InboxParts
from .smtp_rules import RecipientRule, RequireStarttls
from .rspamd_check import RspamdChecker
from .spamd import SpamdClient
from .tags import load_tag_rules, parse_tag_rules, parse_tags_disable
from .webhook import LIMIT as WEBHOOK_LIMIT
from .webhook import check_url

if TYPE_CHECKING:
    from ..middleware import Context, Middleware, Next
    from ..server import SmtpServer


def _db(value: Any, reader: Reader) -> str:
    """A file name taken from the configuration's directory, which must exist."""
    if not isinstance(value, str) or not value:
        raise ValueError
    path = reader.file_path(value)
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f'{os.path.dirname(path)} is not a directory')
    return path


def _users_file(value: Any, reader: Reader) -> str:
    """A users file (`name:hash` lines) that exists and reads; its path."""
    if not isinstance(value, str) or not value:
        raise ValueError
    path = reader.file_path(value)
    if not os.path.isfile(path):
        raise ValueError('file not found')
    try:
        load_users(path)
    except OSError as exc:
        raise ValueError(f'{path}: {exc.strerror or exc}') from None
    return path


def _checked(check: Any) -> Any:
    """A Kind's convert for a string that `check(text)` accepts (its
    ValueError is the message); the value stays the string."""
    def convert(value: Any, reader: Reader) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError
        check(value)
        return value
    return convert


def _regex(text: str) -> None:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f'not a regular expression: {exc}') from None


def _rate(value: Any, reader: Reader) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError
    return float(value)


def _kept(value: Any, reader: Reader) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError
    return value


def _delay(value: Any, reader: Reader) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= 86400:
        raise ValueError
    return float(value)


def _prometheus(value: Any, reader: Reader) -> str:
    if isinstance(value, bool):         # YAML reads a bare true as true
        return 'true' if value else 'false'
    if not isinstance(value, str):
        raise ValueError
    if value.strip().lower() not in ('true', 'false'):
        parse_hostport(value)
    return value


def _mode(value: Any, reader: Reader) -> str:
    if value is False:          # YAML reads a bare `off` as false
        return OFF
    if value not in MODES:
        raise ValueError
    return str(value)


def _tags_disable(value: Any, reader: Reader) -> str:
    """'x-tags,plus-addresses' or a list of the two."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = ','.join(value)
    if not isinstance(value, str):
        raise ValueError
    parse_tags_disable(value)
    return value


def _tags_config(value: Any, reader: Reader) -> str:
    path: str = EXISTING_FILE.convert(value, reader)
    try:
        load_tag_rules(path)
    except OSError as exc:
        raise ValueError(f'{path}: {exc.strerror or exc}') from None
    return path


DB = Kind('a file name', _db, default_too=True)     # inbox.db next to the configuration
ADDRESS = Kind('HOST:PORT', lambda value, reader: parse_hostport(str(value)),
               show=lambda address: f'{address[0]}:{address[1]}')
USERS_FILE = Kind('a file name ("name:hash" lines)', _users_file)
REGEX = Kind('a regular expression', _checked(_regex))
AGE = Kind("a whole number of hours or days ('12h', '7d')", _checked(parse_max_age))
URL = Kind('an http(s) URL', _checked(check_url))
RATE = Kind('a number, 0 or more (0: no limit)', _rate)
KEPT = Kind('an integer, 0 or more (0: every message)', _kept)
DELAY = Kind('a number of seconds, 0 to 86400', _delay)
PROMETHEUS = Kind('true, false or HOST:PORT', _prometheus)
TAG_RULES = Kind("tag rules ('tag1,tag2=query \"tag3=from:x@example.com\"')",
                 _checked(parse_tag_rules))
TAGS_CONFIG = Kind('a file name (YAML tag rules)', _tags_config)
TAGS_DISABLE = Kind('x-tags and/or plus-addresses', _tags_disable)
SPAMD = Kind('HOST:PORT or unix:PATH (spamd)', _checked(SpamdClient))
RSPAMD = Kind("http://HOST[:PORT] (rspamd's normal worker)", _checked(RspamdChecker))
MAILBOXES = Kind(' or '.join(MODES), _mode)
PATTERN = Kind("an address with one * ('test+*@example.com')",
               _checked(lambda text: Routing.of('by-recipient', text)))
CHAOS = Kind("chaos triggers ('Sender:451:50,Recipient:550:10')", _checked(parse_triggers))


class InboxDelivery:
    """The inbox as a delivery and a component of `smtp-stack serve`'s servers."""

    def __init__(self, db: Annotated[str, DB] = 'inbox.db',
                 http: Annotated[tuple[str, int], ADDRESS] = DEFAULT_HTTP,
                 max_messages: Annotated[int, KEPT] = 500,
                 ui_auth_file: Annotated[str | None, USERS_FILE] = None,
                 relay: Annotated[tuple[str, int] | None, ADDRESS] = None,
                 relay_allowed_recipients: Annotated[str | None, REGEX] = None,
                 max_age: Annotated[str | None, AGE] = None,
                 webhook_url: Annotated[str | None, URL] = None,
                 webhook_limit: Annotated[float, RATE] = WEBHOOK_LIMIT,
                 tag: Annotated[str | None, TAG_RULES] = None,
                 tags_config: Annotated[str | None, TAGS_CONFIG] = None,
                 tags_disable: Annotated[str | None, TAGS_DISABLE] = None,
                 tags_username: Annotated[bool, BOOL] = False,
                 enable_spamassassin: Annotated[str | None, SPAMD] = None,
                 enable_rspamd: Annotated[str | None, RSPAMD] = None,
                 mailboxes: Annotated[str, MAILBOXES] = OFF,
                 mailbox_pattern: Annotated[str | None, PATTERN] = None,
                 pop3: Annotated[tuple[str, int] | None, ADDRESS] = None,
                 pop3_auth_file: Annotated[str | None, USERS_FILE] = None,
                 pop3_tls_cert: Annotated[str | None, EXISTING_FILE] = None,
                 pop3_tls_key: Annotated[str | None, EXISTING_FILE] = None,
                 pop3_tls_implicit: Annotated[bool, BOOL] = False,
                 allow_internal_http_requests: Annotated[bool, BOOL] = False,
                 store_process: Annotated[bool, BOOL] = True,
                 verbose: Annotated[bool, BOOL] = False,
                 smtp_allowed_recipients: Annotated[str | None, REGEX] = None,
                 smtp_ignore_rejected_recipients: Annotated[bool, BOOL] = False,
                 smtp_require_starttls: Annotated[bool, BOOL] = False,
                 chaos_triggers: Annotated[str | None, CHAOS] = None,
                 tags_title_case: Annotated[bool, BOOL] = False,
                 use_message_dates: Annotated[bool, BOOL] = False,
                 webhook_delay: Annotated[float, DELAY] = 0.0,
                 hide_delete_all_button: Annotated[bool, BOOL] = False,
                 ui_tls_cert: Annotated[str | None, EXISTING_FILE] = None,
                 ui_tls_key: Annotated[str | None, EXISTING_FILE] = None,
                 ignore_duplicate_ids: Annotated[bool, BOOL] = False,
                 send_api_auth_file: Annotated[str | None, USERS_FILE] = None,
                 send_api_auth_accept_any: Annotated[bool, BOOL] = False,
                 enable_prometheus: Annotated[str | None, PROMETHEUS] = None):
        _between_keys(relay, relay_allowed_recipients, mailboxes, mailbox_pattern, pop3,
                      pop3_auth_file, pop3_tls_cert, pop3_tls_key, pop3_tls_implicit,
                      enable_spamassassin, enable_rspamd, smtp_allowed_recipients,
                      smtp_ignore_rejected_recipients, ui_tls_cert, ui_tls_key,
                      send_api_auth_file, send_api_auth_accept_any)
        pop3_users = load_users(pop3_auth_file) if pop3_auth_file else None
        if pop3 is not None and not pop3_users:
            raise ValueError(f'inbox: pop3_auth_file: {pop3_auth_file} names no user')
        rules = parse_tag_rules(tag or '') + (load_tag_rules(tags_config) if tags_config else [])
        self.parts = InboxParts(
            db, http=http, max_messages=max_messages, mailboxes=mailboxes,
            mailbox_pattern=mailbox_pattern,
            users=load_users(ui_auth_file) if ui_auth_file else None,
            relay=Relay(*relay, allowed_recipients=relay_allowed_recipients or '')
            if relay else None,
            pop3=pop3, pop3_users=pop3_users, pop3_tls=_tls(pop3_tls_cert, pop3_tls_key),
            http_tls=_tls(ui_tls_cert, ui_tls_key, web=True),
            ignore_duplicate_ids=ignore_duplicate_ids,
            send_users=load_users(send_api_auth_file) if send_api_auth_file else None,
            send_accept_any=send_api_auth_accept_any, prometheus=enable_prometheus,
            pop3_tls_implicit=pop3_tls_implicit,
            max_age=parse_max_age(max_age) if max_age else None,
            webhook_url=webhook_url, webhook_limit=webhook_limit, tag_rules=rules,
            tags_disable=parse_tags_disable(tags_disable or ''), tags_username=tags_username,
            spamassassin=enable_spamassassin, rspamd=enable_rspamd,
            store_process=store_process, verbose=verbose, tags_title_case=tags_title_case,
            use_message_dates=use_message_dates, webhook_delay=webhook_delay,
            hide_delete_all_button=hide_delete_all_button)
        self.store = self.parts.store
        self.app = self.parts.app
        self.app.link_checker.allow_internal = allow_internal_http_requests
        if chaos_triggers:
            self.app.chaos.set(parse_triggers(chaos_triggers))
        # the chain the servers' commands go through, as `smtp-stack inbox`'s:
        # STARTTLS first (if required), chaos (PUT /api/v1/chaos fails
        # commands), the recipient allowlist, then the store
        self.require_starttls = smtp_require_starttls
        chain: list[Middleware] = [RequireStarttls()] if smtp_require_starttls else []
        chain.append(ChaosMiddleware(self.app.chaos))
        if smtp_allowed_recipients:
            chain.append(RecipientRule(smtp_allowed_recipients, smtp_ignore_rejected_recipients,
                                       self.parts.capture.stats))
        chain.append(self.parts.capture.delivery())
        self._chain = tuple(chain)
        self.web_address = http
        self._serving: set[SmtpServer] = set()     # the started servers it is registered on

    @property
    def http(self) -> Any:
        """gevent's WSGIServer, while the web side runs."""
        return self.parts.http

    def __call__(self, ctx: Context, next: Next) -> None:
        chain = self._chain

        def level(at: int) -> None:
            if at == len(chain):
                next()
            else:
                chain[at](ctx, lambda: level(at + 1))
        level(0)

    def describe(self) -> str:
        return describe({'db': self.store.path, 'http': self.http_address or self.web_address,
                         'ui_tls_cert': self.parts.http_tls is not None})

    def start(self, server: SmtpServer) -> None:
        """The web side (and POP3 ...) starts with the first server (OSError
        naming its address when that cannot be bound). STARTTLS cannot be
        required of a server that does not offer it (every MAIL would get 530)."""
        options = server.options
        if self.require_starttls and 'STARTTLS' in options.disabled_commands \
                and not options.secure:
            raise ValueError('inbox: smtp_require_starttls needs a server that offers STARTTLS '
                             '(STARTTLS is in its disabled_commands)')
        if not self._serving:
            self.parts.start_parts()
        self._serving.add(server)

    def stop(self, server: SmtpServer) -> None:
        """... and stops with the last."""
        self._serving.discard(server)
        if not self._serving:
            self.parts.stop_parts()

    @property
    def http_address(self) -> tuple[Any, ...] | None:
        return self.http.address if self.http is not None else None


def _between_keys(relay: object, relay_allowed_recipients: object, mailboxes: str,
                  mailbox_pattern: object, pop3: object, pop3_auth_file: object,
                  pop3_tls_cert: object, pop3_tls_key: object, pop3_tls_implicit: bool,
                  enable_spamassassin: object = None, enable_rspamd: object = None,
                  smtp_allowed_recipients: object = None,
                  smtp_ignore_rejected_recipients: object = False,
                  ui_tls_cert: object = None, ui_tls_key: object = None,
                  send_api_auth_file: object = None,
                  send_api_auth_accept_any: object = False) -> None:
    """The rules between keys (each key alone was checked as the file was
    read), the command's rules in the section's words: ValueError."""
    problems = []
    if relay_allowed_recipients and not relay:
        problems.append('relay_allowed_recipients needs relay')
    if mailbox_pattern and mailboxes != 'by-recipient':
        problems.append('mailbox_pattern needs mailboxes: by-recipient')
    if pop3 is None and (pop3_auth_file or pop3_tls_cert or pop3_tls_key or pop3_tls_implicit):
        problems.append('pop3_auth_file, pop3_tls_cert, pop3_tls_key and pop3_tls_implicit '
                        'need pop3: HOST:PORT')
    if pop3 is not None and not pop3_auth_file:
        problems.append('pop3 needs pop3_auth_file (POP3 is served to known users only)')
    if pop3_tls_key and not pop3_tls_cert:
        problems.append('pop3_tls_key needs pop3_tls_cert')
    if enable_spamassassin and enable_rspamd:
        problems.append('enable_spamassassin and enable_rspamd: choose one')
    if smtp_ignore_rejected_recipients and not smtp_allowed_recipients:
        problems.append('smtp_ignore_rejected_recipients needs smtp_allowed_recipients')
    if ui_tls_key and not ui_tls_cert:
        problems.append('ui_tls_key needs ui_tls_cert')
    if send_api_auth_file and send_api_auth_accept_any:
        problems.append('send_api_auth_file and send_api_auth_accept_any: choose one')
    if problems:
        raise ValueError('inbox: ' + '; '.join(problems))


def check_between_keys(spec: Mapping[str, Any]) -> None:
    """The rules between keys of a section as read (check-config and
    serve's check of the file, before anything is built): ValueError."""
    _between_keys(spec.get('relay'), spec.get('relay_allowed_recipients'),
                  spec.get('mailboxes', OFF), spec.get('mailbox_pattern'), spec.get('pop3'),
                  spec.get('pop3_auth_file'), spec.get('pop3_tls_cert'),
                  spec.get('pop3_tls_key'), bool(spec.get('pop3_tls_implicit', False)),
                  spec.get('enable_spamassassin'), spec.get('enable_rspamd'),
                  spec.get('smtp_allowed_recipients'),
                  bool(spec.get('smtp_ignore_rejected_recipients', False)),
                  spec.get('ui_tls_cert'), spec.get('ui_tls_key'),
                  spec.get('send_api_auth_file'), bool(spec.get('send_api_auth_accept_any')))


def _tls(cert: str | None, key: str | None, web: bool = False) -> Any:
    """A TLS context from PEM files (POP3's, or gevent's kind for the web
    side: gevent's WSGIServer wraps its sockets), or None."""
    if cert is None:
        return None
    import gevent.ssl
    from ..tls import create_context, read_pem_files
    cert_pem, key_pem = read_pem_files(cert, key)
    return create_context(key_pem, cert_pem,
                          context_class=gevent.ssl.SSLContext if web else ssl.SSLContext)


def describe(spec: dict[str, Any]) -> str:
    """'inbox /srv/inbox.db (web and API on http://127.0.0.1:8025/)'."""
    host, port = spec.get('http', DEFAULT_HTTP)[:2]
    host = f'[{host}]' if ':' in host else host
    scheme = 'https' if spec.get('ui_tls_cert') else 'http'
    return f'inbox {spec.get("db")} (web and API on {scheme}://{host}:{port}/)'
