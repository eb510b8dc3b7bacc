"""The relay's plain HTTP routes: /health, /pairing/register and /sessions (list, extend, revoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from helpers import (
    FakeWallClock,
    expect_closed,
    http_json,
    http_request,
    pair,
    parse_response,
    raw_http,
    receive_json,
    register_code,
    send_json,
    ws_auth,
)

import hermes_relay
from hermes_relay.relay import api, peers
from hermes_relay.relay.core import RelayCore
from hermes_relay.relay.pairing import MAX_DURATION, token_hash
from hermes_relay.relay.server import CLOSE_AUTH_FAILED, RelayConfig

SESSION_FIELDS = {
    "token_prefix", "device_name", "device_id", "created_at", "first_seen", "last_seen", "expires_at", "grants",
    "transport_hint", "client_surface", "device_form_factor", "device_model", "device_platform", "is_current",
    "connected",
}


# -- /health ---------------------------------------------------------------------------------------

async def test_health_reports_version_and_counts(relay):
    status, obj = await http_json("GET", f"{relay.http}/health")
    assert status == 200
    relay_id = obj.pop("relay_id")
    assert isinstance(relay_id, str) and len(relay_id) >= 16
    assert obj == {"status": "ok", "version": hermes_relay.__version__, "sessions": 0, "connections": 0,
                   "unauthenticated": 0, "pending": 0, "pending_codes": 0, "tls": False, "cert_pin": None, "cert_der": None,
                   "host": "127.0.0.1", "terminal": False}

    await register_code(relay.http)
    await register_code(relay.http)
    _, obj = await http_json("GET", f"{relay.http}/health")
    assert obj["pending_codes"] == 2

    await pair(relay.url, relay.http)  # spends a third code and stays connected
    _, obj = await http_json("GET", f"{relay.http}/health")
    assert (obj["sessions"], obj["connections"], obj["pending_codes"]) == (1, 1, 2)


async def test_unknown_route_is_404_json(relay):
    status, obj = await http_json("GET", f"{relay.http}/nope")
    assert status == 404
    assert obj["ok"] is False and "/nope" in obj["error"]


async def test_plain_get_on_the_websocket_path_is_404_not_a_hang(relay):
    status, headers, _ = await http_request("GET", f"{relay.http}/")
    assert status == 404
    assert headers["connection"] == "close"


# -- /pairing/register -----------------------------------------------------------------------------

@pytest.mark.parametrize("ip", ["10.0.0.5", "192.168.1.20", "100.64.0.1", "203.0.113.9", "::ffff:10.0.0.5",
                                "fe80::1", "unknown"])
def test_pairing_register_refuses_callers_that_are_not_loopback(ip):
    relay = RelayCore(RelayConfig(wall_clock=FakeWallClock()))
    status, obj = api.pairing_register(relay, {"code": "ABC234"}, peers.resolve(ip, {}))
    assert status == 403
    assert obj["ok"] is False
    assert len(relay.codes) == 0


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_pairing_register_accepts_loopback_callers(ip):
    relay = RelayCore(RelayConfig(wall_clock=FakeWallClock()))
    status, obj = api.pairing_register(relay, {"code": "ABC234"}, peers.resolve(ip, {}))
    assert status == 200 and obj["ok"] is True


@pytest.mark.parametrize("body", [
    b"not json",
    b"[1, 2]",
    b"\xff\xfe",
    {"code": "abc"},
    {"code": "ABCDE!"},
    {"code": 123456},
    {"ttl_seconds": -1},
    {"ttl_seconds": "600"},
    {"ttl_seconds": True},
    {"ttl_seconds": None},
    {"transport_hint": "http"},
    {"grants": ["chat"]},
    {"grants": {"chat": -5}},
    {"grants": {"chat": "forever"}},
    {"grants": {"": 60}},
    {"ttl_seconds": 1.5},
    b'{"ttl_seconds": 1e999}',            # inf
    b'{"ttl_seconds": NaN}',
    {"grants": {"chat": 0.5}},
    {"transport_hint": 7},
])
async def test_pairing_register_rejects_bad_bodies_with_400(relay, body):
    status, obj = await http_json("POST", f"{relay.http}/pairing/register", body)
    assert status == 400
    assert obj["ok"] is False and isinstance(obj["error"], str) and obj["error"]
    _, health = await http_json("GET", f"{relay.http}/health")
    assert health["pending_codes"] == 0


@pytest.mark.parametrize("ttl,grants,expires_in,chat_in", [
    (MAX_DURATION, None, MAX_DURATION, MAX_DURATION),            # 10 years is the longest kept
    (86400.0, {"chat": 3600.0}, 86400, 3600),                    # whole-number floats, as the reference takes
    (0, {"chat": MAX_DURATION}, None, MAX_DURATION),
    (MAX_DURATION + 1, None, MAX_DURATION, MAX_DURATION),        # longer is clamped, as the reference accepts it
    (10**400, {"chat": 10**400}, MAX_DURATION, MAX_DURATION),    # used to overflow at pairing time
    (20 * 365 * 86400, None, MAX_DURATION, MAX_DURATION),        # the reference hermes-pair's `--ttl 20y`
])
async def test_pairing_register_accepts_durations_up_to_ten_years(relay_factory, ttl, grants, expires_in, chat_in):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    extra = {} if grants is None else {"grants": grants}
    code = await register_code(relay.http, ttl, **extra)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["type"] == "auth.ok"
    ok = reply["payload"]
    assert ok["expires_at"] == (None if expires_in is None else clock.now + expires_in)
    assert ok["grants"]["chat"] == clock.now + chat_in


@pytest.mark.parametrize("hint", ["ws", "wss", "unknown"])
async def test_pairing_register_accepts_the_reference_transport_hints(relay, hint):
    code = await register_code(relay.http, transport_hint=hint)
    _, reply = await ws_auth(relay.url, {"pairing_code": code})
    assert reply["payload"]["transport_hint"] == hint
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=reply["payload"]["session_token"])
    assert listing["sessions"][0]["transport_hint"] == hint


async def post_register(relay, headers: list[tuple[str, str]], host: str | None = None,
                        body: bytes = b'{"code": "ABC234"}') -> tuple[int, dict]:
    """A hand-built ``POST /pairing/register``: exactly these headers, plus Host and Content-Length."""
    lines = ["POST /pairing/register HTTP/1.1", f"Host: {host or f'127.0.0.1:{relay.info.port}'}",
             "Connection: close", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    status, _, payload = parse_response(await raw_http(relay.http, raw))
    return status, json.loads(payload)


async def pending_codes(relay) -> int:
    _, health = await http_json("GET", f"{relay.http}/health")
    return int(health["pending_codes"])


JSON = ("Content-Type", "application/json")


async def test_pairing_register_refuses_a_browsers_cross_site_simple_post(relay):
    # What a web page open in a browser on the relay host can send without a CORS preflight.
    status, obj = await post_register(relay, [
        ("Content-Type", "text/plain;charset=UTF-8"), ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "no-cors"),
    ], body=b'{"code": "EVIL00", "ttl_seconds": 0}')
    assert status == 403
    assert obj["ok"] is False and "Origin" in obj["error"]
    assert await pending_codes(relay) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonp", ""])
async def test_pairing_register_needs_a_json_content_type(relay, content_type):
    headers = [] if content_type is None else [("Content-Type", content_type)]
    status, obj = await post_register(relay, headers)
    assert status == 415
    assert obj == {"ok": False, "error": "POST /pairing/register needs Content-Type: application/json"}
    assert await pending_codes(relay) == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
async def test_pairing_register_accepts_json_content_types(relay, content_type):
    status, obj = await post_register(relay, [("Content-Type", content_type)])
    assert status == 200 and obj["ok"] is True


@pytest.mark.parametrize("headers", [
    [("Origin", "https://evil.example")],
    [("Origin", "null")],                      # sandboxed iframes, file:// pages
    [("Origin", "http://127.0.0.1")],          # even a page served from this host
    [("Sec-Fetch-Site", "cross-site")],
    [("Sec-Fetch-Site", "same-site")],
])
async def test_pairing_register_refuses_browser_requests_with_403(relay, headers):
    status, obj = await post_register(relay, [JSON, *headers])
    assert status == 403
    assert obj["ok"] is False and headers[0][0] in obj["error"]
    assert await pending_codes(relay) == 0


@pytest.mark.parametrize("site", ["none", "same-origin"])
async def test_pairing_register_allows_sec_fetch_site_none_and_same_origin(relay, site):
    status, _ = await post_register(relay, [JSON, ("Sec-Fetch-Site", site)])
    assert status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "10.0.0.5:{port}",
                                  "[2001:db8::1]:{port}", "localhost.evil.example", "127.0.0.1:x"])
async def test_pairing_register_refuses_a_host_header_that_is_not_loopback(relay, host):
    # DNS rebinding: a page at http://evil.example:PORT whose name now resolves to 127.0.0.1.
    status, obj = await post_register(relay, [JSON], host=host.format(port=relay.info.port))
    assert status == 403
    assert "Host header" in obj["error"]
    assert await pending_codes(relay) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "LocalHost:{port}",
                                  "[::1]:{port}", "[::1]"])
async def test_pairing_register_accepts_loopback_host_headers(relay, host):
    status, _ = await post_register(relay, [JSON], host=host.format(port=relay.info.port))
    assert status == 200


async def test_pairing_register_only_accepts_post(relay):
    status, obj = await http_json("GET", f"{relay.http}/pairing/register")
    assert status == 405 and obj["ok"] is False


# -- /sessions: authentication ---------------------------------------------------------------------

@pytest.mark.parametrize("authorization", ["", "Bearer", "Token abc", "Basic abc", "Bearer not-a-token"])
@pytest.mark.parametrize("method,path", [("GET", "/sessions"), ("DELETE", "/sessions/abcd"),
                                         ("PATCH", "/sessions/abcd")])
async def test_sessions_api_needs_a_valid_bearer_token(relay, authorization, method, path):
    headers = [] if authorization is None else [("Authorization", authorization)]
    status, _, body = await http_request(method, f"{relay.http}{path}", b"{}", headers)
    assert status == 401
    assert json.loads(body)["ok"] is False


# -- /sessions: list -------------------------------------------------------------------------------

async def test_sessions_list_shows_every_device_with_prefix_and_current_flag(relay):
    _, a = await pair(relay.url, relay.http, device_name="alpha", device_id="id-a", device_platform="linux")
    _, b = await pair(relay.url, relay.http, device_name="beta", device_id="id-b")

    status, obj = await http_json("GET", f"{relay.http}/sessions", token=a["session_token"])
    assert status == 200
    listed = {s["device_name"]: s for s in obj["sessions"]}
    assert set(listed) == {"alpha", "beta"}
    for s in listed.values():
        assert set(s) == SESSION_FIELDS
        assert len(s["token_prefix"]) == 8
    assert listed["alpha"]["token_prefix"] == a["session_token"][:8]
    assert listed["beta"]["token_prefix"] == b["session_token"][:8]
    assert (listed["alpha"]["is_current"], listed["beta"]["is_current"]) == (True, False)
    assert listed["alpha"]["device_platform"] == "linux"

    _, from_b = await http_json("GET", f"{relay.http}/sessions", token=b["session_token"])
    assert {s["device_name"]: s["is_current"] for s in from_b["sessions"]} == {"alpha": False, "beta": True}


async def test_sessions_list_never_reveals_tokens_or_hashes(relay):
    _, ok = await pair(relay.url, relay.http)
    _, _, body = await http_request("GET", f"{relay.http}/sessions", None,
                                    [("Authorization", f"Bearer {ok['session_token']}")])
    text = body.decode()
    for secret in (ok["session_token"], ok["refresh_token"], token_hash(ok["session_token"]),
                   token_hash(ok["refresh_token"])):
        assert secret not in text
    assert "hash" not in text


@pytest.mark.parametrize("method,path", [("POST", "/sessions"), ("DELETE", "/sessions"), ("GET", "/sessions/{p}"),
                                         ("POST", "/sessions/{p}")])
async def test_sessions_api_wrong_method_is_405(relay, method, path):
    _, ok = await pair(relay.url, relay.http)
    url = relay.http + path.format(p=ok["session_token"][:8])
    status, obj = await http_json(method, url, {}, token=ok["session_token"])
    assert status == 405 and obj["ok"] is False


# -- /sessions/{prefix}: extend --------------------------------------------------------------------

async def test_patch_extends_a_session_and_its_grants(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, admin = await pair(relay.url, relay.http, ttl_seconds=0)
    _, dev = await pair(relay.url, relay.http, ttl_seconds=600)
    prefix = dev["session_token"][:8]
    clock.advance(100)

    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{prefix}", {"ttl_seconds": 3600})  # operator
    assert status == 200 and obj["ok"] is True
    assert (obj["token_prefix"], obj["expires_at"], obj["grants"]) == (prefix, clock.now + 3600, obj["session"]["grants"])
    assert obj["session"]["token_prefix"] == prefix
    assert obj["session"]["is_current"] is False
    assert obj["session"]["expires_at"] == clock.now + 3600
    assert set(obj["session"]["grants"].values()) == {clock.now + 3600}  # grants that lasted the session follow it

    _, reply = await ws_auth(relay.url, {"session_token": dev["session_token"]})
    assert reply["payload"]["expires_at"] == clock.now + 3600

    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{prefix}",
                                  {"ttl_seconds": 0, "grants": {"terminal": 60}})
    assert status == 200
    assert obj["session"]["is_current"] is False
    assert obj["session"]["expires_at"] is None
    grants = obj["session"]["grants"]
    assert grants.pop("terminal") == clock.now + 60
    assert set(grants.values()) == {None}


async def test_patched_expiry_is_enforced(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, dev = await pair(relay.url, relay.http, ttl_seconds=0)
    status, _ = await http_json("PATCH", f"{relay.http}/sessions/{dev['session_token'][:8]}", {"ttl_seconds": 60},
                                token=dev["session_token"])  # shortening one's own session needs no operator
    assert status == 200
    clock.advance(60)
    ws, reply = await ws_auth(relay.url, {"session_token": dev["session_token"]})
    assert reply["type"] == "auth.fail"


async def test_live_connection_is_closed_once_its_session_has_expired(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    ws, _ = await pair(relay.url, relay.http, ttl_seconds=600)
    clock.advance(600)
    await send_json(ws, "system", "ping", {"ts": 1})  # wakes the relay's wait on this socket
    assert (await receive_json(ws))["type"] == "pong"
    closed = await expect_closed(ws)
    assert (closed.code, closed.reason) == (CLOSE_AUTH_FAILED, "session expired")


async def test_extending_a_live_session_keeps_its_connection_open_past_the_old_expiry(relay_factory):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    ws, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    status, _ = await http_json("PATCH", f"{relay.http}/sessions/{ok['session_token'][:8]}", {"ttl_seconds": 3600})
    assert status == 200
    clock.advance(601)
    for ts in (2, 3):  # the second ping is read after the relay re-checked the (moved) expiry
        await send_json(ws, "system", "ping", {"ts": ts})
        assert (await receive_json(ws))["type"] == "pong"


@pytest.mark.parametrize("body", [{}, {"ttl_seconds": -1}, {"ttl_seconds": "60"}, {"ttl_seconds": 1.5},
                                  {"ttl_seconds": True}, {"grants": {"chat": -1}}, b"nope", b"[]",
                                  b'{"ttl_seconds": 1e999}', {"ttl_seconds": 60, "grants": {"chat": 0.5}}])
async def test_patch_rejects_bad_bodies_with_400(relay, body):
    _, ok = await pair(relay.url, relay.http)
    before = ok["expires_at"]
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{ok['session_token'][:8]}", body,
                                  token=ok["session_token"])
    assert status == 400 and obj["ok"] is False
    if isinstance(body, dict) and body:
        assert "seconds" in obj["error"]  # names what a valid value is
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert listing["sessions"][0]["expires_at"] == before


@pytest.mark.parametrize("ttl,expires_in", [(MAX_DURATION, MAX_DURATION), (86400.0, 86400), (0, None),
                                            (10**400, MAX_DURATION), (MAX_DURATION + 1, MAX_DURATION)])
async def test_patch_accepts_durations_up_to_ten_years(relay_factory, ttl, expires_in):
    clock = FakeWallClock()
    relay = await relay_factory(wall_clock=clock)
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{ok['session_token'][:8]}",
                                  {"ttl_seconds": ttl, "grants": {"chat": float(MAX_DURATION)}})
    assert status == 200, obj
    expected = None if expires_in is None else clock.now + expires_in
    assert obj["session"]["expires_at"] == expected
    assert obj["session"]["grants"]["chat"] == (clock.now + MAX_DURATION if expected is None else expected)


# -- /sessions/{prefix}: revoke --------------------------------------------------------------------

async def test_delete_revokes_and_closes_the_other_clients_socket_at_once(relay):
    ws_a, a = await pair(relay.url, relay.http, device_name="alpha")
    _, b = await pair(relay.url, relay.http, device_name="beta")
    prefix = a["session_token"][:8]

    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{prefix}", token=b["session_token"])
    assert (status, obj) == (200, {"ok": True, "revoked": prefix, "revoked_self": False, "is_current": False})

    closed = await expect_closed(ws_a)
    assert (closed.code, closed.reason) == (CLOSE_AUTH_FAILED, "session revoked")
    ws, reply = await ws_auth(relay.url, {"session_token": a["session_token"]})
    assert reply["type"] == "auth.fail"
    ws, reply = await ws_auth(relay.url, {"refresh_token": a["refresh_token"]})
    assert reply["type"] == "auth.fail"
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=b["session_token"])
    assert [s["device_name"] for s in listing["sessions"]] == ["beta"]


async def test_revoking_your_own_session_logs_you_out(relay):
    _, ok = await pair(relay.url, relay.http)
    prefix = ok["session_token"][:8]
    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{prefix}", token=ok["session_token"])
    assert (status, obj["is_current"]) == (200, True)
    status, _ = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert status == 401


def _stored_session(token: str, name: str, now: float) -> dict:
    return {
        "token_hash": token_hash(token), "token_prefix": token[:8], "device_name": name, "device_id": name,
        "created_at": now, "first_seen": now, "last_seen": now, "expires_at": None,
        "grants": {"chat": None}, "transport_hint": "ws",
    }


@pytest.fixture
def state_with_similar_prefixes(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A sessions.json whose tokens were chosen so that two prefixes share their first four characters."""
    tokens = {"admin": "zzzzzzzz" + "a" * 35, "one": "abcd1234" + "b" * 35, "two": "abcd5678" + "c" * 35}
    now = FakeWallClock().now
    doc = {"version": 1, "sessions": [_stored_session(t, name, now) for name, t in tokens.items()]}
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "sessions.json").write_text(json.dumps(doc))
    return state, tokens


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
async def test_ambiguous_prefix_is_409_and_unknown_prefix_is_404(relay_factory, state_with_similar_prefixes, method):
    state, tokens = state_with_similar_prefixes
    relay = await relay_factory(state_dir=state, wall_clock=FakeWallClock())
    admin = tokens["admin"] if method == "DELETE" else None  # PATCH of another session: the operator's
    body = {"ttl_seconds": 60} if method == "PATCH" else None

    status, obj = await http_json(method, f"{relay.http}/sessions/abcd", body, token=admin)
    assert status == 409 and obj["ok"] is False
    status, obj = await http_json(method, f"{relay.http}/sessions/qqqq", body, token=admin)
    assert status == 404 and obj["ok"] is False

    status, obj = await http_json(method, f"{relay.http}/sessions/abcd1", body, token=admin)
    assert status == 200
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=admin)
    assert len(listing["sessions"]) == (2 if method == "DELETE" else 3)


@pytest.mark.parametrize("length", [1, 3, 9, 12])
async def test_prefix_must_have_four_to_eight_characters_and_is_never_cut(relay, length):
    _, ok = await pair(relay.url, relay.http)
    _, other = await pair(relay.url, relay.http)
    prefix = other["session_token"][:length] if length < 4 else other["session_token"][:8] + "zzzz"[: length - 8]
    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{prefix}", token=ok["session_token"])
    assert status == 400
    assert ("at least 4" if length < 4 else "first 8 characters") in obj["error"]
    _, listing = await http_json("GET", f"{relay.http}/sessions", token=ok["session_token"])
    assert len(listing["sessions"]) == 2


@pytest.mark.parametrize("length", [4, 6, 8])
async def test_prefix_of_four_to_eight_characters_names_the_session(relay, length):
    _, ok = await pair(relay.url, relay.http)
    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{ok['session_token'][:length]}",
                                  token=ok["session_token"])
    assert (status, obj["revoked"], obj["revoked_self"]) == (200, ok["session_token"][:8], True)


async def test_sessions_list_marks_the_devices_connected_right_now(relay):
    pairing_ws, a = await pair(relay.url, relay.http, device_name="alpha", device_id="id-a")
    _, b = await pair(relay.url, relay.http, device_name="beta", device_id="id-b")  # its socket stays open
    await pairing_ws.aclose()

    async def listing() -> dict[str, bool]:
        _, obj = await http_json("GET", f"{relay.http}/sessions", token=a["session_token"])
        return {s["device_name"]: s["connected"] for s in obj["sessions"]}

    while (seen := await listing()) != {"alpha": False, "beta": True}:  # until the relay has seen alpha leave
        assert seen["beta"] is True
        await trio.sleep(0.01)
