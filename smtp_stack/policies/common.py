"""What every policy needs: the client's address, the allow-list test,
warnings that are logged once per cause and period instead of once per
message, and what to do when a store or DNS is down (`on_store_error`)."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias, TypeVar

# One warner for the process, shared with the server's limits in a store.
from ..state.fail_open import STORE_UNAVAILABLE, WarnOnce, check_mode, log, store_failed, warnings

if TYPE_CHECKING:
    from ..middleware import Context
    from ..options import OnStoreError
    from ..session import Session

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Number = TypeVar('Number', int, float)

__all__ = ['WarnOnce', 'log', 'warnings', 'IPAddress', 'IPNetwork', 'client_ip', 'client_text',
           'networks', 'allowed', 'authenticated', 'positive', 'STORE_UNAVAILABLE', 'check_mode',
           'store_failed', 'mode_of']


def mode_of(own: OnStoreError | None, ctx: Context) -> OnStoreError:
    """A policy's `on_store_error`: its own, else its server's."""
    return own or ctx.server.options.on_store_error


def client_ip(session: Session) -> IPAddress | None:
    """The real client address (after PROXY/XCLIENT) as an ip_address, or
    None; parsed once per session and address (several policies ask at
    each command), again when XCLIENT changed it."""
    return _client(session)[1]


def client_text(session: Session) -> str:
    """The client address as text, the way `str(client_ip(session))` writes
    it (the remote address as given when it is no IP address): made once
    per session and address, like client_ip (a rate limit's key at every
    MAIL; `str` of an ip_address is Python code, issue 25)."""
    kept = getattr(session, _CLIENT_IP, None)
    if kept is not None and kept[0] == session.remote_address:
        return kept[2]      # (_client's test here: a frame less at every MAIL)
    return _client(session)[2]


def _client(session: Session) -> tuple[str | None, IPAddress | None, str]:
    """(remote_address, its ip_address or None, the text of that address)."""
    text = session.remote_address
    kept: tuple[str | None, IPAddress | None, str] | None = getattr(session, _CLIENT_IP, None)
    if kept is not None and kept[0] == text:
        return kept
    ip = parse_ip(text or '')
    kept = (text, ip, str(text) if ip is None else str(ip))
    try:
        setattr(session, _CLIENT_IP, kept)
    except AttributeError:      # a session object of the caller's that takes no attributes
        pass
    return kept


_CLIENT_IP = '_policies_client_ip'     # _client's answer, kept on the session


def parse_ip(text: str) -> IPAddress | None:
    """An address as XCLIENT and PROXY give it ('IPv6:' prefix, a zone
    index, an IPv4-mapped IPv6 address), or None."""
    if text[:5].upper() == 'IPV6:':
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text.split('%', 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def networks(values: str | Iterable[str] | None, name: str) -> tuple[IPNetwork, ...]:
    """A list of CIDRs (or bare addresses) checked at construction."""
    if isinstance(values, str):
        values = [values]
    out: list[IPNetwork] = []
    for value in values or ():
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f'{name}: {value!r} is not an IP address or CIDR network') from None
    return tuple(out)


def allowed(ip: IPAddress | None, nets: Iterable[IPNetwork]) -> bool:
    """Whether `ip` is in one of `nets` (an empty tuple is answered without
    making a generator: what most greylists have, at every RCPT)."""
    if ip is None or nets == ():
        return False
    return any(ip.version == net.version and ip in net for net in nets)


def authenticated(session: Session) -> bool:
    return bool(session.user)


def positive(value: Number, name: str, integer: bool = False) -> Number:
    """`value`, checked: a positive number (an integer when `integer`), not a bool."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ValueError(f'{name} must be a positive {"integer" if integer else "number"}')
    return value
