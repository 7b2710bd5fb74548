"""PROXY headers built, for clients of ours and for tests: a v1 line, a v2
header (with TLVs and, on request, its CRC32C filled in) and the SSL TLV.
The parsers in v1.py and v2.py read back whatever is built here."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

from .header import (
    PP2_CLIENT_SSL, PP2_SUBTYPE_SSL_CIPHER, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG, PP2_SUBTYPE_SSL_VERSION, PP2_TYPE_CRC32C, PP2_TYPE_SSL,
    UNIX_PATH_LENGTH, V2_SIGNATURE,
)
from .v2 import FAMILY_BYTES, crc32c

# What ipaddress.ip_address() takes.
IpLike: TypeAlias = 'str | bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address'


def _ip(value: IpLike | None,
        version: int | None = None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if value is None:
        raise ValueError(f'{value!r} does not appear to be an IPv4 or IPv6 address')
    address = ipaddress.ip_address(value)
    if version and address.version != version:
        raise ValueError(f'{value!r} is not an IPv{version} address')
    return address


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f'port must be an int 0..65535, not {value!r}')
    return value


def build_proxy_v1(source_address: IpLike | None = None, source_port: int | None = None,
                   dest_address: IpLike | None = None, dest_port: int | None = None,
                   *, family: str | None = None) -> bytes:
    """A v1 line. The family follows the addresses (TCP4 or TCP6); with no
    addresses, or family='UNKNOWN', the short 'PROXY UNKNOWN' line."""
    if family is None:
        family = 'UNKNOWN' if source_address is None else f'TCP{_ip(source_address).version}'
    if family == 'UNKNOWN':
        return b'PROXY UNKNOWN\r\n'
    if family not in ('TCP4', 'TCP6'):
        raise ValueError(f'v1 family must be TCP4, TCP6 or UNKNOWN, not {family!r}')
    version = int(family[3])
    src, dst = _ip(source_address, version), _ip(dest_address, version)
    return f'PROXY {family} {src} {dst} {_port(source_port)} {_port(dest_port)}\r\n'.encode('ascii')


def _unix_bytes(path: IpLike | None) -> bytes:
    if isinstance(path, str):
        raw = path.encode('utf-8', 'surrogateescape')
    elif isinstance(path, (bytes, bytearray, memoryview)):
        raw = bytes(path)
    else:
        raise TypeError(f'a UNIX address is a str or bytes path, not {path!r}')
    if len(raw) > UNIX_PATH_LENGTH:
        raise ValueError(f'a UNIX address is at most {UNIX_PATH_LENGTH} bytes')
    return raw.ljust(UNIX_PATH_LENGTH, b'\0')


def _tlv(kind: int, value: bytes) -> bytes:
    if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
        raise ValueError(f'bad TLV: type {kind!r}, {len(value)} bytes')
    return bytes([kind]) + len(value).to_bytes(2, 'big') + bytes(value)


def build_proxy_v2(source_address: IpLike | None = None, source_port: int | None = None,
                   dest_address: IpLike | None = None, dest_port: int | None = None,
                   *, command: str = 'PROXY', family: str | None = None,
                   tlvs: Iterable[tuple[int, bytes]] = (), crc: bool = False) -> bytes:
    """A v2 header. The family follows the addresses (TCP4 or TCP6) unless
    given ('UDP4', 'UNIX' with str or bytes paths, ...); no addresses means
    UNSPEC. `tlvs` are appended in order; `crc=True` adds a PP2_TYPE_CRC32C
    TLV last and fills it in."""
    if command not in ('PROXY', 'LOCAL'):
        raise ValueError(f'command must be PROXY or LOCAL, not {command!r}')
    if family is None:
        family = 'UNSPEC' if source_address is None else \
            ('TCP4', 'TCP6')[_ip(source_address).version == 6]
    if family not in FAMILY_BYTES:
        raise ValueError(f'unknown v2 family {family!r}')
    fam = FAMILY_BYTES[family]
    if family == 'UNSPEC':
        block = b''
    elif family.startswith('UNIX'):
        block = _unix_bytes(source_address) + _unix_bytes(dest_address)
    else:
        version = 4 if fam >> 4 == 1 else 6
        block = (_ip(source_address, version).packed + _ip(dest_address, version).packed
                 + _port(source_port).to_bytes(2, 'big') + _port(dest_port).to_bytes(2, 'big'))
    body = block + b''.join(_tlv(kind, value) for kind, value in tlvs)
    if crc:
        body += _tlv(PP2_TYPE_CRC32C, b'\0\0\0\0')
    if len(body) > 0xFFFF:
        raise ValueError('a v2 header carries at most 65535 bytes after its first 16, '
                         f'not {len(body)}')
    ver_cmd = 0x20 | (1 if command == 'PROXY' else 0)
    header = V2_SIGNATURE + bytes([ver_cmd, fam]) + len(body).to_bytes(2, 'big') + body
    if crc:
        header = header[:-4] + crc32c(header).to_bytes(4, 'big')
    return header


def build_ssl_tlv(client: int = PP2_CLIENT_SSL, verify: int = 0, *, version: str | None = None,
                  cn: str | None = None, cipher: str | None = None, sig_alg: str | None = None,
                  key_alg: str | None = None,
                  sub_tlvs: Iterable[tuple[int, bytes]] = ()) -> tuple[int, bytes]:
    """A PP2_TYPE_SSL TLV, (type, value), for `build_proxy_v2(tlvs=...)`."""
    named = ((PP2_SUBTYPE_SSL_VERSION, version), (PP2_SUBTYPE_SSL_CN, cn),
             (PP2_SUBTYPE_SSL_CIPHER, cipher), (PP2_SUBTYPE_SSL_SIG_ALG, sig_alg),
             (PP2_SUBTYPE_SSL_KEY_ALG, key_alg))
    subs = [(kind, text.encode('utf-8')) for kind, text in named if text is not None]
    value = bytes([client]) + verify.to_bytes(4, 'big')
    value += b''.join(_tlv(kind, data) for kind, data in [*subs, *sub_tlvs])
    return PP2_TYPE_SSL, value
