"""One DKIM-Signature verified (RFC 6376 6.1), from a message split once.

dkimpy's `DKIM.verify` parses the whole message again for each signature,
parses the signature's tags again, canonicalises every header field and
the body with regular expressions, and formats debug lines nobody reads:
about 0.5 ms of a 4 KB message's 0.7 (issue 25). This follows the same
steps, in the same order and with the same answers, over a
`canonical.SplitMessage` and the tags `dkimcheck.signature_fields`
already parsed. The key record is read by dkimpy's own `evaluate_pk`
(v=, k=, p=, s=), once per record. Ours, each held to dkimpy's results by
tests/test_policies_dkimverify.py: the reading of the tag list
(`parse_tags`), the checks of the tags (`check_tags`: dkimpy's
`validate_signature_fields` without its regular expressions: required
tags, a=, b= and bh= syntax, d=, i= within d=, l=, q=, t= and x= against
the clock), the canonicalisation (canonical.py), the deletion of b=
(`delete_b_value`), the hashing and the RSA step (OpenSSL, `rsa_verify`);
the verdicts are compared with `DKIM.verify` on generated messages,
signatures and changes to them.

Errors are dkimpy's exceptions, raised where its verifier raises them, so
the results keep their meaning (dkimcheck.verify_dkim). Where dkimpy let
a Python error escape, and the message got a 451 for ever, this raises
one of them: a b= or bh= that does not decode, an ed25519 signature of
the wrong length, an empty l= (MessageFormatError), an i= as long as d=
(ValidationError).
"""
from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..extras import needs_extra
from .canonical import Field, SplitMessage, canonicalisation

with needs_extra('policies', 'policies.authenticate'):
    import dkim
    from dkim.crypto import HASH_ALGORITHMS, DigestTooLargeError
    from dkim.util import DuplicateTag, InvalidTagSpec

try:
    from nacl.exceptions import BadSignatureError
except ImportError:         # pragma: no cover - dkimpy then refuses ed25519 keys itself
    class BadSignatureError(Exception):      # type: ignore[no-redef]
        """Never raised: without PyNaCl no ed25519 key is ever parsed."""

Tags = dict[bytes, bytes]
DnsFunc = Callable[..., Any]        # dkimpy's dnsfunc: name (bytes), timeout -> record or None
MIN_KEY_BITS = 1024                 # RFC 8301 3.2: smaller RSA keys are refused
# What the key record says: dkimpy's evaluate_pk answer (key, bits, k=, s=tlsrpt).
PublicKey = tuple[Any, int, bytes, bool]


# The digests dkimpy verifies RSA signatures with (RFC 6376 3.3; rsa-sha1 is
# still checked, RFC 8301 3.1 leaves the verdict to the verifier).
PREHASHED = {'sha256': Prehashed(hashes.SHA256()), 'sha1': Prehashed(hashes.SHA1())}
# Below this many bytes of modulus the DigestInfo of SHA-256 does not fit
# (RFC 8017 9.2): dkimpy's own function raises what it has always raised.
MIN_MODULUS_BYTES = 62
_PKCS1V15 = padding.PKCS1v15()      # made once: a tenth of a verification each time
_dkimpy_rsa_verify = dkim.crypto.RSASSA_PKCS1_v1_5_verify


# RFC 6376 3.7: the signature field hashed with the value of b= deleted.
# dkimpy's RE_BTAG matches the same text (its FWS, `((\s*\r?\n)?\s+)?`,
# matches any run of white space, as \s* does), with nested optional
# groups tried before each character of the value: a tenth of a
# millisecond per signature. `delete_b_value` finds where each match
# starts with a short expression and where it ends with bytes methods.
B_VALUE = re.compile(rb'([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=]+)*(?:\r?\n\Z)?')
_B_TAG = re.compile(rb'[;\s]b\s*=')
_WSP = b' \t\n\r\x0b\x0c'                 # \s of a bytes pattern; bytes.split()'s white space
_BASE64 = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/='


def delete_b_value(value: bytes) -> bytes:
    r"""B_VALUE.sub(rb"\1", value): after each `[;\s]b\s*=`, the longest run
    of base64 characters and white space that ends with a base64
    character, and a line end that ends the value, deleted."""
    out = []
    pos = 0
    while True:
        found = _B_TAG.search(value, pos)
        if found is None:
            break
        start = found.end()
        run = len(value) - start - len(value[start:].lstrip(_BASE64 + _WSP))
        end = start + len(value[start:start + run].rstrip(_WSP))
        if value[end:] in (b'\r\n', b'\n'):
            end = len(value)
        out.append(value[pos:start])
        pos = end
    out.append(value[pos:])
    return b''.join(out)


@functools.lru_cache(maxsize=1024)
def _rsa_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_verify(hashed: Any, signature: bytes, public_key: Mapping[str, int]) -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 8.2.2) of the digest of
    `hashed` (a hashlib object) by OpenSSL: dkimpy's
    `RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`, with its
    arguments and answers, about 30 times cheaper (issue 25)."""
    modulus, exponent = public_key['modulus'], public_key['publicExponent']
    size = (modulus.bit_length() + 7) // 8
    algorithm = PREHASHED.get(getattr(hashed, 'name', ''))
    if algorithm is None or size < MIN_MODULUS_BYTES or len(signature) > size:
        return bool(_dkimpy_rsa_verify(hashed, signature, public_key))
    try:        # a signature with its leading zero bytes dropped is the same number
        _rsa_key(modulus, exponent).verify(signature.rjust(size, b'\0'), hashed.digest(),
                                           _PKCS1V15, algorithm)
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _evaluated(record: bytes) -> PublicKey:
    found: PublicKey = dkim.evaluate_pk(b'', record)
    return found


def public_key(name: bytes, record: bytes | None) -> PublicKey:
    """dkimpy's `evaluate_pk` of a key record, once per record (its key is
    read-only: a dict dkimcheck made so, or a PyNaCl VerifyKey)."""
    if not record:
        raise dkim.KeyFormatError(f'missing public key: {name!r}')
    return _evaluated(bytes(record))


def parse_tags(tag_list: bytes) -> Tags:
    """A tag=value list (RFC 6376 3.2) as dkimpy's `parse_tag_value` reads
    it, with its errors (InvalidTagSpec, DuplicateTag): names and values
    stripped of white space, a last `;` allowed, a name starting with a
    letter. Without its regular expression per tag: a third of the cost."""
    specs = tag_list.strip().split(b';')
    if not specs[-1]:
        specs.pop()
    tags: Tags = {}
    for spec in specs:
        name, equals, value = spec.partition(b'=')
        name = name.strip()
        if not equals or not name[:1].isalpha():
            raise InvalidTagSpec(spec)
        if name in tags:
            raise DuplicateTag(name)
        tags[name] = value.strip()
    return tags


MANDATORY = (b'v', b'a', b'b', b'bh', b'd', b'h', b's')
_SPECIALS = b'()<>[]:;@\\,'           # not in a d= (dkimpy's approximation of a domain)
CLOCK_SLOP = 36000                  # dkimpy's leeway for t= and x=: 10 hours


def check_tags(sig: Tags, now: float | None = None) -> None:
    """dkimpy's `validate_signature_fields` for a DKIM-Signature: the same
    checks in the same order with the same errors (ValidationError and its
    text), by bytes methods where it runs regular expressions (a tenth of
    a check's CPU). Where dkimpy lets IndexError escape (an i= as long as
    d=), this raises ValidationError. RFC 6376 3.5 and 6.1.1."""
    for tag in MANDATORY:
        if tag not in sig:
            raise dkim.ValidationError(f'missing {tag!r}=')
    if sig[b'a'] not in HASH_ALGORITHMS:
        raise dkim.ValidationError(f'unknown signature algorithm: {sig[b"a"]!r}')
    b = sig[b'b']
    if not _base64_syntax(b) or len(b''.join(b.split())) % 4:
        raise dkim.ValidationError(f'b= value is not valid base64 ({b!r})')
    if len(b''.join(sig[b'bh'].split())) % 4:   # dkimpy checks the syntax of b= again, not bh=
        raise dkim.ValidationError(f'bh= value is not valid base64 ({sig[b"bh"]!r})')
    if b'cv' in sig and sig[b'cv'] not in (b'pass', b'fail', b'none'):
        raise dkim.ValidationError(f'cv= value is not valid ({sig[b"cv"]!r})')
    domain = sig[b'd']
    if domain.isascii() and any(c in _SPECIALS for c in domain):
        raise dkim.ValidationError(f'd= value is not valid ({domain!r})')
    if b'i' in sig:
        identity = sig[b'i']
        before = len(identity) - len(domain) - 1
        if not identity.lower().endswith(domain.lower()) or before < 0 \
                or identity[before] not in b'@.':
            raise dkim.ValidationError(f'i= domain is not a subdomain of d= '
                                       f'(i={identity!r} d={domain!r})')
    if b'l' in sig and not _digits(sig[b'l'], empty=True, most=76):
        raise dkim.ValidationError(f'l= value is not a decimal integer ({sig[b"l"]!r})')
    if b'q' in sig and sig[b'q'] != b'dns/txt':
        raise dkim.ValidationError(f'q= value is not dns/txt ({sig[b"q"]!r})')
    when = int(time.time() if now is None else now)
    signed = None
    if b't' in sig:
        if not _digits(sig[b't']):
            raise dkim.ValidationError(f't= value is not a decimal integer ({sig[b"t"]!r})')
        signed = int(sig[b't'])
        if signed > when + CLOCK_SLOP:
            raise dkim.ValidationError(f't= value is in the future ({sig[b"t"]!r})')
    if b'v' in sig and sig[b'v'] != b'1':
        raise dkim.ValidationError(f'v= value is not 1 ({sig[b"v"]!r})')
    if b'x' in sig:
        if not _digits(sig[b'x']):
            raise dkim.ValidationError(f'x= value is not a decimal integer ({sig[b"x"]!r})')
        expires = int(sig[b'x'])
        if expires < when - CLOCK_SLOP:
            raise dkim.ValidationError(f'x= value is past ({sig[b"x"]!r})')
        if signed and expires < signed:
            raise dkim.ValidationError(f'x= value is less than t= value '
                                       f'(x={sig[b"x"]!r} t={sig[b"t"]!r})')


def _digits(value: bytes, empty: bool = False, most: int | None = None) -> bool:
    """`re.match(rb'\\d+$')` (or `\\d{,most}$`): ASCII digits, a final LF allowed."""
    if value.endswith(b'\n'):
        value = value[:-1]
    if most is not None and len(value) > most:
        return False
    return (empty and not value) or (value.isdigit() and value.isascii())


def _base64_syntax(value: bytes) -> bool:
    """`re.match(rb'[\\s0-9A-Za-z+/]+[\\s=]*$')`: base64 characters and
    white space, then only '=' and white space."""
    equals = value.find(b'=')
    head, tail = (value, b'') if equals < 0 else (value[:equals], value[equals:])
    return bool(head) and not head.translate(None, _BASE64[:-1] + _WSP) \
        and not tail.translate(None, b'=' + _WSP)


def _base64(value: bytes, tag: str) -> bytes:
    try:
        return base64.b64decode(b''.join(value.split()))
    except (binascii.Error, ValueError):
        raise dkim.MessageFormatError(f'{tag}= value is not valid base64') from None


def signed_names(tags: Tags) -> list[bytes]:
    """The h= names in lower case; From once more when it is signed, so
    that a second From added above the signed one breaks the signature
    (as dkimpy checks it, its bug 644046)."""
    names = [name.strip().lower() for name in tags[b'h'].split(b':')]
    if b'from' in names:
        names.append(b'from')
    return names


def select_fields(headers: list[Field], names: list[bytes]) -> list[Field]:
    """RFC 6376 5.4.2: for each name, the next field of that name from the
    bottom up (a name signed more often than present selects nothing)."""
    picked = []
    below: dict[bytes, int] = {}
    lowered = [name.lower() for name, _ in headers]
    for name in names:
        i = below.get(name, len(headers))
        while i > 0:
            i -= 1
            if lowered[i] == name:
                picked.append(headers[i])
                break
        below[name] = i
    return picked


def verify_signature(message: SplitMessage, field: Field, tags: Tags, dnsfunc: DnsFunc,
                     minkey: int = MIN_KEY_BITS) -> bool:
    """Whether the DKIM-Signature `field` (its `tags` parsed) verifies
    over `message`: True, False (no usable key, or a signature that does
    not match), or dkimpy's exceptions as its `DKIM.verify` raises them
    (ValidationError for a body hash mismatch and bad tags, KeyFormatError
    for a key under `minkey` bits, MessageFormatError); the DNS error of
    `dnsfunc` propagates."""
    check_tags(tags)
    name = tags[b's'] + b'._domainkey.' + tags[b'd'] + b'.'
    try:
        key, bits, kind, tlsrpt = public_key(name, dnsfunc(name, timeout=5))
    except (dkim.KeyFormatError, binascii.Error):
        return False        # no key, or one that does not parse: dkimpy's False
    if tlsrpt:      # RFC 8460 3: a key for TLS reports only
        raise dkim.ValidationError('Message is not tlsrpt and Service Type is tlsrpt')
    header_canon, body_canon = canonicalisation(tags.get(b'c', b'simple/simple'))
    hasher = HASH_ALGORITHMS[tags[b'a']]
    body = body_canon(message.body)
    if b'l' in tags:
        if not tags[b'l'].strip():      # l= with no digits: dkimpy's int() raised ValueError
            raise dkim.MessageFormatError('l= value is empty')
        body = body[:int(tags[b'l'])]
    body_hash = hasher(body).digest()
    if body_hash != _base64(tags[b'bh'], 'bh'):
        raise dkim.ValidationError(f'body hash mismatch (got {base64.b64encode(body_hash)!r}, '
                                   f'expected {tags[b"bh"]!r})')
    hashed = hasher()
    for name_, value in [header_canon(f) for f in select_fields(message.headers,
                                                                signed_names(tags))]:
        hashed.update(name_ + b':' + value)
    # RFC 6376 3.7: the signature field itself, with b= empty and no final CRLF
    sig_name, sig_value = header_canon((field[0], delete_b_value(field[1])))
    hashed.update(sig_name + b':' + sig_value.rstrip())
    signature = _base64(tags[b'b'], 'b')
    if kind == b'rsa':
        try:
            ok = rsa_verify(hashed, signature, key)
        except (TypeError, DigestTooLargeError) as exc:
            raise dkim.KeyFormatError(f'digest too large for modulus: {exc}') from None
        if ok and bits < minkey:
            raise dkim.KeyFormatError(f'public key too small: {bits}')
        return ok
    if kind == b'ed25519':      # RFC 8463 3: the signature is over the SHA-256 hash
        try:
            key.verify(hashed.digest(), signature)
        except BadSignatureError:
            return False
        except ValueError as exc:       # a signature of the wrong length
            raise dkim.MessageFormatError(f'b= value is not an ed25519 signature: {exc}') \
                from None
        return True
    raise dkim.UnknownKeyTypeError(kind)
