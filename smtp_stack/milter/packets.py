"""Milter packets on the wire, without sockets: the framing both sides
share (protocol.py reads and writes what is inside a packet).

A packet is a 32-bit length in network order, then that many bytes: one
command byte and its data ([pmilter] "LINK/PACKET PROTOCOL"; [mfdef]
MILTER_LEN_BYTES; the sources are named in protocol.py). `PacketReader`
splits a byte stream into packets; a packet too long or empty raises
`ProtocolError` with why.
"""
from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

LEN_BYTES = 4               # [mfdef] MILTER_LEN_BYTES
CHUNK_SIZE = 65535          # [mfdef] MILTER_CHUNK_SIZE: body chunks, both ways
# What this module accepts by default: Postfix sends a header field of up to
# header_size_limit (100 KiB) in one packet, over libmilter's 64 KiB default
# ([mfdef] MILTER_MAX_DATA_SIZE); 1 MiB is libmilter's largest ([mfdef] MILTER_MDS_1M).
MAX_PACKET = 1 << 20

_LENGTH = struct.Struct('>I')


class ProtocolError(Exception):
    """A packet this side cannot take: `reason` says why (for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Packet(NamedTuple):
    """One packet: its command (or reply) letter and its data."""
    command: str
    data: bytes


class PacketReader:
    """Packets out of a byte stream: `feed(data)`, then `next_packet()`
    until it returns None (a packet is not complete yet). A packet longer
    than `max_size` (its length counts the command byte) raises
    ProtocolError as soon as its length is read, before its data is
    buffered (after the packets before it were returned).

    Made for one recv() holding many packets (Postfix writes the macros of
    a message and its end in one go): `feed` slices every complete packet
    out of the bytes as they came, into `ready` (a deque a caller may pop
    from directly), without copying them into a buffer first. Only the
    bytes of a packet split across recv()s are kept, and joined once its
    last piece is there, so a packet of n bytes in k pieces costs O(n),
    never O(n k).

    With a `held` list (the milter side), SMFIC_MACRO packets that come
    while `ready` is empty are not made packets: their name/value strings
    (without the stage letter; complete pairs, each string NUL-terminated)
    go to `held`, for the event that follows to take in (an MTA sends a
    packet of macros per stage, skipped stages included: most packets are
    these). Macros are never taken out of order: once a packet waits in
    `ready`, those after it wait there too; an empty SMFIC_MACRO is
    dropped, and one that is not well formed (no NUL at its end, a name
    without its value) goes to `ready`, for its reader to refuse or trim."""

    __slots__ = ('max_size', 'ready', 'error', 'held', '_rest', '_parts', '_parted',
                 '_needed')

    def __init__(self, max_size: int = MAX_PACKET, held: list[bytes] | None = None) -> None:
        self.max_size = max_size
        self.ready: deque[Packet] = deque()     # complete packets, in order
        self.held = held
        # A bad length: the stream ends there (next_packet raises it once
        # `ready` is empty; a transport checks it before reading more).
        self.error: ProtocolError | None = None
        self._rest = b''            # the start of a packet not complete yet
        self._parts: list[bytes] = []   # pieces received after _rest, not joined yet
        self._parted = 0                # their length
        self._needed = LEN_BYTES        # bytes the next packet needs, length included

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self._rest:
            self._parts.append(bytes(data))
            self._parted += len(data)
            if len(self._rest) + self._parted < self._needed:
                return
            data = self._rest + b''.join(self._parts)
            self._parts, self._parted = [], 0
        else:
            data = bytes(data)
        ready, limit, held = self.ready, self.max_size, self.held
        append = ready.append
        holding = held is not None and not ready    # until a packet waits in `ready`
        size, pos = len(data), 0
        while size - pos >= LEN_BYTES:
            length = _unpack_length(data, pos)[0]
            if not 0 < length <= limit:
                self.error = ProtocolError(
                    'a packet of length 0 (no command byte)' if length < 1 else
                    f'a packet of {length} bytes, over the limit of {limit}')
                self._rest = b''
                return
            end = pos + LEN_BYTES + length
            if end > size:
                self._needed = LEN_BYTES + length
                break
            letter = data[pos + 4]
            if holding and letter == _MACRO_BYTE and (
                    length == 2 or data[end - 1] == 0
                    and not data.count(0, pos + 6, end) & 1):
                if length > 2:
                    held.append(data[pos + 6:end])      # type: ignore[union-attr]
            else:
                append(_new_packet(Packet, (_LETTERS[letter], data[pos + 5:end])))
                holding = False
            pos = end
        else:
            self._needed = LEN_BYTES
        self._rest = data[pos:] if pos else data

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned in a packet."""
        return (sum(LEN_BYTES + 1 + len(packet.data) for packet in self.ready)
                + len(self._rest) + self._parted)

    def next_packet(self) -> Packet | None:
        if self.ready:
            return self.ready.popleft()
        if self.error is not None:      # [milter8] milter8_read_resp: "bad packet length"
            raise self.error
        return None


_unpack_length = _LENGTH.unpack_from
_new_packet = tuple.__new__         # a Packet without NamedTuple's Python-level __new__
_LETTERS = [chr(byte) for byte in range(256)]
_MACRO_BYTE = ord('D')              # SMFIC_MACRO


def encode_packet(command: str, data: bytes = b'') -> bytes:
    """One packet on the wire."""
    return _LENGTH.pack(len(data) + 1) + command.encode('latin-1') + data

