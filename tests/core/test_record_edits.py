"""core/record.py's edits: what an authentication, a pin acceptance and an expiry change write into a record."""

from __future__ import annotations

from typing import Any

from hermes_relay.core import record

OWNER = "wss://relay.example.com"
LAN = "ws://192.168.1.5:8767"


def test_an_auth_result_rotates_the_tokens_and_pins_only_a_first_certificate() -> None:
    raw: dict[str, Any] = {"token": "old", "cert_pin_sha256": None}
    ok = {"session_token": "new", "refresh_token": "r2", "server_version": "1.2", "expires_at": 5.0, "grants": {"a": 1}}
    assert record.apply_auth(raw, OWNER, OWNER, ok, "pin-1", "old")
    assert raw == {"token": "new", "refresh_token": "r2", "server_version": "1.2", "ttl_expires_at": 5.0,
                   "grants": {"a": 1}, "cert_pin_sha256": "pin-1"}
    assert record.apply_auth(raw, OWNER, OWNER, {"session_token": "newer"}, "pin-2", "new")
    assert raw["cert_pin_sha256"] == "pin-1" and raw["token"] == "newer"  # a recorded pin is never replaced here
    assert record.apply_auth(raw, OWNER, "wss://other:443", {}, "pin-3", "newer")
    assert raw["route_cert_pins"] == {"wss://other:443": "pin-3"}


def test_an_auth_result_for_a_token_the_record_no_longer_holds_changes_nothing() -> None:
    raw = {"token": "re-paired"}
    assert not record.apply_auth(raw, OWNER, OWNER, {"session_token": "x", "expires_at": 1.0}, "p", "old")
    assert raw == {"token": "re-paired"}


def test_set_pin_replaces_the_owner_pin_or_one_routes_entry() -> None:
    raw: dict[str, Any] = {"cert_pin_sha256": "a", "route_cert_pins": "garbage"}
    record.set_pin(raw, OWNER, OWNER, "b")
    record.set_pin(raw, OWNER, LAN, "c")
    assert raw == {"cert_pin_sha256": "b", "route_cert_pins": {LAN: "c"}}


def test_an_expiry_is_copied_only_into_the_record_whose_token_has_the_prefix() -> None:
    raw = {"token": "abcd1234rest"}
    assert record.apply_expiry(raw, {"token_prefix": "abcd1234", "expires_at": 9.0, "grants": {"g": 2}})
    assert raw == {"token": "abcd1234rest", "ttl_expires_at": 9.0, "grants": {"g": 2}}
    assert not record.apply_expiry(raw, {"token_prefix": "zzzz", "expires_at": 1.0})
    assert not record.apply_expiry(raw, {"token_prefix": "", "expires_at": 1.0})
    assert not record.apply_expiry(raw, {"token_prefix": "abcd1234"})  # no expiry in the answer
    assert not record.apply_expiry(None, {"token_prefix": "abcd1234", "expires_at": 1.0})
    assert raw["ttl_expires_at"] == 9.0
