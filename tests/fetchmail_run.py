"""fetchmail, the real POP3 client, run once against the inbox's POP3
port: over STLS or over implicit TLS, checking the certificate against
the test's own CA, each message handed to an MDA that appends it to a file."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import peers


def fetch_all(tmp_path: Path, port: int, user: str, password: str, ca_pem: bytes, *,
              implicit_tls: bool) -> tuple[str, str]:
    """Poll localhost:port once (fetchmail deletes what it fetched, at its
    QUIT): its verbose log and what it fetched (an mbox of sorts)."""
    fetchmail = peers.program('fetchmail', 'fetchmail')
    ca = tmp_path / 'ca.pem'
    ca.write_bytes(ca_pem)
    out = tmp_path / 'fetched.mbox'
    rc = tmp_path / 'fetchmailrc'
    ssl = 'ssl ' if implicit_tls else ''
    rc.write_text(
        f'poll localhost protocol pop3 port {port}\n'
        f'  user "{user}" password "{password}"\n'
        f'  {ssl}sslproto "tls1.2+" sslcertck sslcertfile "{ca}"\n'
        f'  mda "cat >> {out}"\n')
    rc.chmod(0o600)
    env = {**os.environ, 'HOME': str(tmp_path), 'FETCHMAILHOME': str(tmp_path)}
    result = subprocess.run(
        [fetchmail, '-f', str(rc), '--nodetach', '--nosyslog', '-v',
         '-i', str(tmp_path / 'fetchids')],
        capture_output=True, text=True, timeout=60, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return log, out.read_text()
