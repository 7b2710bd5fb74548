"""smtp_stack.logs: records with facts (made fast, or by Logger.log() when
the application changed how records are made), the worker number, the text
and JSON formats; `log_format` in YAML and --log-format on the command line."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import pytest

from smtp_stack import logs
from smtp_stack.config import ConfigError, parse
from smtp_stack.runtime import announce, note, setup_logging

from clirunner import Serve


class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def kept():
    logger = logging.getLogger('smtp_stack.test.logs')
    keep = Keep()
    logger.handlers[:] = [keep]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, keep
    logger.handlers[:] = []


@pytest.fixture
def restored_logging():
    """Whatever setup_logging installs is taken away again."""
    root, cli = logging.getLogger(), logging.getLogger('smtp_stack.cli')
    saved = (list(root.handlers), root.level, list(cli.handlers), cli.level, cli.propagate)
    yield
    root.handlers[:], cli.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    cli.setLevel(saved[3])
    cli.propagate = saved[4]


def test_a_record_carries_its_facts_and_every_field_of_a_logger_record(kept):
    logger, keep = kept
    logger.info('%s: plain', 'abc')
    logs.RecordLog(logger).record(20, '%s: with facts', ('abc',), {'session': 'abc', 'size': 5})
    slow, fast = keep.records
    assert fast.getMessage() == 'abc: with facts'
    assert (fast.session, fast.size) == ('abc', 5)
    assert set(vars(fast)) == set(vars(slow)) | {'session', 'size'}


def test_a_prepared_record_is_the_same_record(kept):
    logger, keep = kept
    log = logs.RecordLog(logger)
    prepared = log.prepare(20, {'event': 'accepted', 'client': '192.0.2.1'})
    log.record_prepared(prepared, '%s: x', ('q-1',), {'queue_id': 'q-1'})
    log.record(20, '%s: x', ('q-1',), {'event': 'accepted', 'client': '192.0.2.1',
                                      'queue_id': 'q-1'})
    first, second = keep.records
    timing = {'created', 'msecs', 'relativeCreated'}
    assert {k: v for k, v in vars(first).items() if k not in timing} == \
        {k: v for k, v in vars(second).items() if k not in timing}
    logger.setLevel(logging.WARNING)
    log.record_prepared(prepared, 'dropped', (), {})
    assert len(keep.records) == 2


def test_with_a_record_factory_of_its_own_the_facts_are_extra(kept):
    logger, keep = kept
    original = logging.getLogRecordFactory()

    class Custom(logging.LogRecord):
        pass
    logging.setLogRecordFactory(Custom)
    try:
        log = logs.RecordLog(logger)
        log.record(20, 'x', (), {'session': 'abc'})
        log.record_prepared(log.prepare(20, {'event': 'connect'}), 'y', (), {'client': 'c'})
    finally:
        logging.setLogRecordFactory(original)
    first, second = keep.records
    assert type(first) is Custom and first.session == 'abc'
    assert (second.event, second.client) == ('connect', 'c')


def test_a_worker_s_records_say_which_worker(kept):
    logger, keep = kept
    log = logs.RecordLog(logger)
    log.info('in the parent')
    assert not hasattr(keep.records[-1], 'worker')
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: a worker's record and a foreign logger's
        try:
            logs.set_worker(3)
            log.info('in the worker')
            foreign = logging.LogRecord('other', 20, '', 0, 'x', (), None)
            logs._WorkerFilter().filter(foreign)
            os.write(write_end, f'{keep.records[-1].worker} {foreign.worker} '
                                f'{keep.records[-1].process}'.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    reported = os.read(read_end, 64).decode().split()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert reported[:2] == ['3', '3'] and int(reported[2]) == pid
    assert logs.worker() is None


def _record(**facts):
    record = logging.LogRecord('smtp_stack', logging.WARNING, __file__, 1,
                               '%s: auth failed\nfrom x', ('abc',), None)
    record.__dict__.update(facts)
    return record


def test_the_text_format():
    text = logs.TextFormatter().format(_record(worker=2, session='abc'))
    when, level, rest = text.split(' ', 3)[1:]
    assert level == 'WARNING'
    assert rest == f'smtp_stack[{os.getpid()}] worker=2: abc: auth failed\nfrom x'
    assert ': abc: auth failed' in logs.TextFormatter().format(_record())
    assert ' worker=' not in logs.TextFormatter().format(_record())


def test_the_json_format_one_object_a_line():
    try:
        raise ValueError('boom')
    except ValueError:
        record = _record(event='auth_failed', session='abc', client='192.0.2.1',
                         user='b\u00e9a', odd=object())
        record.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(record)
    assert '\n' not in line
    data = json.loads(line)
    assert list(data)[:8] == ['time', 'level', 'logger', 'pid', 'event', 'session', 'client',
                              'user']
    assert data['user'] == 'b\u00e9a' and 'b\u00e9a' in line      # readable, not \\u-escaped
    assert data['message'] == 'abc: auth failed\nfrom x'
    assert 'ValueError: boom' in data['exception']
    assert data['odd'].startswith('<object object')
    assert data['time'][10] == 'T' and data['time'][-6] in '+-'


def test_install_replaces_its_handler(restored_logging, capsys):
    logs.install(logging.INFO, 'json')
    logs.install(logging.WARNING, 'text')
    root = logging.getLogger()
    mine = [h for h in root.handlers if isinstance(h, logs._Handler)]
    assert len(mine) == 1 and isinstance(mine[0].formatter, logs.TextFormatter)
    assert root.level == logging.WARNING
    with pytest.raises(ValueError):
        logs.formatter('xml')


def test_the_commands_own_lines_go_through_the_format(restored_logging, capsys):
    note('before logging is set up')
    assert capsys.readouterr().err == 'smtp-stack: before logging is set up\n'
    setup_logging('error', 'json')
    note('SIGTERM: stopping')
    announce('listening on 127.0.0.1:2525')
    captured = capsys.readouterr()
    [stopping] = [json.loads(line) for line in captured.err.splitlines()]
    [listening] = [json.loads(line) for line in captured.out.splitlines()]
    assert (stopping['logger'], stopping['message']) == ('smtp_stack.cli', 'SIGTERM: stopping')
    assert (listening['event'], listening['message']) == (
        'listening', 'listening on 127.0.0.1:2525')


@pytest.mark.parametrize(('value', 'error'), [
    ('xml', 'log_format: must be one of: text, json'),
    (['json'], 'log_format: must be one of: text, json'),
])
def test_log_format_in_yaml(tmp_path, value, error):
    assert parse({'log_format': 'json'}, str(tmp_path)).log_format == 'json'
    assert parse({}, str(tmp_path)).log_format is None
    with pytest.raises(ConfigError) as raised:
        parse({'log_format': value}, str(tmp_path))
    assert error in raised.value.lines()


def test_serve_log_format_flag_wins_over_the_file(tmp_path):
    config = tmp_path / 'smtp.yaml'
    config.write_text(f'log_format: text\ndeliver: {{maildir: {tmp_path / "mail"}}}\n')
    proc = Serve(tmp_path, '--config', str(config), '--port', '0', '--log-format', 'json')
    try:
        started = json.loads(proc.line)
        assert (started['logger'], started['event']) == ('smtp_stack.cli', 'listening')
        proc.signal(signal.SIGTERM)
        stopped = proc.wait_line('stopped')
        assert json.loads(stopped.string)['message'] == 'stopped'
        assert proc.wait() == 0
    finally:
        proc.close()
