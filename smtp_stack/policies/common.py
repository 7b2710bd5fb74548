"""What every policy needs: the client's address, the allow-list test, and
warnings that are logged once per cause instead of once per message."""
from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger('smtp_stack.policies')

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Number = TypeVar('Number', int, float)


class WarnOnce:
    """Log a failure the first time it happens, and again only after the
    cause recovered (`ok(cause)`) — a Redis outage is one line, not one per
    RCPT; its recovery is one more."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def failed(self, cause: str, message: str, *args: object) -> None:
        with self._lock:
            if cause in self._down:
                return
            self._down.add(cause)
        self.logger.warning(message + ' (failing open)', *args)

    def ok(self, cause: str) -> None:
        if cause in self._down:
            with self._lock:
                self._down.discard(cause)
            self.logger.warning('%s: working again', cause)


warnings = WarnOnce()


def client_ip(session: Session) -> IPAddress | None:
    """The real client address (after PROXY/XCLIENT) as an ip_address, or None."""
    text = session.remote_address or ''
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
    return ip is not None and any(ip.version == net.version and ip in net for net in nets)


def authenticated(session: Session) -> bool:
    return bool(session.user)


def positive(value: Number, name: str, integer: bool = False) -> Number:
    """`value`, checked: a positive number (an integer when `integer`), not a bool."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ValueError(f'{name} must be a positive {"integer" if integer else "number"}')
    return value
