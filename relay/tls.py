"""TLS for ``wss://``: load the operator's certificate or generate and keep a self-signed one.

The self-signed certificate is created once (EC P-256, ten years) and reused across restarts, so
clients that pinned it on first use keep connecting. Clients trust it by its SPKI pin, which the
server prints at start-up; CA validation is not expected for a relay on a LAN or tailnet. Its
subjectAltName lists every name the relay is offered under (loopback, the host name, the bind address,
and for a wildcard bind this host's LAN address): the reference desktop CLI uses the certificate itself
as its CA with host-name verification on, so an invite's ``proxy.url`` host must be one of them.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..core import fileio
from ..core.errors import ConfigError
from ..core.pin import spki_pin_from_pem

CERT_VALIDITY_DAYS = 3650


def generate_self_signed(cert_path: Path, key_path: Path, hosts: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hermes-relay")])
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts]):
        if not host:
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fileio.atomic_write(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    fileio.atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def leaf_der_b64(cert_path: Path) -> str:
    """The first (leaf) certificate of a PEM file as base64 DER: what invites carry as ``proxy.cert_der``
    (public: every TLS client is shown it). Raises ConfigError naming the file."""
    try:
        pem = cert_path.read_text(encoding="ascii")
        der = ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read TLS certificate {cert_path}: {exc}") from exc
    return base64.b64encode(der).decode("ascii")


def names_host(cert_der_b64: str, host: str) -> bool:
    """Whether the certificate's subjectAltName covers ``host`` exactly (an IP address or a DNS name), as a
    client verifying the host name requires."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_der_b64))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower().rstrip(".") in (n.lower() for n in sans.get_values_for_type(x509.DNSName))


def load_server_context(cert_path: Path, key_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server SSLContext and the certificate's pin. Raises ConfigError with the file named."""
    try:
        pem = cert_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS certificate {cert_path}: {exc.strerror or exc}") from exc
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert_path} with key {key_path}: {exc}") from exc
    return ctx, spki_pin_from_pem(pem)


def ensure_certificate(state_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    cert_path, key_path = state_dir / "relay-cert.pem", state_dir / "relay-key.pem"
    if not (cert_path.exists() and key_path.exists()):
        generate_self_signed(cert_path, key_path, hosts)
    return cert_path, key_path
