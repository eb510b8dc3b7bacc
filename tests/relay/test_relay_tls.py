"""wss:// with the relay's self-signed certificate, trusted by its SPKI pin (OkHttp ``sha256/`` format)."""

from __future__ import annotations

import os
import ssl
import stat

import pytest
import trio
from helpers import client_ssl_context, http_json, pair, raw_http, ws_auth

from hermes_relay.core.errors import ConfigError
from hermes_relay.core.pin import is_valid_pin, spki_pin_from_der, spki_pin_from_pem
from hermes_relay.relay import tls


async def peer_certificate(host: str, port: int) -> bytes:
    stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=client_ssl_context(), https_compatible=True)
    async with stream:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_wss_pairing_works_with_an_unverified_context_and_the_pin_matches(relay_factory, tmp_path):
    relay = await relay_factory(tls=True, cert_dir=tmp_path / "certs")
    assert relay.url.startswith("wss://127.0.0.1:")
    assert is_valid_pin(relay.info.cert_pin)

    ctx = client_ssl_context()
    assert (ctx.check_hostname, ctx.verify_mode) == (False, ssl.CERT_NONE)
    ws, ok = await pair(relay.url, relay.http, ssl_context=ctx)
    assert ok["transport_hint"] == "wss"
    _, again = await ws_auth(relay.url, {"session_token": ok["session_token"]}, ctx)
    assert again["type"] == "auth.ok"

    der = await peer_certificate(relay.info.host, relay.info.port)
    assert spki_pin_from_der(der) == relay.info.cert_pin

    status, health = await http_json("GET", f"{relay.http}/health", ssl_context=ctx)
    assert (status, health["tls"], health["sessions"]) == (200, True, 1)
    assert health["cert_pin"] == relay.info.cert_pin == spki_pin_from_der(der)  # what every TLS client sees


async def test_default_client_context_rejects_the_self_signed_certificate(relay_factory):
    relay = await relay_factory(tls=True)
    strict = ssl.create_default_context()
    with pytest.raises(trio.BrokenResourceError) as info:
        await http_json("GET", f"{relay.http}/health", ssl_context=strict)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    status, _ = await http_json("GET", f"{relay.http}/health")  # and the relay is unharmed
    assert status == 200


async def test_plain_http_on_the_tls_port_is_dropped_and_the_relay_keeps_serving(relay_factory):
    relay = await relay_factory(tls=True)
    plain = f"http://{relay.info.host}:{relay.info.port}"
    reply = await raw_http(plain, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not reply.startswith(b"HTTP/")
    _, ok = await pair(relay.url, relay.http)
    assert ok["transport_hint"] == "wss"


async def test_restart_with_the_same_certificate_directory_keeps_the_pin(relay_factory, tmp_path):
    certs = tmp_path / "certs"
    first = await relay_factory(tls=True, cert_dir=certs)
    await first.stop()
    second = await relay_factory(tls=True, cert_dir=certs)
    assert second.info.cert_pin == first.info.cert_pin
    der = await peer_certificate(second.info.host, second.info.port)
    assert spki_pin_from_der(der) == first.info.cert_pin


def test_certificate_is_generated_once_and_the_key_is_private(tmp_path):
    cert, key = tls.ensure_certificate(tmp_path, ["127.0.0.1", "relay.example"])
    pem, key_pem = cert.read_bytes(), key.read_bytes()
    assert tls.ensure_certificate(tmp_path, ["other.example"]) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == (pem, key_pem)
    if os.name == "posix":
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    _, pin = tls.load_server_context(cert, key)
    assert pin == spki_pin_from_pem(pem)


def test_unreadable_certificate_is_a_config_error_naming_the_file(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="nope.pem"):
        tls.load_server_context(missing, tmp_path / "key.pem")
    cert, _ = tls.ensure_certificate(tmp_path, [])
    other_key = tmp_path / "wrong-key.pem"
    other_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="wrong-key.pem"):
        tls.load_server_context(cert, other_key)
