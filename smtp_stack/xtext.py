"""xtext (RFC 3461 section 4): the encoding of DSN, XCLIENT and XFORWARD values."""
from __future__ import annotations

_HEX = '0123456789ABCDEF'


class XtextError(ValueError):
    pass


def decode_xtext(text: str) -> str:
    """Decode strictly (escaped bytes are UTF-8): '+' must be followed by two
    upper-case hex digits and every other character must be printable ASCII
    other than '+' and '='."""
    if '+' not in text:
        _check_xchars(text)
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '+':
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise XtextError(f'bad xtext escape at offset {i}')
            out.append(int(pair, 16))
            i += 3
            continue
        _check_xchars(ch)
        out.append(ord(ch))
        i += 1
    try:
        return out.decode('utf-8')      # the inverse of encode_xtext
    except UnicodeDecodeError:
        raise XtextError('xtext does not decode to UTF-8') from None


def encode_xtext(value: str | bytes) -> str:
    """Encode; non-ASCII text is encoded as its UTF-8 bytes."""
    data = value.encode('utf-8') if isinstance(value, str) else value
    return ''.join(
        chr(b) if 33 <= b <= 126 and b not in (0x2B, 0x3D) else f'+{b:02X}'
        for b in data
    )


def _check_xchars(text: str) -> None:
    for ch in text:
        o = ord(ch)
        if not 33 <= o <= 126 or ch in '+=':
            raise XtextError(f'character {ch!r} is not allowed in xtext')
