"""The real programs and services the tests drive, and what happens when
one is missing: on a developer's machine the test is skipped; in CI
(`CI` set), which installs every one of them (.ci/apt-packages), it fails
and names the Debian package, so CI can never go green testing nothing.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = bool(os.environ.get('CI'))


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie, ended
    but not reaped yet, does not run)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def missing(what: str, package: str) -> NoReturn:
    """Skip the test, or fail it in CI, because `what` is not here."""
    reason = f'{what} is not available (Debian package {package}; .ci/apt-packages)'
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def program(name: str, package: str, fallback: str | tuple[str, ...] = ()) -> str:
    """The path of the program `name` (or of the first `fallback` that
    exists: sbin paths not on PATH, a package .ci/run unpacked)."""
    places = (fallback,) if isinstance(fallback, str) else fallback
    found = shutil.which(name) or next((p for p in places if os.path.exists(p)), None)
    if found is None:
        missing(name, package)
    return found


def python_module(name: str, extra: str = 'test') -> ModuleType:
    """A Python package of an extra, imported; missing skips (fails in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"the Python package {name} is not installed (pip install -e '.[{extra}]'): {exc}"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def swaks_with_tls() -> str:
    """swaks with its TLS support, which needs Net::SSLeay: a Recommends of
    Debian's swaks, so without it swaks runs but every --tls fails."""
    swaks = program('swaks', 'swaks')
    support = subprocess.run([swaks, '--support'], capture_output=True, text=True, timeout=30)
    if '=== TLS supported' not in support.stdout + support.stderr:
        missing("swaks' TLS (Net::SSLeay)", 'libnet-ssleay-perl')
    return swaks
