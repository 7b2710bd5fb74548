"""The frames between the SMTP process and its store process (store_process.py).

Pure: bytes in, values out; no socket. Every frame is a 4-byte big-endian
length and that many bytes. The parent's first frame is the store's
settings (a pickle: both ends are this package, over a socket pair no one
else holds); the child answers it with a reply of sequence 0, empty when
the store opened, else saying why it did not. Then each message is a frame
of its own:

    seq (4) | length of the envelope (4) | envelope: JSON [rcpt, user, sender] | the message

and each is answered, in the order the child took them, by

    seq (4) | deleted (4) | duplicate (1) | error, UTF-8: empty when the message is stored

where `deleted` counts the messages pruning took out while storing it
(the parent keeps the inbox's count of deleted messages), and
`duplicate` is 1 for a message not stored, without an error, because
one with its Message-ID is in its mailbox (Mailpit's --ignore-duplicate-ids).
"""
from __future__ import annotations

import json
import struct
from collections.abc import Sequence

from .store import Incoming

LENGTH = struct.Struct('>I')
SEQ_AND_LENGTH = struct.Struct('>II')
REPLY_HEAD = struct.Struct('>IIB')
MAX_FRAME = (1 << 32) - 1       # what 4 bytes can say: a message is refused before this


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def message_head(seq: int, recipients: Sequence[str], username: str | None,
                 sender: str | None, size: int) -> bytes:
    """The start of a message's frame: the `size` bytes of the message follow it."""
    envelope = json.dumps([list(recipients), username, sender]).encode()
    length = SEQ_AND_LENGTH.size + len(envelope) + size
    if length > MAX_FRAME:
        raise ValueError(f'a message of {size} bytes is too large for the store process')
    return LENGTH.pack(length) + SEQ_AND_LENGTH.pack(seq, len(envelope)) + envelope


def read_message(payload: bytes) -> tuple[int, Incoming]:
    """(seq, (raw, recipients, user, sender)) of a message's frame."""
    seq, length = SEQ_AND_LENGTH.unpack_from(payload)
    start = SEQ_AND_LENGTH.size
    recipients, username, sender = json.loads(payload[start:start + length])
    return seq, (payload[start + length:], recipients, username, sender)


def reply(seq: int, deleted: int = 0, error: str = '', duplicate: bool = False) -> bytes:
    return frame(REPLY_HEAD.pack(seq, deleted, duplicate) + error.encode('utf-8', 'replace'))


def read_reply(payload: bytes) -> tuple[int, int, bool, str]:
    """(seq, deleted, duplicate, error) of a reply; error '' when stored
    (or, duplicate, when left out)."""
    seq, deleted, duplicate = REPLY_HEAD.unpack_from(payload)
    return seq, deleted, bool(duplicate), payload[REPLY_HEAD.size:].decode('utf-8', 'replace')


class Frames:
    """The complete frames of a byte stream, as its pieces arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames = []
        start, end = 0, len(buffer)
        with memoryview(buffer) as view:        # one copy of each frame, not two
            while end - start >= LENGTH.size:
                (length,) = LENGTH.unpack_from(view, start)
                if end - start - LENGTH.size < length:
                    break
                start += LENGTH.size
                frames.append(bytes(view[start:start + length]))
                start += length
        del buffer[:start]      # from the front of a bytearray: the rest is not moved
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buffer)
