"""`smtp-stack inbox`: the command line of the development inbox.

Building the parser imports nothing beyond the stdlib, so `smtp-stack
--help` works without the `inbox` extra (wsproto); running it imports the
rest. The command prints one line to stdout once both sides listen (the
real ports, when 0 was asked for), then runs until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from typing import Any

from ..extras import needs_extra
from ..runtime import add_log_format, log_format_of, note, serve_until_stopped, setup_logging

DESCRIPTION = """\
Catch every message sent to it, for development and tests, like Mailpit:
SMTP on 127.0.0.1:1025, a web inbox and Mailpit's REST API (v1) on
http://127.0.0.1:8025/, stored in an SQLite file that survives restarts.

The API is Mailpit's, so Mailpit clients and test helpers work unchanged:
  GET    /api/v1/messages?start=0&limit=50   list, newest first
  PUT    /api/v1/messages                     {"IDs": [...], "Read": true}
  DELETE /api/v1/messages                     {"IDs": [...]}, or all
  GET    /api/v1/search?query=...             words, "phrases", from: to: cc: bcc:
                                              subject: is:read is:unread
                                              has:attachment, -term to exclude
  DELETE /api/v1/search?query=...
  GET    /api/v1/message/{ID|latest}          (marks it read)
  GET    /api/v1/message/{ID}/raw | /headers | /part/{PartID}
  POST   /api/v1/message/{ID}/release         {"To": [...]} (needs --relay)
  GET    /api/v1/info, /livez, /readyz;  websocket /api/events
  GET    /api/v1/mailboxes                    (ours) the mailboxes, with counts
POP3 with --pop3 HOST:PORT and --pop3-auth-file (USER/PASS, STLS, UIDL, TOP).

Past Mailpit, --mailboxes by-user (the SMTP AUTH user's) or by-recipient
(each envelope recipient's, or the * of --mailbox-pattern): each mailbox
has its own list, search, tags and events under /mailbox/NAME/ (the API
and the page), and POP3 users read the mailbox of their name.

Everything listens on 127.0.0.1 unless told otherwise: this is a tool for
one machine. docs/inbox.md has the details.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        'inbox',
        help='catch all mail for development (SMTP :1025, web inbox and Mailpit API :8025)',
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--smtp', '-s', metavar='HOST:PORT', default='127.0.0.1:1025',
                        help='SMTP listen address (default 127.0.0.1:1025; port 0 picks one)')
    parser.add_argument('--http', '--listen', '-l', metavar='HOST:PORT',
                        default='127.0.0.1:8025',
                        help='web inbox and API listen address (default 127.0.0.1:8025)')
    parser.add_argument('--db', '--database', '-d', metavar='FILE', default='inbox.db',
                        help='SQLite file the messages are kept in (default ./inbox.db)')
    parser.add_argument('--max-messages', '--max', '-m', metavar='N', type=_whole,
                        default=500,
                        help='keep the newest N messages (of each mailbox), drop older ones '
                             '(default 500; 0: keep every message)')
    parser.add_argument('--max-age', metavar='AGE', type=_max_age,
                        help='delete messages older than AGE, in hours or days (12h, 7d), '
                             'checked every minute (default: kept until --max-messages)')
    parser.add_argument('--webhook-url', metavar='URL',
                        help='POST each new message\'s summary (JSON) to URL, with retries')
    parser.add_argument('--webhook-limit', metavar='N', type=float, default=5.0,
                        help='at most N webhook requests a second (default 5; 0: no limit)')
    parser.add_argument('--webhook-delay', metavar='SECONDS', type=_seconds, default=0.0,
                        help='post each webhook request this long after its message at the '
                             'earliest (default 0)')
    parser.add_argument('--tag', metavar='RULES', default='',
                        help='tag new messages a search finds, as Mailpit: '
                             '\'tag1,tag2=query "tag3=from:x@example.com"\'')
    parser.add_argument('--tags-config', metavar='FILE',
                        help='YAML tag rules, as Mailpit: filters: [{match: QUERY, tags: "a,b"}]')
    parser.add_argument('--tags-disable', metavar='WHAT', default='',
                        help='x-tags and/or plus-addresses: do not tag from those (as Mailpit)')
    parser.add_argument('--tags-username', action='store_true',
                        help='tag each message with the SMTP user name it was sent with')
    parser.add_argument('--tags-title-case', action='store_true',
                        help='X-Tags and plus-address tags with a capital at the start of each '
                             'word (as Mailpit)')
    parser.add_argument('--ignore-duplicate-ids', action='store_true',
                        help='do not store a message whose Message-ID its mailbox holds '
                             '(answered 250, counted as SMTPIgnored; as Mailpit)')
    parser.add_argument('--use-message-dates', action='store_true',
                        help='a message\'s Date field as its time of arrival (Created), when '
                             'it can be read (as Mailpit)')
    parser.add_argument('--hide-delete-all-button', action='store_true',
                        help='no "Delete all" button on the page (the API still deletes)')
    parser.add_argument('--enable-spamassassin', metavar='HOST:PORT',
                        help='spam check (sa-check) through SpamAssassin\'s spamd at HOST:PORT '
                             'or unix:PATH, as Mailpit')
    parser.add_argument('--enable-rspamd', metavar='URL',
                        help="spam check (sa-check) through rspamd's normal worker at URL "
                             '(http://127.0.0.1:11333); instead of --enable-spamassassin')
    parser.add_argument('--no-store-process', dest='store_process', action='store_false',
                        help='store new messages in a thread of this process instead of a '
                             'process of their own (slower; one process fewer)')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='log each SMTP session and each message stored (its id, '
                             'envelope, size and subject), as Mailpit\'s --verbose')
    parser.add_argument('-q', '--quiet', action='store_true',
                        help='log errors only (default: warnings and errors)')
    parser.add_argument('--log-file', metavar='FILE',
                        help='write the log to FILE (appended) instead of stderr')
    parser.add_argument('--allow-internal-http-requests', action='store_true',
                        help='let the link check ask loopback, private and link-local '
                             'addresses (refused by default), as Mailpit')
    parser.add_argument('--smtp-auth-accept-any', action='store_true',
                        help='offer AUTH (PLAIN, LOGIN, CRAM-MD5) and accept any user and '
                             'password, without TLS; default: no AUTH')
    parser.add_argument('--smtp-starttls', action='store_true',
                        help='offer STARTTLS with a self-signed certificate (default: off)')
    parser.add_argument('--smtp-auth-file', metavar='FILE',
                        help='offer AUTH (PLAIN, LOGIN) to these users only, and take no mail '
                             'without it: "name:hash" lines as --ui-auth-file; needs TLS '
                             'unless --smtp-auth-allow-insecure')
    parser.add_argument('--smtp-auth-allow-insecure', action='store_true',
                        help='let AUTH with --smtp-auth-file go without TLS')
    parser.add_argument('--smtp-tls-cert', metavar='FILE',
                        help='PEM certificate (chain) for SMTP: STARTTLS is offered with it '
                             '(the key in it, or --smtp-tls-key)')
    parser.add_argument('--smtp-tls-key', metavar='FILE',
                        help='PEM private key for --smtp-tls-cert')
    parser.add_argument('--smtp-require-starttls', action='store_true',
                        help='no MAIL, RCPT, DATA or AUTH before STARTTLS (530)')
    parser.add_argument('--smtp-require-tls', action='store_true',
                        help='SMTP over TLS from the first byte (SMTPS, port 465\'s way)')
    parser.add_argument('--smtp-max-recipients', metavar='N', type=_whole,
                        help='recipients a message may have (default, or 0: 1000); more get '
                             '452')
    parser.add_argument('--max-message-size', metavar='MB', type=_whole,
                        help='largest message taken, in MB (default 0: no limit); a larger '
                             'one gets 552')
    parser.add_argument('--smtp-allowed-recipients', metavar='REGEX',
                        help='refuse (550) recipients this regular expression does not '
                             'find (default: every recipient is taken)')
    parser.add_argument('--smtp-ignore-rejected-recipients', action='store_true',
                        help='answer 250 to the recipients --smtp-allowed-recipients refuses, '
                             'and leave them out of the message stored (dropped if none is '
                             'left)')
    parser.add_argument('--smtp-disable-rdns', action='store_true',
                        help='accepted for Mailpit\'s command lines: the client\'s name is '
                             'never looked up in the DNS')
    parser.add_argument('--chaos-triggers', metavar='TRIGGERS',
                        help='chaos from the start, as PUT /api/v1/chaos later: '
                             '"Sender:451:50,Recipient:550:10,Authentication:535:100"')
    parser.add_argument('--enable-chaos', action='store_true',
                        help='accepted for Mailpit\'s command lines: chaos is always there, '
                             'every trigger at 0 %% until set')
    parser.add_argument('--ui-tls-cert', metavar='FILE',
                        help='PEM certificate (chain) for the web side and API: HTTPS (the '
                             'key in it, or --ui-tls-key)')
    parser.add_argument('--ui-tls-key', metavar='FILE',
                        help='PEM private key for --ui-tls-cert')
    parser.add_argument('--enable-prometheus', metavar='true|HOST:PORT',
                        help='Mailpit\'s Prometheus metrics: true serves /metrics on the web '
                             'side, HOST:PORT on a listener of its own (needs the metrics extra)')
    parser.add_argument('--send-api-auth-file', metavar='FILE',
                        help='POST /api/v1/send takes these users (as --ui-auth-file) instead '
                             'of the web side\'s')
    parser.add_argument('--send-api-auth-accept-any', action='store_true',
                        help='POST /api/v1/send takes anyone, whatever --ui-auth-file says')
    parser.add_argument('--ui-auth-file', metavar='FILE',
                        help='require HTTP basic auth for the web side and API; FILE has '
                             '"name:hash" lines, hashes made by: smtp-stack hash-password')
    parser.add_argument('--relay', metavar='HOST:PORT',
                        help='SMTP server that "release" sends messages to')
    parser.add_argument('--relay-allowed-recipients', metavar='REGEX', default='',
                        help='release only to addresses this regular expression matches '
                             '(Mailpit\'s relay allowlist; default: any)')
    parser.add_argument('--pop3', metavar='HOST:PORT',
                        help='serve the newest 100 messages over POP3 (RFC 1939, with STLS) '
                             'here; needs --pop3-auth-file')
    parser.add_argument('--pop3-auth-file', metavar='FILE',
                        help='POP3 users: "name:hash" lines as --ui-auth-file')
    parser.add_argument('--pop3-tls-cert', metavar='FILE',
                        help='PEM certificate (chain) for POP3\'s TLS, STLS or implicit '
                             '(default: self-signed)')
    parser.add_argument('--pop3-tls-key', metavar='FILE',
                        help='PEM private key for --pop3-tls-cert (if not in that file)')
    parser.add_argument('--pop3-tls-implicit', action='store_true',
                        help='POP3 over TLS from the first byte (POP3S, port 995\'s way, as '
                             'Mailpit), instead of STLS')
    parser.add_argument('--mailboxes', choices=('off', 'by-user', 'by-recipient'),
                        default='off',
                        help='a mailbox per SMTP AUTH user (needs --smtp-auth-accept-any) or '
                             'per recipient address, beside the default one (default: off)')
    parser.add_argument('--mailbox-pattern', metavar='PATTERN',
                        help='with --mailboxes by-recipient: the recipients\' mailboxes are '
                             'named by the * of PATTERN (\'test+*@example.com\'); others go '
                             'to the default mailbox')
    parser.add_argument('--name', default='localhost',
                        help='host name in the SMTP greeting and Received (default localhost)')
    add_log_format(parser)
    parser.set_defaults(func=run, parser=parser)
    parser.set_defaults(**defaults_from_environment(parser, os.environ))
    return parser


DEFAULT_POP3 = '127.0.0.1:1110'     # Mailpit's POP3 port (it binds [::], we loopback)
ANY_HOST = '0.0.0.0'                # ':1025' listens on every interface, as in Mailpit (Go)

# Mailpit's environment variables, each the default of the option it names
# (an option given on the command line wins, as in Mailpit).
ENVIRONMENT = {
    'smtp': 'MP_SMTP_BIND_ADDR', 'http': 'MP_UI_BIND_ADDR', 'db': 'MP_DATABASE',
    'max_messages': 'MP_MAX_MESSAGES', 'max_age': 'MP_MAX_AGE',
    'max_message_size': 'MP_MAX_MESSAGE_SIZE', 'verbose': 'MP_VERBOSE', 'quiet': 'MP_QUIET',
    'webhook_url': 'MP_WEBHOOK_URL', 'webhook_limit': 'MP_WEBHOOK_LIMIT',
    'webhook_delay': 'MP_WEBHOOK_DELAY', 'tag': 'MP_TAG', 'log_file': 'MP_LOG_FILE',
    'tags_title_case': 'MP_TAGS_TITLE_CASE', 'use_message_dates': 'MP_USE_MESSAGE_DATES',
    'hide_delete_all_button': 'MP_HIDE_DELETE_ALL_BUTTON',
    'ignore_duplicate_ids': 'MP_IGNORE_DUPLICATE_IDS',
    'tags_config': 'MP_TAGS_CONFIG', 'tags_disable': 'MP_TAGS_DISABLE',
    'tags_username': 'MP_TAGS_USERNAME', 'enable_spamassassin': 'MP_ENABLE_SPAMASSASSIN',
    'allow_internal_http_requests': 'MP_ALLOW_INTERNAL_HTTP_REQUESTS',
    'ui_auth_file': 'MP_UI_AUTH_FILE', 'smtp_auth_file': 'MP_SMTP_AUTH_FILE',
    'ui_tls_cert': 'MP_UI_TLS_CERT', 'ui_tls_key': 'MP_UI_TLS_KEY',
    'send_api_auth_file': 'MP_SEND_API_AUTH_FILE', 'enable_prometheus': 'MP_ENABLE_PROMETHEUS',
    'send_api_auth_accept_any': 'MP_SEND_API_AUTH_ACCEPT_ANY',
    'smtp_auth_accept_any': 'MP_SMTP_AUTH_ACCEPT_ANY',
    'smtp_auth_allow_insecure': 'MP_SMTP_AUTH_ALLOW_INSECURE',
    'smtp_tls_cert': 'MP_SMTP_TLS_CERT', 'smtp_tls_key': 'MP_SMTP_TLS_KEY',
    'smtp_require_starttls': 'MP_SMTP_REQUIRE_STARTTLS',
    'smtp_require_tls': 'MP_SMTP_REQUIRE_TLS', 'smtp_max_recipients': 'MP_SMTP_MAX_RECIPIENTS',
    'smtp_allowed_recipients': 'MP_SMTP_ALLOWED_RECIPIENTS',
    'smtp_ignore_rejected_recipients': 'MP_SMTP_IGNORE_REJECTED_RECIPIENTS',
    'smtp_disable_rdns': 'MP_SMTP_DISABLE_RDNS',
    'relay_allowed_recipients': 'MP_SMTP_RELAY_ALLOWED_RECIPIENTS',
    'pop3': 'MP_POP3_BIND_ADDR', 'pop3_auth_file': 'MP_POP3_AUTH_FILE',
    'pop3_tls_cert': 'MP_POP3_TLS_CERT', 'pop3_tls_key': 'MP_POP3_TLS_KEY',
    'chaos_triggers': 'MP_CHAOS_TRIGGERS', 'enable_chaos': 'MP_ENABLE_CHAOS',
}


def defaults_from_environment(parser: argparse.ArgumentParser,
                              environ: Mapping[str, str]) -> dict[str, Any]:
    """The defaults Mailpit's MP_* variables in `environ` give: a switch is
    on for 1, true or yes (any case), as Mailpit reads them; a value is
    read as the option's own (a bad one is the option's error). The
    relay is MP_SMTP_RELAY_HOST and MP_SMTP_RELAY_PORT (default 25)."""
    found: dict[str, Any] = {}
    for dest, name in ENVIRONMENT.items():
        value = environ.get(name, '')
        if not value:
            continue
        if isinstance(parser.get_default(dest), bool):
            found[dest] = value.strip().lower() in ('1', 'true', 'yes')
        else:
            found[dest] = value         # argparse reads a str default with the option's type
    relay_host = environ.get('MP_SMTP_RELAY_HOST', '')
    if relay_host:
        found['relay'] = f'{relay_host}:{environ.get("MP_SMTP_RELAY_PORT") or 25}'
    return found


def _address(option: str, text: str) -> tuple[str, int]:
    """A listen address; ValueError naming the option (its MP_ variable is its default)."""
    from .release import parse_hostport
    try:
        return parse_hostport(text, ANY_HOST)
    except ValueError as exc:
        raise ValueError(f'{option}: {exc}') from None


def _whole(text: str) -> int:
    return int(_number(text, int, 0, None, 'must be 0 or more'))


def _seconds(text: str) -> float:
    return _number(text, float, 0, 86400, 'must be from 0 to 86400 seconds')


def _number(text: str, kind: type[int] | type[float], least: float, most: float | None,
            words: str) -> float:
    """`text` read as `kind` within [least, most], or argparse's error in `words`."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if value < least or (most is not None and value > most):
        raise argparse.ArgumentTypeError(words)
    return value


def _max_age(text: str) -> float:
    from .maxage import parse_max_age
    try:
        return parse_max_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    import gevent

    with needs_extra('inbox', 'smtp-stack inbox'):     # wsproto, for the websocket
        from .app import load_users
        from .chaos import parse_triggers
        from .mailboxes import Routing
        from .release import Relay, parse_hostport
        from .service import Inbox
        from .rspamd_check import RspamdChecker
        from .spamd import SpamdClient
        from .webhook import check_url

    try:
        Routing.of(args.mailboxes, args.mailbox_pattern)
        if args.mailboxes == 'by-user' and not (args.smtp_auth_accept_any
                                                or args.smtp_auth_file):
            raise ValueError('--mailboxes by-user needs --smtp-auth-accept-any or '
                             '--smtp-auth-file (without AUTH every message goes to the '
                             'default mailbox)')
        smtp = _address('--smtp', args.smtp)
        http = _address('--http', args.http)
        relay = Relay(*parse_hostport(args.relay), helo=args.name,
                      allowed_recipients=args.relay_allowed_recipients) if args.relay else None
        if args.webhook_url:
            check_url(args.webhook_url)
        prometheus = (args.enable_prometheus or '').strip().lower()
        if prometheus not in ('', 'true', 'false'):
            try:
                parse_hostport(args.enable_prometheus)
            except ValueError:
                raise ValueError(f'--enable-prometheus: {args.enable_prometheus!r} is not '
                                 'true, false or HOST:PORT') from None
        if prometheus not in ('', 'false'):
            with needs_extra('metrics', '--enable-prometheus'):
                import prometheus_client  # noqa: F401 - the text format's writer
        if args.enable_spamassassin:
            SpamdClient(args.enable_spamassassin)
        if args.enable_rspamd:
            RspamdChecker(args.enable_rspamd)
            if args.enable_spamassassin:
                raise ValueError('--enable-spamassassin and --enable-rspamd: choose one')
    except ValueError as exc:
        note(str(exc))
        return 2
    try:
        users = load_users(args.ui_auth_file) if args.ui_auth_file else None
    except (OSError, ValueError) as exc:
        note(f'--ui-auth-file: {exc}')
        return 1
    if args.send_api_auth_file and args.send_api_auth_accept_any:
        note('--send-api-auth-file and --send-api-auth-accept-any: choose one')
        return 2
    try:
        send_users = load_users(args.send_api_auth_file) if args.send_api_auth_file else None
    except (OSError, ValueError) as exc:
        note(f'--send-api-auth-file: {exc}')
        return 1
    pop3 = _pop3_options(args)
    if isinstance(pop3, int):
        return pop3
    smtp_options = _smtp_options(args)
    if isinstance(smtp_options, int):
        return smtp_options
    ui_tls = _ui_tls(args)
    if isinstance(ui_tls, int):
        return ui_tls
    try:
        chaos = parse_triggers(args.chaos_triggers) if args.chaos_triggers else None
    except ValueError as exc:
        note(f'--chaos-triggers: {exc}')
        return 2
    try:
        tagging = _tag_options(args)
    except (OSError, ValueError) as exc:
        note(f'tags: {exc}')
        return 2
    try:
        # line-buffered appends, as stderr's lines: a line is in the file when logged
        log_file = open(args.log_file, 'a', encoding='utf-8', buffering=1) \
            if args.log_file else None     # noqa: SIM115 - open while the inbox runs
    except OSError as exc:
        note(f'--log-file: {exc}')
        return 1
    setup_logging('error' if args.quiet and not args.verbose else None, log_format_of(args),
                  log_file)
    try:
        inbox = Inbox(args.db, smtp=smtp, http=http, max_messages=args.max_messages,
                      accept_any_auth=args.smtp_auth_accept_any,
                      users=users, relay=relay, name=args.name, max_age=args.max_age,
                      webhook_url=args.webhook_url, webhook_limit=args.webhook_limit,
                      spamassassin=args.enable_spamassassin, mailboxes=args.mailboxes,
                      mailbox_pattern=args.mailbox_pattern, store_process=args.store_process,
                      verbose=args.verbose, rspamd=args.enable_rspamd,
                      use_message_dates=args.use_message_dates,
                      ignore_duplicate_ids=args.ignore_duplicate_ids,
                      send_users=send_users, send_accept_any=args.send_api_auth_accept_any,
                      prometheus=args.enable_prometheus,
                      webhook_delay=args.webhook_delay,
                      hide_delete_all_button=args.hide_delete_all_button,
                      **pop3, **tagging, **smtp_options, **ui_tls)
    except Exception as exc:        # noqa: BLE001 - a bad --db path, a corrupt file
        note(f'cannot open {args.db}: {exc}')
        return 1
    inbox.app.link_checker.allow_internal = args.allow_internal_http_requests
    if chaos is not None:
        inbox.app.chaos.set(chaos)
    state = {'stopping': False}

    def stop(signame: str) -> None:
        if state['stopping']:
            return
        state['stopping'] = True
        note(f'{signame}: stopping')
        gevent.spawn(inbox.stop, 5)

    return serve_until_stopped(inbox, stop)


def _pop3_options(args: argparse.Namespace) -> dict[str, Any] | int:
    """Inbox keywords of the --pop3 options, or the exit status of a bad one."""
    from .app import load_users
    from .release import parse_hostport

    # a users file alone serves POP3 on Mailpit's port (MP_POP3_AUTH_FILE alone does)
    at = args.pop3 or (DEFAULT_POP3 if args.pop3_auth_file else None)
    if not at:
        if args.pop3_tls_cert or args.pop3_tls_key or args.pop3_tls_implicit:
            note('--pop3-tls-cert, --pop3-tls-key and --pop3-tls-implicit need --pop3 '
                 'HOST:PORT or --pop3-auth-file')
            return 2
        return {}
    if not args.pop3_auth_file:
        note('--pop3 needs --pop3-auth-file (POP3 is served to known users only)')
        return 2
    try:
        address = parse_hostport(at, ANY_HOST)
    except ValueError as exc:
        note(f'--pop3: {exc}')
        return 2
    try:
        users = load_users(args.pop3_auth_file)
    except (OSError, ValueError) as exc:
        note(f'--pop3-auth-file: {exc}')
        return 1
    if not users:
        note(f'--pop3-auth-file: {args.pop3_auth_file} names no user')
        return 1
    options: dict[str, Any] = {'pop3': address, 'pop3_users': users,
                               'pop3_tls_implicit': args.pop3_tls_implicit}
    if args.pop3_tls_cert:
        try:
            options['pop3_tls'] = _context(args.pop3_tls_cert, args.pop3_tls_key)
        except (OSError, ValueError) as exc:
            note(f'--pop3-tls-cert: {exc}')
            return 1
    elif args.pop3_tls_key:
        note('--pop3-tls-key needs --pop3-tls-cert')
        return 2
    return options


def _smtp_options(args: argparse.Namespace) -> dict[str, Any] | int:
    """Inbox keywords of Mailpit's SMTP options (AUTH users, TLS, limits,
    recipients), or the exit status of a bad one; the combinations Mailpit
    refuses are refused with its reasons."""
    from ..tls import create_context, read_pem_files
    from .app import load_users

    secure = args.smtp_require_tls
    if args.smtp_require_starttls and secure:
        note('--smtp-require-starttls and --smtp-require-tls: TLS and STARTTLS cannot be '
             'required together')
        return 2
    if (args.smtp_require_starttls or secure) and args.smtp_auth_allow_insecure:
        note('TLS cannot be required with --smtp-auth-allow-insecure')
        return 2
    if args.smtp_auth_file and args.smtp_auth_accept_any:
        note('--smtp-auth-file and --smtp-auth-accept-any: AUTH checks the users of the '
             'file or accepts anyone, not both')
        return 2
    if args.smtp_tls_key and not args.smtp_tls_cert:
        note('--smtp-tls-key needs --smtp-tls-cert')
        return 2
    if args.smtp_ignore_rejected_recipients and not args.smtp_allowed_recipients:
        note('warning: --smtp-ignore-rejected-recipients does nothing without '
             '--smtp-allowed-recipients')     # Mailpit warns too, and runs
    # STARTTLS when asked, or with a certificate, unless TLS is from the first
    # byte; a certificate not given is a self-signed one (--smtp-starttls's)
    starttls = not secure and (args.smtp_starttls or bool(args.smtp_tls_cert)
                               or args.smtp_require_starttls)
    if args.smtp_auth_file and not (starttls or secure or args.smtp_auth_allow_insecure):
        note('--smtp-auth-file: authentication requires STARTTLS or TLS (--smtp-starttls, '
             '--smtp-tls-cert or --smtp-require-tls); --smtp-auth-allow-insecure allows '
             'it without')
        return 2
    options: dict[str, Any] = {
        'starttls': starttls, 'require_starttls': args.smtp_require_starttls,
        'allowed_recipients': args.smtp_allowed_recipients,
        'ignore_rejected_recipients': args.smtp_ignore_rejected_recipients}
    if args.smtp_auth_file:
        try:
            options['smtp_users'] = load_users(args.smtp_auth_file)
        except (OSError, ValueError) as exc:
            note(f'--smtp-auth-file: {exc}')
            return 1
        if not options['smtp_users']:
            note(f'--smtp-auth-file: {args.smtp_auth_file} names no user')
            return 1
    if args.smtp_tls_cert:
        try:
            options['cert'], options['key'] = read_pem_files(args.smtp_tls_cert,
                                                             args.smtp_tls_key or None)
            create_context(options['key'], options['cert'])     # a bad pair: said now
        except (OSError, ValueError) as exc:
            note(f'--smtp-tls-cert: {exc}')
            return 1
    if secure:
        options['secure'] = True
    if args.smtp_auth_allow_insecure:
        options['allow_insecure_auth'] = True
    if args.smtp_max_recipients:                # 0: the default, as Mailpit reads it
        options['max_recipients'] = args.smtp_max_recipients
    if args.max_message_size:
        options['size'] = args.max_message_size << 20      # MB, as Mailpit counts them
    if args.quiet and not args.verbose:         # both: verbose wins, as in Mailpit
        options['log_level'] = 'error'
    return options


def _tag_options(args: argparse.Namespace) -> dict[str, Any]:
    """Inbox keywords of --tag, --tags-config, --tags-disable, --tags-username."""
    from .tags import load_tag_rules, parse_tag_rules, parse_tags_disable
    rules = parse_tag_rules(args.tag)
    if args.tags_config:
        rules += load_tag_rules(args.tags_config)
    return {'tag_rules': rules, 'tags_disable': parse_tags_disable(args.tags_disable),
            'tags_username': args.tags_username, 'tags_title_case': args.tags_title_case}


def _ui_tls(args: argparse.Namespace) -> dict[str, Any] | int:
    """The web side's TLS (Mailpit's --ui-tls-cert and --ui-tls-key), or the
    exit status of a bad one."""
    if args.ui_tls_key and not args.ui_tls_cert:
        note('--ui-tls-key needs --ui-tls-cert')
        return 2
    if not args.ui_tls_cert:
        return {}
    try:
        return {'http_tls': _context(args.ui_tls_cert, args.ui_tls_key, web=True)}
    except (OSError, ValueError) as exc:
        note(f'--ui-tls-cert: {exc}')
        return 1


def _context(cert: str, key: str | None, web: bool = False) -> ssl.SSLContext:
    """A server's TLS context from a certificate file and its key file; for
    the web side (gevent's WSGIServer wraps the sockets), gevent's kind."""
    import gevent.ssl
    from ..tls import create_context, read_pem_files
    cert_pem, key_pem = read_pem_files(cert, key or None)
    return create_context(key_pem, cert_pem,
                          context_class=gevent.ssl.SSLContext if web else ssl.SSLContext)
