"""What every policy needs: the client's address, the allow-list test, and
warnings that are logged once per cause instead of once per message."""
from __future__ import annotations

import ipaddress
import logging
import threading

log = logging.getLogger('smtp_stack.policies')


class WarnOnce:
    """Log a failure the first time it happens, and again only after the
    cause recovered (`ok(cause)`) — a Redis outage is one line, not one per
    RCPT; its recovery is one more."""

    def __init__(self, logger=log):
        self.logger = logger
        self._down: set = set()
        self._lock = threading.Lock()

    def failed(self, cause: str, message: str, *args) -> None:
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


def client_ip(session):
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


def networks(values, name: str) -> tuple:
    """A list of CIDRs (or bare addresses) checked at construction."""
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values or ():
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f'{name}: {value!r} is not an IP address or CIDR network') from None
    return tuple(out)


def allowed(ip, nets) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in nets)


def authenticated(session) -> bool:
    return bool(session.user)


def positive(value, name: str, integer: bool = False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ValueError(f'{name} must be a positive {"integer" if integer else "number"}')
    return value
