"""Certificate pins: sha256/ + base64(SHA-256(SubjectPublicKeyInfo DER)), checked against a real cert."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hermes_relay.core import pin
from hermes_relay.core.errors import TlsError


def _self_signed(key: ec.EllipticCurvePrivateKey, serial: int = 1) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _expected_pin(key: ec.EllipticCurvePrivateKey) -> str:
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_pin_of_a_generated_cert_is_sha256_of_its_spki(key: ec.EllipticCurvePrivateKey) -> None:
    cert = _self_signed(key)
    got = pin.spki_pin_from_der(cert.public_bytes(serialization.Encoding.DER))
    assert got == _expected_pin(key)
    assert pin.is_valid_pin(got)


def test_pem_and_der_give_the_same_pin(key: ec.EllipticCurvePrivateKey) -> None:
    cert = _self_signed(key)
    assert pin.spki_pin_from_pem(cert.public_bytes(serialization.Encoding.PEM)) == pin.spki_pin_from_der(
        cert.public_bytes(serialization.Encoding.DER)
    )


def test_pin_follows_the_key_not_the_certificate(key: ec.EllipticCurvePrivateKey) -> None:
    renewed = _self_signed(key, serial=2)
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    assert pin.spki_pin_from_der(der(renewed)) == pin.spki_pin_from_der(der(_self_signed(key)))
    assert pin.spki_pin_from_der(der(other)) != pin.spki_pin_from_der(der(renewed))


def test_garbage_is_a_tls_error() -> None:
    with pytest.raises(TlsError, match="not an X.509 certificate"):
        pin.spki_pin_from_der(b"\x30\x03\x02\x01\x00")
    with pytest.raises(TlsError, match="not a PEM certificate"):
        pin.spki_pin_from_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("sha256/" + "A" * 43 + "=", True),
        ("sha256/" + "A" * 44, False),
        ("sha1/" + "A" * 43 + "=", False),
        ("sha256/" + "A" * 42 + "=", False),
        ("sha256/" + "A" * 43 + "=\n", False),
        ("", False),
    ],
)
def test_is_valid_pin(text: str, ok: bool) -> None:
    assert pin.is_valid_pin(text) is ok
