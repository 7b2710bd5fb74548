"""TLS for smtp_stack: server contexts, self-signed certificates, SNI.

No sockets are opened here. The server builds its contexts once, at
construction, so every bad key, certificate or option raises ValueError there
and never on a live connection (docs/api.md: "bad values raise ValueError at
construction"). The handshake itself, for STARTTLS (RFC 3207) or implicit TLS,
belongs to the session loop; this module only decides which context answers
and reports what was negotiated (`tls_info`).
"""
from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import logs

if TYPE_CHECKING:
    from .session import TlsInfo


log = logs.get('smtp_stack.tls')

#: The options a context is built from, at top level and in each sni_options entry.
TLS_OPTIONS = ('key', 'cert', 'ca', 'min_version', 'ciphers', 'honor_cipher_order',
               'session_id_context', 'request_cert', 'reject_unauthorized')

MIN_VERSIONS = {
    'TLSv1': ssl.TLSVersion.TLSv1,
    'TLSv1.1': ssl.TLSVersion.TLSv1_1,
    'TLSv1.2': ssl.TLSVersion.TLSv1_2,
    'TLSv1.3': ssl.TLSVersion.TLSv1_3,
}

#: Attribute set on the TLS socket by the SNI callback: the normalised name
#: the client asked for, or None. The stdlib offers no way to read it back.
SERVERNAME_ATTR = 'smtp_stack_servername'

Pem = str | bytes       # PEM text

#: OpenSSL refuses longer session id contexts (SSL_MAX_SID_CTX_LENGTH).
_MAX_SID_CTX = 32


# -- names -------------------------------------------------------------------

def normalize_hostname(name: str) -> str:
    """The one spelling used for sni_options keys and for what clients send.

    IDNA A-labels, lower case, no trailing dot. Labels are encoded one by one
    so that a single label the stdlib 'idna' codec (IDNA 2003) cannot encode
    stays as it was (lower-cased) instead of spoiling the whole name.
    """
    name = name.strip().rstrip('.')
    if not name.isascii():
        labels = []
        for label in name.split('.'):
            try:
                labels.append(label.encode('idna').decode('ascii'))
            except UnicodeError:
                labels.append(label)
        name = '.'.join(labels)
    return name.lower()


def _ip_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip('[]'))
    except ValueError:
        return None


# -- self-signed certificates ------------------------------------------------

def generate_self_signed(hostname: str, days: int = 3650) -> tuple[bytes, bytes]:
    """(key PEM, cert PEM) for `hostname`, made once per process and name.

    RSA 2048 rather than EC P-256: an SMTP server is reached by old MTAs,
    printers and appliances, some of which only know RSA certificates, and
    the slower key generation is paid once per name per process. Worker
    processes forked after the first call share the same pair.
    """
    name = normalize_hostname(hostname)
    ip = _ip_literal(name)
    if ip is not None:
        name = str(ip)  # '[::1]' and '::1' are one name
    if not name:
        raise ValueError('a self-signed certificate needs a host name')
    if not isinstance(days, int) or days < 1:
        raise ValueError('days must be a positive integer')
    return _self_signed(name, days)


@functools.cache
def _self_signed(name: str, days: int) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # A CN is limited to 64 characters; the SAN below is what clients check.
    subject = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, name if len(name) <= 64 else 'smtp_stack self-signed')])
    san: list[x509.GeneralName] = [x509.DNSName(name)]
    ip = _ip_literal(name)
    if ip is not None:
        san.append(x509.IPAddress(ip))
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


# -- contexts ----------------------------------------------------------------

def create_context(key: Pem | None = None, cert: Pem | None = None,
                   ca: Pem | Sequence[Pem] | None = None,
                   min_version: str | ssl.TLSVersion = 'TLSv1.2', ciphers: str | None = None,
                   honor_cipher_order: bool = False, session_id_context: str | None = None,
                   request_cert: bool = False, reject_unauthorized: bool = True,
                   hostname: str = 'localhost',
                   context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """A server-side context; every problem is a ValueError now, not at handshake.

    `key`/`cert`/`ca` are PEM text (str or bytes; `ca` may also be a list).
    `cert` alone may hold both the chain and the key. Without either, the
    cached self-signed pair for `hostname` is used.

    `session_id_context` is validated but cannot be applied: CPython fixes it
    to "Python" on every context and exposes no setter.
    `reject_unauthorized=False` lets clients without a certificate in, but an
    untrusted certificate still fails the handshake: the stdlib has no hook
    to override OpenSSL's verification result.
    `context_class`: `gevent.ssl.SSLContext` for a server of gevent's that
    wraps its sockets itself (its WSGIServer): a stdlib context would make
    sockets that block the hub. The SMTP engine does its own TLS over
    memory BIOs, with either.
    """
    ctx = context_class(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _min_version(min_version)
    # One TLS 1.3 session ticket per handshake, not OpenSSL's two: a mail
    # client resumes one session per connection (and gets a fresh ticket
    # each time); each ticket costs the server ~28 us and a record.
    ctx.num_tickets = 1
    if key is not None and cert is None:
        raise ValueError('key given without cert')
    if cert is None:
        key, cert = generate_self_signed(hostname)
    _load_chain(ctx, _pem(key, 'key') if key is not None else None, _pem(cert, 'cert'))
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ValueError(f'ciphers {ciphers!r} select no usable cipher') from None
    if honor_cipher_order:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _check_session_id_context(session_id_context)
    if request_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED if reject_unauthorized else ssl.CERT_OPTIONAL
        if ca is None:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    if ca is not None:
        _load_ca(ctx, ca)
    return ctx


def read_pem_files(cert: str, key: str | None = None) -> tuple[str, str | None]:
    """The PEM text of a certificate (chain) file and of its key file, as
    `create_context(key, cert)` takes them; None for the key when it is in
    the certificate's file. OSError when a file cannot be read."""
    with open(cert, encoding='ascii') as f:
        cert_pem = f.read()
    if key is None:
        return cert_pem, None
    with open(key, encoding='ascii') as f:
        return cert_pem, f.read()


def build_secure_contexts(options: Mapping[str, Any], name: str) -> dict[str, ssl.SSLContext]:
    """{'*': default context, normalised sni host: its context}.

    An sni_options entry inherits each top-level option it leaves unset (or
    None), except that key and cert travel as a pair: an entry that names
    either gets nothing of the other from the top level. An entry with no
    key/cert anywhere gets a self-signed certificate for its own host name,
    so a client checking that name sees a matching certificate.
    """
    top = {k: options[k] for k in TLS_OPTIONS if options.get(k) is not None}
    contexts = {'*': create_context(hostname=name, **top)}
    sni_options = options.get('sni_options') or {}
    if not isinstance(sni_options, dict):
        raise ValueError('sni_options must be a dict {hostname: {key, cert, ...}}')
    for host, entry in sni_options.items():
        if not isinstance(host, str) or not isinstance(entry, dict):
            raise ValueError('sni_options must be a dict {hostname: {key, cert, ...}}')
        unknown = set(entry) - set(TLS_OPTIONS)
        if unknown:
            raise ValueError(f'sni_options[{host!r}]: unknown option(s) {sorted(unknown)}')
        key = normalize_hostname(host)
        if not key or key == '*':
            raise ValueError(f'sni_options: {host!r} is not a host name')
        if key in contexts:
            raise ValueError(f'sni_options: {host!r} repeats {key!r}')
        own = {k: v for k, v in entry.items() if v is not None}
        merged = {**top, **own}
        if 'key' in own or 'cert' in own:
            merged['key'], merged['cert'] = own.get('key'), own.get('cert')
        try:
            contexts[key] = create_context(hostname=key, **merged)
        except ValueError as exc:
            raise ValueError(f'sni_options[{host!r}]: {exc}') from None
    return contexts


def _min_version(value: str | ssl.TLSVersion) -> ssl.TLSVersion:
    if isinstance(value, ssl.TLSVersion):
        return value
    try:
        return MIN_VERSIONS[value]
    except (KeyError, TypeError):
        choices = ', '.join(MIN_VERSIONS)
        raise ValueError(f'min_version {value!r} is not one of {choices}') from None


def _pem(value: object, what: str) -> str:
    """PEM as text; bytes are decoded because `cadata` would read bytes as DER."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode('ascii')
        except UnicodeDecodeError:
            raise ValueError(f'{what} is not PEM text') from None
    if not isinstance(value, str) or '-----BEGIN ' not in value:
        raise ValueError(f'{what} is not PEM text')
    return value


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for a passphrase.
    raise ValueError('encrypted private keys are not supported')


def _load_chain(ctx: ssl.SSLContext, key: str | None, cert: str) -> None:
    """load_cert_chain only reads files: write them to a private directory
    (0700, files 0600) that is gone again when this returns."""
    with tempfile.TemporaryDirectory(prefix='smtp_stack-tls-') as tmp:
        certfile = _write_private(os.path.join(tmp, 'cert.pem'), cert)
        keyfile = _write_private(os.path.join(tmp, 'key.pem'), key) if key else None
        try:
            ctx.load_cert_chain(certfile, keyfile, password=_refuse_password)
        except ssl.SSLError as exc:
            raise ValueError(f'cannot load key/cert: {exc.reason or exc}') from None


def _write_private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='ascii') as f:
        f.write(text)
    return path


def _load_ca(ctx: ssl.SSLContext, ca: Pem | Sequence[Pem]) -> None:
    items = ca if isinstance(ca, (list, tuple)) else [ca]
    pem = '\n'.join(_pem(item, 'ca') for item in items)
    try:
        ctx.load_verify_locations(cadata=pem)
    except ssl.SSLError as exc:
        raise ValueError(f'cannot load ca: {exc.reason or exc}') from None


def _check_session_id_context(value: str | bytes | None) -> None:
    if value is None:
        return
    raw = value.encode('utf-8') if isinstance(value, str) else value
    if not isinstance(raw, bytes) or len(raw) > _MAX_SID_CTX:
        raise ValueError(f'session_id_context must be at most {_MAX_SID_CTX} bytes')


# -- SNI ---------------------------------------------------------------------

def install_sni(contexts: dict[str, ssl.SSLContext],
                sni_callback: Callable[[str], ssl.SSLContext | None] | None = None,
                on_error: Callable[[Exception, str | None], object] | None = None) -> None:
    """Choose the context from the name the client sends (RFC 6066 §3).

    `sni_callback(name)` is asked first; when it returns None, `contexts` is
    read at handshake time (so entries added later count): the exact name,
    then `*.parent`, else the socket keeps the context it was wrapped with.
    The name is stored on the TLS socket (see `tls_info`). A failure fails
    that one handshake with an internal_error alert; `on_error(exc, name)`
    hears about it (default: a warning on the 'smtp_stack.tls' logger).

    The callback is handed the `ssl.SSLObject` being handshaken (see
    sockets.TlsSocket), which is where the name is stored. Only the certificate and
    key follow a switched context (SSL_set_SSL_CTX): the minimum version,
    ciphers and verify mode stay those of the context the socket was
    wrapped with, so set them at top level.
    """
    def choose(sslobj: Any, server_name: str | None, current: ssl.SSLContext) -> int | None:
        try:
            name = normalize_hostname(server_name) if server_name else None
            setattr(sslobj, SERVERNAME_ATTR, name)
            if name is None:
                return None
            chosen = sni_callback(name) if sni_callback is not None else None
            if chosen is None:
                chosen = lookup_context(contexts, name)
            if chosen is not None and chosen is not current:
                sslobj.context = chosen  # TypeError unless an SSLContext, gevent's or not
        except Exception as exc:  # must not escape into OpenSSL's handshake
            (on_error or _log_sni_error)(exc, server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    for ctx in contexts.values():
        ctx.sni_callback = choose


def lookup_context(contexts: Mapping[str, ssl.SSLContext], name: str) -> ssl.SSLContext | None:
    """The exact name, else a one-label wildcard (RFC 6125 §6.4.3), else None."""
    found = contexts.get(name)
    if found is None and '.' in name:
        found = contexts.get('*.' + name.split('.', 1)[1])
    return found


def _log_sni_error(exc: Exception, server_name: str | None) -> None:
    """Called while `exc` is handled (choose's except): its traceback goes too."""
    log.record(30, 'TLS handshake for server name %r failed in SNI selection: %r',
               (server_name, exc), {'servername': server_name}, exc_info=True)


def tls_info(ssl_sock: ssl.SSLObject | ssl.SSLSocket) -> TlsInfo:
    """What a session records after the handshake (`session.tls`)."""
    cipher = ssl_sock.cipher()
    return {
        'cipher': cipher[0] if cipher else None,
        'bits': cipher[2] if cipher else None,
        'version': ssl_sock.version(),
        'servername': getattr(ssl_sock, SERVERNAME_ATTR, None),
        'peer_certificate': ssl_sock.getpeercert() or None,
        'peer_certificate_der': ssl_sock.getpeercert(binary_form=True),
    }
