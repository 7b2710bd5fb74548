"""What a logger writes, kept as text lines: for tests that read what a
server logged (the server is given the logger as its `log_backend`)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class Lines(logging.Handler):
    """Every record's message, at every level."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def kept_lines(name: str) -> Iterator[Lines]:
    """The logger `name` at every level, its records kept (and not passed
    on to the root logger) while the block runs."""
    logger = logging.getLogger(name)
    handler = Lines()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(1)
    logger.propagate = False
    try:
        yield handler
    finally:        # as it was: a later test's caplog sees the records again
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
