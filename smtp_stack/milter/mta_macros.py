"""The macros the MTA side sends a milter, as Postfix emulates Sendmail's.

Postfix's MILTER_README ("Sendmail macro emulation") lists the macros and
what each holds; its `milter_*_macros` parameters say which go at each
stage, and these are their defaults (Postfix 3.7, `postconf -d`). A milter
that asks for its own lists in the negotiation (SMFIF_SETSYMLIST, version
6) gets those instead, as Postfix does ([milter8] milter8_connect); the
`macros=` parameter of policies.milter replaces a stage's default list.
A macro without a value here (`{mail_host}`, `{cert_subject}` ...) is
left out, as Postfix leaves out one it cannot give.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .. import __version__
from ..events import queue_id
from . import protocol as P

if TYPE_CHECKING:
    from ..addresses import Address
    from ..session import Session

__all__ = ['STAGES', 'DEFAULTS', 'stage_lists', 'values']

# The stage names of `macros=` (Postfix's milter_<stage>_macros) -> the event.
STAGES: Mapping[str, str] = {
    'connect': P.CONNECT, 'helo': P.HELO, 'mail': P.MAIL, 'rcpt': P.RCPT,
    'data': P.DATA, 'end_of_header': P.EOH, 'end_of_data': P.EOB}
# Postfix's defaults, by event.
DEFAULTS: Mapping[str, tuple[str, ...]] = {
    P.CONNECT: ('j', '{daemon_name}', '{daemon_addr}', 'v', '_'),
    P.HELO: ('{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}'),
    P.MAIL: ('i', '{auth_type}', '{auth_authen}', '{auth_author}', '{mail_addr}',
             '{mail_host}', '{mail_mailer}'),
    P.RCPT: ('i', '{rcpt_addr}', '{rcpt_host}', '{rcpt_mailer}'),
    P.DATA: ('i',), P.EOH: ('i',), P.EOB: ('i',)}


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    words = value.split() if isinstance(value, str) else list(value)
    out = []
    for word in words:
        if not isinstance(word, str) or not word or any(c.isspace() or c == '\0' for c in word):
            raise ValueError(f'a macro name is a word, not {word!r}')
        out.append(word if len(word) == 1 or word.startswith('{') else '{' + word + '}')
    return tuple(out)


def stage_lists(macros: Mapping[str, str | Iterable[str]] | None) -> dict[str, tuple[str, ...]]:
    """The macro names per event: Postfix's defaults, with the stages
    `macros` names replaced ('connect': 'j _ {client_addr}', or a list);
    ValueError for an unknown stage or a bad name."""
    lists = dict(DEFAULTS)
    for stage, names in (macros or {}).items():
        event = STAGES.get(stage)
        if event is None:
            raise ValueError(f'macros: unknown stage {stage!r} (one of {", ".join(STAGES)})')
        lists[event] = _names(names)
    return lists


def asked(lists: Mapping[int, str]) -> dict[str, tuple[str, ...]]:
    """The lists a milter asked for (SMFIF_SETSYMLIST), by event."""
    return {P.STAGE_COMMANDS[stage]: _names(names) for stage, names in lists.items()
            if stage in P.STAGE_COMMANDS}


def values(session: Session, server_name: str, address: Address | None = None
           ) -> dict[str, str]:
    """Every macro this side can give now, by its name in braces (or
    its letter): the session's facts, and `address` as {rcpt_addr}."""
    out: dict[str, str] = {'j': server_name, '{daemon_name}': server_name,
                           'v': f'smtp_stack {__version__}'}
    if session.local_address:
        out['{daemon_addr}'] = _bare(session.local_address)
        out['{daemon_port}'] = str(session.local_port)
    client = _bare(session.remote_address or '')
    name = session.client_hostname or ''
    known = name and not name.startswith('[')
    if client:
        out['{client_addr}'] = client
        out['{client_port}'] = str(session.remote_port)
        out['_'] = f'{name if known else "unknown"} [{client}]'
    out['{client_name}'] = name if known else 'unknown'
    if known:
        out['{client_ptr}'] = name
    tls = session.tls
    if tls:
        for macro, key in (('{tls_version}', 'version'), ('{cipher}', 'cipher'),
                           ('{cipher_bits}', 'bits')):
            if tls.get(key) is not None:
                out[macro] = str(tls.get(key))
    if session.user:
        auth = session.auth
        out['{auth_authen}'] = str(auth.username if auth is not None and auth.username
                                   else session.user)
        if auth is not None:
            out['{auth_type}'] = auth.method
            if auth.authzid:
                out['{auth_author}'] = auth.authzid
    envelope = session.envelope
    if envelope.mail_from is not None:
        out['i'] = queue_id(session)
        out['{mail_addr}'] = envelope.mail_from.address
    if address is not None:
        out['{rcpt_addr}'] = address.address
    return out


def _bare(address: str) -> str:
    """An IP address as Postfix gives it: no 'IPv6:' prefix, no zone."""
    text = address[5:] if address[:5].upper() == 'IPV6:' else address
    try:
        ip = ipaddress.ip_address(text.split('%', 1)[0])
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)
