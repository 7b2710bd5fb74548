"""`authenticate(spf=True, dkim=True, dmarc=True, arc=True, enforce_dmarc=False,
remove_forged=True)`.

After the body has arrived (DATA or the BDAT of a message: `next()` first,
so the 354 and the stream exist), the body is read once through
`envelope.spool()` — the delivery still gets the whole message — and
checked: SPF of the MAIL FROM (or HELO, for the null sender), every DKIM
signature, DMARC of the From domain, the ARC chain. The outcome goes into
one Authentication-Results header field (`envelope.add_header`, RFC 8601)
and into `envelope.auth_results` for later middleware. An
Authentication-Results field the message arrived with that names our
authserv-id is forged, and the deliveries leave it out
(`envelope.remove_header`; RFC 8601 5: a border MTA MUST delete such
fields before adding its own), for submission as well: a client, even an
authenticated one, is no trusted MTA. Fields of other authserv-ids stay.

Failures to check are results, not refusals: DNS trouble is temperror
(RFC 7208 2.6.6, RFC 6376 6.1.2, RFC 7489 6.6.3), and the message is
accepted; a header section that does not split into fields leaves its
signatures unverifiable (DKIM permerror; DMARC reads From as the standard
library's parser does). Only `enforce_dmarc=True` refuses — with 550 5.7.1, after the
body, as RFC 7489 10.3 allows — a message that fails DMARC for a domain
asking p=reject (after pct= sampling); a DMARC temperror is never a
refusal. Authenticated sessions (submission) are not checked: their mail
is ours to sign, not to judge. With `on_store_error='tempfail'` (the
policy's, else the server's) a DNS temperror of SPF, DKIM or DMARC is
`451 4.3.5` after the body instead (RFC 7208 8.6 allows it): the client
retries, and no message goes through unchecked while DNS is down.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Annotated

from ..errors import SmtpError
from ..headers import remove_fields
from ..offload import offload
from ..params import BOOL, INTEGER, STRING
from .authresults import claims, header_value
from .canonical import (Field, MessageFormatError, SplitMessage, field_values, split_headers,
                        split_message)
from .common import authenticated, check_mode, client_ip, mode_of, store_failed, warnings
from .config import ON_STORE_ERROR, SEAL
from .dkimcheck import (ArcResult, ArcSealer, DkimResult, PrefetchedKeys, SignatureField,
                        header_section, key_names, signature_fields, too_big, unparsed, verify_arc,
                        verify_dkim)
from .dmarc import DmarcResult, check_dmarc
from .dns import Resolver
from .spf import SpfCache, SpfResult, check_helo, check_spf

if TYPE_CHECKING:
    from ..middleware import Context, Next
    from ..options import OnStoreError

DMARC_REJECT = (550, 'Message rejected: DMARC policy of {domain} says reject', '5.7.1')
MAX_HEADER_BYTES = 1 << 20      # where we look for the header section
# Larger messages: signatures not verified. The message is held in memory
# to verify it, and dkimpy's relaxed canonicalisation is one regular
# expression over the whole body, run in C with the GIL held: about 0.1 s
# per MiB here, during which no greenlet of the process runs, worker thread
# or not. 4 MiB bounds that stall; most mail is far smaller.
MAX_VERIFY_BYTES = 4 << 20
# Smaller messages are verified in the session's greenlet: about 0.5 ms for
# 4 KiB and under 3 ms at this bound, a pause shorter than the GIL's switch
# interval (5 ms), which a worker thread running dkimpy imposes on the hub too.
INLINE_VERIFY_BYTES = 64 << 10


@dataclass
class AuthResults:
    """What `authenticate` found; `envelope.auth_results`."""
    spf: SpfResult | None = None
    helo: SpfResult | None = None           # of the HELO identity (RFC 7208 2.3)
    dkim: list[DkimResult] | None = None    # None when not checked
    dmarc: DmarcResult | None = None
    arc: ArcResult | None = None
    mail_from: str = ''
    header: str = ''                # the Authentication-Results value added
    refused: bool = False
    temperrors: list[str] | None = None     # the checks DNS failed: 'spf', 'dkim', 'dmarc'

    @property
    def dkim_passes(self) -> list[str]:
        return [d.domain for d in self.dkim or () if d.result == 'pass']


class Authenticate:
    """SPF, DKIM, DMARC and ARC results in an Authentication-Results header;
    with `arc_seal={selector, domain, key}` also an ARC set (RFC 8617 5.1).
    `remove_forged`: leave out the message's own Authentication-Results
    fields that claim our authserv-id (RFC 8601 5). The factory
    `policies.authenticate`, and the YAML entry `authenticate:`."""
    stages = frozenset({'HELO', 'MAIL', 'DATA', 'HEADER', 'BODY'})  # middleware.stages

    def __init__(self, spf: Annotated[bool, BOOL] = True, dkim: Annotated[bool, BOOL] = True,
                 dmarc: Annotated[bool, BOOL] = True, arc: Annotated[bool, BOOL] = True,
                 enforce_dmarc: Annotated[bool, BOOL] = False, resolver: Resolver | None = None,
                 authserv_id: Annotated[str | None, STRING] = None,
                 arc_seal: Annotated[ArcSealer | Mapping[str, str | bytes] | None, SEAL] = None,
                 max_verify_bytes: Annotated[int, INTEGER] = MAX_VERIFY_BYTES,
                 remove_forged: Annotated[bool, BOOL] = True, *,
                 max_signatures: int = 5, spf_helo: bool = True,
                 on_store_error: Annotated[OnStoreError | None, ON_STORE_ERROR] = None):
        self.spf, self.dkim, self.dmarc, self.arc = bool(spf), bool(dkim), bool(dmarc), bool(arc)
        self.enforce_dmarc = bool(enforce_dmarc)
        if self.dmarc and not (self.spf or self.dkim):
            raise ValueError('authenticate: dmarc needs spf or dkim')
        self.resolver = resolver or Resolver()
        self.authserv_id = authserv_id
        self.max_signatures = max_signatures
        self.spf_helo = spf_helo
        self.max_verify_bytes = max_verify_bytes
        self.remove_forged = bool(remove_forged)
        self.on_store_error = check_mode(on_store_error, 'authenticate')
        self.spf_cache = SpfCache()     # results within their DNS answers' TTL
        self.sealer = None if arc_seal is None else ArcSealer.from_spec(arc_seal)
        if self.sealer is not None and not self.arc:
            raise ValueError('authenticate: arc_seal needs arc=True '
                             '(the seal states the chain result)')

    def check(self, message: bytes, ip: str, mail_from: str, helo: str) -> AuthResults:
        """Every enabled check of one message (bytes as received, CRLF)."""
        results = AuthResults(mail_from=mail_from)
        whole = len(message) <= self.max_verify_bytes
        if self.spf and ip:
            results.spf = check_spf(self.resolver, ip, mail_from, helo, cache=self.spf_cache)
            if self.spf_helo and mail_from and helo:
                results.helo = check_helo(self.resolver, ip, helo, cache=self.spf_cache)
        head = message[:MAX_HEADER_BYTES]
        split, broken = _split(message, head, whole) if self.dkim or self.dmarc or self.arc \
            else (None, None)
        arc_chain = self.arc and whole and (
            _has_field(split.headers, b'arc-seal') if split is not None
            else b'arc-seal:' in header_section(head).lower())
        verified: Verified = (None, None)
        if split is not None and whole and (self.dkim or arc_chain):
            verified = self._verify(message, split, arc_chain)
        elif arc_chain:     # dkimpy reads the chain itself (and finds it broken)
            verified = (None, verify_arc(PrefetchedKeys(self.resolver, ()), message))
        if self.dkim:
            if split is None:
                results.dkim = unparsed(header_section(head), str(broken))
            else:
                results.dkim = verified[0] if whole \
                    else too_big(split.headers, self.max_verify_bytes)
        if self.dmarc:
            spf = results.spf
            results.dmarc = check_dmarc(
                self.resolver, _from_values(split.headers if split else None, head),
                spf.result if spf else 'none', spf.domain if spf else '',
                results.dkim_passes)
        if self.arc and not whole:
            pass                    # not verified: no arc= result rather than a wrong one
        elif arc_chain:
            results.arc = verified[1]
        elif self.arc:
            results.arc = ArcResult('none')
        results.temperrors = [name for name, r in (('spf', results.spf), ('dmarc', results.dmarc))
                              if r is not None and r.result == 'temperror']
        if any(d.result == 'temperror' for d in results.dkim or ()):
            results.temperrors.insert(1 if results.spf else 0, 'dkim')
        if not whole and results.dmarc is not None and results.dmarc.result == 'fail':
            # Its DKIM signatures were not verified (too big), so a failure
            # may only be ours: not a verdict to record, nor to enforce.
            results.dmarc = replace(results.dmarc, result='temperror', policy='none')
        return results

    def _verify(self, message: bytes, split: SplitMessage, arc_chain: bool) -> Verified:
        """The DKIM signatures (if checked) and the ARC chain (if any).
        Keys looked up here (DNS on the hub), signatures checked in a
        worker thread (CPU: seconds for a big body), never on the hub; a
        small message in the greenlet: its check costs less than the
        hand-off, and a thread running Python holds the GIL as long."""
        fields = signature_fields(split.headers, self.max_signatures)
        keys = PrefetchedKeys(self.resolver, key_names(fields))
        verify = (split, self.max_signatures, self.dkim, arc_chain, fields)
        if len(message) <= INLINE_VERIFY_BYTES:
            return _verify(keys, message, *verify)
        return offload(_verify, keys, message, *verify)

    def __call__(self, ctx: Context, next: Next) -> None:
        next()
        if ctx.command_name not in ('DATA', 'BDAT'):
            return
        session = ctx.session
        envelope = session.envelope
        if envelope.data_stream is None:
            return
        authserv = self.authserv_id or ctx.server.options.name
        if self.remove_forged:
            envelope.remove_header('Authentication-Results', claims(authserv))
        if authenticated(session):
            return
        if ctx.reply is not None and not isinstance(ctx.reply, list) and ctx.reply.code >= 400:
            return      # already refused by an inner middleware
        spool = envelope.spool()        # MessageRefused propagates: the client's reply
        with spool.open() as f:      # at most the bound, plus one byte to know it was passed
            message = f.read(self.max_verify_bytes + 1)
        ip = client_ip(session)
        mail_from = envelope.mail_from.address if envelope.mail_from else ''
        results = self.check(message, str(ip) if ip else '', mail_from, session.helo or '')
        mode = mode_of(self.on_store_error, ctx)
        # A key not found for now (DKIM) is said only when it refuses: it is
        # most often the signer's DNS, not ours.
        failed = [name for name in results.temperrors or () if name != 'dkim' or mode == 'tempfail']
        if failed:      # 'tempfail': 451 4.3.5, nothing added, nothing delivered
            store_failed(mode, 'authenticate dns', 'authenticate: %s temperror (DNS)', failed[0])
        elif results.spf is not None or results.dmarc is not None:
            warnings.ok('authenticate dns')
        results.header = header_value(authserv, results)
        envelope.auth_results = results
        envelope.add_header('Authentication-Results', results.header)
        if self.sealer is not None and len(message) <= self.max_verify_bytes:
            # Sealed as delivered: dkimpy folds every Authentication-Results
            # field of our authserv-id into the ARC-Authentication-Results,
            # so a forged one would be sealed with our key otherwise.
            delivered = remove_fields(message, envelope.removed_headers)
            try:
                for name, value in self.sealer.seal(delivered, authserv, results.header):
                    envelope.add_header(name, value)
            except Exception as exc:        # a bad key, a chain dkimpy will not extend
                warnings.failed('arc seal', 'authenticate: no ARC seal: %s', exc)
        dmarc = results.dmarc
        if self.enforce_dmarc and dmarc is not None and dmarc.result == 'fail' \
                and dmarc.policy == 'reject':
            results.refused = True
            code, text, enhanced = DMARC_REJECT
            raise SmtpError(code, text.format(domain=dmarc.domain), enhanced)


# What the worker thread found: DKIM results (None: not asked), the ARC result.
Verified = tuple[list[DkimResult] | None, ArcResult | None]


def _verify(keys: PrefetchedKeys, message: bytes, split: SplitMessage, max_signatures: int,
            dkim: bool, arc: bool, fields: list[SignatureField]) -> Verified:
    """(DKIM results, ARC result): the CPU part, run in a worker thread."""
    return (verify_dkim(keys, split, max_signatures, fields) if dkim else None,
            verify_arc(keys, message) if arc else None)


def _split(message: bytes, head: bytes,
           whole: bool) -> tuple[SplitMessage, None] | tuple[None, MessageFormatError]:
    """The message split once (only its header fields when it is not
    verified whole), or why its header section does not split."""
    try:
        return (split_message(message) if whole
                else SplitMessage(split_headers(header_section(head)), b'')), None
    except MessageFormatError as exc:
        return None, exc


def _has_field(headers: list[Field], name: bytes) -> bool:
    return any(field.lower() == name for field, _ in headers)


def _from_values(headers: list[Field] | None, head: bytes) -> list[str]:
    """The From fields' values for DMARC, from the fields already split; a
    header section that does not split is read by the standard library's
    parser, which stops at the line it cannot read."""
    if headers is not None:
        return field_values(headers, b'from')
    parsed = BytesHeaderParser().parsebytes(header_section(head))
    return [str(v) for v in parsed.get_all('From') or ()]

