"""What the MTA tells a milter about its SMTP session, as the session's fields.

The MTA sends macros (Sendmail's names) before each event ([pmilter]
SMFIC_MACRO; Postfix MILTER_README "Sendmail macro emulation" lists which
macro comes at which stage). Those the session contract has a field for
become that field; every macro is also kept, in `session.milter.macros`:

    macro                          session field
    {daemon_addr}, {daemon_port}   local_address, local_port (Postfix >= 3.2)
    {tls_version}, {cipher},       tls (version, cipher, bits), secure = True
      {cipher_bits}
    {auth_authen}, {auth_type}     auth (an AuthInfo: username, method) and
                                   user (the hook on_auth's answer, or the
                                   login name when there is no hook)
    i                              milter.queue_id: the MTA's queue id, in
                                   the log's lines of the message
    j, {daemon_name}, _, v         milter.macros only (the MTA's host name,
                                   its service, the client as validated,
                                   the MTA's version)

Names lose their braces: `session.milter.macros['auth_authen']`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..sasl import AuthInfo
from .protocol import ProtocolError

if TYPE_CHECKING:
    from ..session import Session, TlsInfo

# The macros asked for at each stage when the MTA takes a list (SMFIR_SETSYMLIST,
# [milter8] milter8_connect), whatever the MTA's configuration sends by
# default: what the table above maps, and the queue id wherever Postfix knows it.
WANTED_MACROS = {
    0: 'j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} {client_port} '
       '{client_name}',
    1: '{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}',
    2: 'i {auth_type} {auth_authen} {auth_author} {mail_addr}',
    3: 'i {rcpt_addr}',
    4: 'i',
    5: 'i',
    6: 'i',
}


class MilterFacts:
    """`session.milter`: what the MTA said of the session. `macros` holds
    every macro received so far (the latest value of each name);
    `queue_id` the MTA's queue id of the current message (macro `i`), or
    None before the MTA has one (Postfix chooses it after the first
    accepted RCPT); `version` the negotiated protocol version; `mta` the
    address the MTA's connection came from."""

    __slots__ = ('macros', 'queue_id', 'version', 'mta')

    def __init__(self, mta: str) -> None:
        self.macros: dict[str, str] = {}
        self.queue_id: str | None = None
        self.version = 0
        self.mta = mta

    def __repr__(self) -> str:
        return f'<MilterFacts queue_id={self.queue_id!r} macros={self.macros!r}>'


def read_macros(data: bytes) -> dict[str, str]:
    """The {name: value} of SMFIC_MACRO's data (the command letter, then
    name, value, ... each NUL-terminated: [pmilter] SMFIC_MACRO). Names
    lose their braces; a name without a value is dropped, as libmilter does."""
    return read_pairs([held_form(data)])


def check_macros(data: bytes) -> None:
    """ProtocolError unless `data` is SMFIC_MACRO's: a command letter, then
    NUL-terminated strings (any bytes in them: UTF-8, else kept escaped)."""
    if not data:
        raise ProtocolError('SMFIC_MACRO: a one-byte field is missing')
    if len(data) > 1 and data[-1] != 0:
        raise ProtocolError('SMFIC_MACRO: a string without its terminating NUL')


def held_form(data: bytes) -> bytes:
    """SMFIC_MACRO's data as a connection holds it for the next event
    (protocol.PacketReader's `held`): checked (check_macros), without the
    stage letter, a last name without its value dropped; b'' for none."""
    check_macros(data)
    count = data.count(0, 1)
    if count & 1:           # a name without its value
        if count == 1:
            return b''
        return data[1:data.rindex(0, 1, -1) + 1]
    return data[1:]


def read_held(packets: list[bytes]) -> dict[str, str]:
    """The macros of several SMFIC_MACRO packets (checked: check_macros),
    later ones winning, decoded in one pass (read_pairs)."""
    return read_pairs([held_form(data) for data in packets])


def read_pairs(held: list[bytes]) -> dict[str, str]:
    """The macros of several packets in their held form (held_form), later
    ones winning, decoded in one pass: the MTA sends one packet per stage,
    skipped stages included, and they are taken in at the next event. The
    NUL that ends each string keeps the packets' bytes apart when they
    are joined, and each holds whole pairs, so no name moves."""
    if not held:
        return {}
    strings = iter(b''.join(held).decode('utf-8', 'surrogateescape').split('\0'))
    return dict(zip(map(_bare, strings), strings, strict=False))  # the last '' unpaired


class _BareNames(dict[str, str]):
    """'{auth_authen}' -> 'auth_authen', 'i' -> 'i': each name worked out
    once (an MTA sends the same few), up to a bound (one that sends ever
    new names costs the work each time, not memory)."""

    def __missing__(self, name: str) -> str:
        bare = name[1:-1] if len(name) > 2 and name[0] == '{' and name[-1] == '}' else name
        if len(self) < 1024:
            self[name] = bare
        return bare


_bare = _BareNames().__getitem__


# What `apply` reports back, for the events: TLS became known, a login became known.
TLS_SEEN, LOGIN_SEEN = 'tls', 'login'


def apply(session: Session, facts: MilterFacts, macros: dict[str, str]) -> list[str]:
    """Take in the macros of one SMFIC_MACRO packet; returns what changed
    that the log tells of (TLS_SEEN; LOGIN_SEEN, after which the caller
    sets `session.user`: the login changed and the user is unknown).
    `macros` becomes facts.macros when that is empty: the caller's own dict."""
    if facts.macros:
        facts.macros.update(macros)
    else:
        facts.macros = macros
    told = []
    queue_id = macros.get('i')
    if queue_id:
        facts.queue_id = queue_id
    if 'daemon_addr' in macros:
        session.local_address = macros['daemon_addr']
    port = macros.get('daemon_port')
    if port is not None and port.isdigit():
        session.local_port = int(port)
    version = macros.get('tls_version')
    if version and (session.tls is None or session.tls.get('version') != version
                    or session.tls.get('cipher') != macros.get('cipher')):
        session.tls = _tls(version, macros)
        session.secure = True
        told.append(TLS_SEEN)
    login = macros.get('auth_authen')
    if login and (session.auth is None or session.auth.username != login):
        session.auth = AuthInfo(macros.get('auth_type') or facts.macros.get('auth_type') or '',
                                login)
        session.user = None
        told.append(LOGIN_SEEN)
    return told


def _tls(version: str, macros: dict[str, str]) -> TlsInfo:
    bits = macros.get('cipher_bits', '')
    return {'cipher': macros.get('cipher') or None,
            'bits': int(bits) if bits.isdigit() else None,
            'version': version, 'servername': macros.get('tls_sni') or None,
            'peer_certificate': None, 'peer_certificate_der': None}
