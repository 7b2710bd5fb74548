"""Releasing a caught message to a real SMTP server (`--relay HOST:PORT`).

Mailpit's `POST /api/v1/message/{ID}/release` with `{"To": [...]}`: the
stored message goes to those recipients, from the envelope sender it
arrived with, unchanged but for two fields of its header section, as
Mailpit releases it: Return-Path (RFC 5321 4.4: a relay must not pass one
on; the receiving server writes its own) and Bcc (the blind recipients
the inbox recorded must not reach the new ones).

`allowed_recipients` is Mailpit's relay allowlist (`allowed-recipients`):
a regular expression that every address must match (searched, as Go's
MatchString does), else the release is refused before anything is sent,
with Mailpit's words. The page shows it in its Release dialog.

The SMTP client is the relay delivery's `Upstream` (smtplib over gevent
sockets), so a release cooperates with the hub like the relay does.
"""
from __future__ import annotations

import re
import smtplib
from collections.abc import Sequence

from ..delivery.relay import Upstream
from .arrival import header_fields

NOT_RELEASED = (b'return-path', b'bcc')


class RelayError(OSError):
    """The upstream could not be reached, or refused the message."""


class Relay:
    def __init__(self, host: str, port: int = 25, *, helo: str = 'localhost',
                 timeout: float = 30.0, allowed_recipients: str = ''):
        self.host = host
        self.port = port
        self.helo = helo
        self.timeout = timeout
        self.allowed_recipients = allowed_recipients
        try:
            self._allowed = re.compile(allowed_recipients) if allowed_recipients else None
        except re.error as exc:
            raise ValueError(f'allowed recipients {allowed_recipients!r}: {exc}') from None

    def describe(self) -> str:
        return f'{self.host}:{self.port}'

    def not_allowed(self, to: Sequence[str]) -> list[str]:
        """The addresses the allowlist refuses (none without one)."""
        allowed = self._allowed
        if allowed is None:
            return []
        return [address for address in to if not allowed.search(address.strip())]

    def release(self, raw: bytes, sender: str, to: Sequence[str]) -> None:
        """Send; ValueError (nothing sent) for addresses off the allowlist,
        RelayError when the relay cannot be reached or refuses."""
        refused = self.not_allowed(to)
        if refused:
            noun = 'Address' if len(refused) == 1 else 'Addresses'
            raise ValueError(f'Failed: {noun} do not match the allowlist: {", ".join(refused)}')
        link = Upstream(lmtp=False, timeout=self.timeout, local_hostname=self.helo,
                        tls_context=None, secure=False)
        try:
            code, text = link.connect(self.host, self.port)
            if code != 220:
                raise RelayError(f'{self.describe()} greeted with {code}')
            link.ehlo_or_helo_if_needed()
            link.sendmail(sender, to, without_fields(raw, NOT_RELEASED))
            link.quit()
        except smtplib.SMTPRecipientsRefused as exc:
            raise RelayError(f'{self.describe()} refused the recipients: '
                             f'{", ".join(exc.recipients)}') from None
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            detail = error.decode('utf-8', 'replace') if isinstance(error, bytes) else error
            raise RelayError(f'{self.describe()} answered {exc.smtp_code} {detail}') from None
        except (smtplib.SMTPException, OSError) as exc:
            raise RelayError(f'{self.describe()}: {exc}') from None
        finally:
            link.close()


def without_fields(raw: bytes, names: Sequence[bytes]) -> bytes:
    """The message less every header field named in `names` (lower case)."""
    for _name, start, end in reversed([f for f in header_fields(raw) if f[0] in names]):
        raw = raw[:start] + raw[end:]
    return raw


def parse_hostport(text: str, default_host: str = '127.0.0.1') -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' -> (host, port); ValueError otherwise."""
    match = re.fullmatch(r'(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})', text.strip())
    if not match:
        raise ValueError(f'{text!r} is not HOST:PORT')
    host = match.group(1) or match.group(2) or default_host
    port = int(match.group(3))
    if port > 65535:
        raise ValueError(f'{text!r}: a port is from 0 to 65535')
    return host, port
