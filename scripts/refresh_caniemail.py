#!/usr/bin/env python3
"""Refresh the inbox's copy of the caniemail data set from npm.

The HTML check of `smtp-stack inbox` (smtp_stack/inbox/htmlcheck.py) reads
which HTML and CSS features each mail client supports from caniemail.com's
data, as published in the npm package `caniemail` (MIT): its
`data/caniemail.json`, carried byte for byte in smtp_stack/inbox/data/
with the package's LICENSE beside it and a SOURCE note naming the version,
the tarball and its integrity hash. Nothing in it is typed by hand.

    python scripts/refresh_caniemail.py            # the version pinned below
    python scripts/refresh_caniemail.py latest     # or any published version

Only the standard library: the registry's JSON, the tarball checked
against the registry's sha512 integrity, then the two files taken out.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = 'caniemail'
PINNED = '2.0.2'
REGISTRY = 'https://registry.npmjs.org'
TARGET = Path(__file__).resolve().parent.parent / 'smtp_stack' / 'inbox' / 'data'
MEMBERS = {'package/data/caniemail.json': 'caniemail.json', 'package/LICENSE': 'LICENSE'}
TIMEOUT = 60


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        data: bytes = reply.read()
    return data


def refresh(version: str = PINNED, target: Path = TARGET, registry: str = REGISTRY) -> str:
    """Download, verify and unpack; returns the version written."""
    meta = json.loads(fetch(f'{registry}/{PACKAGE}/{version}'))
    tarball, integrity = meta['dist']['tarball'], meta['dist']['integrity']
    data = fetch(tarball)
    algorithm, _, expected = integrity.partition('-')
    if algorithm != 'sha512' or base64.b64decode(expected) != hashlib.sha512(data).digest():
        raise SystemExit(f'{tarball}: integrity {integrity} does not match')
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as archive:
        for member, name in MEMBERS.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f'{tarball}: no {member}')
            found[name] = extracted.read()
    json.loads(found['caniemail.json'])          # a data set, not an error page
    target.mkdir(parents=True, exist_ok=True)
    for name, content in found.items():
        (target / name).write_bytes(content)
    (target / 'SOURCE').write_text(
        f'npm package {PACKAGE} {meta["version"]} (license: {meta.get("license", "?")})\n'
        f'{tarball}\n{integrity}\n'
        'Written by scripts/refresh_caniemail.py; do not edit by hand.\n')
    return str(meta['version'])


if __name__ == '__main__':
    print(refresh(sys.argv[1] if len(sys.argv) > 1 else PINNED))
