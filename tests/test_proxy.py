"""smtp_stack.proxy: PROXY protocol v1 and v2 headers, without sockets."""
import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from smtp_stack import proxy
from smtp_stack.proxy import (
    ProxyError, ProxyHeader, build_proxy_v1, build_proxy_v2, build_ssl_tlv, crc32c,
    parse_proxy_header,
)

SIG = b'\r\n\r\n\x00\r\nQUIT\n'
AFTER = b'EHLO client.example.com\r\n'


def v2(ver_cmd, fam, body, length=None):
    """A v2 header assembled by hand, independently of build_proxy_v2."""
    n = len(body) if length is None else length
    return SIG + bytes([ver_cmd, fam]) + struct.pack('!H', n) + body


def tlv(kind, value):
    return struct.pack('!BH', kind, len(value)) + value


def inet4(src='192.0.2.1', dst='198.51.100.2', sport=51000, dport=25):
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack('!HH', sport, dport))


def inet6(src='2001:db8::1', dst='2001:db8::2', sport=51000, dport=25):
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack('!HH', sport, dport))


def unix(src=b'/run/client.sock', dst=b'/run/smtpd.sock'):
    return src.ljust(108, b'\0') + dst.ljust(108, b'\0')


def with_crc(header):
    """Fill the 4 zero bytes of a CRC32C TLV at the end of `header`."""
    assert header[-7:-4] == b'\x03\x00\x04'
    return header[:-4] + struct.pack('!I', crc32c(header))


def parse(data):
    result = parse_proxy_header(data)
    assert result is not None, 'expected a complete header'
    return result


def fields(header):
    return (header.version, header.command, header.family, header.source_address,
            header.source_port, header.dest_address, header.dest_port)


def error(data):
    with pytest.raises(ProxyError) as info:
        parse_proxy_header(data)
    return str(info.value)


# -- CRC32C ------------------------------------------------------------------

@pytest.mark.parametrize('data, expected', [
    (b'123456789', 0xE3069283),                 # the check value of CRC-32C
    (b'', 0x00000000),
    (bytes(32), 0x8A9136AA),                    # RFC 3720 B.4 test vectors
    (b'\xff' * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected


@given(st.binary(), st.binary())
def test_crc32c_continues_across_chunks(a, b):
    assert crc32c(b, crc32c(a)) == crc32c(a + b)


# -- version 1: valid lines --------------------------------------------------

V1_VALID = [
    (b'PROXY TCP4 192.0.2.1 198.51.100.2 51000 25\r\n',
     (1, 'PROXY', 'TCP4', '192.0.2.1', 51000, '198.51.100.2', 25)),
    (b'PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n',
     (1, 'PROXY', 'TCP4', '0.0.0.0', 0, '255.255.255.255', 65535)),
    (b'PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n',
     (1, 'PROXY', 'TCP4', '10.0.0.1', 1, '10.0.0.2', 2)),
    (b'PROXY TCP6 2001:DB8::1 2001:db8:0:0:0:0:0:2 443 25\r\n',
     (1, 'PROXY', 'TCP6', '2001:db8::1', 443, '2001:db8::2', 25)),
    (b'PROXY TCP6 ::1 :: 1 0\r\n', (1, 'PROXY', 'TCP6', '::1', 1, '::', 0)),
    (b'PROXY TCP6 ::ffff:192.0.2.1 ::ffff:c000:202 5 6\r\n',
     (1, 'PROXY', 'TCP6', '::ffff:c000:201', 5, '::ffff:c000:202', 6)),
    (b'PROXY TCP6 ' + b'ffff:' * 7 + b'ffff ' + b'ffff:' * 7 + b'ffff 65535 65535\r\n',
     (1, 'PROXY', 'TCP6', ':'.join(['ffff'] * 8), 65535, ':'.join(['ffff'] * 8), 65535)),
    (b'PROXY UNKNOWN\r\n', (1, 'PROXY', 'UNKNOWN', None, None, None, None)),
    (b'PROXY UNKNOWN 192.0.2.1 198.51.100.2 51000 25\r\n',
     (1, 'PROXY', 'UNKNOWN', None, None, None, None)),
    # Section 2.1: after UNKNOWN "the receiver must ignore anything" up to CRLF.
    (b'PROXY UNKNOWN whatever  you~like 01 999999\r\n',
     (1, 'PROXY', 'UNKNOWN', None, None, None, None)),
    (b'PROXY UNKNOWN \r\n', (1, 'PROXY', 'UNKNOWN', None, None, None, None)),
    # The longest line allowed: 107 bytes, CRLF included.
    (b'PROXY UNKNOWN ' + b'x' * 91 + b'\r\n', (1, 'PROXY', 'UNKNOWN', None, None, None, None)),
]


@pytest.mark.parametrize('line, expected', V1_VALID)
def test_v1_valid_line_parses(line, expected):
    header, consumed = parse(line + AFTER)
    assert fields(header) == expected
    assert consumed == len(line)
    assert header.tlvs == [] and header.ssl is None and header.crc32c is None


def test_v1_longest_line_is_107_bytes():
    assert len(V1_VALID[-1][0]) == proxy.V1_MAX_LENGTH == 107
    assert len(V1_VALID[6][0]) == 104        # the TCP6 worst case of section 2.1


# -- version 1: invalid lines ------------------------------------------------

V1_INVALID = [
    (b'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', 'protocol family'),
    (b'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n', 'protocol family'),
    (b'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n', 'protocol family'),
    (b'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'protocol family'),
    (b'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', 'destination address'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', 'more than 6 fields'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'more than 6 fields'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', 'destination port missing'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8\r\n', 'source port missing'),
    (b'PROXY TCP4\r\n', 'source address missing'),
    (b'PROXY\r\n', 'protocol family missing'),
    (b'PROXY \r\n', 'protocol family'),
    (b'PROXY UNKNOWNX\r\n', 'protocol family'),
    (b'PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3. 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 ::1 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3.4 ::1 1 2\r\n', 'destination address'),
    (b'PROXY TCP4 localhost 5.6.7.8 1 2\r\n', 'source address'),
    (b'PROXY TCP6 1.2.3.4 ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP6 ::1 1.2.3.4 1 2\r\n', 'destination address'),
    (b'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP6 1::2::3 ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP6 12345::1 ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP6 [::1] ::1 1 2\r\n', 'source address'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n', 'destination port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 0x19\r\n', 'destination port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n', 'byte 0xd9'),     # Arabic-Indic digit one
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n', 'bare CR or LF'),
    (b'PROXY UNKNOWN\n\r\n', 'bare CR or LF'),
    (b'PROXY UNKNOWN \r \r\n', 'bare CR or LF'),
    (b'PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'byte 0x09'),
    (b'PROXY UNKNOWN \x00\r\n', 'byte 0x00'),
    (b'PROXY UNKNOWN \x7f\r\n', 'byte 0x7f'),
    (b'PROXY UNKNOWN ' + b'x' * 92 + b'\r\n', 'no CRLF within the first 107 bytes'),
]


@pytest.mark.parametrize('line, message', V1_INVALID)
def test_v1_invalid_line_is_rejected(line, message):
    assert message in error(line + AFTER)


@pytest.mark.parametrize('data, message', [
    # The error shows as soon as the bytes cannot start a valid header.
    (b'E', 'not a PROXY protocol header'),
    (b'EHLO', 'not a PROXY protocol header'),
    (b'\x16\x03\x01', 'not a PROXY protocol header'),     # a TLS ClientHello
    (b'proxy', 'not a PROXY protocol header'),
    (b'PX', 'keyword'),
    (b'PROXX', 'keyword'),
    (b'PROXYX', 'keyword'),
    (b'PROXY  ', 'protocol family'),
    (b'PROXY X', 'protocol family'),
    (b'PROXY TCP44', 'protocol family'),
    (b'PROXY UNKNOWNX', 'protocol family'),
    (b'PROXY TCP4 0', None),            # still fine: '0.0.0.0'
    (b'PROXY TCP4 01', 'source address'),
    (b'PROXY TCP4 256', 'source address'),
    (b'PROXY TCP4 1.2.3.4.', 'source address'),
    (b'PROXY TCP4 1..', 'source address'),
    (b'PROXY TCP4 a', 'source address'),
    (b'PROXY TCP4 1.2.3.4 ', None),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 65536', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 0', None),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 01', 'source port'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ', 'more than 6 fields'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r', None),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1\r', 'destination port missing'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', 'bare CR or LF'),
    (b'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', 'bare CR or LF'),
    (b'PROXY TCP6 :::', 'source address'),
    (b'PROXY TCP6 1::2::', 'source address'),
    (b'PROXY TCP6 12345', 'source address'),
    (b'PROXY TCP6 g', 'source address'),
    (b'PROXY TCP6 ::1%', 'source address'),
    (b'PROXY TCP6 1.2:', 'source address'),
    (b'PROXY TCP6 ::ffff:1.2.3.04', 'source address'),
    (b'PROXY TCP6 ::ffff:1.2.3.4', None),
    (b'PROXY UNKNOWN \x00', 'byte 0x00'),
    (b'PROXY UNKNOWN ' + b'x' * 93, 'no CRLF within the first 107 bytes'),
    (b'PROXY UNKNOWN ' + b'x' * 92, None),
])
def test_v1_decides_early(data, message):
    if message is None:
        assert parse_proxy_header(data) is None
    else:
        assert message in error(data)


@pytest.mark.parametrize('line', [line for line, _ in V1_VALID])
def test_v1_every_prefix_needs_more(line):
    for n in range(len(line)):
        assert parse_proxy_header(line[:n]) is None, line[:n]


@pytest.mark.parametrize('line', [line for line, _ in V1_VALID][:3] + [V1_VALID[7][0]])
def test_v1_split_anywhere_parses_the_same(line):
    expected = parse(line + AFTER)
    for i in range(len(line) + 1):
        for j in range(i, len(line) + len(AFTER) + 1):
            assert feed([(line + AFTER)[:i], (line + AFTER)[i:j], (line + AFTER)[j:]]) == expected


def feed(chunks):
    """Mimic the session loop: parse after every chunk received."""
    received = b''
    for chunk in chunks:
        received += chunk
        result = parse_proxy_header(received)
        if result is not None:
            return result
    return None


# -- version 2: families and commands -------------------------------------------

V2_VALID = [
    # PROXY command: each family
    (v2(0x21, 0x11, inet4()), (2, 'PROXY', 'TCP4', '192.0.2.1', 51000, '198.51.100.2', 25)),
    (v2(0x21, 0x12, inet4(sport=53, dport=5353)), (2, 'PROXY', 'UDP4', '192.0.2.1', 53, '198.51.100.2', 5353)),
    (v2(0x21, 0x21, inet6()), (2, 'PROXY', 'TCP6', '2001:db8::1', 51000, '2001:db8::2', 25)),
    (v2(0x21, 0x22, inet6('::ffff:192.0.2.1', '::', 0, 65535)),
     (2, 'PROXY', 'UDP6', '::ffff:c000:201', 0, '::', 65535)),
    (v2(0x21, 0x31, unix()), (2, 'PROXY', 'UNIX', '/run/client.sock', None, '/run/smtpd.sock', None)),
    (v2(0x21, 0x32, unix(b'\0abstract', b'')), (2, 'PROXY', 'UNIX_DGRAM', '\0abstract', None, '', None)),
    (v2(0x21, 0x00, b''), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    (v2(0x21, 0x00, b'ignored address information'), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    # Valid nibbles in a combination section 2.2 does not list: UNSPEC.
    (v2(0x21, 0x10, inet4()), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    (v2(0x21, 0x20, b''), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    (v2(0x21, 0x30, b''), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    (v2(0x21, 0x01, b''), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    (v2(0x21, 0x02, b'xyz'), (2, 'PROXY', 'UNSPEC', None, None, None, None)),
    # LOCAL command: the block is discarded, the family only reported.
    (v2(0x20, 0x00, b''), (2, 'LOCAL', 'UNSPEC', None, None, None, None)),
    (v2(0x20, 0x11, inet4()), (2, 'LOCAL', 'TCP4', None, None, None, None)),
    (v2(0x20, 0x12, inet4()), (2, 'LOCAL', 'UDP4', None, None, None, None)),
    (v2(0x20, 0x21, inet6()), (2, 'LOCAL', 'TCP6', None, None, None, None)),
    (v2(0x20, 0x22, inet6()), (2, 'LOCAL', 'UDP6', None, None, None, None)),
    (v2(0x20, 0x31, unix()), (2, 'LOCAL', 'UNIX', None, None, None, None)),
    (v2(0x20, 0x32, unix()), (2, 'LOCAL', 'UNIX_DGRAM', None, None, None, None)),
    (v2(0x20, 0x11, b''), (2, 'LOCAL', 'TCP4', None, None, None, None)),      # no block at all
    (v2(0x20, 0xFF, b'junk'), (2, 'LOCAL', 'UNSPEC', None, None, None, None)),  # "family ... ignored"
    (v2(0x20, 0x11, inet4() + b'\x01\x00\xff'), (2, 'LOCAL', 'TCP4', None, None, None, None)),  # bad TLV unread
]


@pytest.mark.parametrize('data, expected', V2_VALID)
def test_v2_each_command_and_family(data, expected):
    header, consumed = parse(data + AFTER)
    assert fields(header) == expected
    assert consumed == len(data)
    assert header.tlvs == []


@pytest.mark.parametrize('data', [data for data, _ in V2_VALID])
def test_v2_every_prefix_needs_more(data):
    for n in range(len(data)):
        assert parse_proxy_header(data[:n]) is None, n


@pytest.mark.parametrize('data', [V2_VALID[0][0], V2_VALID[2][0], V2_VALID[4][0], V2_VALID[14][0]])
def test_v2_split_anywhere_parses_the_same(data):
    stream = data + AFTER
    expected = parse(stream)
    for i in range(len(stream) + 1):
        assert feed([stream[:i], stream[i:]]) == expected


def test_unix_paths_stop_at_nul_and_keep_undecodable_bytes():
    header, _ = parse(v2(0x21, 0x31, unix(b'/a\0garbage', b'/\xff')))
    assert header.source_address == '/a'
    assert header.dest_address == '/\udcff'       # surrogate-escaped, like os.fsdecode


# -- version 2: invalid headers ---------------------------------------------------

def test_v2_bad_signature_is_seen_at_the_first_wrong_byte():
    for i in range(len(SIG)):
        wrong = bytearray(SIG)
        wrong[i] ^= 0x40
        data = bytes(wrong[:i + 1])
        if i == 0:
            assert 'not a PROXY protocol header' in error(data)
        else:
            assert 'bad signature' in error(data)


@pytest.mark.parametrize('ver_cmd, message', [
    (0x11, 'version 1 in byte 13'),
    (0x31, 'version 3 in byte 13'),
    (0x01, 'version 0 in byte 13'),
    (0xF1, 'version 15 in byte 13'),
    *[(0x20 | cmd, f'unknown command {cmd:#x}') for cmd in range(2, 16)],
])
def test_v2_bad_version_or_command_is_seen_at_byte_13(ver_cmd, message):
    assert message in error(SIG + bytes([ver_cmd]))


@pytest.mark.parametrize('fam, message', [
    *[((family << 4) | 1, f'unknown address family {family:#x}') for family in range(4, 16)],
    *[(0x10 | proto, f'unknown transport protocol {proto:#x}') for proto in range(3, 16)],
])
def test_v2_bad_family_is_seen_at_byte_14(fam, message):
    assert message in error(SIG + bytes([0x21, fam]))


@pytest.mark.parametrize('fam, length', [
    (0x11, 11), (0x12, 0), (0x21, 35), (0x22, 12), (0x31, 215), (0x32, 36),
])
def test_v2_length_too_short_for_the_family_is_seen_at_byte_16(fam, length):
    message = error(SIG + bytes([0x21, fam]) + struct.pack('!H', length))
    assert f'length {length} is shorter than' in message


V2_BAD_TLVS = [
    (b'\x00', 'truncated TLV'),
    (b'\x04\x00', 'truncated TLV'),
    (tlv(0x04, b'') + b'\x04', 'truncated TLV'),
    (b'\x04\x00\x05abcd', 'declares 5 bytes but only 4 remain'),
    (tlv(0x01, b'h2') + tlv(0x01, b'h2'), 'appears twice'),
    (tlv(0x02, b'a') + tlv(0x02, b'b'), 'appears twice'),
    (tlv(0x05, b'a') + tlv(0x05, b'b'), 'appears twice'),
    (tlv(0x20, bytes(5)) + tlv(0x20, bytes(5)), 'appears twice'),
    (tlv(0x30, b'a') + tlv(0x30, b'b'), 'appears twice'),
    (tlv(0x02, b'\xff'), 'authority is not utf-8 text'),
    (tlv(0x30, 'ns\u00e9'.encode()), 'netns is not ascii text'),
    (tlv(0x05, bytes(129)), '129 bytes long, more than 128'),
    (tlv(0x03, b'\0\0\0'), 'crc32c value is 3 bytes long, not 4'),
    (tlv(0x03, bytes(5)), 'crc32c value is 5 bytes long, not 4'),
    (tlv(0x20, bytes(4)), 'shorter than client and verify'),
    (tlv(0x20, bytes(5) + b'\x21\x00'), 'truncated SSL sub-TLV'),
    (tlv(0x20, bytes(5) + b'\x21\x00\x09TLSv1.3'), 'declares 9 bytes but only 7 remain'),
    (tlv(0x20, bytes(5) + tlv(0x21, b'TLSv1.3') + tlv(0x21, b'TLSv1.2')), 'SSL sub-TLV type 0x21 (version) appears twice'),
    (tlv(0x20, bytes(5) + tlv(0x21, b'TLS\xff')), 'version is not ascii text'),
    (tlv(0x20, bytes(5) + tlv(0x22, b'\xc3')), 'cn is not utf-8 text'),
    (tlv(0x20, bytes(5) + tlv(0x23, b'\x80')), 'cipher is not ascii text'),
]


@pytest.mark.parametrize('tlvs, message', V2_BAD_TLVS)
def test_v2_bad_tlvs_are_rejected(tlvs, message):
    assert message in error(v2(0x21, 0x11, inet4() + tlvs) + AFTER)


@pytest.mark.parametrize('fam, block', [(0x11, inet4()), (0x21, inet6()), (0x31, unix())])
def test_v2_tlvs_follow_the_address_block_of_every_family(fam, block):
    header, _ = parse(v2(0x21, fam, block + tlv(0x02, b'mx.example.com')))
    assert header.authority == 'mx.example.com'
    assert 'truncated TLV' in error(v2(0x21, fam, block + b'\x02'))


# -- version 2: TLVs ---------------------------------------------------------------

def test_v2_known_tlvs_are_decoded_and_all_are_kept_in_order():
    tlvs = [
        (0x04, b''), (0x01, b'\x02h2'), (0xE0, b'custom'), (0x02, 'm\u00fcnchen.example'.encode()),
        (0x05, b'\x00' * 128), (0x04, b'pad'), (0x30, b'blue'), (0xE0, b'again'), (0xF8, b'future'),
    ]
    data = v2(0x21, 0x11, inet4() + b''.join(tlv(k, v) for k, v in tlvs))
    header, consumed = parse(data + AFTER)
    assert consumed == len(data)
    assert header.tlvs == tlvs
    assert header.alpn == b'\x02h2'
    assert header.authority == 'm\u00fcnchen.example'
    assert header.unique_id == bytes(128)
    assert header.netns == 'blue'
    assert header.ssl is None and header.crc32c is None
    assert header.tlv(0xE0) == b'custom'
    assert header.tlv(0xEE) is None


def test_v2_ssl_tlv_with_nested_sub_tlvs():
    subs = [
        (0x21, b'TLSv1.3'), (0x22, 'J\u00fcrgen'.encode()), (0x23, b'TLS_AES_256_GCM_SHA384'),
        (0x24, b'RSA-SHA256'), (0x25, b'RSA2048'), (0x26, b'X25519'), (0x27, b'rsa_pss_rsae_sha256'),
        (0x28, b'\x30\x82\x01\x0a'), (0x2F, b'unknown sub-type'),
    ]
    value = bytes([0x07]) + struct.pack('!I', 0) + b''.join(tlv(k, v) for k, v in subs)
    header, _ = parse(v2(0x21, 0x21, inet6() + tlv(0x20, value)))
    assert header.tlvs == [(0x20, value)]
    assert header.ssl == {
        'client': 7, 'client_ssl': True, 'cert_conn': True, 'cert_sess': True,
        'verify': 0, 'cert_verified': True,
        'version': 'TLSv1.3', 'cn': 'J\u00fcrgen', 'cipher': 'TLS_AES_256_GCM_SHA384',
        'sig_alg': 'RSA-SHA256', 'key_alg': 'RSA2048', 'group': 'X25519',
        'sig_scheme': 'rsa_pss_rsae_sha256', 'client_cert': b'\x30\x82\x01\x0a',
        'tlvs': subs,
    }


@pytest.mark.parametrize('client, verify, expected', [
    (0x00, 0, dict(client_ssl=False, cert_conn=False, cert_sess=False, cert_verified=False)),
    (0x01, 0, dict(client_ssl=True, cert_conn=False, cert_sess=False, cert_verified=False)),
    (0x03, 0, dict(client_ssl=True, cert_conn=True, cert_sess=False, cert_verified=True)),
    (0x05, 0, dict(client_ssl=True, cert_conn=False, cert_sess=True, cert_verified=True)),
    (0x03, 20, dict(client_ssl=True, cert_conn=True, cert_sess=False, cert_verified=False)),
    (0xFF, 0xFFFFFFFF, dict(client_ssl=True, cert_conn=True, cert_sess=True, cert_verified=False)),
])
def test_v2_ssl_flags_and_verify(client, verify, expected):
    header, _ = parse(v2(0x21, 0x11, inet4() + tlv(0x20, bytes([client]) + struct.pack('!I', verify))))
    ssl = header.ssl
    assert (ssl['client'], ssl['verify']) == (client, verify)
    assert {key: ssl[key] for key in expected} == expected
    assert ssl['version'] is None and ssl['cn'] is None and ssl['tlvs'] == []


# -- version 2: CRC32C ----------------------------------------------------------------

def test_v2_crc32c_good():
    data = with_crc(v2(0x21, 0x11, inet4() + tlv(0x01, b'h2') + tlv(0x03, bytes(4))))
    header, consumed = parse(data + AFTER)
    assert consumed == len(data)
    assert header.crc32c == struct.unpack('!I', data[-4:])[0]
    assert header.alpn == b'h2'


def test_v2_crc32c_not_last_is_found():
    body = inet6() + tlv(0x03, bytes(4)) + tlv(0x04, b'padding')
    zeroed = v2(0x21, 0x21, body)
    at = 16 + 36 + 3
    data = zeroed[:at] + struct.pack('!I', crc32c(zeroed)) + zeroed[at + 4:]
    assert parse(data)[0].crc32c == crc32c(zeroed)


CRC_PROTECTED = with_crc(v2(0x21, 0x11, inet4() + tlv(0x04, b'xx') + tlv(0x03, bytes(4))))


# Every byte after the fixed part except the CRC TLV's own type byte (33):
# changed, it turns the checksum into another TLV that nothing checks.
@pytest.mark.parametrize('index', [i for i in range(16, len(CRC_PROTECTED)) if i != 33])
@pytest.mark.parametrize('bit', [0x01, 0x80])
def test_v2_crc32c_catches_any_flipped_bit_after_byte_16(index, bit):
    data = bytearray(CRC_PROTECTED)
    data[index] ^= bit
    # A flip may break the TLV structure first; either way no header comes out.
    with pytest.raises(ProxyError):
        parse_proxy_header(bytes(data))


def test_v2_crc32c_mismatch_message():
    data = with_crc(v2(0x21, 0x11, inet4() + tlv(0x03, bytes(4))))
    bad = data[:-1] + bytes([data[-1] ^ 0xFF])
    assert 'CRC32C mismatch' in error(bad)
    tampered = data[:16] + inet4(sport=51001) + data[28:]
    assert 'CRC32C mismatch' in error(tampered)


def test_v2_crc32c_is_ignored_for_local():
    data = v2(0x20, 0x11, inet4() + tlv(0x03, b'\xde\xad\xbe\xef'))
    header, consumed = parse(data)
    assert (header.command, header.crc32c, consumed) == ('LOCAL', None, len(data))


# -- length limits and trailing bytes --------------------------------------------

def test_v2_largest_header():
    body = inet4() + tlv(0x04, bytes(0xFFFF - 12 - 3))
    data = v2(0x21, 0x11, body)
    assert len(data) == proxy.V2_MAX_LENGTH == 16 + 65535
    header, consumed = parse(data + AFTER)
    assert consumed == len(data)
    assert parse_proxy_header(data[:-1]) is None


@pytest.mark.parametrize('header', [line for line, _ in V1_VALID] + [data for data, _ in V2_VALID])
@pytest.mark.parametrize('trailing', [b'', AFTER, b'\x16\x03\x01\x02\x00', b'PROXY UNKNOWN\r\n', SIG + b'\x21'])
def test_bytes_after_the_header_are_not_consumed(header, trailing):
    parsed, consumed = parse(header + trailing)
    assert consumed == len(header)
    assert (parsed, consumed) == parse(header)


def test_accepts_bytearray_and_memoryview():
    line = V1_VALID[0][0]
    assert parse(bytearray(line)) == parse(memoryview(line)) == parse(line)


def test_empty_input_needs_more():
    assert parse_proxy_header(b'') is None


# -- builders -----------------------------------------------------------------------

@pytest.mark.parametrize('args, kwargs, expected', [
    (('192.0.2.1', 51000, '198.51.100.2', 25), {}, b'PROXY TCP4 192.0.2.1 198.51.100.2 51000 25\r\n'),
    (('2001:DB8::1', 1, '::1', 2), {}, b'PROXY TCP6 2001:db8::1 ::1 1 2\r\n'),
    ((ipaddress.ip_address('10.0.0.1'), 0, ipaddress.ip_address('10.0.0.2'), 65535), {},
     b'PROXY TCP4 10.0.0.1 10.0.0.2 0 65535\r\n'),
    ((), {}, b'PROXY UNKNOWN\r\n'),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'family': 'UNKNOWN'}, b'PROXY UNKNOWN\r\n'),
])
def test_build_proxy_v1(args, kwargs, expected):
    assert build_proxy_v1(*args, **kwargs) == expected


@pytest.mark.parametrize('args, kwargs', [
    (('192.0.2.1', 1, '::1', 2), {}),
    (('::1', 1, '192.0.2.1', 2), {}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'family': 'TCP6'}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'family': 'UDP4'}),
    (('192.0.2.1', 65536, '192.0.2.2', 2), {}),
    (('192.0.2.1', -1, '192.0.2.2', 2), {}),
    (('192.0.2.1', True, '192.0.2.2', 2), {}),
    (('192.0.2.1', '25', '192.0.2.2', 2), {}),
    (('192.0.2.1', 1, None, 2), {}),
    (('localhost', 1, '192.0.2.2', 2), {}),
])
def test_build_proxy_v1_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ValueError):
        build_proxy_v1(*args, **kwargs)


def test_build_proxy_v2_matches_hand_assembled_bytes():
    assert build_proxy_v2('192.0.2.1', 51000, '198.51.100.2', 25) == v2(0x21, 0x11, inet4())
    assert build_proxy_v2('2001:db8::1', 51000, '2001:db8::2', 25) == v2(0x21, 0x21, inet6())
    assert build_proxy_v2('192.0.2.1', 51000, '198.51.100.2', 25, family='UDP4') == v2(0x21, 0x12, inet4())
    assert build_proxy_v2('/run/client.sock', None, b'/run/smtpd.sock', None, family='UNIX') == v2(0x21, 0x31, unix())
    assert build_proxy_v2() == v2(0x21, 0x00, b'')
    assert build_proxy_v2(command='LOCAL') == v2(0x20, 0x00, b'')
    assert build_proxy_v2('192.0.2.1', 51000, '198.51.100.2', 25, command='LOCAL') == v2(0x20, 0x11, inet4())
    assert (build_proxy_v2('192.0.2.1', 51000, '198.51.100.2', 25, tlvs=[(1, b'h2'), (0xE0, b'')])
            == v2(0x21, 0x11, inet4() + tlv(1, b'h2') + tlv(0xE0, b'')))
    assert (build_proxy_v2('192.0.2.1', 51000, '198.51.100.2', 25, crc=True)
            == with_crc(v2(0x21, 0x11, inet4() + tlv(3, bytes(4)))))


def test_build_ssl_tlv():
    kind, value = build_ssl_tlv(0x03, 0, version='TLSv1.3', cn='client', cipher='C', sig_alg='S',
                                key_alg='K', sub_tlvs=[(0x28, b'DER')])
    assert kind == 0x20
    assert value == (b'\x03\0\0\0\0' + tlv(0x21, b'TLSv1.3') + tlv(0x22, b'client') + tlv(0x23, b'C')
                     + tlv(0x24, b'S') + tlv(0x25, b'K') + tlv(0x28, b'DER'))
    assert build_ssl_tlv() == (0x20, b'\x01\0\0\0\0')


@pytest.mark.parametrize('args, kwargs', [
    ((), {'command': 'HEALTH'}),
    ((), {'family': 'SCTP4'}),
    (('192.0.2.1', 1, '::1', 2), {}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'family': 'TCP6'}),
    (('192.0.2.1', 70000, '192.0.2.2', 2), {}),
    (('/' + 'x' * 108, None, '/y', None), {'family': 'UNIX'}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'tlvs': [(256, b'')]}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'tlvs': [(1, bytes(65536))]}),
    (('192.0.2.1', 1, '192.0.2.2', 2), {'tlvs': [(4, bytes(65535 - 12 - 3 + 1))]}),
])
def test_build_proxy_v2_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ValueError):
        build_proxy_v2(*args, **kwargs)


def test_build_proxy_v2_largest_is_accepted():
    data = build_proxy_v2('192.0.2.1', 1, '192.0.2.2', 2, tlvs=[(4, bytes(65535 - 12 - 3))])
    assert len(data) == proxy.V2_MAX_LENGTH


# -- properties --------------------------------------------------------------------------

PREFIXES = [b'', b'P', b'PROXY ', b'PROXY TCP4 ', b'PROXY TCP6 ', b'PROXY UNKNOWN ',
            b'PROXY TCP4 1.2.3.4 5.6.7.8 ', SIG, SIG + b'\x21', SIG + b'\x20', SIG + b'\x21\x11',
            SIG + b'\x21\x11\x00\x0c', SIG + b'\x21\x21\x00\x24', SIG + b'\x21\x31\x00\xd8']


def check_contract(data):
    try:
        result = parse_proxy_header(data)
    except ProxyError as exc:
        assert str(exc)
        return
    if result is not None:
        header, consumed = result
        assert isinstance(header, ProxyHeader)
        assert 0 < consumed <= len(data)
        assert parse_proxy_header(data[:consumed]) == result


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_proxy_error(data):
    check_contract(data)


@settings(max_examples=1000)
@given(st.sampled_from(PREFIXES), st.binary(max_size=300))
def test_random_bytes_after_a_plausible_start_only_ever_raise_proxy_error(prefix, data):
    check_contract(prefix + data)


@settings(max_examples=500)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=400))
def test_random_v2_bodies_only_ever_raise_proxy_error(ver_cmd, fam, body):
    check_contract(v2(ver_cmd, fam, body))
    check_contract(v2(0x21, fam, body))


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=6),
       st.sampled_from([0x11, 0x21, 0x31]))
def test_random_tlvs_only_ever_raise_proxy_error(tlvs, fam):
    block = {0x11: inet4(), 0x21: inet6(), 0x31: unix()}[fam]
    check_contract(v2(0x21, fam, block + b''.join(tlv(k, v) for k, v in tlvs)))


ports = st.integers(0, 65535)


@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                 st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))),
       ports, ports, st.binary(max_size=20))
def test_v1_round_trip(addresses, sport, dport, trailing):
    src, dst = addresses
    data = build_proxy_v1(src, sport, dst, dport)
    header, consumed = parse(data + trailing)
    assert consumed == len(data) <= 104
    assert fields(header) == (1, 'PROXY', f'TCP{src.version}', str(src), sport, str(dst), dport)


# Types the parser decodes have a shape to respect; everything else is opaque.
free_tlvs = st.lists(st.tuples(st.integers(0, 255).filter(lambda t: t not in proxy._TLV_FIELDS),
                               st.binary(max_size=64)), max_size=5)


@given(st.sampled_from(['TCP4', 'UDP4', 'TCP6', 'UDP6']), st.data(), ports, ports, free_tlvs,
       st.booleans(), st.binary(max_size=20))
def test_v2_inet_round_trip(family, data, sport, dport, tlvs, crc, trailing):
    version = int(family[3])
    src = data.draw(st.ip_addresses(v=version))
    dst = data.draw(st.ip_addresses(v=version))
    built = build_proxy_v2(src, sport, dst, dport, family=family, tlvs=tlvs, crc=crc)
    header, consumed = parse(built + trailing)
    assert consumed == len(built)
    assert fields(header) == (2, 'PROXY', family, str(src), sport, str(dst), dport)
    assert header.tlvs[:len(tlvs)] == tlvs
    assert (header.crc32c is not None) == crc


path_text = st.text(st.characters(blacklist_characters='\0', blacklist_categories=('Cs',)), max_size=26)


@given(st.sampled_from(['UNIX', 'UNIX_DGRAM']), path_text, path_text, st.booleans())
def test_v2_unix_round_trip(family, src, dst, abstract):
    if abstract:
        src = '\0' + src if src else ''
    built = build_proxy_v2(src, None, dst, None, family=family)
    assert parse(built)[0].source_address == src
    assert parse(built)[0].dest_address == dst


@given(st.integers(0, 255), st.integers(0, 2**32 - 1),
       st.dictionaries(st.sampled_from(['version', 'cn', 'cipher', 'sig_alg', 'key_alg']),
                       st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
       st.binary(max_size=20), st.binary(max_size=128), st.text(max_size=40))
def test_v2_decoded_tlvs_round_trip(client, verify, ssl_fields, alpn, unique_id, authority):
    tlvs = [(0x01, alpn), (0x02, authority.encode('utf-8', 'surrogatepass')), (0x05, unique_id),
            build_ssl_tlv(client, verify, **ssl_fields)]
    try:
        authority.encode('utf-8')
    except UnicodeEncodeError:
        assert 'authority' in error(build_proxy_v2(tlvs=tlvs, source_address='::1', source_port=1,
                                                   dest_address='::2', dest_port=2))
        return
    header, _ = parse(build_proxy_v2('::1', 1, '::2', 2, tlvs=tlvs, crc=True))
    assert (header.alpn, header.authority, header.unique_id) == (alpn, authority, unique_id)
    assert (header.ssl['client'], header.ssl['verify']) == (client, verify)
    for name, value in ssl_fields.items():
        assert header.ssl[name] == value
