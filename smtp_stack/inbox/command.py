"""`smtp-stack inbox`: the command line of the development inbox.

Building the parser imports nothing beyond the stdlib, so `smtp-stack
--help` works without the `inbox` extra (wsproto); running it imports the
rest. The command prints one line to stdout once both sides listen (the
real ports, when 0 was asked for), then runs until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import argparse
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
    parser.add_argument('--smtp', metavar='HOST:PORT', default='127.0.0.1:1025',
                        help='SMTP listen address (default 127.0.0.1:1025; port 0 picks one)')
    parser.add_argument('--http', metavar='HOST:PORT', default='127.0.0.1:8025',
                        help='web inbox and API listen address (default 127.0.0.1:8025)')
    parser.add_argument('--db', metavar='FILE', default='inbox.db',
                        help='SQLite file the messages are kept in (default ./inbox.db)')
    parser.add_argument('--max-messages', metavar='N', type=_positive, default=500,
                        help='keep the newest N messages (of each mailbox), drop older ones '
                             '(default 500)')
    parser.add_argument('--max-age', metavar='AGE', type=_max_age,
                        help='delete messages older than AGE, in hours or days (12h, 7d), '
                             'checked every minute (default: kept until --max-messages)')
    parser.add_argument('--webhook-url', metavar='URL',
                        help='POST each new message\'s summary (JSON) to URL, with retries')
    parser.add_argument('--webhook-limit', metavar='N', type=float, default=5.0,
                        help='at most N webhook requests a second (default 5; 0: no limit)')
    parser.add_argument('--tag', metavar='RULES', default='',
                        help='tag new messages a search finds, as Mailpit: '
                             '\'tag1,tag2=query "tag3=from:x@example.com"\'')
    parser.add_argument('--tags-config', metavar='FILE',
                        help='YAML tag rules, as Mailpit: filters: [{match: QUERY, tags: "a,b"}]')
    parser.add_argument('--tags-disable', metavar='WHAT', default='',
                        help='x-tags and/or plus-addresses: do not tag from those (as Mailpit)')
    parser.add_argument('--tags-username', action='store_true',
                        help='tag each message with the SMTP user name it was sent with')
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
    parser.add_argument('--allow-internal-http-requests', action='store_true',
                        help='let the link check ask loopback, private and link-local '
                             'addresses (refused by default), as Mailpit')
    parser.add_argument('--smtp-auth-accept-any', action='store_true',
                        help='offer AUTH (PLAIN, LOGIN, CRAM-MD5) and accept any user and '
                             'password, without TLS; default: no AUTH')
    parser.add_argument('--smtp-starttls', action='store_true',
                        help='offer STARTTLS with a self-signed certificate (default: off)')
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
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if value < 1:
        raise argparse.ArgumentTypeError('must be 1 or more')
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
        from .mailboxes import Routing
        from .release import Relay, parse_hostport
        from .service import Inbox
        from .rspamd_check import RspamdChecker
        from .spamd import SpamdClient
        from .webhook import check_url

    try:
        Routing.of(args.mailboxes, args.mailbox_pattern)
        if args.mailboxes == 'by-user' and not args.smtp_auth_accept_any:
            raise ValueError('--mailboxes by-user needs --smtp-auth-accept-any (without AUTH '
                             'every message goes to the default mailbox)')
        smtp = parse_hostport(args.smtp)
        http = parse_hostport(args.http)
        relay = Relay(*parse_hostport(args.relay), helo=args.name,
                      allowed_recipients=args.relay_allowed_recipients) if args.relay else None
        if args.webhook_url:
            check_url(args.webhook_url)
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
    pop3 = _pop3_options(args)
    if isinstance(pop3, int):
        return pop3
    try:
        tagging = _tag_options(args)
    except (OSError, ValueError) as exc:
        note(f'tags: {exc}')
        return 2
    setup_logging(None, log_format_of(args))
    try:
        inbox = Inbox(args.db, smtp=smtp, http=http, max_messages=args.max_messages,
                      accept_any_auth=args.smtp_auth_accept_any, starttls=args.smtp_starttls,
                      users=users, relay=relay, name=args.name, max_age=args.max_age,
                      webhook_url=args.webhook_url, webhook_limit=args.webhook_limit,
                      spamassassin=args.enable_spamassassin, mailboxes=args.mailboxes,
                      mailbox_pattern=args.mailbox_pattern, store_process=args.store_process,
                      verbose=args.verbose, rspamd=args.enable_rspamd,
                      **pop3, **tagging)
    except Exception as exc:        # noqa: BLE001 - a bad --db path, a corrupt file
        note(f'cannot open {args.db}: {exc}')
        return 1
    inbox.app.link_checker.allow_internal = args.allow_internal_http_requests
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
    from ..tls import create_context
    from .app import load_users
    from .release import parse_hostport

    if not args.pop3:
        if args.pop3_auth_file or args.pop3_tls_cert or args.pop3_tls_key \
                or args.pop3_tls_implicit:
            note('--pop3-auth-file and --pop3-tls-* need --pop3 HOST:PORT')
            return 2
        return {}
    if not args.pop3_auth_file:
        note('--pop3 needs --pop3-auth-file (POP3 is served to known users only)')
        return 2
    try:
        address = parse_hostport(args.pop3)
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
            cert = _read(args.pop3_tls_cert)
            key = _read(args.pop3_tls_key) if args.pop3_tls_key else None
            options['pop3_tls'] = create_context(key, cert)
        except (OSError, ValueError) as exc:
            note(f'--pop3-tls-cert: {exc}')
            return 1
    elif args.pop3_tls_key:
        note('--pop3-tls-key needs --pop3-tls-cert')
        return 2
    return options


def _tag_options(args: argparse.Namespace) -> dict[str, Any]:
    """Inbox keywords of --tag, --tags-config, --tags-disable, --tags-username."""
    from .tags import load_tag_rules, parse_tag_rules, parse_tags_disable
    rules = parse_tag_rules(args.tag)
    if args.tags_config:
        rules += load_tag_rules(args.tags_config)
    return {'tag_rules': rules, 'tags_disable': parse_tags_disable(args.tags_disable),
            'tags_username': args.tags_username}


def _read(path: str) -> str:
    with open(path, encoding='ascii') as f:
        return f.read()
