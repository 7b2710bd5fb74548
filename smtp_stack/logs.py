"""The package's one logging path: every line goes through `logging` under
`smtp_stack.*` loggers, carries its facts as `extra` fields, and, in a
worker process, the worker's number (`worker`).

- `RecordLog` makes records from a template (a third of `Logger.log()`'s
  cost; a session logs a line or more per message) and adds the facts.
- `get(name)` is the RecordLog of a module's logger (workers, TLS, the
  inbox, the CLI), so their lines are made the same way.
- `TextFormatter` and `JsonFormatter` are `log_format: text | json` of
  `smtp-stack serve` and `inbox`; `install()` puts one of them on a
  handler of the root logger (stdlib only).

What each line says and which fields it carries is docs/operating.md.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import LogBackend

FORMATS = ('text', 'json')

# A fact's value in `extra`: what the JSON format can write as it is.
Fields = dict[str, Any]


class _Process:
    """What a record knows of its process: how many forks were seen (a
    template made before a fork has the parent's pid) and the worker
    number (None in the master, and in a server without workers)."""

    generation = 0
    worker: int | None = None


def _count_fork() -> None:
    _Process.generation += 1


os.register_at_fork(after_in_child=_count_fork)


def set_worker(number: int | None) -> None:
    """This process is worker `number` (workers.py, in the forked child):
    every record made from now on carries it as `worker`."""
    _Process.worker = number
    _Process.generation += 1       # templates are made again, with the number


def worker() -> int | None:
    """This process's worker number, or None (the master, a single process)."""
    return _Process.worker


class Prepared:
    """A record's fields at a level with some facts (a session's client,
    the event's name), made once for many records (RecordLog.prepare)."""

    __slots__ = ('level', 'values', 'fields', 'generation')

    def __init__(self, level: int, values: dict[str, Any], fields: Fields,
                 generation: int) -> None:
        self.level = level
        self.values = values            # the template and the fields
        self.fields = fields
        self.generation = generation    # made before a fork: not used after it


class RecordLog:
    """`log(level, msg, *args)` into a `logging.Logger` at a third of the
    cost of `Logger.log()`, and `record(level, msg, args, fields)` with facts.

    Logger.log() walks the stack for the caller and derives every field of
    a record again (path, file and module names, process, thread); a session
    logs a line or more per message, so at INFO that is most of what logging
    costs. Here each record is a copy of a template made once by
    `logging.LogRecord` (so it has every field this Python's records have,
    and `worker` in a worker process), with its message, level, time,
    thread and facts filled in, handed to `Logger.handle()`: levels,
    filters, handlers and propagation work as usual. With a custom record
    factory, or a Logger subclass that makes its own records, it is plain
    `Logger.log()` with the facts as `extra`.

    The facts that many records share (a session's) can be joined to the
    template once (`prepare`): such a record (`record_prepared`) costs one
    copy and the stores of its own facts, no more than one without facts.
    """

    __slots__ = ('logger', '_templates', '_generation')

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._templates: dict[int, dict[str, Any]] = {}    # level -> a record's fields
        self._generation = _Process.generation

    def log(self, level: int, msg: str, /, *args: Any) -> None:
        self.record(level, msg, args, None)

    def record(self, level: int, msg: str, args: tuple[Any, ...], fields: Fields | None,
               exc_info: bool = False) -> None:
        """One record of `msg % args` with `fields` as its extra attributes."""
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        if (logging.getLogRecordFactory() is not logging.LogRecord
                or type(logger).makeRecord is not logging.Logger.makeRecord):
            return self._slow(level, msg, args, fields, exc_info)
        self._emit(self._template(level), msg, args, fields, exc_info)

    def prepare(self, level: int, fields: Fields) -> Prepared:
        """The record fields at `level` with `fields`, for `record_prepared`."""
        return Prepared(level, {**self._template(level), **fields}, fields, _Process.generation)

    def record_prepared(self, prepared: Prepared, msg: str, args: tuple[Any, ...],
                        facts: Fields) -> None:
        """One record at the prepared level with the prepared fields and `facts`."""
        logger = self.logger
        if not logger.isEnabledFor(prepared.level):
            return
        if (logging.getLogRecordFactory() is not logging.LogRecord
                or type(logger).makeRecord is not logging.Logger.makeRecord
                or prepared.generation != _Process.generation):
            return self._slow(prepared.level, msg, args, {**prepared.fields, **facts}, False)
        self._emit(prepared.values, msg, args, facts, False)

    def _emit(self, base: dict[str, Any], msg: str, args: tuple[Any, ...],
              facts: Fields | None, exc_info: bool) -> None:
        """A record: a copy of `base` (a template, with facts) and the rest."""
        logger = self.logger
        now = time.time()
        record = _new_record(logging.LogRecord)
        record.__dict__ = values = base.copy()     # a copy of a dict is a memcpy
        values['msg'] = msg
        values['args'] = args
        values['created'] = now
        values['msecs'] = (now - int(now)) * 1000 // 1
        values['relativeCreated'] = base['relativeCreated'] + (now - base['created']) * 1000
        thread = base['thread']
        if thread is not None and thread != threading.get_ident():
            values['thread'] = threading.get_ident()
            values['threadName'] = threading.current_thread().name
        if facts:
            values.update(facts)
        if exc_info:
            values['exc_info'] = sys.exc_info()
        if logger.filters or logger.disabled:
            logger.handle(record)
        else:
            logger.callHandlers(record)     # what handle() does next, one call less

    def _slow(self, level: int, msg: str, args: tuple[Any, ...], fields: Fields | None,
              exc_info: bool) -> None:
        """Logger.log(), for a record factory or a Logger class of its own."""
        extra = dict(fields) if fields else {}
        if _Process.worker is not None:
            extra['worker'] = _Process.worker
        self.logger.log(level, msg, *args, extra=extra, exc_info=exc_info)

    def _template(self, level: int) -> dict[str, Any]:
        if self._generation != _Process.generation:
            self._templates = {}        # made again in a forked worker: its pid
            self._generation = _Process.generation
        template = self._templates.get(level)
        if template is None:
            template = self._make_template(level)
        return template

    def _make_template(self, level: int) -> dict[str, Any]:
        """A record's fields at `level`, its level name as logging names it
        now (a name given with addLevelName later is not seen)."""
        record = logging.LogRecord(self.logger.name, level, _LOG_PATH, 0,
                                   '', (), None, 'log')
        template = dict(record.__dict__)
        if _Process.worker is not None:
            template['worker'] = _Process.worker
        self._templates[level] = template
        return template

    # -- what a module's lines call ------------------------------------------
    def debug(self, msg: str, *args: Any, **fields: Any) -> None:
        self.record(logging.DEBUG, msg, args, fields)

    def info(self, msg: str, *args: Any, **fields: Any) -> None:
        self.record(logging.INFO, msg, args, fields)

    def warning(self, msg: str, *args: Any, **fields: Any) -> None:
        self.record(logging.WARNING, msg, args, fields)

    def error(self, msg: str, *args: Any, **fields: Any) -> None:
        self.record(logging.ERROR, msg, args, fields)

    def exception(self, msg: str, *args: Any, **fields: Any) -> None:
        """An ERROR with the exception being handled (its traceback)."""
        self.record(logging.ERROR, msg, args, fields, exc_info=True)


_new_record: Callable[[type[logging.LogRecord]], logging.LogRecord] = object.__new__
_LOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'engine', 'engine.py')
_named: dict[str, RecordLog] = {}


def get(name: str) -> RecordLog:
    """The RecordLog of the logger `name` ('smtp_stack.workers'), one per name."""
    found = _named.get(name)
    if found is None:
        found = _named[name] = RecordLog(logging.getLogger(name))
    return found


def record_log(backend: logging.Logger | LogBackend) -> LogBackend:
    """What a server logs through: a RecordLog for a `logging.Logger`, any
    other backend (anything with `.log(level, msg, *args)`) as it is."""
    return RecordLog(backend) if isinstance(backend, logging.Logger) else backend


def child(backend: logging.Logger | LogBackend, suffix: str) -> LogBackend:
    """The backend of one kind of line ('delivery'): a Logger's child
    logger (`smtp_stack.delivery` under `smtp_stack`), any other backend
    itself."""
    if isinstance(backend, logging.Logger):
        return RecordLog(backend.getChild(suffix))
    return backend


def emit(backend: LogBackend, level: int, msg: str, args: tuple[Any, ...],
         fields: Fields | None, exc_info: bool = False) -> None:
    """One line through a server's backend: with its facts (and the
    exception being handled, `exc_info`) for a Logger, the text alone for
    any other backend (it has only `.log()`)."""
    if type(backend) is RecordLog:
        backend.record(level, msg, args, fields, exc_info)
    else:
        backend.log(level, msg, *args)


# -- the formats of `smtp-stack serve` and `inbox` ---------------------------------

# What every LogRecord has: the rest of a record's attributes are its facts.
_STANDARD = frozenset(vars(logging.LogRecord('', 0, '', 0, '', (), None))) | {
    'message', 'asctime', 'taskName', 'worker'}


class TextFormatter(logging.Formatter):
    """`2025-06-01 12:00:00,123 INFO smtp_stack[4711] worker=1: <the line>`:
    time, level, logger, pid, the worker number in a worker process, then
    the message, which holds every fact (docs/operating.md)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        number = getattr(record, 'worker', None)
        tag = f' worker={number}' if number is not None else ''
        line = (f'{self.formatTime(record)} {record.levelname} {record.name}'
                f'[{record.process}]{tag}: {record.message}')
        return line + _exception_text(self, record, '\n')


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time` (ISO 8601, local time with its
    offset), `level`, `logger`, `pid`, `worker` (in a worker process), the
    record's facts (its `extra` fields, in the order they were given), then
    `message` (the text line) and `exception` when there is one.
    The facts come before anything a client wrote into the message."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created).astimezone()
        out: dict[str, Any] = {'time': moment.isoformat(timespec='milliseconds'),
                               'level': record.levelname, 'logger': record.name,
                               'pid': record.process}
        number = getattr(record, 'worker', None)
        if number is not None:
            out['worker'] = number
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        out['message'] = record.getMessage()
        text = _exception_text(self, record, '')
        if text:
            out['exception'] = text
        return json.dumps(out, ensure_ascii=False, default=str)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord,
                    before: str) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text] if record.exc_text else []
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return before + '\n'.join(parts) if parts else ''


def formatter(kind: str) -> logging.Formatter:
    """The formatter of `log_format: text | json`."""
    if kind not in FORMATS:
        raise ValueError(f'log_format must be one of {", ".join(FORMATS)}, not {kind!r}')
    return JsonFormatter() if kind == 'json' else TextFormatter()


class _WorkerFilter(logging.Filter):
    """Gives `worker` to the records of loggers that are not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _Process.worker is not None and not hasattr(record, 'worker'):
            setattr(record, 'worker', _Process.worker)  # noqa: B010 (not a LogRecord attribute)
        return True


class _Handler(logging.StreamHandler):
    """The handler `install()` puts on the root logger (found again by type)."""


def install(level: int, kind: str = 'text', stream: IO[str] | None = None) -> logging.Handler:
    """Log records of `level` and above to `stream` (stderr) in the format
    `kind`, one line each: a handler on the root logger, replacing the one
    an earlier call installed (SIGHUP may change the format)."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(_WorkerFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
