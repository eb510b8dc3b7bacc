"""Pairing invites: the three wrappings, strict parsing, and signatures that match the reference relay."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_relay.core import payload
from hermes_relay.core.errors import PayloadError

SECRET = bytes(range(32))

# Vectors computed with the reference relay's algorithm (plugin/relay/qr_sign.py: sig stripped, keys
# sorted recursively, "," and ":" separators, ASCII escapes, NaN refused, base64 HMAC-SHA256).
V3 = {
    "hermes": 3, "host": "192.168.1.20", "port": 8767, "key": "", "tls": False,
    "relay": {"url": "ws://192.168.1.20:8767", "code": "F3W7EY", "ttl_seconds": 2592000, "transport_hint": "ws"},
    "endpoints": [
        {"role": "lan", "priority": 0, "api": {"host": "192.168.1.20", "port": 8767, "tls": False},
         "relay": {"url": "ws://192.168.1.20:8767", "transport_hint": "ws"}},
        {"role": "tailscale", "priority": 1, "api": {"host": "100.101.102.103", "port": 8767, "tls": False},
         "relay": {"url": "ws://100.101.102.103:8767", "transport_hint": "ws"}},
        {"role": "public", "priority": 2, "api": {"host": "relay.example.com", "port": 443, "tls": True},
         "relay": {"url": "wss://relay.example.com", "transport_hint": "wss"}},
    ],
}
V3_SIG = "alvYJ2LKHjml4e0+eS4DI2PVrOCPghM1prSjucqFPgA="
UNICODE = {"hermes": 2, "relay": {"url": "ws://h:1", "code": "ABC123", "note": "caf\u00e9 \u2603"}}
UNICODE_CANON = b'{"hermes":2,"relay":{"code":"ABC123","note":"caf\\u00e9 \\u2603","url":"ws://h:1"}}'
UNICODE_SIG = "CymDvfxRVmDJ3DUSSdB/kX4xQUB50BZzvqDv+r04BSY="


def test_signature_matches_reference_vector() -> None:
    assert payload.sign(V3, SECRET) == V3_SIG
    assert payload.verify({**V3, "sig": V3_SIG}, SECRET)


def test_canonical_form_escapes_non_ascii_and_sorts_nested_keys() -> None:
    assert payload.canonicalize(UNICODE) == UNICODE_CANON
    assert payload.sign(UNICODE, b"k" * 16) == UNICODE_SIG


def test_sig_field_is_excluded_and_order_does_not_matter() -> None:
    reordered = json.loads(json.dumps(V3, sort_keys=True))
    assert payload.sign({**reordered, "sig": "whatever"}, SECRET) == V3_SIG


@pytest.mark.parametrize("mutate", [
    lambda p: p["relay"].__setitem__("code", "AAAAAA"),
    lambda p: p["endpoints"][0]["relay"].__setitem__("url", "ws://10.9.9.9:8767"),
    lambda p: p["endpoints"].reverse(),  # order is part of the signature: priority survives the HMAC
])
def test_any_change_breaks_the_signature(mutate) -> None:
    signed = json.loads(json.dumps({**V3, "sig": V3_SIG}))
    mutate(signed)
    assert not payload.verify(signed, SECRET)


def test_verify_never_raises_on_garbage_sig() -> None:
    assert not payload.verify({**V3, "sig": "not base64!!"}, SECRET)
    assert not payload.verify({**V3, "sig": 7}, SECRET)
    assert not payload.verify(dict(V3), SECRET)
    assert not payload.verify({**V3, "sig": V3_SIG}, b"another secret key")


def test_nan_cannot_be_signed() -> None:
    with pytest.raises(ValueError):
        payload.sign({"x": float("nan")}, SECRET)


def test_build_orders_endpoints_by_priority_and_signs() -> None:
    built = payload.build(code="F3W7EY", ttl_seconds=2592000, transport_hint="ws", secret=SECRET, endpoints=[
        ("lan", "ws://192.168.1.20:8767"), ("tailscale", "ws://100.101.102.103:8767"), ("public", "wss://relay.example.com"),
    ])
    assert {k: v for k, v in built.items() if k != "sig"} == V3
    assert built["sig"] == V3_SIG


def test_build_single_endpoint_is_v2_without_endpoints() -> None:
    built = payload.build(code="F3W7EY", ttl_seconds=0, transport_hint="ws", endpoints=[("lan", "ws://10.0.0.2:8767")])
    assert built["hermes"] == 2 and "endpoints" not in built and "sig" not in built
    assert built["relay"] == {"url": "ws://10.0.0.2:8767", "code": "F3W7EY", "ttl_seconds": 0, "transport_hint": "ws"}


def _wrappings(obj: dict) -> list[str]:
    text = json.dumps(obj)
    b64 = base64.b64encode(text.encode()).decode()
    url_b64 = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return [text, f"  {text}\n", b64, url_b64, f"hermes-relay://pair?payload={url_b64}", f"hermes-relay://pair?p={b64}",
            payload.invite_url(obj)]


@pytest.mark.parametrize("index", range(7))
def test_parse_accepts_every_wrapping(index: int) -> None:
    invite = payload.parse(_wrappings({**V3, "sig": V3_SIG})[index])
    assert invite.code == "F3W7EY" and invite.version == 3 and invite.signed
    assert [(r.role, r.priority, r.url) for r in invite.routes] == [
        ("lan", 0, "ws://192.168.1.20:8767"), ("tailscale", 1, "ws://100.101.102.103:8767"),
        ("public", 2, "wss://relay.example.com"),
    ]
    assert invite.ttl_seconds == 2592000


def test_v1_invite_gets_one_route_from_relay_url_with_default_port() -> None:
    invite = payload.parse(json.dumps({"hermes": 1, "host": "x", "key": "k", "relay": {"url": "ws://10.1.2.3", "code": "abc123"}}))
    assert invite.code == "ABC123"
    assert [(r.role, r.priority, r.url) for r in invite.routes] == [("lan", 0, "ws://10.1.2.3:8767")]
    assert not invite.signed


def test_custom_roles_and_bad_endpoints_are_kept_or_skipped() -> None:
    obj = {"hermes": 3, "relay": {"code": "ABC123", "url": "ws://10.0.0.1:8767"}, "endpoints": [
        {"role": "wireguard", "priority": 1, "relay": {"url": "ws://10.8.0.1:8767"}},
        {"role": "lan", "priority": 0, "relay": {"url": "ftp://nope"}},
        "junk",
        {"role": "lan", "priority": 0, "relay": {"url": "ws://10.0.0.1:8767"}},
    ]}
    invite = payload.parse(json.dumps(obj))
    assert [(r.role, r.url) for r in invite.routes] == [("lan", "ws://10.0.0.1:8767"), ("wireguard", "ws://10.8.0.1:8767")]


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty payload"),
    ("{not json", "neither valid JSON nor base64"),
    ("bm90IGpzb24=", "base64→JSON"),
    ("[1,2]", "not a JSON object"),
    ('{"hermes":3,"relay":{"url":"ws://a:1"}}', "no relay.code"),
    ('{"hermes":3,"key":"APIKEY","relay":{"url":"ws://a:1"}}', "no relay.code"),
    ('{"hermes":3,"relay":{"url":"ws://a:1","code":"ABC"}}', "relay.code"),
    ('{"hermes":0,"relay":{"code":"ABC123"}}', "unsupported schema version"),
    ('{"hermes":2,"relay":{"code":"ABC123"}}', "no relay URL"),
    ("hermes-relay://pair?x=1", "no payload="),
])
def test_bad_invites_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(PayloadError) as info:
        payload.parse(text)
    assert needle in info.value.message


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())))
def test_fuzzed_invites_raise_only_payload_error(text: str) -> None:
    try:
        payload.parse(text)
    except PayloadError:
        pass


def test_secret_file_is_created_private_and_reused(tmp_path) -> None:
    path = tmp_path / "hermes" / "hermes-relay-qr-secret"
    first = payload.load_or_create_secret(path)
    assert len(first) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert payload.load_or_create_secret(path) == first
    assert payload.load_secret(tmp_path / "missing") is None


def test_a_loopback_pinned_route_is_offered_as_localhost_and_parses_as_the_same_relay() -> None:
    # The reference desktop CLI names the TLS server with the proxy's host and its runtime refuses an IP
    # there ("Setting the TLS ServerName to an IP address is not permitted"): it could not pair with a
    # pinned route to https://127.0.0.1:P (checked against the reference CLI under bun).
    pin = "sha256/" + "A" * 43 + "="
    der = base64.b64encode(b"certificate").decode()
    invite = payload.build(code="F3W7EY", ttl_seconds=60, transport_hint="wss", cert_pin=pin, cert_der=der,
                           endpoints=[("lan", "wss://127.0.0.1:8767"), ("tailscale", "wss://100.64.1.2:8767")])
    proxies = [e["proxy"]["url"] for e in invite["endpoints"] if e["role"] == "plugin_proxy"]
    assert proxies == ["https://localhost:8767", "https://100.64.1.2:8767"]
    parsed = payload.parse(json.dumps(invite))
    # localhost:8767 is the 127.0.0.1 route: no third route, and it keeps the pin
    assert [r.url for r in parsed.routes] == ["wss://127.0.0.1:8767", "wss://100.64.1.2:8767"]
    assert parsed.pin_for("wss://127.0.0.1:8767") == pin
