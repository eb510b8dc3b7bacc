"""Reading pairing records for the link: malformed fields are skipped, and whether two records name the
same relay is decided from what they store (no token is sent to find out)."""

from __future__ import annotations

from typing import Any

import pytest

from hermes_relay.agent.linkrecord import (
    expiry_of,
    owner_urls,
    pin_for,
    record_expired,
    routes_for,
    shares_route_or_pin,
    token_of,
)

A, B = "ws://10.0.0.2:8767", "ws://100.64.0.2:8767"
PIN = "sha256/" + "A" * 43 + "="


@pytest.mark.parametrize("candidates", [5, "ws://x", None, [5, None, {"url": 7}], {"url": B}])
def test_malformed_route_candidates_leave_the_owner_route(candidates: Any) -> None:
    assert [r.url for r in routes_for(A, {"route_candidates": candidates})] == [A]


def test_candidates_in_both_shapes_are_read() -> None:
    record = {"route_candidates": [{"role": "tailscale", "priority": 1, "relay": {"url": B}},
                                   {"url": A, "role": "lan", "priority": 0}, "wss://relay.example:8767",
                                   "not a url"]}
    assert [(r.url, r.priority) for r in routes_for(A, record)] == [(A, 0), (B, 1), ("wss://relay.example:8767", 2)]


def test_pins_tokens_expiry_and_owners() -> None:
    record = {"token": "T", "cert_pin_sha256": PIN, "route_cert_pins": {B: "sha256/other"}, "ttl_expires_at": 100}
    assert (pin_for(A, record, A), pin_for(A, record, B), pin_for(A, record, "ws://c:1")) == (PIN, "sha256/other", None)
    assert token_of(record) == "T" and token_of({"token": 5}) is None and token_of({"token": ""}) is None
    assert expiry_of(100) == 100.0 and expiry_of(None) is None and expiry_of(0) is None and expiry_of(True) is None
    assert record_expired(record, 100.0) and not record_expired(record, 99.0)
    assert owner_urls({A: record, B: {"token": None}, "ws://c:1": {}}) == [A]


def test_two_records_name_the_same_relay_by_a_shared_route_or_pin() -> None:
    first = {"token": "T1"}
    listing = {"token": "T2", "route_candidates": [{"url": B}, {"url": A}]}
    assert shares_route_or_pin(A, first, routes_for(A, first), B, listing, routes_for(B, listing))
    tls_a, tls_b = "wss://10.0.0.2:8767", "wss://100.64.0.2:8767"
    pinned_a, pinned_b = {"token": "T1", "cert_pin_sha256": PIN}, {"token": "T2", "cert_pin_sha256": PIN}
    assert shares_route_or_pin(tls_a, pinned_a, routes_for(tls_a, pinned_a), tls_b, pinned_b, routes_for(tls_b, pinned_b))
    other = {"token": "T3", "cert_pin_sha256": "sha256/" + "B" * 43 + "="}
    assert not shares_route_or_pin(tls_a, pinned_a, routes_for(tls_a, pinned_a), tls_b, other, routes_for(tls_b, other))
    assert not shares_route_or_pin(A, first, routes_for(A, first), B, {"token": "T2"}, routes_for(B, {"token": "T2"}))
