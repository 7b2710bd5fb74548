"""Process titles: `smtp-stack: master` and `smtp-stack: worker 2` in ps, top
and /proc/PID/cmdline, so that the processes of `workers: N` can be told apart
(and signalled one by one) instead of all showing the command that started them.

The title is set through setproctitle, an optional C extension (the extra
that docs/operating.md names). Without it nothing happens, silently: a title
is a convenience, never a reason for a server not to start.
"""
from __future__ import annotations

import importlib

PREFIX = 'smtp-stack'


def set_process_title(role: str) -> bool:
    """Show this process as `smtp-stack: {role}`. True when the title now
    reads so; False without setproctitle (or with its pure-Python stand-in,
    which sets nothing)."""
    title = f'{PREFIX}: {role}'
    try:
        module = importlib.import_module('setproctitle')
        module.setproctitle(title)
        return bool(module.getproctitle() == title)
    except Exception:       # not installed (ImportError), or a platform it cannot serve
        return False


def master_title() -> bool:
    """The process that binds and keeps the workers (`workers > 1`)."""
    return set_process_title('master')


def worker_title(number: int) -> bool:
    """A forked worker, by the number its log records carry."""
    return set_process_title(f'worker {number}')
