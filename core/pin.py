"""Certificate pins in the OkHttp format: ``sha256/`` + base64(SHA-256(SubjectPublicKeyInfo DER))."""

from __future__ import annotations

import base64
import hashlib
import re

from .errors import TlsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

PIN_PREFIX = "sha256/"
_PIN_RE = re.compile(r"^sha256/[A-Za-z0-9+/]{43}=$")


def spki_pin_from_der(cert_der: bytes) -> str:
    """The pin of a DER-encoded leaf certificate. Raises TlsError for bytes that are not a certificate."""
    # Imported here: cryptography costs ~250 ms to import and the CLI only formats pins.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise TlsError(f"the relay presented data that is not an X.509 certificate: {exc}") from exc
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PIN_PREFIX + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def spki_pin_from_pem(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise TlsError(f"not a PEM certificate: {exc}") from exc
    return spki_pin_from_der(cert.public_bytes(serialization.Encoding.DER))


def is_valid_pin(pin: str) -> bool:
    return bool(_PIN_RE.fullmatch(pin or ""))  # fullmatch: "$" alone lets a trailing "\n" through


_CLIENT_CONTEXT: ssl.SSLContext | None = None


def pinned_trust_context() -> ssl.SSLContext:  # ssl is imported lazily: the CLI formats pins only
    """The client TLS context for relays: no CA or host name check, because trust comes from the
    SPKI pin compared right after the handshake (trust on first use, as the reference client does)."""
    global _CLIENT_CONTEXT
    if _CLIENT_CONTEXT is None:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _CLIENT_CONTEXT = ctx
    return _CLIENT_CONTEXT
