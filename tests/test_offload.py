"""smtp_stack.offload: blocking calls leave the hub; where no hub exists in
the thread they run in place (no hub made for them); OwnThreads keeps one
pool per hub and per process."""
from __future__ import annotations

import os
import threading
import time

import gevent
from gevent._hub_local import get_hub_if_exists

from smtp_stack.offload import OwnThreads, offload

from conftest import WAIT


def test_a_blocking_call_runs_in_a_worker_thread_while_the_hub_goes_on():
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    try:
        gevent.sleep(0.02)
        before = len(ticks)
        ident = offload(lambda seconds: (time.sleep(seconds), threading.get_ident())[1], 0.3)
        during = len(ticks) - before
    finally:
        ticker.kill()
    assert ident != threading.get_ident()
    assert during >= 10, during         # the ticker ran while the call blocked its thread


def test_where_no_hub_exists_the_call_runs_in_place_and_makes_none():
    seen = {}

    def plain_thread():
        seen['before'] = get_hub_if_exists()
        seen['ran in'] = offload(threading.get_ident)
        seen['after'] = get_hub_if_exists()
        seen['thread'] = threading.get_ident()

    worker = threading.Thread(target=plain_thread)
    worker.start()
    worker.join(WAIT)
    assert seen['before'] is None and seen['after'] is None
    assert seen['ran in'] == seen['thread']


def test_a_call_made_in_a_worker_thread_runs_there():
    """A delivery function (already in the hub's pool) that offloads in turn."""
    outer, inner = offload(lambda: (threading.get_ident(), offload(threading.get_ident)))
    assert outer == inner != threading.get_ident()


def test_own_threads_are_one_pool_per_hub():
    threads = OwnThreads(2)
    try:
        mine = threads.pool()
        assert threads.pool() is mine and mine is not gevent.get_hub().threadpool
        assert mine.maxsize == 2
        other = {}
        worker = threading.Thread(target=lambda: other.update(pool=threads.pool()))
        worker.start()
        worker.join(WAIT)
        assert other['pool'] is not mine           # that thread's hub has its own
    finally:
        threads.close()


def test_own_threads_start_afresh_in_a_forked_child():
    dropped = []
    threads = OwnThreads(1, after_fork=lambda: dropped.append(os.getpid()))
    parent_pool = threads.pool()
    assert dropped == [os.getpid()]                # the first use in a process
    pid = os.fork()
    if pid == 0:        # the child: report through the exit status only, never return
        ok = False
        try:
            fresh = threads.pool()
            ok = fresh is not parent_pool and dropped[-1] == os.getpid() \
                and fresh.apply(lambda: 42) == 42
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + WAIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    threads.close()
    assert done == pid and os.waitstatus_to_exitcode(status) == 0
    assert threads.pool() is not parent_pool       # closed: a new pool on next use
    threads.close()
