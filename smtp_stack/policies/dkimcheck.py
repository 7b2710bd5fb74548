"""DKIM (RFC 6376) and ARC (RFC 8617) results of a message, with the DNS
through our resolver.

DKIM signatures (rsa-sha256, ed25519-sha256 of RFC 8463) are verified by
dkimverify.py over the message split once (canonical.py), with dkimpy's
checks of the tags and of the key record; ARC chains by dkimpy itself.
Both take the DNS as a function (`dnsfunc`), which we give: it also
records what the key lookup found, to tell the RFC 8601 2.7.1 results
apart: no key (permerror), a DNS failure (temperror), a key that does not
verify (fail).

The RSA step goes through `cryptography` (OpenSSL), in dkimpy's ARC
verification too (`use_openssl_rsa`, below): dkimpy has no hook for it,
so the one module attribute its verifier calls is replaced, with the
same contract and the same answers.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol

from ..extras import needs_extra
from .dns import DnsError

with needs_extra('policies', 'policies.authenticate'):
    import dkim
    from dkim.util import InvalidTagValueList

    from .canonical import Field, SplitMessage, split_message
    from .dkimverify import Tags, parse_tags, rsa_verify, verify_signature

__all__ = ['TxtResolver', 'DkimResult', 'ArcResult', 'ArcSealer', 'PrefetchedKeys', 'Tags',
           'SignatureField', 'signature_fields', 'key_names', 'verify_dkim', 'verify_arc',
           'too_big', 'unparsed', 'header_section', 'rsa_verify', 'parse_public_key',
           'use_openssl_rsa']


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

_dkimpy_parse_public_key = dkim.parse_public_key


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


class SignatureField(NamedTuple):
    """A DKIM or ARC signature field of a message: its kind (the field
    name in lower case), its tags (None when they do not parse) and the
    field as written (the DKIM verification hashes it)."""
    kind: bytes
    tags: Tags | None
    field: Field


def signature_fields(headers: list[Field], max_signatures: int = 5) -> list[SignatureField]:
    """The first `max_signatures` DKIM-Signature fields and the ARC fields
    (50 of each kind, RFC 8617 4.2.1), top first, their tags parsed once
    per message: for the key names and the verification."""
    out: list[SignatureField] = []
    counts = dict.fromkeys(SIGNATURE_FIELDS, 0)
    limits = {b'dkim-signature': max_signatures, b'arc-seal': MAX_ARC_SETS,
              b'arc-message-signature': MAX_ARC_SETS}
    for name, value in headers:
        kind = name.lower()
        if kind not in counts or counts[kind] >= limits[kind]:
            continue
        counts[kind] += 1
        try:
            tags: Tags | None = parse_tags(value)
        except InvalidTagValueList:
            tags = None
        out.append(SignatureField(kind, tags, (name, value)))
    return out


def key_names(fields: list[SignatureField]) -> list[str]:
    """The `s._domainkey.d` names the signature fields ask for."""
    names = []
    for signature in fields:
        domain, selector = _text(signature.tags, b'd'), _text(signature.tags, b's')
        if domain and selector:
            names.append(f'{selector}._domainkey.{domain}'.rstrip('.').lower())
    return list(dict.fromkeys(names))


def header_section(message: bytes) -> bytes:
    """The header section and its blank line (the whole of `message` when
    it has none)."""
    end = message.find(b'\r\n\r\n')
    return message if end < 0 else message[:end + 4]


def _text(tags: Tags | None, key: bytes) -> str:
    return (tags.get(key) or b'').decode('ascii', 'replace').strip() if tags else ''


def verify_dkim(resolver: TxtResolver, message: bytes | SplitMessage, max_signatures: int = 5,
                fields: list[SignatureField] | None = None) -> list[DkimResult]:
    """One DkimResult per signature (at most `max_signatures`, a bound on the
    DNS work a message can cause; `fields`: its signature_fields, when
    already parsed with this bound). dkim.MessageFormatError when the
    header section does not parse (`unparsed` says what to record then)."""
    split = message if isinstance(message, SplitMessage) else split_message(message)
    if fields is None:
        fields = signature_fields(split.headers, max_signatures)
    results = []
    for signature in [f for f in fields if f.kind == b'dkim-signature'][:max_signatures]:
        tags = signature.tags
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
        try:
            ok = verify_signature(split, signature.field, tags, keys)
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


def unparsed(head: bytes, error: str) -> list[DkimResult]:
    """The DKIM result of a message whose header section does not parse
    (a line that is neither a field nor its continuation, RFC 5322 2.2):
    a permerror if it carries a DKIM-Signature (its fields cannot be told
    apart, so none can be verified), else none."""
    if b'dkim-signature' not in head.lower():
        return []
    return [DkimResult('permerror', '', '', reason=f'header section does not parse: {error}')]


def too_big(headers: list[Field], limit: int) -> list[DkimResult]:
    """RFC 8601 2.7.1 `policy` for each signature of a message over `limit`
    bytes: signed, but not verified here (it would have to be held in memory)."""
    return [DkimResult('policy', _text(s.tags, b'd'), _text(s.tags, b's'), _text(s.tags, b'a'),
                       reason=f'message over {limit} bytes not verified')
            for s in signature_fields(headers, len(headers))
            if s.kind == b'dkim-signature' and s.tags is not None]


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
