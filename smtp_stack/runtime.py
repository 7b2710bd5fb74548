"""What the long-running commands share: `smtp-stack serve` (cli.py) and
`smtp-stack inbox` (inbox/command.py) set up logging the same way and serve
until a signal stops them, with the same start-up line and lifecycle notes.

Once logging is set up (`setup_logging`, after the configuration was read:
it says the format), the command's own lines are records of the logger
`smtp_stack.cli` in the same format as every other line: the notes on
stderr, whatever `log_level` says, and the start-up line on stdout. What
is said before (a configuration that does not load) is plain text on
stderr, prefixed `smtp-stack:`.

Both commands import this module; it imports neither of them.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import IO, Any, Protocol

from . import logs

PROG = 'smtp-stack'
CLI_LOGGER = 'smtp_stack.cli'


class Service(Protocol):
    """What `serve_until_stopped` runs: the receiver, or the inbox."""

    def start(self) -> object: ...
    def describe(self) -> str: ...
    def serve_forever(self) -> None: ...


def note(message: str, level: int = logging.INFO) -> None:
    """A lifecycle note: a record of `smtp_stack.cli` once logging is set
    up, else one line on stderr, prefixed `smtp-stack:`."""
    if _cli.handlers:
        logs.get(CLI_LOGGER).record(level, '%s', (message,), None)
    else:
        print(f'{PROG}: {message}', file=sys.stderr, flush=True)


def announce(line: str) -> None:
    """The start-up line, on stdout (in the log format once it is set up)."""
    if _cli.handlers:
        logs.get(CLI_LOGGER).record(logging.INFO, '%s', (line,), {'event': 'listening'})
    else:
        print(f'{PROG}: {line}', flush=True)


class _Only(logging.Filter):
    """Passes the start-up line (`ready` True) or everything else."""

    def __init__(self, ready: bool) -> None:
        super().__init__()
        self.ready = ready

    def filter(self, record: logging.LogRecord) -> bool:
        return (getattr(record, 'event', None) == 'listening') == self.ready


_cli = logging.getLogger(CLI_LOGGER)


def setup_logging(level: object, log_format: str = 'text',
                  stream: IO[str] | None = None) -> None:
    """Log records to stderr (or `stream`) at `level` (a log_level option's
    value; None: INFO) in `log_format` ('text' or 'json'), one line each;
    the command's own lines to stderr, the start-up line on stdout. Called
    again (SIGHUP), it replaces what it set up."""
    from .options import OPTIONS
    value = OPTIONS['log_level'][1](level) if level is not None else logging.INFO
    logs.install(min(int(value), logging.CRITICAL), log_format, stream)
    for old in list(_cli.handlers):
        _cli.removeHandler(old)
    for stream, ready in ((sys.stderr, False), (sys.stdout, True)):
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.formatter(log_format))
        handler.addFilter(_Only(ready))
        _cli.addHandler(handler)
    _cli.setLevel(logging.INFO)     # the command's notes, whatever log_level says
    _cli.propagate = False


def add_log_format(parser: argparse.ArgumentParser) -> None:
    """--log-format, for the commands that log (serve, inbox)."""
    parser.add_argument('--log-format', choices=logs.FORMATS,
                        help='text (the default) or json, one object a line '
                             '(overrides the config; docs/operating.md)')


def log_format_of(args: Any, configured: str | None = None) -> str:
    """--log-format when given, else the configuration's, else 'text'."""
    return getattr(args, 'log_format', None) or configured or 'text'


def serve_until_stopped(service: Service, stop: Callable[[str], None],
                        reload: Callable[[], None] | None = None) -> int:
    """Start `service` (start, describe, serve_forever), print its start-up
    line and serve until `stop(signame)` ends it on SIGTERM or SIGINT;
    `reload()` on SIGHUP. 1 when it cannot listen, else 0. Under systemd
    ($NOTIFY_SOCKET) it says READY=1 once listening, RELOADING=1 and READY=1
    around a reload, STOPPING=1 on a stop, and pings the watchdog from the
    hub (systemd.py)."""
    import gevent

    from .systemd import Notifier

    notifier = Notifier()       # silent when not under systemd

    def stopping(signame: str) -> None:
        notifier.stopping(f'{signame}: stopping')
        stop(signame)

    def reloading() -> None:
        assert reload is not None
        notifier.reloading('SIGHUP: reloading the configuration')
        try:
            reload()
        finally:        # systemd waits for READY=1 even when the reload failed
            notifier.ready(service.describe())

    # Installed before the start-up line: whoever reads that line may signal at once.
    handlers = [gevent.signal_handler(signal.SIGTERM, stopping, 'SIGTERM'),
                gevent.signal_handler(signal.SIGINT, stopping, 'SIGINT')]
    if reload is not None and hasattr(signal, 'SIGHUP'):
        handlers.append(gevent.signal_handler(signal.SIGHUP, reloading))
    try:
        try:
            service.start()
        except OSError as exc:
            note(cannot_listen(exc), logging.ERROR)
            notifier.status(cannot_listen(exc))
            return 1
        line = service.describe()
        announce(line)
        notifier.ready(line)
        notifier.start_watchdog()
        service.serve_forever()
    finally:
        notifier.stop_watchdog()
        for handler in handlers:
            handler.cancel()
    note('stopped')
    return 0


def cannot_listen(exc: OSError) -> str:
    """'cannot listen on 127.0.0.1:2525: Address already in use': SmtpServer
    and the inbox name the address they could not bind in `exc.filename`."""
    reason, where = exc.strerror or str(exc), exc.filename
    return f'cannot listen on {where}: {reason}' if where else f'cannot listen: {reason}'
