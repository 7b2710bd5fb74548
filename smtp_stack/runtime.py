"""What the long-running commands share: `smtp-stack serve` (cli.py) and
`smtp-stack inbox` (inbox/command.py) set up logging the same way and serve
until a signal stops them, with the same start-up line and lifecycle notes.

Both commands import this module; it imports neither of them.
"""
from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Protocol

PROG = 'smtp-stack'


class Service(Protocol):
    """What `serve_until_stopped` runs: the receiver, or the inbox."""

    def start(self) -> object: ...
    def describe(self) -> str: ...
    def serve_forever(self) -> None: ...


def note(message: str) -> None:
    """A lifecycle note: one line on stderr, prefixed `smtp-stack:`."""
    print(f'{PROG}: {message}', file=sys.stderr, flush=True)


def setup_logging(level: object) -> None:
    """Log records to stderr at `level` (a log_level option's value; None:
    INFO), one line each."""
    from .options import OPTIONS
    value = OPTIONS['log_level'][1](level) if level is not None else logging.INFO
    logging.basicConfig(stream=sys.stderr, level=min(int(value), logging.CRITICAL),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')


def serve_until_stopped(service: Service, stop: Callable[[str], None],
                        reload: Callable[[], None] | None = None) -> int:
    """Start `service` (start, describe, serve_forever), print its start-up
    line and serve until `stop(signame)` ends it on SIGTERM or SIGINT;
    `reload()` on SIGHUP. 1 when it cannot listen, else 0."""
    import gevent

    # Installed before the start-up line: whoever reads that line may signal at once.
    handlers = [gevent.signal_handler(signal.SIGTERM, stop, 'SIGTERM'),
                gevent.signal_handler(signal.SIGINT, stop, 'SIGINT')]
    if reload is not None and hasattr(signal, 'SIGHUP'):
        handlers.append(gevent.signal_handler(signal.SIGHUP, reload))
    try:
        try:
            service.start()
        except OSError as exc:
            note(cannot_listen(exc))
            return 1
        print(f'{PROG}: {service.describe()}', flush=True)
        service.serve_forever()
    finally:
        for handler in handlers:
            handler.cancel()
    note('stopped')
    return 0


def cannot_listen(exc: OSError) -> str:
    """'cannot listen on 127.0.0.1:2525: Address already in use': SmtpServer
    and the inbox name the address they could not bind in `exc.filename`."""
    reason, where = exc.strerror or str(exc), exc.filename
    return f'cannot listen on {where}: {reason}' if where else f'cannot listen: {reason}'
