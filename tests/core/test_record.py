"""The typed pairing-record view: every field validated where it is read, nothing ever raises on a
record another client wrote, and routes come out in strict priority order."""

from __future__ import annotations

from typing import Any

import pytest

from hermes_relay.core import record
from hermes_relay.core.routes import Route, make_routes

OWNER = "ws://192.168.1.20:8767"


def test_a_well_formed_record_reads_every_field() -> None:
    raw = {
        "token": "tok", "refresh_token": "ref", "server_version": "1.9.0", "paired_at": 1767225600,
        "ttl_expires_at": 1767312000, "grants": {"chat": 1767312000, "tui": None},
        "cert_pin_sha256": "sha256/AAA=", "route_cert_pins": {"wss://r.example.com": "sha256/BBB="},
        "endpoint_role": "lan", "device_name": "office-desktop",
        "route_candidates": [
            {"role": "lan", "priority": 0, "api": {"host": "192.168.1.20", "port": 8767, "tls": False},
             "relay": {"url": OWNER, "transport_hint": "ws"}},
            {"role": "public", "priority": 2, "relay": {"url": "wss://r.example.com", "transportHint": "wss"}},
        ],
    }
    rec = record.from_dict(OWNER, raw)
    assert rec.problems == ()
    assert (rec.token, rec.refresh_token, rec.server_version, rec.paired_at) == ("tok", "ref", "1.9.0", 1767225600)
    assert rec.expires_at == 1767312000 and dict(rec.grants) == {"chat": 1767312000, "tui": None}
    assert rec.device_name == "office-desktop" and rec.endpoint_role == "lan" and rec.paired
    assert rec.pin_for(OWNER) == "sha256/AAA=" and rec.pin_for("wss://r.example.com") == "sha256/BBB="
    assert rec.pin_for("ws://other:1") is None
    assert [(r.url, r.role, r.priority) for r in rec.routes()] == [(OWNER, "lan", 0), ("wss://r.example.com", "public", 2)]
    assert not rec.expired(1767311999) and rec.expired(1767312000)
    assert not record.from_dict(OWNER, {"token": "t", "ttl_expires_at": None}).expired(1e12)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("route_candidates", 5, "route_candidates is int, expected a list: ignored"),
        ("route_candidates", [7], "route_candidates[0] has no relay URL: skipped"),
        ("route_candidates", [{"relay": {"url": "ftp://x"}}], "route_candidates[0] URL 'ftp://x' is not a ws:// or wss:// URL: skipped"),
        ("token", 12, "token is int, expected a string: ignored"),
        ("ttl_expires_at", "soon", "ttl_expires_at is str, expected a number: ignored"),
        ("ttl_expires_at", True, "ttl_expires_at is bool, expected a number: ignored"),
        ("grants", [1], "grants is list, expected an object: ignored"),
        ("grants", {"chat": "x"}, "grants['chat'] is str, expected a number or null: ignored"),
        ("route_cert_pins", "pin", "route_cert_pins is str, expected an object: ignored"),
        ("cert_pin_sha256", {"a": 1}, "cert_pin_sha256 is dict, expected a string: ignored"),
        ("device_name", 3, "device_name is int, expected a string: ignored"),
    ],
)
def test_a_malformed_field_is_ignored_and_named_never_raised(field: str, value: Any, problem: str) -> None:
    rec = record.from_dict(OWNER, {"token": "tok", field: value} if field != "token" else {field: value})
    assert problem in rec.problems
    assert [r.url for r in rec.routes()] == [OWNER]


def test_parse_sessions_skips_and_reports_entries_that_are_not_records() -> None:
    parsed = record.parse_sessions({OWNER: {"token": "a", "route_candidates": 5}, "ws://b:1": None, "ws://c:1": []})
    assert list(parsed.records) == [OWNER]
    assert parsed.problems() == [
        {"url": "ws://b:1", "problem": "the record is NoneType, expected an object: skipped"},
        {"url": "ws://c:1", "problem": "the record is list, expected an object: skipped"},
        {"url": OWNER, "problem": "route_candidates is int, expected a list: ignored"},
    ]
    assert record.parse_sessions([]).problems() == [{"url": "", "problem": "'sessions' is list, expected an object"}]


def test_owner_urls_are_the_records_with_a_token() -> None:
    sessions = {"ws://a:1": {"token": "t"}, "ws://b:1": {"token": ""}, "ws://c:1": {"token": 5}, "ws://d:1": "x"}
    assert record.owner_urls(sessions) == ["ws://a:1"]


def test_routes_insert_the_owner_and_skip_unusable_urls() -> None:
    raw = {"token": "t", "endpoint_role": "tailscale",
           "route_candidates": ["ws://10.0.0.2:8767", {"url": "not a url"}, {"relay": {"url": "wss://pub.example.com"}}]}
    routes = record.from_dict("ws://100.100.1.1:8767", raw).routes()
    assert [(r.url, r.role) for r in routes] == [
        ("ws://10.0.0.2:8767", "lan"), ("ws://100.100.1.1:8767", "tailscale"), ("wss://pub.example.com", "public")]
    # a record with no candidates has the owner at priority 0 whatever its role
    assert record.from_dict(OWNER, {"token": "t", "endpoint_role": "public"}).routes()[0].priority == 0


def test_resolve_maps_any_route_to_its_owner_and_prefers_a_direct_key() -> None:
    records = record.parse_sessions({
        OWNER: {"token": "a", "route_candidates": [{"relay": {"url": "ws://10.0.0.9:8767/"}}]},
        "ws://10.0.0.7:8767": {"token": "b"},
    }).records
    assert record.resolve(records, "ws://10.0.0.9:8767").owner == OWNER  # type: ignore[union-attr]
    assert record.resolve(records, "ws://10.0.0.7:8767/").owner == "ws://10.0.0.7:8767"  # type: ignore[union-attr]
    assert record.resolve(records, "ws://203.0.113.1:8767") is None


def test_stored_candidates_are_in_the_reference_shape_and_read_back() -> None:
    routes = make_routes([("ws://192.168.1.20:8767", "lan", 0), ("wss://relay.example.com", "public", 2)])
    endpoints = [{"role": "lan", "priority": 0, "api": {"host": "192.168.1.20", "port": 8642, "tls": False},
                  "relay": {"url": "ws://192.168.1.20:8767", "transport_hint": "ws"}}]
    stored = record.stored_candidates(routes, endpoints)
    assert stored == [
        {"role": "lan", "priority": 0, "api": {"host": "192.168.1.20", "port": 8642, "tls": False},
         "relay": {"url": "ws://192.168.1.20:8767", "transport_hint": "ws"}},
        {"role": "public", "priority": 2, "api": {"host": "relay.example.com", "port": 443, "tls": True},
         "relay": {"url": "wss://relay.example.com", "transport_hint": "wss"}},
    ]
    back = record.from_dict("ws://192.168.1.20:8767", {"token": "t", "route_candidates": stored})
    assert back.routes() == [Route(0, 0, "lan", "ws://192.168.1.20:8767"), Route(2, 1, "public", "wss://relay.example.com")]


A, B = "ws://10.0.0.2:8767", "ws://100.64.0.2:8767"
PIN = "sha256/" + "A" * 43 + "="


@pytest.mark.parametrize("candidates", [5, "ws://x", None, [5, None, {"url": 7}], {"url": B}])
def test_malformed_route_candidates_leave_the_owner_route(candidates: Any) -> None:
    assert [r.url for r in record.from_dict(A, {"route_candidates": candidates}).routes()] == [A]


def test_candidates_in_both_shapes_are_read_in_priority_order() -> None:
    raw = {"route_candidates": [{"role": "tailscale", "priority": 1, "relay": {"url": B}},
                                {"url": A, "role": "lan", "priority": 0}, "wss://relay.example:8767", "not a url"]}
    routes = record.from_dict(A, raw).routes()
    assert [(r.url, r.priority) for r in routes] == [(A, 0), (B, 1), ("wss://relay.example:8767", 2)]


def test_pins_tokens_and_expiry() -> None:
    rec = record.from_dict(A, {"token": "T", "cert_pin_sha256": PIN, "route_cert_pins": {B: "sha256/other"},
                               "ttl_expires_at": 100})
    assert (rec.pin_for(A), rec.pin_for(B), rec.pin_for("ws://c:1")) == (PIN, "sha256/other", None)
    assert rec.token == "T" and record.from_dict(A, {"token": 5}).token is None
    assert record.from_dict(A, {"token": ""}).token is None
    assert rec.expired(100.0) and not rec.expired(99.0)
    # 0 (and anything not a positive number) means the pairing never expires
    assert not record.from_dict(A, {"token": "T", "ttl_expires_at": 0}).expired(1e12)
    assert record.expiry(100) == 100.0 and record.expiry(None) is None and record.expiry(0) is None
    assert record.expiry(True) is None and record.expiry(-5) is None


def test_two_records_name_the_same_relay_by_a_shared_route_or_pin() -> None:
    first = record.from_dict(A, {"token": "T1"})
    listing = record.from_dict(B, {"token": "T2", "route_candidates": [{"url": B}, {"url": A}]})
    assert first.same_relay(listing) and listing.same_relay(first)
    tls_a, tls_b = "wss://10.0.0.2:8767", "wss://100.64.0.2:8767"
    pinned_a = record.from_dict(tls_a, {"token": "T1", "cert_pin_sha256": PIN})
    assert pinned_a.same_relay(record.from_dict(tls_b, {"token": "T2", "cert_pin_sha256": PIN}))
    other = record.from_dict(tls_b, {"token": "T3", "cert_pin_sha256": "sha256/" + "B" * 43 + "="})
    assert not pinned_a.same_relay(other)
    assert not first.same_relay(record.from_dict(B, {"token": "T2"}))


@pytest.mark.parametrize(("value", "result"), [
    (999.0, True), (1000.0, True), (1001.0, False), (None, False), (0, False), (-1, False), (True, False), ("soon", False),
])
def test_expired_at_the_stored_expiry_and_never_without_one(value: Any, result: bool) -> None:
    assert record.from_dict(A, {"token": "T", "ttl_expires_at": value}).expired(1000.0) is result
