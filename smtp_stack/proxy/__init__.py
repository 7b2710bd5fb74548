"""The PROXY protocol, versions 1 (text) and 2 (binary), without sockets.

HAProxy's proxy-protocol.txt is the reference; section numbers below are
its own. The session loop feeds `parse_proxy_header` everything received so
far from the start of the connection, until it returns a header (and how many
bytes the header took) or raises `ProxyError`. Bytes after the header belong
to the SMTP or TLS stream: the parser never looks at them.

The parser decides as early as it can (section 2.1: "abort the connection as
soon as possible"): the first byte chooses the version, and every byte that
cannot belong to a valid header raises at once, rather than after a timeout.

Family names in `ProxyHeader.family`:
  version 1: 'TCP4', 'TCP6', 'UNKNOWN'
  version 2: 'TCP4', 'UDP4', 'TCP6', 'UDP6', 'UNIX' (stream), 'UNIX_DGRAM',
             'UNSPEC' (family or transport 0, and the combinations of valid
             nibbles that section 2.2 does not list, such as 0x10).
Addresses and ports are None for UNKNOWN, UNSPEC and the LOCAL command, which
all mean "use the real endpoints of the connection". For LOCAL and UNSPEC the
whole block after the first 16 bytes is skipped unread, TLVs included: LOCAL
must "discard the protocol block including the family" (section 2.2), and an
UNSPEC block has no known layout to find the TLVs in.

The modules: `header` (the constants and `ProxyHeader`), `v1` and `v2` (the
parsers; v2 with its TLVs and CRC32C), `build` (headers for clients and
tests). Every name is importable from here.
"""
from __future__ import annotations

from .build import IpLike as IpLike
from .build import build_proxy_v1, build_proxy_v2, build_ssl_tlv
from .header import (
    PP2_CLIENT_CERT_CONN as PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS as PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL as PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER as PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CLIENT_CERT as PP2_SUBTYPE_SSL_CLIENT_CERT,
    PP2_SUBTYPE_SSL_CN as PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_GROUP as PP2_SUBTYPE_SSL_GROUP,
    PP2_SUBTYPE_SSL_KEY_ALG as PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG as PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_SIG_SCHEME as PP2_SUBTYPE_SSL_SIG_SCHEME,
    PP2_SUBTYPE_SSL_VERSION as PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN as PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY as PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C as PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS as PP2_TYPE_NETNS,
    PP2_TYPE_NOOP as PP2_TYPE_NOOP,
    PP2_TYPE_SSL as PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID as PP2_TYPE_UNIQUE_ID,
    UNIQUE_ID_MAX_LENGTH as UNIQUE_ID_MAX_LENGTH,
    UNIX_PATH_LENGTH as UNIX_PATH_LENGTH,
    V1_MAX_LENGTH as V1_MAX_LENGTH,
    V1_PREFIX as V1_PREFIX,
    V2_FIXED_LENGTH as V2_FIXED_LENGTH,
    V2_MAX_LENGTH as V2_MAX_LENGTH,
    V2_SIGNATURE as V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    SslInfo as SslInfo,
)
from .v1 import parse_v1
from .v2 import TLV_FIELDS, crc32c, parse_v2

__all__ = [
    'ProxyError', 'ProxyHeader', 'parse_proxy_header', 'build_proxy_v1',
    'build_proxy_v2', 'build_ssl_tlv', 'crc32c',
]

_TLV_FIELDS = TLV_FIELDS        # the decoded TLV types, by the name proxy.py gave them


def parse_proxy_header(data: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of `data`.

    Returns (header, bytes consumed), or None when `data` is a valid prefix
    of a header and more bytes are needed; raises ProxyError otherwise.
    """
    data = bytes(data)
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return parse_v1(data)
    raise ProxyError(f'not a PROXY protocol header: it starts with {data[:16]!r}')
