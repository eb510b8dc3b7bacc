"""Who may change a session: a bearer may only REDUCE its own (as the reference relay); the operator on the
relay host (a direct loopback caller without a bearer) may extend any, also through
``hermes-relay-server sessions``. A proxied request is never the operator."""

from __future__ import annotations

import io
import json

import pytest
import trio
from helpers import FakeWallClock, http_json, http_request, pair, parse_response, raw_http

from hermes_relay.relay import sessions_cmd

DAY = 86400


@pytest.fixture
async def timed(relay_factory):
    clock = FakeWallClock()
    return await relay_factory(wall_clock=clock), clock


async def listed(relay, token: str) -> dict[str, dict]:
    _, obj = await http_json("GET", f"{relay.http}/sessions", token=token)
    return {s["token_prefix"]: s for s in obj["sessions"]}


async def test_a_bearer_cannot_modify_another_session(timed):
    relay, _ = timed
    _, a = await pair(relay.url, relay.http, ttl_seconds=600)
    _, b = await pair(relay.url, relay.http, ttl_seconds=600)
    for body in ({"ttl_seconds": 0}, {"ttl_seconds": 60}):
        status, obj = await http_json("PATCH", f"{relay.http}/sessions/{b['session_token'][:8]}", body,
                                      token=a["session_token"])
        assert (status, obj) == (403, {"ok": False, "error": "cannot modify another session"})
    assert (await listed(relay, a["session_token"]))[b["session_token"][:8]]["expires_at"] == b["expires_at"]


@pytest.mark.parametrize("paired_ttl,body", [
    (600, {"ttl_seconds": 0}),                   # never is longer than anything
    (600, {"ttl_seconds": 601}),
    (600, {"grants": {"chat": 0}}),
    (0, {"grants": {"new-channel": 60}}),        # a grant it did not have
    (2 * DAY, {"ttl_seconds": DAY, "grants": {"chat": 0}}),
])
async def test_a_bearer_cannot_lengthen_its_own_session_or_grants(timed, paired_ttl, body):
    relay, _ = timed
    _, ok = await pair(relay.url, relay.http, ttl_seconds=paired_ttl)
    prefix = ok["session_token"][:8]
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{prefix}", body, token=ok["session_token"])
    assert status == 403
    assert obj["error"] == "operator approval required to extend session"
    assert "hermes-relay-server sessions extend" in obj["hint"]
    after = (await listed(relay, ok["session_token"]))[prefix]
    assert (after["expires_at"], after["grants"]) == (ok["expires_at"], ok["grants"])


async def test_a_bearer_may_shorten_its_own_session_and_gets_the_flat_reference_body(timed):
    relay, clock = timed
    _, ok = await pair(relay.url, relay.http, ttl_seconds=0)
    prefix = ok["session_token"][:8]
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{prefix}", {"ttl_seconds": 3600},
                                  token=ok["session_token"])
    assert status == 200
    assert {k: obj[k] for k in ("ok", "token_prefix", "expires_at")} == {"ok": True, "token_prefix": prefix,
                                                                          "expires_at": clock.now + 3600}
    assert set(obj["grants"].values()) == {clock.now + 3600}


async def test_the_operator_on_loopback_may_extend_any_session_to_never(timed):
    relay, _ = timed
    _, a = await pair(relay.url, relay.http, ttl_seconds=600)
    _, b = await pair(relay.url, relay.http, ttl_seconds=600)
    status, obj = await http_json("PATCH", f"{relay.http}/sessions/{b['session_token'][:8]}", {"ttl_seconds": 0})
    assert status == 200 and obj["expires_at"] is None
    status, obj = await http_json("GET", f"{relay.http}/sessions")
    assert status == 200 and {s["is_current"] for s in obj["sessions"]} == {False}
    status, obj = await http_json("DELETE", f"{relay.http}/sessions/{a['session_token'][:8]}")
    assert status == 200 and obj["revoked_self"] is False


@pytest.mark.parametrize(("method", "headers", "status"), [
    ("GET", [("Origin", "http://evil.example")], 403),
    ("GET", [("Sec-Fetch-Site", "cross-site")], 403),
    ("DELETE", [("Origin", "http://evil.example")], 403),
    ("PATCH", [("Content-Type", "text/plain")], 415),  # a simple cross-site POST/PATCH needs no preflight
])
async def test_a_web_page_on_the_relay_host_is_never_the_operator(timed, method, headers, status):
    relay, _ = timed
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    prefix = ok["session_token"][:8]
    path = "/sessions" if method == "GET" else f"/sessions/{prefix}"
    body = b'{"ttl_seconds": 0}' if method == "PATCH" else None
    got, _, _ = await http_request(method, f"{relay.http}{path}", body, headers)
    assert got == status
    listing = await listed(relay, ok["session_token"])
    assert listing[prefix]["expires_at"] is not None  # nothing was extended or revoked


async def test_a_rebound_host_name_is_never_the_operator(timed):
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own name as Host.
    relay, _ = timed
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    data = (f"DELETE /sessions/{ok['session_token'][:8]} HTTP/1.1\r\nHost: evil.example:{relay.info.port}\r\n"
            "Connection: close\r\n\r\n").encode()
    status, _, body = parse_response(await raw_http(relay.http, data))
    assert status == 403 and b"Host header" in body
    assert ok["session_token"][:8] in await listed(relay, ok["session_token"])


@pytest.mark.parametrize("header", [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"),
                                    ("X-Real-IP", "203.0.113.7")])
async def test_a_proxied_request_is_never_the_operator(timed, header):
    relay, _ = timed
    _, ok = await pair(relay.url, relay.http, ttl_seconds=600)
    status, _, _ = await http_request("PATCH", f"{relay.http}/sessions/{ok['session_token'][:8]}",
                                      b'{"ttl_seconds": 0}', [("Content-Type", "application/json"), header])
    assert status == 401
    status, _, _ = await http_request("GET", f"{relay.http}/sessions", None, [header])
    assert status == 401


async def test_a_bad_bearer_on_loopback_is_not_promoted_to_operator(relay):
    status, _ = await http_json("GET", f"{relay.http}/sessions", token="wrong")
    assert status == 401


# -- hermes-relay-server sessions ---------------------------------------------------------------------

async def run_cmd(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(lambda: sessions_cmd.main(argv, stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


async def test_sessions_command_lists_extends_and_revokes_over_loopback(relay):
    _, a = await pair(relay.url, relay.http, ttl_seconds=DAY, device_name="office-desktop")
    prefix = a["session_token"][:8]
    code, out, _ = await run_cmd(["--relay", relay.url, "list"])
    assert code == 0
    assert "PREFIX" in out and prefix in out and "office-desktop" in out and " in " in out

    code, out, _ = await run_cmd(["--relay", relay.url, "extend", prefix[:5], "--ttl", "never"])
    assert (code, out.strip()) == (0, f"extended {prefix}: now expires never")
    _, obj = await http_json("GET", f"{relay.http}/sessions")
    assert obj["sessions"][0]["expires_at"] is None

    code, out, err = await run_cmd(["--relay", relay.url, "revoke", prefix])  # no terminal, no --yes
    assert code == 2 and "pass --yes" in err and "revoked" not in out
    code, out, _ = await run_cmd(["--relay", relay.url, "list", "--json"])  # flags after the subcommand
    assert code == 0 and json.loads(out)["sessions"][0]["token_prefix"] == prefix
    code, out, _ = await run_cmd(["revoke", prefix, "--relay", relay.url, "--yes"])
    assert (code, out.strip()) == (0, f"revoked {prefix}")
    code, out, _ = await run_cmd(["--relay", relay.url])
    assert (code, out.strip()) == (0, "no paired devices")


async def test_sessions_command_explains_a_bad_prefix(relay):
    code, _, err = await run_cmd(["--relay", relay.url, "revoke", "ab", "--yes"])
    assert code == 1
    assert "HTTP 400" in err and "at least 4" in err


async def test_hermes_relay_server_dispatches_the_sessions_subcommand(relay, capsys):
    from hermes_relay.relay.main import main

    _, ok = await pair(relay.url, relay.http, device_name="vm")
    code = await trio.to_thread.run_sync(lambda: main(["sessions", "--relay", relay.url, "--json", "list"]))
    assert code == 0
    assert f'"token_prefix": "{ok["session_token"][:8]}"' in capsys.readouterr().out


def test_sessions_command_takes_a_prefix_that_starts_with_a_dash():
    # 1 token in 64 starts with "-": it is the prefix, not an unknown option (exit 2 before).
    from hermes_relay.relay.sessions_cmd import build_parser

    assert build_parser().parse_args(["revoke", "-meWxcQq"]).prefix == "-meWxcQq"
    args = build_parser().parse_args(["extend", "-meW", "--ttl", "30d"])
    assert (args.prefix, args.ttl) == ("-meW", "30d")
