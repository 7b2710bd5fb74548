"""A feature whose optional package is not installed stops with one sentence
that names the extra to install (smtp_stack.extras.MissingExtra, an
ImportError): the redis:// store, the libraries of `policies.authenticate`,
and the inbox's names that need wsproto.

Each case runs in a fresh interpreter whose prelude puts None in
`sys.modules` for the package before smtp_stack is imported, so importing
the package fails there as it does where it is not installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from clirunner import env_with_package

WAIT = 60.0         # a fresh interpreter importing gevent, dnspython, dkimpy

PROBE = '''\
import sys
sys.modules[{package!r}] = None
try:
{action}
except ImportError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print('no error')
'''

POLICIES = "needs the 'policies' extra: pip install 'smtp_stack[policies]'"
INBOX = "needs the 'inbox' extra: pip install 'smtp_stack[inbox]'"
# Only the check of from_spec's text runs before the import: no real key needed.
ARC_SEAL = "{'selector': 's1', 'domain': 'example.test', 'key': 'PRIVATE KEY'}"


def without(package: str, action: str, cwd) -> list[str]:
    """What the probe printed: the exception's class name and its text."""
    code = PROBE.format(package=package, action=textwrap.indent(action, '    '))
    done = subprocess.run([sys.executable, '-c', code], cwd=str(cwd), env=env_with_package(),
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize('url', ['redis://127.0.0.1:6379/0', 'rediss://127.0.0.1:6380/0',
                                 'unix:///run/redis.sock?db=0'])
def test_a_redis_store_without_redis_names_the_policies_extra(tmp_path, url):
    scheme = url.partition(':')[0]
    printed = without('redis', f'from smtp_stack import policies\npolicies.store({url!r})',
                      tmp_path)
    assert printed == ['MissingExtra',
                       f'a {scheme}:// store {POLICIES} (redis is not installed)']


def test_the_memory_and_sqlite_stores_need_no_redis(tmp_path):
    printed = without('redis', 'from smtp_stack import policies\n'
                               "policies.store('memory:')\n"
                               "policies.store('sqlite:///state.db')", tmp_path)
    assert printed == ['no error']


@pytest.mark.parametrize('package', ['dkim', 'spf', 'publicsuffixlist'])
def test_authenticate_without_its_libraries_names_the_policies_extra(tmp_path, package):
    printed = without(package, "from smtp_stack import policies\n"
                               "policies.authenticate(resolver=policies.Resolver('127.0.0.1'))",
                      tmp_path)
    assert printed == ['MissingExtra',
                       f'policies.authenticate {POLICIES} ({package} is not installed)']


def test_an_arc_seal_without_authres_names_the_policies_extra(tmp_path):
    # dkimpy imports authres quietly and fails only when it seals a message.
    printed = without('authres', "from smtp_stack import policies\n"
                                 "policies.authenticate(resolver=policies.Resolver('127.0.0.1'),"
                                 f" arc_seal={ARC_SEAL})", tmp_path)
    assert printed == ['MissingExtra',
                       f"policies.authenticate's arc_seal {POLICIES} (authres is not installed)"]


def test_authenticate_without_an_arc_seal_needs_no_authres(tmp_path):
    printed = without('authres', "from smtp_stack import policies\n"
                                 "policies.authenticate(resolver=policies.Resolver('127.0.0.1'))",
                      tmp_path)
    assert printed == ['no error']


def test_the_inbox_wsgi_app_without_wsproto_names_the_inbox_extra(tmp_path):
    printed = without('wsproto', "import smtp_stack.inbox\n"
                                 "smtp_stack.inbox.wsgi_app('inbox.db')", tmp_path)
    assert printed == ['MissingExtra',
                       f'smtp_stack.inbox.wsgi_app {INBOX} (wsproto is not installed)']
    assert not os.path.exists(tmp_path / 'inbox.db')       # stopped before opening anything


@pytest.mark.parametrize('name', ['Inbox', 'InboxApp'])
def test_the_inbox_classes_without_wsproto_name_the_inbox_extra(tmp_path, name):
    printed = without('wsproto', f'from smtp_stack.inbox import {name}', tmp_path)
    assert printed == ['MissingExtra',
                       f'smtp_stack.inbox.{name} {INBOX} (wsproto is not installed)']


def test_the_inbox_store_needs_no_wsproto(tmp_path):
    printed = without('wsproto', "from smtp_stack.inbox import Store\nStore('inbox.db')",
                      tmp_path)
    assert printed == ['no error']
