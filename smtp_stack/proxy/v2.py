"""PROXY version 2 (section 2.2 of HAProxy's proxy-protocol.txt): the
binary header, its address blocks, its TLVs (sections 2.2.1-2.2.7) and the
CRC32C that may cover it. As for v1, each byte is checked as soon as it
arrives; the package's docstring says what LOCAL and UNSPEC leave unread.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeAlias, cast

from .header import (
    PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL, PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CLIENT_CERT, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_GROUP,
    PP2_SUBTYPE_SSL_KEY_ALG, PP2_SUBTYPE_SSL_SIG_ALG, PP2_SUBTYPE_SSL_SIG_SCHEME,
    PP2_SUBTYPE_SSL_VERSION, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NETNS,
    PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, UNIQUE_ID_MAX_LENGTH, UNIX_PATH_LENGTH, V2_FIXED_LENGTH,
    V2_SIGNATURE, ProxyError, ProxyHeader, SslInfo,
)

# fam byte -> (name, address block length); other valid nibble pairs are UNSPEC.
_V2_FAMILIES: dict[int, tuple[str, int]] = {
    0x00: ('UNSPEC', 0),
    0x11: ('TCP4', 12), 0x12: ('UDP4', 12),
    0x21: ('TCP6', 36), 0x22: ('UDP6', 36),
    0x31: ('UNIX', 2 * UNIX_PATH_LENGTH), 0x32: ('UNIX_DGRAM', 2 * UNIX_PATH_LENGTH),
}
FAMILY_BYTES = {name: byte for byte, (name, _) in _V2_FAMILIES.items()}
_V2_COMMANDS = {0x0: 'LOCAL', 0x1: 'PROXY'}


def parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    seen = min(len(data), len(V2_SIGNATURE))
    if data[:seen] != V2_SIGNATURE[:seen]:
        raise ProxyError(f'PROXY v2: bad signature {data[:seen]!r}')
    if len(data) <= 12:
        return None
    ver_cmd = data[12]
    if ver_cmd >> 4 != 2:
        raise ProxyError(f'PROXY v2: version {ver_cmd >> 4} in byte 13 (must be 2)')
    command = _V2_COMMANDS.get(ver_cmd & 0x0F)
    if command is None:
        raise ProxyError(f'PROXY v2: unknown command {ver_cmd & 0x0F:#x} in byte 13')
    if len(data) <= 13:
        return None
    # LOCAL: "discard the protocol block including the family which is ignored".
    family, block = _v2_family(data[13]) if command == 'PROXY' else (_v2_local_family(data[13]), 0)
    if len(data) < V2_FIXED_LENGTH:
        return None
    length = int.from_bytes(data[14:16], 'big')
    if length < block:
        raise ProxyError(f'PROXY v2: length {length} is shorter than the {block}-byte '
                         f'{family} address block')
    end = V2_FIXED_LENGTH + length
    if len(data) < end:
        return None
    header = ProxyHeader(version=2, command=command, family=family)
    if command == 'PROXY' and family != 'UNSPEC':
        _v2_addresses(header, data[V2_FIXED_LENGTH:V2_FIXED_LENGTH + block])
        _v2_tlvs(header, data[:end], V2_FIXED_LENGTH + block)
    return header, end


def _v2_family(fam: int) -> tuple[str, int]:
    if fam in _V2_FAMILIES:
        return _V2_FAMILIES[fam]
    if fam >> 4 > 3:
        raise ProxyError(f'PROXY v2: unknown address family {fam >> 4:#x} in byte 14')
    if fam & 0x0F > 2:
        raise ProxyError(f'PROXY v2: unknown transport protocol {fam & 0x0F:#x} in byte 14')
    return 'UNSPEC', 0      # e.g. AF_INET with UNSPEC transport: fall back (section 2.2)


def _v2_local_family(fam: int) -> str:
    return _V2_FAMILIES.get(fam, ('UNSPEC', 0))[0]


def _v2_addresses(header: ProxyHeader, block: bytes) -> None:
    if header.family in ('UNIX', 'UNIX_DGRAM'):
        header.source_address = _unix_path(block[:UNIX_PATH_LENGTH])
        header.dest_address = _unix_path(block[UNIX_PATH_LENGTH:])
        return
    size = 4 if len(block) == 12 else 16
    header.source_address = str(ipaddress.ip_address(block[:size]))
    header.dest_address = str(ipaddress.ip_address(block[size:2 * size]))
    header.source_port = int.from_bytes(block[2 * size:2 * size + 2], 'big')
    header.dest_port = int.from_bytes(block[2 * size + 2:], 'big')


def _unix_path(raw: bytes) -> str:
    """A sun_path as text; a Linux abstract name keeps its leading NUL, as
    Python's socket module shows it. Undecodable bytes are surrogate-escaped."""
    if raw[:1] == b'\0':
        name = raw[1:].rstrip(b'\0')
        return '\0' + name.decode('utf-8', 'surrogateescape') if name else ''
    return raw.split(b'\0', 1)[0].decode('utf-8', 'surrogateescape')


def _split_tlvs(buf: bytes, start: int, what: str) -> list[tuple[int, int, int]]:
    """(type, value offset, value length) of each TLV from `start` to the end."""
    out = []
    pos = start
    while pos < len(buf):
        if len(buf) - pos < 3:
            raise ProxyError(f'PROXY v2: truncated {what} at offset {pos}: {len(buf) - pos} '
                             'bytes left, a TLV takes 3 or more')
        kind = buf[pos]
        size = int.from_bytes(buf[pos + 1:pos + 3], 'big')
        if pos + 3 + size > len(buf):
            raise ProxyError(f'PROXY v2: {what} type {kind:#04x} at offset {pos} declares '
                             f'{size} bytes but only {len(buf) - pos - 3} remain')
        out.append((kind, pos + 3, size))
        pos += 3 + size
    return out


def _text(encoding: str) -> Callable[[bytes, str], str]:
    def decode(value: bytes, what: str) -> str:
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            raise ProxyError(f'PROXY v2: {what} is not {encoding} text') from None
    return decode


def _raw(value: bytes, what: str) -> bytes:
    return value


def _unique_id(value: bytes, what: str) -> bytes:
    if len(value) > UNIQUE_ID_MAX_LENGTH:
        raise ProxyError(f'PROXY v2: {what} is {len(value)} bytes long, '
                         f'more than {UNIQUE_ID_MAX_LENGTH}')
    return value


def _crc_value(value: bytes, what: str) -> int:
    if len(value) != 4:
        raise ProxyError(f'PROXY v2: {what} value is {len(value)} bytes long, not 4')
    return int.from_bytes(value, 'big')


def _ssl(value: bytes, what: str) -> SslInfo:
    if len(value) < 5:
        raise ProxyError(f'PROXY v2: {what} value is {len(value)} bytes long, '
                         'shorter than client and verify (5)')
    client = value[0]
    verify = int.from_bytes(value[1:5], 'big')
    certified = bool(client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS))
    info: dict[str, Any] = {
        'client': client,
        'client_ssl': bool(client & PP2_CLIENT_SSL),
        'cert_conn': bool(client & PP2_CLIENT_CERT_CONN),
        'cert_sess': bool(client & PP2_CLIENT_CERT_SESS),
        'verify': verify,
        'cert_verified': verify == 0 and certified,
    }
    info.update(dict.fromkeys(name for name, _ in _SSL_SUBTYPES.values()))
    spans = _decode_tlvs(value, 5, _SSL_SUBTYPES, info.__setitem__, 'SSL sub-TLV')
    info['tlvs'] = _values(value, spans)
    return cast(SslInfo, info)      # every key set above, with its type


_ascii = _text('ascii')
_utf8 = _text('utf-8')

# type -> (field, decoder); each may appear once. Other types (NOOP, custom,
# experimental, future) may repeat and are only kept in `tlvs`.
_TlvTable: TypeAlias = dict[int, tuple[str, Callable[[bytes, str], object]]]
TLV_FIELDS: _TlvTable = {
    PP2_TYPE_ALPN: ('alpn', _raw),
    PP2_TYPE_AUTHORITY: ('authority', _utf8),
    PP2_TYPE_CRC32C: ('crc32c', _crc_value),
    PP2_TYPE_UNIQUE_ID: ('unique_id', _unique_id),
    PP2_TYPE_SSL: ('ssl', _ssl),
    PP2_TYPE_NETNS: ('netns', _ascii),
}
_SSL_SUBTYPES: _TlvTable = {
    PP2_SUBTYPE_SSL_VERSION: ('version', _ascii),
    PP2_SUBTYPE_SSL_CN: ('cn', _utf8),
    PP2_SUBTYPE_SSL_CIPHER: ('cipher', _ascii),
    PP2_SUBTYPE_SSL_SIG_ALG: ('sig_alg', _ascii),
    PP2_SUBTYPE_SSL_KEY_ALG: ('key_alg', _ascii),
    PP2_SUBTYPE_SSL_GROUP: ('group', _ascii),
    PP2_SUBTYPE_SSL_SIG_SCHEME: ('sig_scheme', _ascii),
    PP2_SUBTYPE_SSL_CLIENT_CERT: ('client_cert', _raw),
}


def _decode_tlvs(buf: bytes, start: int, table: _TlvTable, put: Callable[[str, Any], None],
                 what: str) -> list[tuple[int, int, int]]:
    """Split the TLVs from `start` to the end of `buf` and decode the known
    types with `put(field, value)`; return the (type, offset, size) spans."""
    spans = _split_tlvs(buf, start, what)
    seen = set()
    for kind, offset, size in spans:
        if kind in table:
            name, decode = table[kind]
            if kind in seen:
                raise ProxyError(f'PROXY v2: {what} type {kind:#04x} ({name}) appears twice')
            seen.add(kind)
            put(name, decode(buf[offset:offset + size], f'{what} {name}'))
    return spans


def _values(buf: bytes, spans: list[tuple[int, int, int]]) -> list[tuple[int, bytes]]:
    return [(kind, buf[offset:offset + size]) for kind, offset, size in spans]


def _v2_tlvs(header: ProxyHeader, raw: bytes, start: int) -> None:
    spans = _decode_tlvs(raw, start, TLV_FIELDS, header.__setattr__, 'TLV')
    header.tlvs = _values(raw, spans)
    if header.crc32c is not None:
        # Section 2.2.3: the checksum covers the whole header with its own
        # 4 bytes zeroed.
        offset = next(offset for kind, offset, _ in spans if kind == PP2_TYPE_CRC32C)
        actual = crc32c(raw[:offset] + bytes(4) + raw[offset + 4:])
        if actual != header.crc32c:
            raise ProxyError(f'PROXY v2: CRC32C mismatch: the header says {header.crc32c:#010x}, '
                             f'the bytes give {actual:#010x}')


# -- CRC32C (Castagnoli; RFC 4960 appendix B) --------------------------------

def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of `data`, continuing from `crc` (reflected 0x1EDC6F41)."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
