"""`smtp-stack milter --config FILE`: the same middleware, inside Postfix or Sendmail.

Building the parser imports nothing beyond the stdlib; running it reads
the `milter:` section (config.py), prints one line to stdout once it
listens (the real addresses, when port 0 was asked for) and serves until
SIGTERM or Ctrl-C, letting MTA connections finish for `close_timeout`.
`python -m smtp_stack.milter.command` is the same command.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..runtime import PROG, add_log_format, log_format_of, note, serve_until_stopped, setup_logging

if TYPE_CHECKING:
    from .config import MilterConfig
    from .server import MilterServer

DESCRIPTION = """\
Run the middleware and policies of a configuration file as a milter, called
by Postfix (smtpd_milters = inet:127.0.0.1:8891) or Sendmail (INPUT_MAIL_FILTER).

  milter:
    listen: inet:127.0.0.1:8891        # or unix:/run/smtp-stack/milter.sock
    middleware: [filters:check]        # package.module:name, each fn(ctx, next)
    policies: [{authenticate: {}}]     # as smtp-stack serve's (docs/policies.md)

docs/milter.md has what maps to what, and a Postfix main.cf excerpt.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    parser = sub.add_parser('milter', help='run middleware and policies as a milter for '
                                           'Postfix or Sendmail',
                            description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', metavar='FILE', required=True,
                        help='YAML file with a milter: section')
    parser.add_argument('--listen', metavar='ADDRESS',
                        help='inet:HOST:PORT or unix:PATH (overrides milter.listen)')
    add_log_format(parser)
    parser.set_defaults(func=run, parser=parser)
    return parser


class _Service:
    """What runtime.serve_until_stopped runs: the server on its addresses."""

    def __init__(self, config: MilterConfig, server: MilterServer) -> None:
        self.config = config
        self.server = server
        self.bound: list[str] = []

    def start(self) -> object:
        for listen in self.config.listen:
            try:
                self.server.start(listen)
            except OSError as exc:
                exc.filename = listen
                raise
            address = self.server.address if not self.bound else listen
            self.bound.append(_spelled(address) if address is not None else listen)
        return self

    def describe(self) -> str:
        return f'milter listening on {", ".join(self.bound)}: {self.config.describe()}'

    def serve_forever(self) -> None:
        self.server.serve_forever()


def _spelled(address: tuple[str, int] | str) -> str:
    if isinstance(address, str):
        return f'unix:{address}'
    return f'inet:{address[0]}:{address[1]}'


def run(args: argparse.Namespace) -> int:
    import gevent

    from .config import MilterConfigError, load, log_level_of

    try:
        config = load(args.config, args.listen)
    except MilterConfigError as exc:
        for line in exc.lines():
            note(line)
        return 1
    setup_logging(log_level_of(config), log_format_of(args, config.log_format))
    server = config.build()
    server.handle_signals = False       # serve_until_stopped takes SIGTERM and SIGINT
    state = {'stopping': False}

    def stop(signame: str) -> None:
        if state['stopping']:
            return
        state['stopping'] = True
        note(f'{signame}: stopping; MTA connections have up to '
             f'{server.options.close_timeout:g} s to finish')
        gevent.spawn(server.stop)

    return serve_until_stopped(_Service(config, server), stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f'{PROG}')
    sub = parser.add_subparsers(dest='command', required=True)
    add_parser(sub)
    args = parser.parse_args(['milter', *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == '__main__':
    sys.exit(main())
