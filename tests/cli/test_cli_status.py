"""``status`` reads the store itself (agent down or not), redacts tokens, and never hides a corrupt store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hermes_relay.core import paths

NOW = 1_800_000_000.0
TOKEN = "abcd1234efgh5678ijkl9012mnop3456"
OTHER_TOKEN = "zzzz9999yyyy8888"
PIN = "sha256/" + "A" * 43 + "="

STORE = {
    "version": 1,
    "sessions": {
        "ws://192.168.1.5:8767": {
            "token": TOKEN,
            "refresh_token": "refresh-secret-value",
            "server_version": "0.1.0",
            "paired_at": int(NOW - 3 * 86400),
            "ttl_expires_at": NOW + 27 * 86400,
            "grants": {"terminal": NOW + 29 * 86400, "bridge": NOW + 6 * 86400 + 5, "chat": None},
            "endpoint_role": "lan",
            "route_candidates": [{"url": "ws://192.168.1.5:8767", "role": "lan", "priority": 0},
                                 {"url": "ws://100.64.1.2:8767", "role": "tailscale", "priority": 1}],
            "cert_pin_sha256": PIN,
            "tools_consented": True,
        },
        # Written by the reference TypeScript client: ISO and millisecond times, no role.
        "wss://relay.example.com": {
            "token": OTHER_TOKEN,
            "server_version": "1.9.0",
            "paired_at": "2027-01-14T08:00:00.000Z",
            "ttl_expires_at": (NOW - 60) * 1000,
        },
    },
}


def write_store(env: dict[str, str], doc: Any) -> Path:
    path = paths.sessions_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_status_with_the_agent_down_shows_the_store_with_tokens_redacted(cli, env) -> None:
    write_store(env, STORE)
    result = cli("status", real_client=True)
    assert result.code == 1, result.err  # one pairing has expired: it needs a new code
    assert result.err == ""
    assert TOKEN not in result.out and "refresh-secret" not in result.out
    assert result.out.splitlines() == [
        "agent: not running (start it with `hermes-relay agent start`)",
        "store: ~/.hermes/remote-sessions.json",
        "",
        "Paired relays (2)",
        "",
        "  ws://192.168.1.5:8767",
        "    server:   0.1.0",
        "    paired:   3d ago",
        "    token:    abcd1234… (redacted)",
        "    expires:  in 27d",
        "    grants:   bridge (in 6d), chat (never), terminal (in 29d)",
        "    route:    LAN",
        "    routes:   ws://192.168.1.5:8767, ws://100.64.1.2:8767",
        f"    cert:     {PIN}",
        "    tools:    trusted (legacy consent)",
        "",
        "  wss://relay.example.com",
        "    server:   1.9.0",
        "    paired:   1d ago",
        "    token:    zzzz9999… (redacted)",
        "    expires:  expired",
        "    tools:    restricted: no desktop tools",
        "    fix:      run hermes-pair on the relay host, then hermes-relay pair --remote wss://relay.example.com (it asks for the code)",
    ]


def test_reveal_tokens_shows_them(cli, env) -> None:
    write_store(env, STORE)
    result = cli("status", "--reveal-tokens", real_client=True)
    assert result.code == 1
    assert f"    token:    {TOKEN}" in result.out.splitlines()
    assert f"    token:    {OTHER_TOKEN}" in result.out.splitlines()


def test_status_json_redacts_every_secret_unless_revealed(cli, env) -> None:
    store_path = write_store(env, STORE)
    result = cli("status", "--json", real_client=True)
    assert result.code == 1  # the expired pairing
    doc = json.loads(result.out)
    assert doc["store"] == str(store_path)
    assert doc["store_error"] is None and doc["agent"] is None
    assert [r["url"] for r in doc["relays"]] == ["ws://192.168.1.5:8767", "wss://relay.example.com"]
    lan = doc["relays"][0]
    assert lan["token"] == "(redacted)" and lan["token_prefix"] == TOKEN[:8]
    assert lan["record"]["token"] == "(redacted)" and lan["record"]["refresh_token"] == "(redacted)"
    assert lan["paired_at"] == NOW - 3 * 86400 and lan["role"] == "lan" and lan["cert_pin_sha256"] == PIN
    assert doc["relays"][1]["expires_at"] == NOW - 60  # milliseconds read as such
    assert TOKEN not in result.out and "refresh-secret" not in result.out

    revealed = json.loads(cli("--json", "status", "--reveal-tokens", real_client=True).out)
    assert revealed["relays"][0]["token"] == TOKEN
    assert revealed["relays"][0]["record"]["refresh_token"] == "refresh-secret-value"


def test_no_store_means_no_paired_relays(cli) -> None:
    result = cli("status", real_client=True)
    assert result.code == 0
    assert result.out.splitlines()[-1] == "No paired relays. Run `hermes-relay pair --remote ws://HOST:8767` to pair (it asks for the code)."


def test_a_corrupt_store_is_reported_left_untouched_and_exits_1(cli, env, make_agent) -> None:
    garbage = b'{"version": 1, "sessions": {"ws://h:8767": {"token": "abc"'  # truncated mid-write by someone
    path = write_store(env, garbage.decode())
    live = {"url": "ws://h:8767", "state": "connected", "route": {"url": "ws://h:8767", "role": "lan", "label": "LAN",
                                                                  "priority": 0},
            "since": NOW - 120, "latency_ms": 3.2, "attempts": 0, "last_error": None, "next_retry_at": None,
            "routes": [], "server_version": "0.1.0", "token_prefix": "abc"}
    agent = make_agent(results={"status": {"agent": {"pid": 42, "version": "0.1.0", "started_at": NOW - 7200},
                                           "relays": [live]}})
    result = cli("status", agent=agent)
    assert result.code == 1
    assert path.read_bytes() == garbage
    assert list(path.parent.iterdir()) == [path]  # nothing quarantined, nothing rewritten
    message, hint = result.err.splitlines()
    assert message.startswith(f"hermes-relay: {path} cannot be parsed (not valid JSON: ")
    assert message.endswith("); it was left untouched")
    assert hint == "  hint: run `hermes-relay doctor --fix` to move it aside and start a fresh one"
    # The agent's view is still shown.
    assert "agent: running (pid 42, 0.1.0, up 2h)" in result.out
    assert "    live:     ● connected via LAN (ws://h:8767) since 2m ago, 3 ms" in result.out
    assert agent.autostarts == [False]

    as_json = cli("status", "--json", agent=agent)
    assert as_json.code == 1
    doc = json.loads(as_json.out)
    assert doc["store_error"]["code"] == "state_corrupt"
    assert doc["store_error"]["hint"] == "run `hermes-relay doctor --fix` to move it aside and start a fresh one"
    assert doc["relays"][0]["live"]["token_prefix"] == "abc"  # a prefix is not a secret: `devices` lists it
    assert path.read_bytes() == garbage


def test_a_newer_store_version_is_refused(cli, env) -> None:
    path = write_store(env, {"version": 99, "sessions": {}})
    result = cli("status", real_client=True)
    assert result.code == 1
    assert f"hermes-relay: {path} has format version 99; this hermes-relay understands version 1" in result.err


def test_live_state_is_merged_by_url_and_alternate_route(cli, env, make_agent) -> None:
    write_store(env, STORE)
    backoff = {"url": "ws://100.64.1.2:8767", "state": "backoff", "route": None, "since": None, "latency_ms": None,
               "attempts": 3, "next_retry_at": NOW + 9.4, "routes": [], "server_version": None,
               "last_error": {"code": "no_route", "message": "no route to ws://192.168.1.5:8767 answered",
                              "data": {"hint": "is the relay running?"}}}
    revoked = {"url": "wss://relay.example.com", "state": "revoked", "route": None, "attempts": 1,
               "last_error": {"code": "session_revoked", "message": "the relay revoked this session",
                              "hint": "pair again"}}
    agent = make_agent(results={"status": {"agent": {"pid": 7, "version": "0.1.0", "started_at": NOW - 30},
                                           "relays": [backoff, revoked]}})
    result = cli("status", agent=agent)
    assert result.code == 1, result.err  # revoked
    lines = result.out.splitlines()
    assert lines[0] == "agent: running (pid 7, 0.1.0, up 30s)"
    first = lines.index("  ws://192.168.1.5:8767")
    second = lines.index("  wss://relay.example.com")
    assert lines[second - 3:second - 1] == [
        "    error:    no route to ws://192.168.1.5:8767 answered",
        "              hint: is the relay running?",
    ]
    assert "    live:     ○ waiting to reconnect (attempt 3, next try in 9s)" in lines[first:second]
    assert lines[second:] == [  # no stale expiry; the fix replaces the error's own hint
        "  wss://relay.example.com",
        "    server:   1.9.0",
        "    paired:   1d ago",
        "    token:    zzzz9999… (redacted)",
        "    tools:    restricted: no desktop tools",
        "    live:     ✗ revoked: the relay no longer accepts this computer's session",
        "    attempts: 1",
        "    error:    the relay revoked this session",
        "    fix:      run hermes-pair on the relay host, then hermes-relay pair --remote wss://relay.example.com (it asks for the code)",
    ]
    assert agent.calls == [("status", {"reveal_tokens": False}, 5.0)]


def test_an_agent_that_does_not_answer_is_an_error_after_the_store_is_shown(cli, env, make_agent) -> None:
    from hermes_relay.core.errors import IpcError

    write_store(env, STORE)
    agent = make_agent(results={"status": IpcError("the agent did not answer status in time",
                                                   hint="see `hermes-relay agent logs`")})
    result = cli("status", agent=agent)
    assert result.code == 1
    assert result.out.startswith("agent: not answering (the agent did not answer status in time)\n")
    assert "Paired relays (2)" in result.out
    assert result.err == ("hermes-relay: the agent did not answer status in time\n"
                          "  hint: see `hermes-relay agent logs`\n")


def test_a_working_pairing_exits_0_and_a_replaced_one_points_to_forget(cli, env, make_agent) -> None:
    url = "ws://192.168.1.5:8767"
    write_store(env, {"version": 1, "sessions": {url: {"token": TOKEN, "ttl_expires_at": NOW + 7 * 86400}}})
    paths.hermes_home(env).mkdir(parents=True, exist_ok=True)
    (paths.hermes_home(env) / "desktop-host-access.json").write_text(json.dumps(
        {"version": 2, "hosts": {url: {"access_mode": "ask_every_time"}}}))
    result = cli("status", real_client=True)
    assert result.code == 0, result.out
    assert "    expires:  in 7d" in result.out and "    tools:    ask every time" in result.out
    replaced = {"url": url, "state": "replaced", "replaced_by": "ws://10.0.0.2:8767", "route": None, "attempts": 0,
                "last_error": None}
    agent = make_agent(results={"status": {"agent": {"pid": 7, "version": "0.1.0", "started_at": NOW - 30},
                                           "relays": [replaced]}})
    result = cli("status", agent=agent)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[lines.index(f"  {url}"):] == [
        f"  {url}",
        "    server:   (unknown)",
        "    paired:   —",
        "    token:    abcd1234… (redacted)",
        "    tools:    ask every time",
        "    live:     ○ replaced by a newer pairing (ws://10.0.0.2:8767)",
        f"    fix:      remove the old pairing: hermes-relay forget {url}",
    ]


def test_a_link_stopped_by_a_changed_certificate_fails_status_and_a_due_retry_reads_now(cli, env, make_agent) -> None:
    write_store(env, STORE)
    mismatch = {"url": "wss://relay.example.com", "state": "pin_mismatch", "route": None, "attempts": 1,
                "last_error": {"code": "pin_mismatch", "message": "the relay presents a different certificate",
                               "hint": "hermes-relay pin accept wss://relay.example.com"}}
    due = {"url": "ws://192.168.1.5:8767", "state": "backoff", "route": None, "since": None, "latency_ms": None,
           "attempts": 2, "next_retry_at": NOW - 0.2, "routes": [], "server_version": None, "last_error": None}
    agent = make_agent(results={"status": {"agent": {"pid": 7, "version": "0.1.0", "started_at": NOW - 30},
                                           "relays": [due, mismatch]}})
    result = cli("status", agent=agent)
    assert result.code == 1, result.out  # exit 0 used to say "all fine" for a link that is stopped
    assert "    live:     ○ waiting to reconnect (attempt 2, retrying now)" in result.out.splitlines()
    assert "next try now" not in result.out
