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
