"""TLS for MailSink: a certificate authority made at run time, and the
certificate it signs for the loopback names.

A test that verifies the server's certificate (as Django's SMTP backend and
`ssl.create_default_context()` do) needs a CA it can trust: a self-signed
server certificate can only be accepted by turning verification off, which
is exactly what such a test must not do. So each process makes one CA and
one server certificate for `localhost`, `127.0.0.1` and `::1`, on first use;
the CA's certificate is written to a PEM file in a private temporary
directory (never in the working tree), removed when the process exits. The
private keys never touch the disk.

EC P-256 keys: generating one takes well under a millisecond (an RSA 2048
key takes tens to hundreds), and every TLS client a test suite uses knows
ECDSA. The chain is what strict verifiers (OpenSSL's X509_STRICT, on by
default in Python 3.13's `create_default_context`) ask for: a CA with
critical basic constraints and key usage, a subject key identifier on both
and an authority key identifier on the leaf (RFC 5280 4.2.1.1, 4.2.1.2).
"""
from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The names the server certificate is good for: what a test connects to.
LOOPBACK_HOSTNAMES = ('localhost',)
LOOPBACK_ADDRESSES = ('127.0.0.1', '::1')

#: Long enough for any test session, short enough to be plainly a test CA.
VALIDITY = datetime.timedelta(days=7)
#: Tolerance for a clock that is a little behind the one that signed.
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class LoopbackCertificates:
    """The server's key and certificate (PEM, for SmtpServer's `key` and
    `cert`), and the CA that signed it: its PEM and the file holding it."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    ca_file: str


_made: LoopbackCertificates | None = None
_lock = threading.Lock()


def loopback_certificates() -> LoopbackCertificates:
    """The process's CA and server certificate, made on first call."""
    global _made
    with _lock:
        if _made is None:
            _made = _make()
        return _made


def _make() -> LoopbackCertificates:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'smtp_stack.testing'),
        x509.NameAttribute(NameOID.COMMON_NAME, f'smtp_stack test CA (pid {os.getpid()})'),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _valid(x509.CertificateBuilder(), now)
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in LOOPBACK_HOSTNAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOOPBACK_ADDRESSES]
    cert = (
        _valid(x509.CertificateBuilder(), now)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return LoopbackCertificates(key_pem=key_pem,
                                cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                                ca_pem=ca_pem, ca_file=_write_ca_file(ca_pem))


def _valid(builder: x509.CertificateBuilder,
           now: datetime.datetime) -> x509.CertificateBuilder:
    return (builder.serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY))


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates, key_cert_sign=signs_certificates,
        crl_sign=signs_certificates, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, encipher_only=False,
        decipher_only=False)


def _write_ca_file(ca_pem: bytes) -> str:
    """The CA's PEM in a fresh directory under the system's temporary one,
    removed at exit by the process that made it (a forked child that exits
    through atexit must not take it away from its parent)."""
    directory = tempfile.mkdtemp(prefix='smtp_stack-test-ca-')
    atexit.register(_remove, directory, os.getpid())
    path = os.path.join(directory, 'ca.pem')
    with open(path, 'wb') as f:
        f.write(ca_pem)
    return path


def _remove(directory: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)
