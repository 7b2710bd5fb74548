"""The `smtp-stack` command (also `python -m smtp_stack`).

    smtp-stack serve [--config FILE] [--host H] [--port P] [--maildir DIR] [--workers N]
                     [--log-format text|json] [--metrics HOST:PORT]
    smtp-stack gencert --name HOST --out DIR [--days N] [--force]
    smtp-stack check-config FILE
    smtp-stack hash-password [--scheme scrypt|pbkdf2-sha256]
    smtp-stack inbox [--smtp HOST:PORT] [--http HOST:PORT] [--db FILE] [--max-messages N] ...
    smtp-stack milter --config FILE [--listen ADDRESS] [--log-format text|json]

`serve` prints one line to stdout once it listens, then runs until SIGTERM
or Ctrl-C (a graceful stop: open transactions get `close_timeout` to finish;
a second signal exits at once). SIGHUP reloads the configuration file.
The log and the lifecycle notes go to stderr, in the format `log_format`
says (runtime.py; docs/operating.md); a configuration that does not load is
said before, plain, prefixed `smtp-stack:`. Exit status 0 after a clean
stop, 1 for a bad configuration or an address that cannot be bound, 2 for
bad arguments (with the command's own usage) or a missing extra (one line
naming it: MissingExtra).
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .extras import MissingExtra
from .runtime import PROG, add_log_format, log_format_of, note, serve_until_stopped, setup_logging


# -- serve -------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load
    from .receiver import Receiver

    overrides = {'host': args.host, 'port': args.port, 'maildir': args.maildir,
                 'workers': args.workers, 'metrics': args.metrics}
    try:
        config = load(args.config, **overrides)
    except ConfigError as exc:
        for line in exc.lines():
            note(line)
        return 1
    level = config.options.get('log_level')
    state: dict[str, Any] = {'stopping': False,
                             'log_format': log_format_of(args, config.log_format)}
    setup_logging(level, state['log_format'])
    receiver = Receiver(config)

    def stop(signame: str) -> None:
        if state['stopping']:
            note(f'{signame} again: exiting now')
            os._exit(1)
        state['stopping'] = True
        timeout = config.options.get('close_timeout', 30)
        note(f'{signame}: stopping; {receiver.open_sessions} open session(s) '
              f'have up to {timeout:g} s to finish')
        receiver.stop()

    def reload() -> None:
        try:
            new = load(args.config, **overrides)
        except ConfigError as exc:
            note('SIGHUP: configuration NOT reloaded:', logging.ERROR)
            for line in exc.lines():
                note(f'  {line}', logging.ERROR)
            return
        except MissingExtra as exc:
            note(f'SIGHUP: configuration NOT reloaded: {exc}', logging.ERROR)
            return
        try:
            notes = receiver.reload(new)
        except Exception as exc:       # e.g. a certificate that just changed on disk
            note(f'SIGHUP: reload failed: {new.substitutions.redact(str(exc))}',
                 logging.ERROR)
            return
        for line in notes:
            note(f'SIGHUP: {line}')
        if log_format_of(args, new.log_format) != state['log_format']:
            state['log_format'] = log_format_of(args, new.log_format)
            setup_logging(level, state['log_format'])
        note('SIGHUP: configuration reloaded (TLS certificates, users, delivery)')

    return serve_until_stopped(receiver, stop, reload)


# -- gencert ---------------------------------------------------------------------

def cmd_gencert(args: argparse.Namespace) -> int:
    from .tls import generate_self_signed

    try:
        key, cert = generate_self_signed(args.name, args.days)
    except ValueError as exc:
        note(str(exc))
        return 2
    os.makedirs(args.out, exist_ok=True)
    key_path = os.path.join(args.out, 'key.pem')
    cert_path = os.path.join(args.out, 'cert.pem')
    if not args.force:
        existing = [p for p in (key_path, cert_path) if os.path.exists(p)]
        if existing:
            note(f'{", ".join(existing)} exist; use --force to replace')
            return 1
    _write(key_path, key, 0o600)
    _write(cert_path, cert, 0o644)
    print(f'{PROG}: wrote {key_path} and {cert_path} (self-signed for {args.name}, '
          f'{args.days} days)')
    return 0


def _write(path: str, data: bytes, mode: int) -> None:
    """Replace `path` atomically; the key is never readable by others, not even briefly."""
    tmp = f'{path}.tmp{os.getpid()}'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- check-config ------------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load

    try:
        config = load(args.file)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    redact = config.substitutions.redact     # ${VAR}, never its value
    listeners = ', '.join(redact(listener.describe()) for listener in config.listeners)
    users = len(config.users) if config.users is not None else 0
    print(f'{args.file}: OK (listen {listeners}; {users} user(s); '
          f'mail goes to {redact(config.deliver.describe())})')
    return 0


# -- hash-password -----------------------------------------------------------------

def cmd_hash_password(args: argparse.Namespace) -> int:
    from .users import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass('Password: ')
        if getpass.getpass('Again: ') != password:
            note('the passwords differ')
            return 1
    else:
        password = sys.stdin.readline().rstrip('\r\n')
    if not password:
        note('empty password')
        return 1
    print(hash_password(password, args.scheme))
    return 0


# -- the parser --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description='SMTP/LMTP server and mail receiver')
    parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')

    serve = sub.add_parser('serve',
                           help='run the receiver (default: 127.0.0.1:2525 into ./maildir)')
    serve.add_argument('--config', metavar='FILE', help='YAML configuration file')
    serve.add_argument('--host', help='listen on this address (overrides the config)')
    serve.add_argument('--port', type=_port, help='listen on this port; 0 picks a free one')
    serve.add_argument('--maildir', metavar='DIR',
                       help='deliver into this Maildir (overrides the config)')
    serve.add_argument('--workers', metavar='N', type=int,
                       help='worker processes sharing the listening sockets (overrides the config)')
    add_log_format(serve)
    serve.add_argument('--metrics', metavar='HOST:PORT',
                       help='serve /metrics (Prometheus), /livez and /readyz there '
                            '(overrides the config; needs the metrics extra)')
    serve.set_defaults(func=cmd_serve, parser=serve)

    gencert = sub.add_parser('gencert', help='write a self-signed key and certificate')
    gencert.add_argument('--name', required=True, metavar='HOST',
                         help='host name for the certificate')
    gencert.add_argument('--out', required=True, metavar='DIR',
                         help='directory for key.pem and cert.pem')
    gencert.add_argument('--days', type=int, default=3650, help='validity (default 3650)')
    gencert.add_argument('--force', action='store_true', help='replace existing files')
    gencert.set_defaults(func=cmd_gencert, parser=gencert)

    check = sub.add_parser('check-config', help='check a configuration file; exit 1 on errors')
    check.add_argument('file', metavar='FILE')
    check.set_defaults(func=cmd_check_config, parser=check)

    hashpw = sub.add_parser('hash-password',
                            help='print a salted hash of a password (stdin or prompt)')
    hashpw.add_argument('--scheme', choices=('scrypt', 'pbkdf2-sha256'), default='scrypt')
    hashpw.set_defaults(func=cmd_hash_password, parser=hashpw)

    from .inbox.command import add_parser as add_inbox_parser   # stdlib only
    add_inbox_parser(sub)
    from .milter.command import add_parser as add_milter_parser   # stdlib only
    add_milter_parser(sub)
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a port number') from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError('a port is from 0 to 65535')
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:    # said by the command's own parser, with its usage (argparse leaves it to ours)
        command_parser: argparse.ArgumentParser = getattr(args, 'parser', parser)
        command_parser.error(unrecognized(command_parser, rest))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.func(args)
    except MissingExtra as exc:     # one line naming the extra, no traceback
        print(exc, file=sys.stderr, flush=True)
        return 2
    return status


def unrecognized(parser: argparse.ArgumentParser, rest: list[str]) -> str:
    """'unrecognized arguments: --prot 2600 (did you mean --port?)'."""
    from .options import suggest

    known = [o for action in parser._actions for o in action.option_strings
             if o.startswith('--')]
    meant = [suggest(arg.partition('=')[0], known) for arg in rest if arg.startswith('--')]
    hint = ', '.join(name for name in meant if name)
    return f'unrecognized arguments: {" ".join(rest)}' + (
        f' (did you mean {hint}?)' if hint else '')


if __name__ == '__main__':
    sys.exit(main())
