"""The benchmark helpers that use session internals still run (they are
tools, not tests of speed: no figure is asserted beyond being measured)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_session_cpu_measures_both_loads():
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'session_cpu.py'),
                          '--messages', '200'],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    figures = re.findall(r'^\((a|b)\)\s+([0-9.]+) µs', run.stdout, re.M)
    assert [load for load, _ in figures] == ['a', 'b']
    assert all(float(value) > 0 for _, value in figures)


def test_each_repeat_starts_with_the_next_server():
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        from run import turn_order
    finally:
        sys.path.pop(0)
    servers = ['smtp_stack', 'aiosmtpd', 'nodemailer']
    orders = [turn_order(servers, rep) for rep in (1, 2, 3, 4)]
    assert orders[0] == servers and orders[3] == servers
    assert [order[0] for order in orders[:3]] == servers
    assert all(sorted(order) == sorted(servers) for order in orders)
    assert turn_order([], 2) == []
