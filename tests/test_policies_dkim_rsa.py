"""dkimcheck.rsa_verify: dkimpy's RSA step through cryptography, with dkimpy's own answers."""
import base64

import peers
import pytest

dkim = peers.python_module('dkim', 'policies')
import dkim.crypto  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from smtp_stack.policies import dkimcheck  # noqa: E402

MESSAGE = (b'From: a@example.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\n'
           + b'body line\r\n' * 40)


def key_pair(bits):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b'v=DKIM1; k=rsa; p=' + base64.b64encode(der)


def test_dkimpy_calls_our_rsa_verify_and_key_parser():
    assert dkimcheck.use_openssl_rsa()
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkimcheck.rsa_verify
    assert dkim.parse_public_key is dkimcheck.parse_public_key


@pytest.mark.parametrize('bits', [1024, 2048])
@pytest.mark.parametrize('change', ['none', 'body', 'header', 'other key'])
def test_the_same_verdicts_as_dkimpys_own_arithmetic(bits, change, monkeypatch):
    assert dkimcheck.use_openssl_rsa()
    pem, record = key_pair(bits)
    signed = dkim.sign(MESSAGE, b's', b'example.test', pem, include_headers=[b'from', b'subject'])
    message = signed + MESSAGE
    if change == 'body':
        message = message.replace(b'body line', b'body lime', 1)
    elif change == 'header':
        message = message.replace(b'Subject: hi', b'Subject: ho')
    elif change == 'other key':
        record = key_pair(bits)[1]
    ours = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
    monkeypatch.setattr(dkim, 'RSASSA_PKCS1_v1_5_verify', dkim.crypto.RSASSA_PKCS1_v1_5_verify)
    monkeypatch.setattr(dkim, 'parse_public_key', dkim.crypto.parse_public_key)
    theirs = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
    assert ours == theirs == (change == 'none')
