"""What a PROXY header is: the constants of both layouts and `ProxyHeader`,
the value the parsers return (HAProxy's proxy-protocol.txt; section numbers
are its own)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

V1_PREFIX = b'PROXY '
V1_MAX_LENGTH = 107             # section 2.1: the worst case, CRLF included
V2_SIGNATURE = b'\r\n\r\n\x00\r\nQUIT\n'
V2_FIXED_LENGTH = 16            # signature, ver_cmd, fam, len
V2_MAX_LENGTH = V2_FIXED_LENGTH + 0xFFFF

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_SUBTYPE_SSL_GROUP = 0x26
PP2_SUBTYPE_SSL_SIG_SCHEME = 0x27
PP2_SUBTYPE_SSL_CLIENT_CERT = 0x28
PP2_TYPE_NETNS = 0x30

PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

UNIQUE_ID_MAX_LENGTH = 128      # section 2.2.5
UNIX_PATH_LENGTH = 108


class ProxyError(ValueError):
    """The bytes cannot be a valid PROXY header; the message says why."""


class SslInfo(TypedDict):
    """PP2_TYPE_SSL (section 2.2.6): `ProxyHeader.ssl`."""
    client: int                 # the flag byte, and its bits:
    client_ssl: bool
    cert_conn: bool
    cert_sess: bool
    verify: int                 # 0 when a client certificate was verified
    cert_verified: bool
    version: str | None
    cn: str | None
    cipher: str | None
    sig_alg: str | None
    key_alg: str | None
    group: str | None
    sig_scheme: str | None
    client_cert: bytes | None   # DER
    tlvs: list[tuple[int, bytes]]   # the sub-TLVs, in order


@dataclass(slots=True)
class ProxyHeader:
    """What a PROXY header said. `tlvs` keeps every v2 TLV, in order, as
    (type, value); the known ones are also decoded into the fields below it.

    `ssl` (PP2_TYPE_SSL, section 2.2.6) is a dict: `client` (the flag byte),
    `client_ssl`, `cert_conn`, `cert_sess` (its bits), `verify` (0 when a
    client certificate was verified), `cert_verified`, then `version`, `cn`,
    `cipher`, `sig_alg`, `key_alg`, `group`, `sig_scheme` (str) and
    `client_cert` (DER bytes), each None when absent, and `tlvs`, the
    sub-TLVs in order. `crc32c` is the checksum the header carried, already
    verified.
    """
    version: int
    command: str
    family: str
    source_address: str | None = None
    source_port: int | None = None
    dest_address: str | None = None
    dest_port: int | None = None
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    ssl: SslInfo | None = None
    netns: str | None = None
    crc32c: int | None = None

    def tcp_endpoints(self) -> tuple[str, int, str, int] | None:
        """(source address, source port, destination address, destination
        port) of a PROXY header for TCP4 or TCP6, else None (UNKNOWN,
        UNSPEC, LOCAL, UDP, UNIX: "use the real endpoints")."""
        if self.command != 'PROXY' or self.family not in ('TCP4', 'TCP6'):
            return None
        source, source_port = self.source_address, self.source_port
        dest, dest_port = self.dest_address, self.dest_port
        if source is None or source_port is None or dest is None or dest_port is None:
            return None     # never for TCP4/TCP6: the parser sets all four
        return source, source_port, dest, dest_port

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of this type (e.g. a custom 0xE0-0xEF one)."""
        return next((value for t, value in self.tlvs if t == kind), None)
