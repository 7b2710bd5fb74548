"""`GET /api/v1/message/{ID}/sa-check` through SpamAssassin's spamd, as Mailpit's.

The SPAMC protocol (spamd/PROTOCOL in SpamAssassin's sources): the client
sends `VERB SPAMC/1.5`, a `Content-length:` header, a blank line and the
message, then closes its writing side; spamd answers `SPAMD/1.x CODE
TEXT`, headers (`Spam: True ; 6.2 / 5.0`, `Content-length:`), a blank line
and, for REPORT, the report whose table ("Content analysis details")
lists each rule as `pts rule-name description`, long descriptions
continued on lines indented to the description column.

Mailpit's answer (SpamAssassinResponse): `{"IsSpam", "Error", "Score",
"Rules": [{"Score", "Name", "Description"}]}`, scores rounded down to one
decimal, spam at a score of 5.0 or more whatever spamd's own threshold,
and a failure to reach spamd is a 200 with `Error` set and `Rules` null.

Pure parsing first; `SpamdClient` does the I/O on gevent sockets, so a
check waits in its request's greenlet, never in the hub, and ends at
`timeout` (8 s, Mailpit's).
"""
from __future__ import annotations

import re
import socket
from decimal import Decimal, InvalidOperation
from typing import Any

import gevent
import gevent.socket

PROTOCOL = 'SPAMC/1.5'
TIMEOUT = 8.0
SPAM_SCORE = 5.0                # Mailpit's: spam at this score or more
MAX_REPLY = 1 << 20

_STATUS = re.compile(r'SPAMD/[\d.]+ (\d+) (.*)')
_SPAM = re.compile(r'Spam: (\S+) ; (-?[\d.]+) / (-?[\d.]+)', re.IGNORECASE)
_RULE = re.compile(r'\s?(-?[\d.]+)\s+([A-Za-z0-9_]+)\s+(.*)')


class SpamdError(Exception):
    """spamd could not be asked, or answered with an error."""


def request(verb: str, message: bytes) -> bytes:
    return (f'{verb} {PROTOCOL}\r\nContent-length: {len(message)}\r\n\r\n'.encode()
            + message)


def parse_reply(data: bytes) -> tuple[bool, float, str]:
    """(spam per spamd, score, body) of a whole reply; SpamdError for an error code."""
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.decode('utf-8', 'replace').split('\r\n')
    status = _STATUS.match(lines[0])
    if status is None:
        raise SpamdError(f'not a spamd reply: {lines[0][:80]!r}')
    if status[1] != '0':
        raise SpamdError(f'spamd: {status[1]} {status[2]}')
    for line in lines[1:]:
        spam = _SPAM.match(line)
        if spam is not None:
            return spam[1].lower() in ('true', 'yes'), float(spam[2]), \
                body.decode('utf-8', 'replace')
    raise SpamdError('spamd sent no Spam: header')


def report_rules(report: str) -> list[dict[str, Any]]:
    """The rules of a REPORT body's table, continuation lines joined."""
    rules: list[dict[str, Any]] = []
    in_table = False
    for line in report.replace('\r\n', '\n').split('\n'):
        if line.startswith('Content analysis details'):
            in_table = True
            continue
        if not in_table or not line.strip() or line.startswith(('---', ' pts')):
            continue
        match = _RULE.match(line)
        if match is not None and not line.startswith('      '):
            rules.append({'Score': round_down(match[1]), 'Name': match[2],
                          'Description': match[3].strip()})
        elif rules:         # a description continued on the next line
            rules[-1]['Description'] += ' ' + line.strip()
    return rules


def round_down(text: str | float) -> float:
    """Mailpit's rounding: down to one decimal (in decimal, not binary, arithmetic)."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return 0.0
    return float((value * 10).to_integral_value(rounding='ROUND_FLOOR') / 10)


def result(spam_score: float, rules: list[dict[str, Any]]) -> dict[str, Any]:
    score = round_down(spam_score)
    return {'IsSpam': spam_score >= SPAM_SCORE, 'Error': '', 'Score': score, 'Rules': rules}


def failure(reason: str) -> dict[str, Any]:
    return {'IsSpam': False, 'Error': reason, 'Score': 0, 'Rules': None}


class SpamdClient:
    """Asks spamd at HOST:PORT (or `unix:/path`) for its REPORT of a message."""

    def __init__(self, address: str, timeout: float = TIMEOUT):
        self.address = address
        self.timeout = timeout
        if address.startswith('unix:'):
            self._target: Any = address[5:]
        else:
            host, sep, port = address.rpartition(':')
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'{address!r} is not HOST:PORT or unix:PATH')
            self._target = (host.strip('[]'), int(port))

    def check(self, message: bytes) -> dict[str, Any]:
        """Mailpit's SpamAssassinResponse for `message`; never raises for spamd's trouble."""
        try:
            with gevent.Timeout(self.timeout, SpamdError(f'no answer within {self.timeout:g} s')):
                data = self._ask(request('REPORT', message))
            _, score, body = parse_reply(data)
        except (OSError, SpamdError) as exc:
            return failure(str(exc) or type(exc).__name__)
        return result(score, report_rules(body))

    def _ask(self, payload: bytes) -> bytes:
        if isinstance(self._target, str):
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self._target)
        else:
            sock = gevent.socket.create_connection(self._target)
        with sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)       # spamd reads to the end of our side
            chunks, size = [], 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REPLY:
                    raise SpamdError('spamd reply too large')
        return b''.join(chunks)
