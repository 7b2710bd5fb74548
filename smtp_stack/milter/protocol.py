"""The milter protocol (Sendmail 8's mail filter protocol) without sockets.

Both directions share this module: the MTA side (smtp_stack calling a
milter) and the milter side (smtp_stack inside Postfix or Sendmail) are
thin users of it, each with its own transport. The protocol has no RFC;
where each fact comes from is cited beside it:
  [mfdef]   sendmail include/libmilter/mfdef.h (8.14/8.15)
  [mfapi]   sendmail include/libmilter/mfapi.h
  [milter8] Postfix src/milter/milter8.c (what Postfix sends and accepts)
  [pmilter] Sendmail::PMilter doc/milter-protocol.txt (the layouts, v2)

Packets (a length, a command byte, its data) are split and framed by
packets.py (`PacketReader`, `encode_packet`, re-exported here); the data of
each packet is read by its layout (`LAYOUTS`, `decode`) and written by the
same. A malformed packet raises `ProtocolError` with why.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeAlias

# The framing lives in packets.py; its names are read here too (P.Packet ...).
from .packets import CHUNK_SIZE as CHUNK_SIZE
from .packets import LEN_BYTES as LEN_BYTES
from .packets import MAX_PACKET as MAX_PACKET
from .packets import Packet as Packet
from .packets import PacketReader as PacketReader
from .packets import ProtocolError as ProtocolError
from .packets import encode_packet as encode_packet

# -- versions -------------------------------------------------------------------------

PROTOCOL_VERSION = 6        # [mfdef] SMFI_PROT_VERSION
OLDEST_VERSION = 2          # [milter8] milter8_versions: Postfix speaks 2, 3, 4 and 6

_LENGTH = struct.Struct('>I')
_U16 = struct.Struct('>H')
_U32 = struct.Struct('>I')


# -- commands, MTA to milter ([mfdef] SMFIC_*) ----------------------------------------

ABORT = 'A'         # abort the message (no reply)
BODY = 'B'          # a body chunk
CONNECT = 'C'       # the SMTP client
MACRO = 'D'         # macros for the command that follows (no reply)
EOB = 'E'           # end of the body: the end of the message
HELO = 'H'          # HELO/EHLO
QUIT_NC = 'K'       # quit, a new connection follows (v6; no reply)
HEADER = 'L'        # one header field
MAIL = 'M'          # MAIL FROM
EOH = 'N'           # end of the header
OPTNEG = 'O'        # option negotiation (also the milter's answer to it)
QUIT = 'Q'          # the end of the connection (no reply)
RCPT = 'R'          # RCPT TO
DATA = 'T'          # DATA (v4 and later)
UNKNOWN = 'U'       # an SMTP command the MTA does not know (v3 and later)

# -- replies, milter to MTA ([mfdef] SMFIR_*) -----------------------------------------

ADDRCPT = '+'       # add a recipient
DELRCPT = '-'       # delete a recipient (as the MTA sent it in RCPT)
ADDRCPT_PAR = '2'   # add a recipient with ESMTP arguments (8.14)
SHUTDOWN = '4'      # 421: close the SMTP connection
ACCEPT = 'a'        # accept the message (or, at connect, the connection)
REPLBODY = 'b'      # a chunk of the new body
CONTINUE = 'c'      # go on
DISCARD = 'd'       # accept and throw the message away
CHGFROM = 'e'       # change the envelope sender (8.14)
CONN_FAIL = 'f'     # make the connection fail
ADDHEADER = 'h'     # append a header field
INSHEADER = 'i'     # insert a header field at an index
SETSYMLIST = 'l'    # (in the negotiation) the macros wanted per stage
CHGHEADER = 'm'     # change (an empty value: delete) the index'th field of a name
PROGRESS = 'p'      # still working: the MTA restarts its timer
QUARANTINE = 'q'    # hold the message, with a reason
REJECT = 'r'        # 5xx
SKIP = 's'          # no more events of this kind (body chunks)
TEMPFAIL = 't'      # 4xx
REPLYCODE = 'y'     # this SMTP reply

# -- actions the milter may take ([mfdef]/[mfapi] SMFIF_*) ------------------------------

ADDHDRS = 0x001     # add (and insert) header fields
CHGBODY = 0x002     # replace the body
ADD_RCPT = 0x004    # add recipients
DEL_RCPT = 0x008    # delete recipients
CHGHDRS = 0x010     # change and delete header fields
QUARANTINE_ACTION = 0x020   # quarantine (8.13)
CHANGE_FROM = 0x040         # change the sender (8.14)
ADD_RCPT_PAR = 0x080        # add recipients with ESMTP arguments (8.14)
SET_SYMLIST = 0x100         # ask for macros (8.14)

# -- protocol flags: what the MTA need not send, or need not wait for ([mfdef] SMFIP_*) ---

NOCONNECT, NOHELO, NOMAIL, NORCPT = 0x01, 0x02, 0x04, 0x08
NOBODY, NOHDRS, NOEOH = 0x10, 0x20, 0x40
NR_HDR = 0x80               # no reply per header field (also SMFIP_NOHREPL)
NOUNKNOWN, NODATA = 0x100, 0x200
SKIP_OK = 0x400             # the MTA understands SMFIR_SKIP
RCPT_REJ = 0x800            # send rejected recipients too
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
HDR_LEADSPC = 0x100000      # header values keep their leading space, both ways
MDS_256K, MDS_1M = 0x10000000, 0x20000000

# -- macro stages, in the negotiation's macro lists ([mfapi] SMFIM_*) ------------------

STAGE_CONNECT, STAGE_HELO, STAGE_MAIL, STAGE_RCPT = 0, 1, 2, 3
STAGE_DATA, STAGE_EOM, STAGE_EOH = 4, 5, 6
# The command whose macros each stage's list names ([milter8] milter8_macro_offsets).
STAGE_COMMANDS = {STAGE_CONNECT: CONNECT, STAGE_HELO: HELO, STAGE_MAIL: MAIL,
                  STAGE_RCPT: RCPT, STAGE_DATA: DATA, STAGE_EOM: EOB, STAGE_EOH: EOH}

# -- address families in CONNECT ([mfdef] SMFIA_*) --------------------------------------

FAMILY_UNKNOWN, FAMILY_UNIX, FAMILY_INET, FAMILY_INET6 = 'U', 'L', '4', '6'


class Step(NamedTuple):
    """One event of a transaction: its command, the flag that keeps the
    MTA from sending it, and the flag that keeps it from awaiting a reply."""
    command: str
    skip: int
    no_reply: int


# [milter8] milter8_event_masks, and the SMFIP_NR_* of [mfdef].
STEPS = (Step(CONNECT, NOCONNECT, NR_CONN), Step(HELO, NOHELO, NR_HELO),
         Step(MAIL, NOMAIL, NR_MAIL), Step(RCPT, NORCPT, NR_RCPT),
         Step(DATA, NODATA, NR_DATA), Step(HEADER, NOHDRS, NR_HDR),
         Step(EOH, NOEOH, NR_EOH), Step(BODY, NOBODY, NR_BODY),
         Step(UNKNOWN, NOUNKNOWN, NR_UNKN))
STEP_OF = {step.command: step for step in STEPS}
# Commands never answered ([pmilter] "Expected response: NONE").
UNANSWERED = frozenset({ABORT, MACRO, QUIT, QUIT_NC})


def expects_reply(command: str, protocol: int) -> bool:
    """Whether the MTA waits for a reply to `command`, given the protocol
    flags the milter answered in the negotiation."""
    if command in UNANSWERED:
        return False
    step = STEP_OF.get(command)
    return step is None or not protocol & step.no_reply


# -- layouts --------------------------------------------------------------------------

# Field types: a NUL-terminated string (STR), the NUL-terminated strings up
# to the end (STRS), integers in network order (U16, U32), one character
# (CHAR), the rest as bytes (RAW), and (stage, names) pairs up to the end
# (LISTS: a U32 then a STR, each). A type ending in '?' may be absent: the
# data ends before it.
STR, STRS, U16, U32, CHAR, RAW, LISTS = 'str', 'strs', 'u16', 'u32', 'char', 'raw', 'lists'
Layout: TypeAlias = 'tuple[str, ...]'
# What a decoded field is: text (str), a list of strings, a number, bytes,
# or {stage: macro names}; None for an optional field that was absent.
Field: TypeAlias = 'str | list[str] | int | bytes | dict[int, str] | None'

COMMAND_LAYOUTS: dict[str, Layout] = {
    ABORT: (), BODY: (RAW,), EOB: (RAW,), EOH: (), DATA: (), QUIT: (), QUIT_NC: (),
    CONNECT: (STR, CHAR, U16 + '?', STR + '?'),     # [pmilter] SMFIC_CONNECT
    MACRO: (CHAR, STRS),        # the command, then name, value, name, value ...
    HELO: (STR,), MAIL: (STRS,), RCPT: (STRS,),     # args[0]: the path, in <>
    HEADER: (STR, STR), UNKNOWN: (STR,),
    OPTNEG: (U32, U32, U32),    # version, actions (SMFIF), protocol (SMFIP)
}
REPLY_LAYOUTS: dict[str, Layout] = {
    ACCEPT: (), CONTINUE: (), DISCARD: (), REJECT: (), TEMPFAIL: (), SKIP: (),
    PROGRESS: (), SHUTDOWN: (), CONN_FAIL: (),
    REPLYCODE: (STR,),          # '550 5.7.1 text', lines joined by CRLF
    ADDHEADER: (STR, STR), INSHEADER: (U32, STR, STR), CHGHEADER: (U32, STR, STR),
    ADDRCPT: (STR,), DELRCPT: (STR,), ADDRCPT_PAR: (STR, STR + '?'),
    CHGFROM: (STR, STR + '?'),  # [milter8] SMFIR_CHGFROM: the ESMTP arguments optional
    QUARANTINE: (STR,), REPLBODY: (RAW,),
    OPTNEG: (U32, U32, U32, LISTS + '?'),   # [milter8] milter8_connect: macro lists after
}
NAMES = {'A': 'SMFIC_ABORT', 'B': 'SMFIC_BODY', 'C': 'SMFIC_CONNECT', 'D': 'SMFIC_MACRO',
         'E': 'SMFIC_BODYEOB', 'H': 'SMFIC_HELO', 'K': 'SMFIC_QUIT_NC', 'L': 'SMFIC_HEADER',
         'M': 'SMFIC_MAIL', 'N': 'SMFIC_EOH', 'O': 'SMFIC_OPTNEG', 'Q': 'SMFIC_QUIT',
         'R': 'SMFIC_RCPT', 'T': 'SMFIC_DATA', 'U': 'SMFIC_UNKNOWN'}


def name_of(command: str) -> str:
    """'SMFIC_MAIL' for 'M'; an unknown letter as its repr."""
    return NAMES.get(command, repr(command))


def decode(layout: Layout, data: bytes, what: str = 'packet') -> list[Field]:
    """The fields of `data` read by `layout`; ProtocolError when the data
    is short, lacks a NUL, or has bytes left over. Text is UTF-8, other
    bytes kept as surrogate escapes (encode() gives them back)."""
    if layout == _JUST_RAW:     # a body chunk, the end of the body: the bytes as they are
        return [data]
    fields: list[Field] = []
    pos, size = 0, len(data)
    for kind, optional in _compiled(layout):
        if pos == size and optional:
            fields.append(None)
            continue
        if kind == STR:
            end = data.find(b'\0', pos)
            if end < 0:
                raise ProtocolError(f'{what}: a string without its terminating NUL')
            fields.append(_text(data[pos:end]))
            pos = end + 1
        elif kind == STRS:
            fields.append(_strings(data[pos:], what))
            pos = size
        elif kind in (U16, U32):
            width = 2 if kind == U16 else 4
            if size - pos < width:
                raise ProtocolError(f'{what}: {size - pos} bytes where a {width}-byte '
                                    f'number belongs')
            fields.append(int.from_bytes(data[pos:pos + width], 'big'))
            pos += width
        elif kind == CHAR:
            if pos == size:
                raise ProtocolError(f'{what}: a one-byte field is missing')
            fields.append(chr(data[pos]))
            pos += 1
        elif kind == RAW:
            fields.append(data[pos:])
            pos = size
        else:       # LISTS
            fields.append(_lists(data[pos:], what))
            pos = size
    if pos != size:
        raise ProtocolError(f'{what}: {size - pos} bytes after the last field')
    return fields


_JUST_RAW = (RAW,)


def encode(layout: Layout, fields: Sequence[Field]) -> bytes:
    """The data of a packet: `fields` written by `layout` (an optional
    field that is None is left out, with all after it)."""
    parts: list[bytes] = []
    for (kind, optional), value in zip(_compiled(layout), fields, strict=False):
        if value is None and optional:
            break
        if kind == STR:
            parts.append(_string(value))
        elif kind == STRS:
            assert isinstance(value, list)
            parts.extend(_string(each) for each in value)
        elif kind == U32:
            assert isinstance(value, int)
            parts.append(_U32.pack(value))
        elif kind == U16:
            assert isinstance(value, int)
            parts.append(_U16.pack(value))
        elif kind == CHAR:
            assert isinstance(value, str) and len(value) == 1
            parts.append(value.encode('latin-1'))
        elif kind == RAW:
            assert isinstance(value, bytes)
            parts.append(value)
        else:       # LISTS
            assert isinstance(value, dict)
            for stage, names in value.items():
                parts.append(_U32.pack(stage) + _string(names))
    return b''.join(parts)


def _compiled(layout: Layout) -> tuple[tuple[str, bool], ...]:
    """(kind, optional) for each field of `layout`, worked out once per layout."""
    compiled = _COMPILED.get(layout)
    if compiled is None:
        compiled = _COMPILED[layout] = tuple((kind.rstrip('?'), kind.endswith('?'))
                                             for kind in layout)
    return compiled


_COMPILED: dict[Layout, tuple[tuple[str, bool], ...]] = {}


def _string(value: Field) -> bytes:
    """A NUL-terminated string (ValueError for one holding NUL)."""
    assert isinstance(value, str)
    if '\0' in value:
        raise ValueError(f'a milter string cannot hold NUL: {value!r}')
    return value.encode('utf-8', 'surrogateescape') + b'\0'


def _text(raw: bytes) -> str:
    return raw.decode('utf-8', 'surrogateescape')


def _strings(data: bytes, what: str) -> list[str]:
    if not data:
        return []
    if not data.endswith(b'\0'):
        raise ProtocolError(f'{what}: a string without its terminating NUL')
    return [_text(each) for each in data[:-1].split(b'\0')]


def _lists(data: bytes, what: str) -> dict[int, str]:
    lists: dict[int, str] = {}
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ProtocolError(f'{what}: a macro list without its stage number')
        stage = int.from_bytes(data[pos:pos + 4], 'big')
        end = data.find(b'\0', pos + 4)
        if end < 0:
            raise ProtocolError(f'{what}: a macro list without its terminating NUL')
        lists[stage] = _text(data[pos + 4:end])
        pos = end + 1
    return lists


def read_command(packet: Packet) -> list[Field]:
    """The fields of a command from the MTA; ProtocolError for an unknown
    command or a malformed one."""
    layout = COMMAND_LAYOUTS.get(packet.command)
    if layout is None:
        raise ProtocolError(f'unknown command {packet.command!r}')
    return decode(layout, packet.data, name_of(packet.command))


def read_reply(packet: Packet) -> list[Field]:
    """The fields of a reply from a milter (the MTA side's reader)."""
    layout = REPLY_LAYOUTS.get(packet.command)
    if layout is None:
        raise ProtocolError(f'unknown reply {packet.command!r}')
    return decode(layout, packet.data, f'reply {packet.command!r}')


def command(letter: str, *fields: Field) -> bytes:
    """A command packet for a milter (the MTA side's writer)."""
    data = encode(COMMAND_LAYOUTS[letter], fields)
    return _LENGTH.pack(len(data) + 1) + letter.encode('latin-1') + data


def reply(letter: str, *fields: Field) -> bytes:
    """A reply packet for the MTA."""
    write, count = _REPLY_WRITERS[letter]
    data = write(fields) if write is not None and len(fields) == count else \
        encode(REPLY_LAYOUTS[letter], fields)
    return _LENGTH.pack(len(data) + 1) + letter.encode('latin-1') + data


def _writer(layout: Layout) -> Callable[[Sequence[Field]], bytes] | None:
    """encode() for a layout of numbers then strings, none optional
    (SMFIR_INSHEADER's and most replies'), made once per layout: one pack,
    one join; None for other layouts."""
    numbers = 0
    while numbers < len(layout) and layout[numbers] in (U16, U32):
        numbers += 1
    strings = len(layout) - numbers
    if not strings or any(kind != STR for kind in layout[numbers:]):
        return None
    head = struct.Struct('>' + ''.join('H' if kind == U16 else 'I'
                                       for kind in layout[:numbers]))

    def write(fields: Sequence[Field]) -> bytes:
        text = '\0'.join(fields[numbers:])     # type: ignore[arg-type]
        if text.count('\0') != strings - 1:
            raise ValueError(f'a milter string cannot hold NUL: {text!r}')
        return head.pack(*fields[:numbers]) + text.encode('utf-8', 'surrogateescape') + b'\0'
    return write


# Per reply letter: its writer (or None: encode() writes it) and its field count.
_REPLY_WRITERS = {letter: (_writer(layout), len(layout))
                  for letter, layout in REPLY_LAYOUTS.items()}


# -- the negotiation ----------------------------------------------------------------

class Negotiation(NamedTuple):
    """SMFIC_OPTNEG, both ways: the MTA offers a version, the actions it
    allows and the protocol flags it understands; the milter answers with
    the version it speaks, the actions it takes, the flags it sets, and
    (v6, with SMFIF_SETSYMLIST) the macros it wants per stage."""
    version: int
    actions: int
    protocol: int
    macros: Mapping[int, str] = {}


def read_negotiation(packet: Packet) -> Negotiation:
    if packet.command != OPTNEG:
        raise ProtocolError(f'{name_of(packet.command)} before the option negotiation')
    version, actions, protocol = read_command(packet)
    assert isinstance(version, int) and isinstance(actions, int) and isinstance(protocol, int)
    if version < OLDEST_VERSION:
        raise ProtocolError(f'protocol version {version}: 2 or later is needed')
    return Negotiation(version, actions, protocol)


def answer_negotiation(offer: Negotiation, *, actions: int, steps: Iterable[str],
                       answered: Iterable[str], macros: Mapping[int, str] | None = None,
                       leading_space: bool = True) -> Negotiation:
    """The milter's answer to `offer`: the offered version up to 6 ([milter8]
    refuses a higher one), the `actions` the MTA allows, the steps not in
    `steps` skipped and those in `steps` but not in `answered` left
    unanswered (where the MTA offers either), header values with their
    leading space when offered, and `macros` (stage -> names) when the
    MTA takes macro lists (SMFIF_SETSYMLIST, v6)."""
    steps, answered = set(steps), set(answered)
    flags = 0
    for step in STEPS:
        if step.command not in steps:
            flags |= step.skip
        elif step.command not in answered:
            flags |= step.no_reply
    if leading_space:
        flags |= HDR_LEADSPC
    wanted = actions & ~SET_SYMLIST
    lists: dict[int, str] = {}
    if macros and offer.version >= 6 and offer.actions & SET_SYMLIST:
        wanted |= SET_SYMLIST
        lists = dict(macros)
    return Negotiation(min(offer.version, PROTOCOL_VERSION), wanted & offer.actions,
                       flags & offer.protocol, lists)


def negotiation_reply(answer: Negotiation) -> bytes:
    return reply(OPTNEG, answer.version, answer.actions, answer.protocol,
                 dict(answer.macros) or None)


# -- macros ---------------------------------------------------------------------------

def read_macros(packet: Packet) -> tuple[str, dict[str, str]]:
    """SMFIC_MACRO: (the command they are for, {name: value}); names lose
    their braces ('{auth_authen}' -> 'auth_authen'; 'i' stays 'i'). A
    name without a value (an odd count) is dropped, as libmilter does."""
    stage, strings = read_command(packet)
    assert isinstance(stage, str) and isinstance(strings, list)
    pairs = {}
    for name, value in zip(strings[0::2], strings[1::2], strict=False):
        if len(name) > 2 and name[0] == '{' and name[-1] == '}':
            name = name[1:-1]
        pairs[name] = value
    return stage, pairs


# -- replies with an SMTP text ----------------------------------------------------------

def reply_text(code: int, lines: Sequence[str], enhanced: str | None) -> str:
    """An SMTP reply as SMFIR_REPLYCODE carries it: '550-5.7.1 a' CRLF
    '550 5.7.1 b', without a final CRLF. The enhanced code is kept only
    when its class is the reply's ([milter8] milter8_valid_smtp_reply
    refuses '550 4.x.x'); CR, LF and NUL in a line become spaces; '%' is
    doubled, since Sendmail formats the text with printf and Postfix
    undoes the doubling ([pmilter] SMFIR_REPLYCODE)."""
    if not 400 <= code <= 599:
        raise ValueError(f'a milter reply code is 4xx or 5xx, not {code}')
    if enhanced is not None and not enhanced.startswith(str(code)[0] + '.'):
        enhanced = None
    clean = [line.replace('\r', ' ').replace('\n', ' ').replace('\0', ' ').replace('%', '%%')
             for line in (lines or [''])]
    last = len(clean) - 1
    return '\r\n'.join(f'{code}{"-" if i < last else " "}'
                       + ' '.join(part for part in (enhanced, line) if part)
                       for i, line in enumerate(clean))


# -- the MTA side: what it offers, and the replies it reads -----------------------------

# Every action an MTA may allow ([mfdef] SMFIF_*): smtp_stack applies each one.
MTA_ACTIONS = (ADDHDRS | CHGBODY | ADD_RCPT | DEL_RCPT | CHGHDRS | QUARANTINE_ACTION
               | CHANGE_FROM | ADD_RCPT_PAR | SET_SYMLIST)
# The protocol flags the MTA side understands: every step may be skipped or
# left unanswered, SMFIR_SKIP, leading space ([milter8] MILTER8_V6_PROTO_MASK
# less SMFIP_RCPT_REJ: a refused recipient is never shown to a milter).
MTA_PROTOCOL = (NOCONNECT | NOHELO | NOMAIL | NORCPT | NOBODY | NOHDRS | NOEOH | NR_HDR
                | NOUNKNOWN | NODATA | SKIP_OK | NR_CONN | NR_HELO | NR_MAIL | NR_RCPT
                | NR_DATA | NR_UNKN | NR_EOH | NR_BODY | HDR_LEADSPC)


def offer_negotiation(version: int = PROTOCOL_VERSION, actions: int = MTA_ACTIONS,
                      protocol: int = MTA_PROTOCOL) -> bytes:
    """SMFIC_OPTNEG as the MTA sends it first."""
    return command(OPTNEG, version, actions, protocol)


def read_answer(packet: Packet, offer_actions: int = MTA_ACTIONS,
                offer_protocol: int = MTA_PROTOCOL) -> Negotiation:
    """The milter's answer to the MTA's SMFIC_OPTNEG: its version, the
    actions it takes and the protocol flags it sets (only those offered
    count: [milter8] milter8_negotiate refuses a milter that asks for
    more), and the macros it wants per stage (v6, SMFIF_SETSYMLIST)."""
    if packet.command != OPTNEG:
        raise ProtocolError(f'reply {packet.command!r} to the option negotiation')
    version, actions, protocol, lists = read_reply(packet)
    assert isinstance(version, int) and isinstance(actions, int) and isinstance(protocol, int)
    if not OLDEST_VERSION <= version <= PROTOCOL_VERSION:
        raise ProtocolError(f'protocol version {version}: {OLDEST_VERSION} to '
                            f'{PROTOCOL_VERSION} are spoken')
    if actions & ~offer_actions:
        raise ProtocolError(f'actions 0x{actions:x} asked, 0x{offer_actions:x} offered')
    if protocol & ~offer_protocol & ~(MDS_256K | MDS_1M):
        raise ProtocolError(f'protocol flags 0x{protocol:x} asked, 0x{offer_protocol:x} offered')
    macros = lists if isinstance(lists, dict) and actions & SET_SYMLIST else {}
    return Negotiation(version, actions, protocol, macros)


def macro_packet(command_letter: str, pairs: Iterable[tuple[str, str]]) -> bytes:
    """SMFIC_MACRO for `command_letter`: each name as the milter knows it
    (one letter bare, a longer one in braces: 'i', '{auth_authen}')."""
    strings: list[str] = []
    for name, value in pairs:
        strings += [name if len(name) == 1 or name.startswith('{') else '{' + name + '}',
                    value.replace('\0', ' ')]
    return command(MACRO, command_letter, strings)


class ReplyCode(NamedTuple):
    """SMFIR_REPLYCODE read: the code, the enhanced code (or None) and the lines."""
    code: int
    enhanced: str | None
    lines: list[str]


def parse_reply_text(text: str) -> ReplyCode:
    """The SMTP reply a milter gave with SMFIR_REPLYCODE ('550 5.7.1 text',
    lines joined by CRLF, '%%' for '%'); ProtocolError for one whose code
    is not 4xx or 5xx, or whose lines disagree ([milter8] milter8_event
    checks the first line alike and undoes the doubling)."""
    code = 0
    enhanced: str | None = None
    lines: list[str] = []
    for number, line in enumerate(text.replace('\r\n', '\n').split('\n')):
        head, sep, rest = line[:4], line[3:4], line[4:]
        if len(line) < 3 or not head[:3].isdigit() or head[0] not in '45' \
                or sep not in ('', ' ', '-'):
            raise ProtocolError(f'a malformed reply: {text[:200]!r}')
        if number == 0:
            code = int(head[:3])
        elif int(head[:3]) != code:
            raise ProtocolError(f'a reply whose lines have different codes: {text[:200]!r}')
        word, space, after = rest.partition(' ')
        parts = word.split('.')
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            if parts[0] != str(code)[0]:
                raise ProtocolError(f'enhanced code {word} in a {code} reply')
            enhanced = enhanced or word
            rest = after
        lines.append(_undouble(rest))
    return ReplyCode(code, enhanced, lines)


def _undouble(text: str) -> str:
    """'%%' -> '%', a lone '%' dropped ([milter8] SMFIR_REPLYCODE)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == '%':
            i += 1
            if i < len(text) and text[i] == '%':
                out.append('%')
                i += 1
            continue
        out.append(ch)
        i += 1
    return ''.join(out)
