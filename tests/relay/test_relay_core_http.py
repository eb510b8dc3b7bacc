"""The relay core's HTTP decisions without sockets: routes, relay-host-only checks, bearer and operator
rules, rate limits with Retry-After, and the connection budgets, under a fake clock.

The socket tests (test_relay_http_api.py, test_relay_ratelimit.py, test_relay_robustness.py) prove the
same over the wire; these pin the decisions themselves, one input and one reply at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeWallClock

import hermes_relay
from hermes_relay.relay import peers
from hermes_relay.relay.config import (
    BUSY_BODY,
    BUSY_PER_IP_BODY,
    HTTP_BLOCK,
    HTTP_FAIL_LIMIT,
    RATE_LIMIT_BODY,
    SESSION_BLOCK,
    SESSION_FAIL_LIMIT,
    RelayConfig,
)
from hermes_relay.relay.core import CloseSession, DetachSession, HttpReply, Refusal, RelayCore, UnauthedSlot
from hermes_relay.relay.httpmsg import HttpRequest

LOCAL = "127.0.0.1"
REMOTE = "203.0.113.9"
LOCAL_HEAD = {"host": "127.0.0.1:8767", "content-type": "application/json"}


class Monotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def make(**config: Any) -> tuple[RelayCore, FakeWallClock]:
    wall = FakeWallClock()
    return RelayCore(RelayConfig(wall_clock=wall, **config)), wall


def call(core: RelayCore, method: str, path: str, body: Any = None, *, ip: str = LOCAL,
         headers: dict[str, str] | None = None, token: str | None = None) -> HttpReply:
    head = dict(LOCAL_HEAD if headers is None else headers)
    if token is not None:
        head["authorization"] = f"Bearer {token}"
    raw = b"" if body is None else json.dumps(body).encode()
    req = HttpRequest(method, path, head)
    return core.http(req, raw, peers.resolve(ip, head))


def paired(core: RelayCore, ttl: int = 600, device: str = "dev") -> tuple[str, str, str]:
    """(session token, refresh token, token hash) of a new session paired through an auth frame."""
    code = core.codes.register(None, ttl_seconds=ttl).code
    outcome = core.authenticate({"pairing_code": code, "device_id": device, "device_name": device}, LOCAL)
    assert outcome is not None
    return outcome.reply["session_token"], outcome.reply["refresh_token"], outcome.session.token_hash


# -- /health and /relay/info ---------------------------------------------------------------------

def test_health_counts_what_the_core_holds() -> None:
    core, _ = make()
    reply = call(core, "GET", "/health", headers={})
    assert reply.body.pop("relay_id") == core.relay_id and len(core.relay_id) >= 16
    assert reply == HttpReply(200, {
        "status": "ok", "version": hermes_relay.__version__, "sessions": 0, "connections": 0, "unauthenticated": 0,
        "pending": 0, "pending_codes": 0, "tls": False, "cert_pin": None, "cert_der": None, "host": "127.0.0.1",
        "terminal": False})
    token, _, key = paired(core)
    core.codes.register(None)
    core.attach(key, object())
    slot = core.take_unauthed_slot(REMOTE)
    assert isinstance(slot, UnauthedSlot)
    body = call(core, "GET", "/relay/health/", ip=REMOTE, headers={}).body
    assert (body["sessions"], body["connections"], body["unauthenticated"], body["pending_codes"]) == (1, 1, 1, 1)
    slot.release()
    assert call(core, "GET", "/health", headers={}).body["unauthenticated"] == 0


def test_relay_info_is_for_the_relay_host_only_and_counts_uptime_on_the_monotonic_clock() -> None:
    mono = Monotonic()
    core = RelayCore(RelayConfig(wall_clock=FakeWallClock()), monotonic=mono, pending_calls=lambda: 3)
    mono.now += 42.9
    assert call(core, "GET", "/relay/info", ip=REMOTE).status == 403
    reply = call(core, "GET", "/relay/info", headers={"host": "localhost"})
    assert reply.status == 200
    assert (reply.body["uptime_seconds"], reply.body["pending_commands"]) == (42, 3)
    assert call(core, "POST", "/relay/info").status == 405


def test_an_unknown_route_is_404_and_a_bad_body_400() -> None:
    core, _ = make()
    assert call(core, "GET", "/nope").body == {"ok": False, "error": "no route for GET /nope"}
    req = HttpRequest("POST", "/pairing/register", LOCAL_HEAD)
    reply = core.http(req, b"\xff\xfe", peers.resolve(LOCAL, {}))
    assert reply.status == 400 and "not valid JSON" in reply.body["error"]


# -- /pairing/register and /pairing/mint: the relay host only ------------------------------------------

@pytest.mark.parametrize(("ip", "headers", "status"), [
    (REMOTE, LOCAL_HEAD, 403),
    (LOCAL, {**LOCAL_HEAD, "origin": "http://evil.example"}, 403),
    (LOCAL, {**LOCAL_HEAD, "sec-fetch-site": "cross-site"}, 403),
    (LOCAL, {**LOCAL_HEAD, "host": "evil.example:8767"}, 403),
    (LOCAL, {"host": "127.0.0.1", "content-type": "text/plain"}, 415),
    (LOCAL, {**LOCAL_HEAD, "x-forwarded-for": "127.0.0.1"}, 403),  # a forwarded request is never the relay host's
    (LOCAL, LOCAL_HEAD, 200),
])
@pytest.mark.parametrize("path", ["/pairing/register", "/pairing/mint"])
def test_pairing_codes_are_registered_only_by_the_relay_hosts_own_tools(ip: str, headers: dict[str, str], status: int,
                                                                          path: str) -> None:
    core, _ = make()
    reply = call(core, "POST", path, {"code": "ABC234"}, ip=ip, headers=headers)
    assert reply.status == status, reply.body
    assert len(core.codes) == (1 if status == 200 else 0)


def test_a_proxied_request_is_never_the_relay_host() -> None:
    core, _ = make(trusted_proxies=peers.parse_trusted(["127.0.0.1"]))
    reply = call(core, "POST", "/pairing/register", {"code": "ABC234"}, headers={**LOCAL_HEAD, "x-forwarded-for": LOCAL})
    assert reply.status == 403 and len(core.codes) == 0


def test_register_takes_the_given_code_and_mint_picks_one_with_an_invite() -> None:
    core, _ = make()
    reply = call(core, "POST", "/pairing/register", {"code": " ABC234 ", "ttl_seconds": 3600})
    assert reply.status == 200 and reply.body["code"] == "ABC234"
    minted = call(core, "POST", "/pairing/mint", {}).body
    assert minted["ok"] is True and minted["code"] != "ABC234" and minted["qr_payload"].startswith("{")
    assert minted["relay_url"] == "ws://127.0.0.1:8767" and minted["tls"] is False
    assert call(core, "POST", "/pairing/register", {}).status == 400
    assert call(core, "POST", "/pairing/register", {"code": 5}).status == 400
    assert call(core, "GET", "/pairing/mint").status == 405


def test_registering_a_code_lifts_every_addresss_authentication_block() -> None:
    core, _ = make()
    for _ in range(SESSION_FAIL_LIMIT):
        assert core.authenticate({"session_token": "wrong"}, REMOTE) is None
    assert isinstance(core.upgrade("/", REMOTE), Refusal)
    assert call(core, "POST", "/pairing/mint", {}).status == 200
    assert isinstance(core.upgrade("/", REMOTE), UnauthedSlot)


# -- /sessions: bearer and operator rules --------------------------------------------------------------

def test_a_bearer_lists_every_session_and_marks_its_own() -> None:
    core, _ = make()
    a, _, key_a = paired(core, device="alpha")
    paired(core, device="beta")
    core.attach(key_a, object())
    listing = call(core, "GET", "/sessions", ip=REMOTE, headers={}, token=a).body["sessions"]
    assert sorted((s["device_name"], s["is_current"], s["connected"]) for s in listing) == [
        ("alpha", True, True), ("beta", False, False)]


def test_the_operator_is_a_direct_loopback_caller_without_a_token() -> None:
    core, _ = make()
    paired(core)
    assert call(core, "GET", "/sessions", headers={"host": "localhost"}).status == 200
    assert call(core, "GET", "/sessions", ip=REMOTE, headers={}).status == 401
    assert call(core, "GET", "/sessions", headers={"host": "localhost", "origin": "http://x"}).status == 403


def test_failed_bearer_checks_block_the_address_on_the_http_bucket_only() -> None:
    core, wall = make()
    token, _, _ = paired(core)
    for _ in range(HTTP_FAIL_LIMIT):
        assert call(core, "GET", "/sessions", ip=REMOTE, headers={}, token="wrong").status == 401
    blocked = call(core, "GET", "/sessions", ip=REMOTE, headers={}, token=token)
    assert blocked == HttpReply(429, {"ok": False, "error": RATE_LIMIT_BODY})
    assert isinstance(core.upgrade("/", REMOTE), UnauthedSlot)  # the WebSocket limiter never saw these
    assert call(core, "GET", "/sessions", ip="198.51.100.1", headers={}, token=token).status == 200
    wall.advance(HTTP_BLOCK)
    assert call(core, "GET", "/sessions", ip=REMOTE, headers={}, token=token).status == 200


@pytest.mark.parametrize(("close_on_revoke", "effects"), [
    (True, lambda key: (DetachSession(key), CloseSession(key, "session revoked"))),
    (False, lambda key: (DetachSession(key),)),
])
def test_revoking_a_session_detaches_and_closes_its_sockets(close_on_revoke: bool, effects: Any) -> None:
    core, _ = make(close_on_revoke=close_on_revoke)
    a, _, key_a = paired(core, device="alpha")
    b, _, _ = paired(core, device="beta")
    reply = call(core, "DELETE", f"/sessions/{a[:8]}", ip=REMOTE, headers={}, token=b)
    assert reply.status == 200 and reply.body["revoked_self"] is False
    assert reply.effects == effects(key_a)
    assert core.authenticate({"session_token": a}, LOCAL) is None
    assert call(core, "GET", "/sessions", ip=REMOTE, headers={}, token=b).effects == ()


def test_prefixes_that_match_nothing_or_too_much() -> None:
    core, _ = make()
    token, _, _ = paired(core)
    assert call(core, "DELETE", "/sessions/zzzzzzzz", token=token).status == 404
    assert call(core, "DELETE", "/sessions/", token=token).status == 404
    assert call(core, "PUT", f"/sessions/{token[:8]}", token=token).status == 405
    assert call(core, "POST", "/sessions", token=token).status == 405


def test_a_bearer_may_only_shorten_its_own_session_and_the_operator_may_extend() -> None:
    core, wall = make()
    own, _, _ = paired(core, ttl=600)
    other, _, _ = paired(core, ttl=600, device="other")
    shorter = call(core, "PATCH", f"/sessions/{own[:8]}", {"ttl_seconds": 60}, ip=REMOTE, headers={}, token=own)
    assert shorter.status == 200 and shorter.body["expires_at"] == wall.now + 60
    longer = call(core, "PATCH", f"/sessions/{own[:8]}", {"ttl_seconds": 3600}, ip=REMOTE, headers={}, token=own)
    assert longer.status == 403 and "operator approval" in longer.body["error"]
    assert call(core, "PATCH", f"/sessions/{other[:8]}", {"ttl_seconds": 1}, ip=REMOTE, headers={}, token=own).status == 403
    assert call(core, "PATCH", f"/sessions/{own[:8]}", {}, ip=REMOTE, headers={}, token=own).status == 400
    operator = call(core, "PATCH", f"/sessions/{own[:8]}", {"ttl_seconds": 0})
    assert operator.status == 200 and operator.body["expires_at"] is None


# -- budgets and upgrades ------------------------------------------------------------------------------

def test_an_upgrade_from_a_blocked_address_gets_429_with_retry_after_in_whole_seconds() -> None:
    core, wall = make()
    for _ in range(SESSION_FAIL_LIMIT):
        core.authenticate({"session_token": "wrong"}, REMOTE)
    wall.advance(0.5)
    assert core.upgrade("/ws", REMOTE) == Refusal(429, RATE_LIMIT_BODY, retry_after=int(SESSION_BLOCK))
    wall.advance(SESSION_BLOCK - 0.5)
    assert isinstance(core.upgrade("/ws", REMOTE), UnauthedSlot)


def test_an_upgrade_elsewhere_is_404_and_over_a_cap_503() -> None:
    core, _ = make(max_unauthed_per_ip=1, max_unauthed=2)
    assert core.upgrade("/nope", REMOTE) == Refusal(404, "no WebSocket endpoint at /nope; use / or /ws", json=True)
    first = core.upgrade("/relay/ws", REMOTE)
    assert isinstance(first, UnauthedSlot)
    assert core.upgrade("/", REMOTE) == Refusal(503, BUSY_PER_IP_BODY, retry_after=1)
    assert isinstance(core.upgrade("/", "198.51.100.1"), UnauthedSlot)
    assert core.upgrade("/", "198.51.100.2") == Refusal(503, BUSY_BODY, retry_after=1)
    first.release()
    assert isinstance(core.upgrade("/", REMOTE), UnauthedSlot)


def test_pending_heads_are_capped_per_address_except_for_trusted_proxies() -> None:
    core, _ = make(max_pending_per_ip=1, trusted_proxies=peers.parse_trusted(["10.0.0.1"]))
    key, refused = core.admit(REMOTE)
    assert refused is None
    assert core.admit(REMOTE)[1] == Refusal(503, BUSY_BODY, retry_after=1)
    assert core.admit("10.0.0.1")[1] is None and core.admit("10.0.0.1")[1] is None
    core.pending.leave(key)
    assert core.admit(REMOTE)[1] is None


def test_the_core_and_what_it_decides_with_load_no_trio(tmp_path: Path) -> None:
    modules = ["core", "api", "auth", "config", "httpmsg", "desktop_table"]
    code = ("import sys\n" + "".join(f"import hermes_relay.relay.{m}\n" for m in modules)
            + "assert not any(m.split('.')[0] in ('trio', 'trio_websocket') for m in sys.modules), 'trio loaded'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
