"""The `inbox:` section of `smtp-stack serve`'s configuration.

    inbox:
      db: inbox.db              # relative to the config file's directory
      http: 127.0.0.1:8025      # the web page, Mailpit's API, /api/events
      max_messages: 500
      ui_auth_file: web-users   # optional: "name:hash" lines (smtp-stack hash-password)
      relay: 127.0.0.1:25       # optional: where "release" sends a message

With it, the inbox is the delivery: every message the configured servers
accept (with their listeners, TLS, users, policies) is stored in the inbox,
and the web side runs in the same process. It replaces `deliver:` (both at
once are an error: one delivery per server).

Checking imports only the stdlib; config.py stops a file with an `inbox:`
section before it gets here when the `inbox` extra is missing (MissingExtra,
naming the section).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .release import parse_hostport

KEYS = ('db', 'http', 'max_messages', 'ui_auth_file', 'relay')
DEFAULTS = {'db': 'inbox.db', 'http': '127.0.0.1:8025', 'max_messages': 500}


def check_section(value: object, error: Callable[[str, str], object],
                  file_path: Callable[[str], str]) -> dict[str, Any]:
    """The checked spec (for `deliver = ('inbox', spec)`); problems go to
    `error(path, message)`. `file_path(name)` resolves against the config."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        error('inbox', 'must be a mapping {db, http, max_messages, ui_auth_file, relay}')
        return {}
    for key in value:
        if key not in KEYS:
            error(f'inbox.{key}', f'unknown key; known: {", ".join(KEYS)}')
    spec = dict(DEFAULTS, **{k: v for k, v in value.items() if k in KEYS})
    out = {'max_messages': spec['max_messages']}
    if not isinstance(spec['db'], str) or not spec['db']:
        error('inbox.db', 'must be a file name')
    else:
        out['db'] = file_path(spec['db'])
        folder = os.path.dirname(out['db'])
        if not os.path.isdir(folder):
            error('inbox.db', f'{folder} is not a directory')
    if isinstance(spec['max_messages'], bool) or not isinstance(spec['max_messages'], int) \
            or spec['max_messages'] < 1:
        error('inbox.max_messages', 'must be an integer, 1 or more')
    for key in ('http', 'relay'):
        if spec.get(key) is None:
            continue
        try:
            out[key] = parse_hostport(str(spec[key]))
        except ValueError as exc:
            error(f'inbox.{key}', str(exc))
    if spec.get('ui_auth_file') is not None:
        path = file_path(str(spec['ui_auth_file']))
        if not os.path.isfile(path):
            error('inbox.ui_auth_file', 'file not found')
        out['ui_auth_file'] = path
    return out


def describe(spec: dict[str, Any]) -> str:
    host, port = spec.get('http', ('127.0.0.1', 8025))[:2]
    host = f'[{host}]' if ':' in host else host
    return f'inbox {spec.get("db")} (web and API on http://{host}:{port}/)'
