"""Counters that every process of a server writes and the master reads: an
anonymous shared mapping made before the workers are forked, one part per
process (as workers.SessionCounts does for the open sessions).

    part = header (pid, keys) | key records | values (doubles)

A process writes only its own part, so the hot path takes no lock: a
session's event is a dict lookup and a store into a double. A series (a
metric and its label values, joined by NUL) gets its cells the first time
the process meets it: the name is written into the next key record, then
the count of records goes one up, so a reader that sees the count sees the
record. Only that registration takes a lock (a native one: the breakers
report from pool threads).

The master (or a process without workers) reads every part in use
(`snapshot`): counters and histograms summed, gauges of the live parts
only. A part is taken for a worker before it is forked (`take`), adopted
by the worker (`adopt`), and given back once the worker was reaped
(`give_back`): what a counter of it held is kept (a killed worker's counts
do not go back), its gauges are dropped, and the part is reused. Those are
the three calls of workers.PerWorker; the pools call them.

A process forked by someone else (not a worker) counts into memory of its
own, which nobody reads, rather than into its parent's part.

Within one process, two hubs in two threads that report the same series at
the same instant could lose one of the two increments on Python 3.10 (from
3.11 a store into a memoryview is not interrupted); `smtp-stack serve`
serves each process's sessions in one hub.
"""
from __future__ import annotations

import mmap
import os
import struct
import weakref
from collections.abc import Callable, Iterator

from gevent.monkey import get_original

HEADER = struct.Struct('<qq')   # pid of the process writing the part, key records in use
RECORD = struct.Struct('<IH')   # first cell, cells (its width)
RECORD_SIZE = 256               # the record, then the series' name (UTF-8, NUL padded)
NAME_SIZE = RECORD_SIZE - RECORD.size
KEYS = 1024                     # series per process
CELLS = 8192                    # doubles per process
HEADER_SIZE = 64
VALUES_AT = HEADER_SIZE + KEYS * RECORD_SIZE
PART_SIZE = -(-(VALUES_AT + CELLS * 8) // mmap.PAGESIZE) * mmap.PAGESIZE

SEPARATOR = '\x00'              # between a metric's name and its label values

_native_lock = get_original('_thread', 'allocate_lock')

Key = tuple[str, ...]           # (metric name, label value, ...)


class Cells:
    """The shared counters of one server (or of several, counted together).

    `parts`: how many processes may write at once (the master, and each
    worker, and those still finishing after a reload). `is_gauge(name)`:
    whether a metric is a gauge, whose values die with their process.
    """

    def __init__(self, parts: int, is_gauge: Callable[[str], bool]) -> None:
        self.parts = max(1, parts)
        self.is_gauge = is_gauge
        self._memory = mmap.mmap(-1, self.parts * PART_SIZE)
        self._free = list(range(1, self.parts))     # part 0 is the maker's
        self._in_use = {0}
        # What the parts given back held: counters and histograms only.
        self._departed: dict[str, list[float]] = {}
        self._lock = _native_lock()
        self.dropped = 0        # series that found no room (this process)
        self._use(self._memory, 0)
        _all.add(self)

    def __repr__(self) -> str:
        return f'<Cells {len(self._in_use)}/{self.parts} parts>'

    # -- this process's part -----------------------------------------------
    def _use(self, memory: mmap.mmap, part: int) -> None:
        """Write into `part` of `memory` from now on (an empty part)."""
        start = part * PART_SIZE
        self._view = memoryview(memory)[start:start + PART_SIZE]
        self.values = self._view[VALUES_AT:].cast('d')
        self._index: dict[Key, int] = {}
        self._cells_used = 0
        HEADER.pack_into(self._view, 0, os.getpid(), 0)

    def cell(self, key: Key, width: int = 1) -> int | None:
        """The first of the `width` cells of series `key` in this process's
        part, made on first use; None when the part is full (counted in
        `dropped`: those events are not counted)."""
        found = self._index.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._index.get(key)
            if found is not None:
                return found
            keys = len(self._index)
            name = SEPARATOR.join(key).encode('utf-8', 'replace')
            if keys >= KEYS or self._cells_used + width > CELLS or len(name) > NAME_SIZE:
                self.dropped += 1
                return None
            first = self._cells_used
            at = HEADER_SIZE + keys * RECORD_SIZE
            RECORD.pack_into(self._view, at, first, width)
            self._view[at + RECORD.size:at + RECORD.size + len(name)] = name
            self._cells_used += width
            self._index[key] = first
            HEADER.pack_into(self._view, 0, os.getpid(), keys + 1)   # published
            return first

    def add(self, key: Key, amount: float = 1.0) -> None:
        found = self._index.get(key)
        if found is None:
            found = self.cell(key)
            if found is None:
                return
        self.values[found] += amount

    def set(self, key: Key, value: float) -> None:
        found = self.cell(key)
        if found is not None:
            self.values[found] = value

    # -- the parts of the workers (workers.PerWorker) -------------------------
    def take(self) -> int | None:
        """In the master, before a fork: a zeroed part for the new worker."""
        if not self._free:
            return None
        part = self._free.pop(0)
        self._zero(part)
        self._in_use.add(part)
        return part

    def adopt(self, part: int | None) -> None:
        """In the new worker: write into `part` (None: no part was left; this
        worker's counts go into memory nobody reads)."""
        if part is None:
            self._private()
        else:
            self._use(self._memory, part)

    def give_back(self, part: int | None) -> None:
        """In the master, the worker reaped: keep its counters, free its part."""
        if part is None or part not in self._in_use or part == 0:
            return
        for name, values in _read_part(self._memory, part):
            if not self.is_gauge(name.partition(SEPARATOR)[0]):
                kept = self._departed.setdefault(name, [0.0] * len(values))
                for i, value in enumerate(values):
                    kept[i] += value
        self._zero(part)
        self._in_use.discard(part)
        self._free.append(part)

    def _zero(self, part: int) -> None:
        start = part * PART_SIZE
        self._memory[start:start + PART_SIZE] = bytes(PART_SIZE)

    def _private(self) -> None:
        """Memory of this process's own (a fork nobody told us of)."""
        self._lock = _native_lock()
        self._use(mmap.mmap(-1, PART_SIZE), 0)

    # -- reading -------------------------------------------------------------
    def snapshot(self) -> dict[str, list[float]]:
        """Every series of every part in use, summed (gauges: of the live
        parts only), by its name ('metric\\0label value...')."""
        total = {name: list(values) for name, values in self._departed.items()}
        for part in sorted(self._in_use):
            for name, values in _read_part(self._memory, part):
                found = total.get(name)
                if found is None:
                    total[name] = list(values)
                elif len(found) == len(values):
                    for i, value in enumerate(values):
                        found[i] += value
        return total

    def close(self) -> None:
        _all.discard(self)


def _read_part(memory: mmap.mmap, part: int) -> Iterator[tuple[str, list[float]]]:
    """(name, values) of each series in `part`, as published so far."""
    start = part * PART_SIZE
    view = memoryview(memory)[start:start + PART_SIZE]
    _, keys = HEADER.unpack_from(view, 0)
    values = view[VALUES_AT:].cast('d')
    for i in range(min(keys, KEYS)):
        at = HEADER_SIZE + i * RECORD_SIZE
        first, width = RECORD.unpack_from(view, at)
        raw = bytes(view[at + RECORD.size:at + RECORD_SIZE]).rstrip(b'\x00')
        if first + width <= CELLS:
            yield raw.decode('utf-8', 'replace'), list(values[first:first + width])


_all: weakref.WeakSet[Cells] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Any fork: the child writes into memory of its own until a pool tells
    it which part is its (adopt)."""
    for cells in list(_all):
        cells._private()


os.register_at_fork(after_in_child=_after_fork_in_child)
