"""DKIM (RFC 6376) and ARC (RFC 8617) verification by dkimpy, with its DNS
through our resolver.

dkimpy checks rsa-sha256 and ed25519-sha256 (RFC 8463) signatures and ARC
chains; it takes the DNS as a function (`dnsfunc`), which we give. Its
verify() answers only True or False, so the function given here also
records what the key lookup found, to tell the RFC 8601 2.7.1 results
apart: no key (permerror), a DNS failure (temperror), a key that does not
verify (fail).

The RSA step goes through `cryptography` (OpenSSL), not dkimpy's own
Python arithmetic (`use_openssl_rsa`, below): dkimpy has no hook for it,
so the one module attribute its verifier calls is replaced, with the
same contract and the same answers.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from ..extras import needs_extra
from .dns import DnsError

with needs_extra('policies', 'policies.authenticate'):
    import dkim
    from dkim.util import InvalidTagValueList, parse_tag_value

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# The tags of a signature header field, as dkimpy parses them.
Tags = dict[bytes, bytes]


class TxtResolver(Protocol):
    """Where key records come from: a `Resolver`, or `PrefetchedKeys`."""

    def txt(self, name: str) -> list[bytes]: ...


@dataclass(frozen=True)
class DkimResult:
    result: str             # pass, fail, neutral, permerror, temperror
    domain: str             # d=
    selector: str           # s=
    algorithm: str = ''     # a=
    b: str = ''             # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ''


class _Keys:
    """dkimpy's dnsfunc, remembering what each key lookup found."""

    def __init__(self, resolver: TxtResolver):
        self.resolver = resolver
        self.found: dict[str, bytes | None] = {}

    def __call__(self, name: str | bytes, timeout: float | None = None) -> bytes | None:
        if isinstance(name, bytes):
            name = name.decode('ascii', 'replace')
        records = self.resolver.txt(name)        # DnsError propagates: temperror
        value = records[0] if records else None
        self.found[name.rstrip('.').lower()] = value
        return value


MAX_ARC_SETS = 50       # RFC 8617 4.2.1: instance values run from 1 to 50

# The digests dkimpy verifies RSA signatures with (RFC 6376 3.3; rsa-sha1 is
# still checked, RFC 8301 3.1 leaves the verdict to the verifier).
PREHASHED = {'sha256': Prehashed(hashes.SHA256()), 'sha1': Prehashed(hashes.SHA1())}
# Below this many bytes of modulus the DigestInfo of SHA-256 does not fit
# (RFC 8017 9.2): dkimpy's own function raises what it has always raised.
MIN_MODULUS_BYTES = 62
_dkimpy_rsa_verify = dkim.RSASSA_PKCS1_v1_5_verify
_dkimpy_parse_public_key = dkim.parse_public_key


@functools.lru_cache(maxsize=1024)
def _public_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_verify(hashed: Any, signature: bytes, public_key: Mapping[str, int]) -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 8.2.2) of the digest of
    `hashed` (dkimpy's hash object) by OpenSSL: dkimpy's
    `RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`, with its
    arguments and answers, about 30 times cheaper (issue 25)."""
    modulus, exponent = public_key['modulus'], public_key['publicExponent']
    size = (modulus.bit_length() + 7) // 8
    algorithm = PREHASHED.get(getattr(hashed, 'name', ''))
    if algorithm is None or size < MIN_MODULUS_BYTES or len(signature) > size:
        return bool(_dkimpy_rsa_verify(hashed, signature, public_key))
    try:        # a signature with its leading zero bytes dropped is the same number
        _public_key(modulus, exponent).verify(signature.rjust(size, b'\0'), hashed.digest(),
                                              padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _parsed_key(der: bytes) -> Mapping[str, int]:
    parsed: Mapping[str, int] = _dkimpy_parse_public_key(der)
    return MappingProxyType(dict(parsed))


def parse_public_key(der: bytes) -> Mapping[str, int]:
    """dkimpy's `parse_public_key`, once per key (its ASN.1 is Python);
    the answer is read-only, as dkimpy only reads it."""
    return _parsed_key(bytes(der))


def use_openssl_rsa() -> bool:
    """Point dkimpy's verifier at `rsa_verify` and the cached key parser,
    if its `DKIM.verify_sig_process` and `evaluate_pk` still look these
    names up in the `dkim` module at each call (dkimpy 1.1 does); else
    leave dkimpy as it is (slower, as right). True when done."""
    seams = (('RSASSA_PKCS1_v1_5_verify', dkim.DKIM.verify_sig_process),
             ('parse_public_key', dkim.evaluate_pk))
    if not all(name in function.__code__.co_names for name, function in seams):
        return False
    dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
    dkim.parse_public_key = parse_public_key
    return True


use_openssl_rsa()


class PrefetchedKeys:
    """A resolver for dkimpy that answers from lookups made beforehand.

    The lookups are I/O and run on the hub (our resolver: gevent sockets);
    the verification is CPU (canonicalising a body of up to 32 MiB takes
    seconds) and runs in a worker thread with this, so it neither blocks
    the hub nor needs a hub of its own. A name not looked up has no key."""

    def __init__(self, resolver: TxtResolver, names: Iterable[str]):
        self.answers: dict[str, list[bytes] | DnsError] = {}
        for name in names:
            try:
                self.answers[name] = resolver.txt(name)
            except DnsError as exc:
                self.answers[name] = exc

    def txt(self, name: str) -> list[bytes]:
        answer = self.answers.get(name.rstrip('.').lower(), [])
        if isinstance(answer, DnsError):
            raise answer
        return answer


SIGNATURE_FIELDS = (b'dkim-signature', b'arc-seal', b'arc-message-signature')


def signature_tags(message: bytes, max_signatures: int = 5) -> list[tuple[bytes, Tags | None]]:
    """(field name in lower case, its tags or None when they do not parse)
    of the first `max_signatures` DKIM-Signature fields and of the ARC
    fields (50 of each kind, RFC 8617 4.2.1), top first: parsed once per
    message, for the key names and the verification (each parse of the
    header section and of the tags cost a tenth of a millisecond)."""
    out: list[tuple[bytes, Tags | None]] = []
    counts = dict.fromkeys(SIGNATURE_FIELDS, 0)
    limits = {b'dkim-signature': max_signatures, b'arc-seal': MAX_ARC_SETS,
              b'arc-message-signature': MAX_ARC_SETS}
    for name, value in dkim.DKIM(header_section(message)).headers:
        kind = name.lower()
        if kind not in counts or counts[kind] >= limits[kind]:
            continue
        counts[kind] += 1
        try:
            out.append((kind, parse_tag_value(value)))
        except InvalidTagValueList:
            out.append((kind, None))
    return out


def key_names(message: bytes, max_signatures: int = 5,
              tags: list[tuple[bytes, Tags | None]] | None = None) -> list[str]:
    """The `s._domainkey.d` names the DKIM signatures (the first
    `max_signatures`) and the ARC sets of a message ask for (`tags`: its
    signature_tags, when already parsed)."""
    names = []
    for _, fields in signature_tags(message, max_signatures) if tags is None else tags:
        domain, selector = _text(fields, b'd'), _text(fields, b's')
        if domain and selector:
            names.append(f'{selector}._domainkey.{domain}'.rstrip('.').lower())
    return list(dict.fromkeys(names))


def signatures(message: bytes) -> list[Tags | None]:
    """The tags of each DKIM-Signature, top first (None for one that does not parse)."""
    out: list[Tags | None] = []
    for name, value in dkim.DKIM(header_section(message)).headers:
        if name.lower() == b'dkim-signature':
            try:
                out.append(parse_tag_value(value))
            except InvalidTagValueList:
                out.append(None)
    return out


def header_section(message: bytes) -> bytes:
    """The header section and its blank line: what dkimpy parses for the
    headers alone (parsing the body too cost as much again)."""
    end = message.find(b'\r\n\r\n')
    return message if end < 0 else message[:end + 4]


def _text(tags: Tags | None, key: bytes) -> str:
    return (tags.get(key) or b'').decode('ascii', 'replace').strip() if tags else ''


def verify_dkim(resolver: TxtResolver, message: bytes, max_signatures: int = 5,
                parsed: list[tuple[bytes, Tags | None]] | None = None) -> list[DkimResult]:
    """One DkimResult per signature (at most `max_signatures`, a bound on the
    DNS work a message can cause; `parsed`: its signature_tags, when already
    parsed with this bound)."""
    results = []
    sigs = signatures(message)[:max_signatures] if parsed is None \
        else [tags for kind, tags in parsed if kind == b'dkim-signature']
    for idx, tags in enumerate(sigs):
        domain, selector = _text(tags, b'd'), _text(tags, b's')
        algorithm = _text(tags, b'a')
        short_b = ''.join(_text(tags, b'b').split())[:8]
        if tags is None:
            results.append(DkimResult('neutral', '', '', reason='signature does not parse'))
            continue
        if algorithm.lower() == 'rsa-sha1':
            # RFC 8301 3.1: verifiers MUST NOT consider rsa-sha1 signatures valid;
            # RFC 8601 2.7.1 `policy`: signed, but not in a way we accept
            results.append(DkimResult('policy', domain, selector, algorithm, short_b,
                                      'rsa-sha1 is not accepted (RFC 8301)'))
            continue
        keys = _Keys(resolver)
        d = dkim.DKIM(message, logger=_quiet, minkey=1024)
        try:
            ok = d.verify(idx=idx, dnsfunc=keys)
        except DnsError as exc:
            results.append(DkimResult('temperror', domain, selector, algorithm, short_b, str(exc)))
            continue
        except dkim.DKIMException as exc:
            # RFC 8601 2.7.1: a body that does not match its hash is a failed
            # signature; anything else that stops the check is a permerror
            broken = isinstance(exc, dkim.ValidationError) and 'body hash' in str(exc)
            results.append(DkimResult('fail' if broken else 'permerror', domain, selector,
                                      algorithm, short_b, str(exc)))
            continue
        if ok:
            results.append(DkimResult('pass', domain, selector, algorithm, short_b))
            continue
        key_name = f'{selector}._domainkey.{domain}'.lower()
        if keys.found.get(key_name, b'') is None:
            results.append(DkimResult('permerror', domain, selector, algorithm, short_b,
                                      'no key for signature'))
        else:
            results.append(DkimResult('fail', domain, selector, algorithm, short_b,
                                      'signature did not verify'))
    return results


def too_big(head: bytes, limit: int) -> list[DkimResult]:
    """RFC 8601 2.7.1 `policy` for each signature of a message over `limit`
    bytes: signed, but not verified here (it would have to be held in memory)."""
    return [DkimResult('policy', _text(t, b'd'), _text(t, b's'), _text(t, b'a'),
                       reason=f'message over {limit} bytes not verified')
            for t in signatures(head + b'\r\n') if t is not None]


@dataclass(frozen=True)
class ArcResult:
    result: str             # pass, fail, none, temperror
    instance: int = 0
    reason: str = ''


def verify_arc(resolver: TxtResolver, message: bytes) -> ArcResult:
    """RFC 8617 5.2: the chain validation status (cv) of the last ARC set."""
    try:
        cv, sets, reason = dkim.arc_verify(message, logger=_quiet, dnsfunc=_Keys(resolver))
    except DnsError as exc:
        return ArcResult('temperror', 0, str(exc))
    except dkim.DKIMException as exc:
        return ArcResult('fail', 0, str(exc))
    result = cv.decode('ascii') if isinstance(cv, bytes) else str(cv)
    return ArcResult(result, len(sets or ()), reason if isinstance(reason, str) else '')


class _Quiet:
    """dkimpy logs every failed signature as an error; the result says it already."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None

    def isEnabledFor(self, level: int) -> bool:
        return False


_quiet = _Quiet()


@dataclass(frozen=True)
class ArcSealer:
    """The keys for `authenticate(arc_seal=...)`: {selector, domain, key}
    (key: PEM text or bytes of an RSA private key)."""
    selector: str
    domain: str
    key: bytes

    @classmethod
    def from_spec(cls, spec: ArcSealer | Mapping[str, str | bytes]) -> ArcSealer:
        if isinstance(spec, ArcSealer):
            return spec
        if not isinstance(spec, Mapping) or not {'selector', 'domain', 'key'} <= set(spec):
            raise ValueError('authenticate: arc_seal must be {selector, domain, key}')
        key = spec['key'].encode() if isinstance(spec['key'], str) else spec['key']
        if b'PRIVATE KEY' not in key:
            raise ValueError('authenticate: arc_seal key must be a PEM private key')
        # dkimpy makes an ARC set only with authres installed (it imports it
        # quietly): tell it now rather than log a failed seal on every message.
        with needs_extra('policies', "policies.authenticate's arc_seal"):
            importlib.import_module('authres')
        return cls(str(spec['selector']), str(spec['domain']), key)

    def seal(self, message: bytes, authserv_id: str,
             results_value: str) -> list[tuple[str, str]]:
        """RFC 8617 5.1: the ARC set for this hop, as (name, value) pairs in the
        order they are to be added (the seal ends up on top). The chain
        status (cv) is taken by dkimpy from the arc= result of our
        Authentication-Results field, which is why it is put on top first."""
        head = f'Authentication-Results: {results_value}\r\n'.encode()
        fields = dkim.arc_sign(head + message, self.selector.encode(), self.domain.encode(),
                               self.key, authserv_id.encode(), logger=_quiet)
        pairs: list[tuple[str, str]] = []
        for raw in fields:
            name, _, value = raw.decode('ascii').partition(':')
            pairs.append((name.strip(), ' '.join(value.split())))
        order = {'arc-authentication-results': 0, 'arc-message-signature': 1, 'arc-seal': 2}
        return sorted(pairs, key=lambda p: order.get(p[0].lower(), 3))
