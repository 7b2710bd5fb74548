"""SMTP replies as data: one place for codes, enhanced codes and wire format.

Handlers never build reply strings by hand; they use the predeclared
`Reply` values below (or `SmtpError`, which carries one), so tests and code
share the same numbers.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeAlias

# What a reply's text may be: one line (newlines split it), or a list of lines.
Message: TypeAlias = str | Sequence[str]
# An enhanced status code (RFC 3463, '5.1.1'); None: derived from the reply
# code; False: this reply carries none (the greeting, EHLO's, RFC 2034).
Enhanced: TypeAlias = str | Literal[False] | None


class Reply(NamedTuple):
    """A reply: `enhanced` None means 'derive it from the code', False 'none'.

    A predeclared reply below is raised as `SmtpError(replies.NEED_MAIL)`.
    """
    code: int
    message: Message
    enhanced: Enhanced = None


# RFC 3463 codes used when the caller gives none (RFC 2034 asks for one on
# every reply once ENHANCEDSTATUSCODES is advertised).
_DEFAULT_ENHANCED: dict[int, str] = {
    211: '2.0.0', 214: '2.0.0', 220: '2.0.0', 221: '2.0.0', 235: '2.7.0',
    250: '2.0.0', 251: '2.1.5', 252: '2.1.5',
    421: '4.3.0', 450: '4.2.0', 451: '4.3.0', 452: '4.3.1', 454: '4.7.0',
    455: '4.5.4',
    500: '5.5.2', 501: '5.5.4', 502: '5.5.1', 503: '5.5.1', 504: '5.5.4',
    521: '5.3.2', 530: '5.7.0', 534: '5.7.9', 535: '5.7.8', 538: '5.7.11',
    550: '5.0.0', 551: '5.1.6', 552: '5.3.4', 553: '5.1.3', 554: '5.0.0',
    555: '5.5.4',
}

_ENHANCED_PREFIX = re.compile(r'^[245]\.\d{1,3}\.\d{1,3}(?: |$)')
# format_reply's cache: a reply's code, text, enhanced code and use_enhanced.
_WireKey: TypeAlias = tuple[int, str | tuple[str, ...], Enhanced, bool]


def default_enhanced(code: int) -> str | None:
    """The enhanced status code a reply gets when its author gave none."""
    if code in _DEFAULT_ENHANCED:
        return _DEFAULT_ENHANCED[code]
    klass = code // 100
    if klass in (2, 4, 5) and 200 <= code < 600:
        return f'{klass}.0.0'
    return None     # 1xx/3xx (e.g. 334, 354) carry no enhanced code


def validate_code(code: object) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 200 <= code <= 599:
        raise ValueError(f'SMTP reply code must be an int from 200 to 599, not {code!r}')
    return code


def format_reply(code: int, message: Message, enhanced: Enhanced = None,
                 use_enhanced: bool = False) -> bytes:
    """Wire bytes of one reply, multi-line when message is a list or has newlines.

    Each line is prefixed with the enhanced code when `use_enhanced` and the
    line does not already start with one (a caller may write '5.7.1 Denied').
    The bytes are remembered: a session sends the same few replies over and
    over (250 Accepted, 354, 250 queued), so most calls are one dict lookup.
    """
    key: _WireKey
    if isinstance(message, str):
        key = (code, message, enhanced, use_enhanced)
    elif isinstance(message, (list, tuple)) and all(type(line) is str for line in message):
        key = (code, tuple(message), enhanced, use_enhanced)
    else:       # other line types (formatted with str()): not remembered
        return _format_reply(code, message, enhanced, use_enhanced)
    wire = _WIRE.get(key)
    if wire is None:
        wire = _format_reply(code, message, enhanced, use_enhanced)
        if len(_WIRE) >= _WIRE_MAX:
            _WIRE.clear()       # bounded: replies with varying text churn it
        _WIRE[key] = wire
    return wire


_WIRE: dict[_WireKey, bytes] = {}
_WIRE_MAX = 1024


def wire_bytes(reply: Reply, use_enhanced: bool) -> bytes:
    """format_reply for a Reply, remembered by the Reply itself (one dict
    lookup for the predeclared ones a session sends over and over)."""
    if type(reply.message) is str:
        key = (reply, use_enhanced)
        wire = _WIRE_BY_REPLY.get(key)
        if wire is None:        # kept here only, not in format_reply's cache too
            wire = _format_reply(reply.code, reply.message, reply.enhanced, use_enhanced)
            if len(_WIRE_BY_REPLY) >= _WIRE_MAX:
                _WIRE_BY_REPLY.clear()
            _WIRE_BY_REPLY[key] = wire
        return wire
    return format_reply(reply.code, reply.message, reply.enhanced, use_enhanced)


_WIRE_BY_REPLY: dict[tuple[Reply, bool], bytes] = {}


def _format_reply(code: int, message: str | Sequence[object], enhanced: Enhanced,
                  use_enhanced: bool) -> bytes:
    if isinstance(message, str):
        lines = message.split('\n') if '\n' in message else [message]
    else:
        lines = [str(line) for line in message] or ['']
    if not use_enhanced or enhanced is False:
        enhanced = None     # False: this reply never carries one (EHLO, RFC 2034)
    elif enhanced is None:
        enhanced = default_enhanced(code)
    out: list[str] = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        line = line.rstrip('\r')
        if enhanced and not _ENHANCED_PREFIX.match(line):
            line = f'{enhanced} {line}' if line else enhanced
        out.append(f'{code}{" " if i == last else "-"}{line}\r\n')
    return ''.join(out).encode('utf-8', 'surrogateescape')


# --- Predeclared replies --------------------------------------------------
OK = Reply(250, 'OK', '2.0.0')
QUEUED = Reply(250, 'OK: message queued', '2.0.0')
SENDER_OK = Reply(250, 'Accepted', '2.1.0')
RECIPIENT_OK = Reply(250, 'Accepted', '2.1.5')
FLUSHED = Reply(250, 'Flushed', '2.0.0')
CANNOT_VRFY = Reply(252, 'Cannot VRFY user, but will accept message and attempt delivery', '2.0.0')
START_INPUT = Reply(354, 'End data with <CR><LF>.<CR><LF>')

UNRECOGNIZED = Reply(500, 'Error: command not recognized', '5.5.2')
BAD_SYNTAX = Reply(500, 'Error: bad syntax', '5.5.2')
LINE_TOO_LONG = Reply(500, 'Error: line too long', '5.5.6')
AUTH_LINE_TOO_LONG = Reply(500, 'Error: authentication response too long', '5.5.6')
AUTH_UNDECODABLE = Reply(501, 'Error: cannot decode response', '5.5.2')
BAD_ENCODING = Reply(500, 'Error: command is not valid UTF-8', '5.5.2')
BARE_NEWLINE_COMMAND = Reply(500, 'Error: bare <CR> or <LF> in command', '5.5.2')
NUL_IN_COMMAND = Reply(500, 'Error: NUL byte in command', '5.5.2')
NOT_IMPLEMENTED = Reply(502, 'Error: command not implemented', '5.5.1')
NEED_HELO = Reply(503, 'Error: send HELO/EHLO first', '5.5.1')
NEED_LHLO = Reply(503, 'Error: send LHLO first', '5.5.1')
NESTED_MAIL = Reply(503, 'Error: nested MAIL command', '5.5.1')
NEED_MAIL = Reply(503, 'Error: need MAIL command', '5.5.1')
NO_RECIPIENTS = Reply(554, 'Error: no valid recipients', '5.5.1')
# RFC 2033 4.2: in LMTP, DATA without an accepted recipient MUST get 503.
NO_RECIPIENTS_LMTP = Reply(503, 'Error: no valid recipients', '5.5.1')
TOO_MANY_RECIPIENTS = Reply(452, 'Error: too many recipients', '4.5.3')
MESSAGE_TOO_BIG = Reply(552, 'Error: message exceeds fixed maximum message size', '5.3.4')
BARE_NEWLINE_DATA = Reply(554, 'Error: bare <CR> or <LF> in message content', '5.6.0')
NO_PARAMS_AFTER_HELO = Reply(555, 'Error: MAIL/RCPT parameters need EHLO', '5.5.4')
NEED_SMTPUTF8 = Reply(553, 'Error: non-ASCII address needs SMTPUTF8', '5.6.7')
AUTH_REQUIRED = Reply(530, 'Error: authentication required', '5.7.0')
NO_REPLY_SET = Reply(451, 'Error: no reply was set for this command', '4.3.0')
LOCAL_ERROR = Reply(451, 'Error: local error in processing', '4.3.0')
TIMEOUT = Reply(421, 'Error: timeout exceeded', '4.4.2')
SHUTTING_DOWN = Reply(421, 'Error: server shutting down', '4.3.2')
TOO_MANY_CONNECTIONS = Reply(421, 'Error: too many connections', '4.7.0')
TOO_MANY_ERRORS = Reply(421, 'Error: too many errors', '4.7.0')
READY_FOR_TLS = Reply(220, 'Ready to start TLS', '2.0.0')
TLS_ALREADY_ACTIVE = Reply(554, 'Error: TLS already active', '5.5.1')
AUTH_OK = Reply(235, 'Authentication successful', '2.7.0')
ALREADY_AUTHENTICATED = Reply(503, 'Error: already authenticated', '5.5.1')
AUTH_IN_TRANSACTION = Reply(503, 'Error: AUTH not allowed during a mail transaction', '5.5.1')
AUTH_NEEDS_EHLO = Reply(503, 'Error: send EHLO first', '5.5.1')
ENCRYPTION_REQUIRED = Reply(538, 'Error: must issue a STARTTLS command first', '5.7.11')
AUTH_UNKNOWN_MECHANISM = Reply(504, 'Error: unrecognized authentication type', '5.5.4')
NOT_AUTHORIZED = Reply(550, 'Error: insufficient authorization', '5.7.0')
FORWARDING_IN_TRANSACTION = Reply(503, 'Error: MAIL transaction in progress', '5.5.1')
BINARYMIME_NEEDS_BDAT = Reply(503, 'Error: BODY=BINARYMIME requires BDAT', '5.5.1')
REQUIRETLS_NEEDS_TLS = Reply(530, 'Error: REQUIRETLS needs a TLS session', '5.7.10')
TOO_MANY_MESSAGES = Reply(421, 'Error: too many messages in this connection', '4.7.0')
EARLY_TALKER = Reply(554, 'Error: SMTP protocol synchronization', '5.5.0')
LINE_TOO_LONG_DATA = Reply(554, 'Error: message line too long', '5.6.0')
# Never sent: the client abandoned its BDAT chunks (RSET, another command),
# and each chunk was already answered. It is the reply `MessageRefused`
# carries for the readers of the abandoned body.
TRANSFER_ABANDONED = Reply(554, 'Error: message transfer abandoned by the client', '5.6.0')
AUTH_FAILED = Reply(535, 'Error: authentication failed', '5.7.8')
TOO_MANY_AUTH_FAILURES = Reply(421, 'Error: too many failed authentication attempts', '4.7.0')
AUTH_BLOCKED = Reply(450, 'Error: too many failed authentications from this address, '
                          'try again later', '4.7.1')
HOOK_FAILED = Reply(421, 'Error: internal server error, closing connection', '4.3.0')
