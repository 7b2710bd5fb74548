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
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypedDict, cast

__all__ = [
    'ProxyError', 'ProxyHeader', 'parse_proxy_header', 'build_proxy_v1',
    'build_proxy_v2', 'build_ssl_tlv', 'crc32c',
]

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


def parse_proxy_header(data: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of `data`.

    Returns (header, bytes consumed), or None when `data` is a valid prefix
    of a header and more bytes are needed; raises ProxyError otherwise.
    """
    data = bytes(data)
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProxyError(f'not a PROXY protocol header: it starts with {data[:16]!r}')


# -- version 1 (section 2.1) -------------------------------------------------

_NOT_PRINTABLE = re.compile(rb'[^\x20-\x7e]')
_DECIMAL = re.compile(r'0|[1-9][0-9]*')
_IPV6_CHARS = re.compile(r'[0-9A-Fa-f:.]*')


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    window = data[:V1_MAX_LENGTH]
    end = window.find(b'\r\n')
    if end >= 0:
        return _v1_header(_v1_fields(window[:end], complete=True)), end + 2
    if len(window) >= V1_MAX_LENGTH:
        raise ProxyError(f'PROXY v1: no CRLF within the first {V1_MAX_LENGTH} bytes')
    if window.endswith(b'\r'):
        _v1_fields(window[:-1], complete=True)      # only LF may follow now
    else:
        _v1_fields(window, complete=False)
    return None


def _v1_fields(line: bytes, complete: bool) -> list[str]:
    """Check a whole line (without CRLF) or the beginning of one.

    Fields are separated by exactly one space, so splitting on ' ' and
    finding an empty field is already an error. In an incomplete line the
    last field may still grow: it only has to be a prefix of a valid one.
    """
    bad = _NOT_PRINTABLE.search(line)
    if bad:
        byte = line[bad.start()]
        what = 'a bare CR or LF' if byte in b'\r\n' else f'byte {byte:#04x}'
        raise ProxyError(f'PROXY v1: {what} at offset {bad.start()} '
                         '(the line is US-ASCII text ended by CRLF)')
    fields = line.decode('ascii').split(' ')
    growing = '' if complete else fields.pop()
    grammar = list(_V1_HEAD)
    for index, value in enumerate(fields):
        if index >= len(grammar):
            raise ProxyError(f'PROXY v1: more than {len(grammar)} fields')
        what, check = grammar[index]
        check(value, True, what)
        if index == 1:
            rest = _V1_FAMILIES[value]
            if rest is None:        # UNKNOWN: the receiver ignores the rest of the line
                return fields
            grammar.extend(rest)
    if complete:
        if len(fields) < len(grammar):
            raise ProxyError(f'PROXY v1: {grammar[len(fields)][0]} missing')
    else:
        if len(fields) >= len(grammar):
            raise ProxyError(f'PROXY v1: more than {len(grammar)} fields')
        what, check = grammar[len(fields)]
        check(growing, False, what)
    return fields


def _v1_keyword(value: str, whole: bool, what: str) -> None:
    ok = value == 'PROXY' if whole else 'PROXY'.startswith(value)
    if not ok:
        raise ProxyError(f'PROXY v1: bad {what} {value!r}')


def _v1_family(value: str, whole: bool, what: str) -> None:
    ok = value in _V1_FAMILIES if whole else any(f.startswith(value) for f in _V1_FAMILIES)
    if not ok:
        raise ProxyError(f'PROXY v1: bad {what} {value!r} (TCP4, TCP6 or UNKNOWN)')


def _decimal_ok(text: str, maximum: int) -> bool:
    """Decimal without sign or heading zeroes (section 2.1 forbids them)."""
    return bool(_DECIMAL.fullmatch(text)) and int(text) <= maximum


def _v1_ipv4(value: str, whole: bool, what: str) -> None:
    """Exactly four decimal numbers 0..255 without heading zeroes. A prefix
    of such a number is itself such a number, which makes prefixes easy."""
    parts = value.split('.')
    ok = len(parts) == 4 if whole else len(parts) <= 4
    for i, part in enumerate(parts):
        growing = not whole and i == len(parts) - 1
        if not (growing and part == '') and not _decimal_ok(part, 255):
            ok = False
    if not ok:
        raise ProxyError(f'PROXY v1: {what} {value!r} is not a dotted-quad IPv4 address')


def _v1_ipv6(value: str, whole: bool, what: str) -> None:
    if whole:
        try:
            if '%' in value:        # a scope id is no part of the grammar
                raise ValueError
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ProxyError(f'PROXY v1: {what} {value!r} is not an IPv6 address') from None
        return
    # The prefix test is deliberately loose; the whole value is checked above.
    groups = value.split(':')
    ok = (_IPV6_CHARS.fullmatch(value) and ':::' not in value and value.count('::') <= 1
          and len(groups) <= 9 and all(len(g) <= 4 and '.' not in g for g in groups[:-1]))
    if ok and '.' in groups[-1]:
        _v1_ipv4(groups[-1], False, what)
    elif not ok or len(groups[-1]) > 4:
        raise ProxyError(f'PROXY v1: {what} {value!r} is not an IPv6 address')


def _v1_port(value: str, whole: bool, what: str) -> None:
    if not whole and value == '':
        return
    if not _decimal_ok(value, 65535):
        raise ProxyError(f'PROXY v1: {what} {value!r} is not a decimal 0..65535 '
                         'without heading zeroes')


# A field's check: (value, whole: not a prefix still growing, its name).
_V1Check: TypeAlias = Callable[[str, bool, str], None]
_V1_HEAD: tuple[tuple[str, _V1Check], ...] = (
    ('keyword', _v1_keyword), ('protocol family', _v1_family))
_V1_FAMILIES: dict[str, tuple[tuple[str, _V1Check], ...] | None] = {
    'TCP4': (('source address', _v1_ipv4), ('destination address', _v1_ipv4),
             ('source port', _v1_port), ('destination port', _v1_port)),
    'TCP6': (('source address', _v1_ipv6), ('destination address', _v1_ipv6),
             ('source port', _v1_port), ('destination port', _v1_port)),
    'UNKNOWN': None,
}


def _v1_header(fields: list[str]) -> ProxyHeader:
    family = fields[1]
    if family == 'UNKNOWN':
        return ProxyHeader(version=1, command='PROXY', family=family)
    src, dst, sport, dport = fields[2:]
    return ProxyHeader(
        version=1, command='PROXY', family=family,
        source_address=str(ipaddress.ip_address(src)), source_port=int(sport),
        dest_address=str(ipaddress.ip_address(dst)), dest_port=int(dport),
    )


# -- version 2 (section 2.2) -------------------------------------------------

# fam byte -> (name, address block length); other valid nibble pairs are UNSPEC.
_V2_FAMILIES: dict[int, tuple[str, int]] = {
    0x00: ('UNSPEC', 0),
    0x11: ('TCP4', 12), 0x12: ('UDP4', 12),
    0x21: ('TCP6', 36), 0x22: ('UDP6', 36),
    0x31: ('UNIX', 2 * UNIX_PATH_LENGTH), 0x32: ('UNIX_DGRAM', 2 * UNIX_PATH_LENGTH),
}
_V2_FAMILY_BYTES = {name: byte for byte, (name, _) in _V2_FAMILIES.items()}
_V2_COMMANDS = {0x0: 'LOCAL', 0x1: 'PROXY'}


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
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
_TLV_FIELDS: _TlvTable = {
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
    spans = _decode_tlvs(raw, start, _TLV_FIELDS, header.__setattr__, 'TLV')
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


# -- building headers (for clients and tests) --------------------------------

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
    if family not in _V2_FAMILY_BYTES:
        raise ValueError(f'unknown v2 family {family!r}')
    fam = _V2_FAMILY_BYTES[family]
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
