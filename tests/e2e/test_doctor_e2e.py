"""``hermes-relay doctor`` end to end: a real relay process, a real agent process, the CLI as a subprocess.

Doctor must tell a healthy relay, a stopped relay (TCP refused) and a revoked session (auth rejected)
apart, say what to do about each, and change nothing while it looks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from procs import AgentEnv, BlackHole, RelayProc, free_port, wait_state

from hermes_relay.core import api, payload
from hermes_relay.relay import tls

pytestmark = pytest.mark.integration


def doctor(env: AgentEnv, *args: str) -> tuple[int, dict[str, Any]]:
    done = env.cli("doctor", "--json", *args, timeout=30)
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout)


def steps(relay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [route] = relay["routes"]
    return {s["step"]: s for s in route["steps"]}


def test_a_healthy_paired_relay_passes_every_step(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    code, report = doctor(agent_env)
    assert code == 0 and report["ok"] is True
    by_id = {c["id"]: c for c in report["checks"]}
    assert by_id["agent.running"]["status"] == "ok" and by_id["store.file"]["status"] == "ok"
    assert not [c for c in report["checks"] if c["status"] == "fail"]
    [relay] = report["relays"]
    assert relay["url"] == relay_proc.url and relay["status"] == "ok"
    assert relay["link"]["state"] == api.CONNECTED and relay["link_status"] == "ok"
    got = steps(relay)
    assert list(got) == ["dns", "tcp", "tls", "ws", "auth"]
    assert {k: s["status"] for k, s in got.items()} == {"dns": "ok", "tcp": "ok", "tls": "skip", "ws": "ok", "auth": "ok"}
    assert all(isinstance(got[k]["ms"], (int, float)) for k in ("dns", "tcp", "ws", "auth"))

    text = agent_env.cli("doctor")
    assert text.returncode == 0
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    assert token[:8] not in text.stdout + json.dumps(report)
    assert f"Relay {relay_proc.url}" in text.stdout and "✓ auth" in text.stdout and "✗" not in text.stdout


def test_a_stopped_relay_fails_the_tcp_step_with_refused(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    relay_proc.stop()
    code, report = doctor(agent_env)
    assert code == 1 and report["ok"] is False
    [relay] = report["relays"]
    assert relay["status"] == "fail"
    got = steps(relay)
    assert got["dns"]["status"] == "ok"
    assert got["tcp"]["status"] == "fail" and got["tcp"]["error"] == "refused"
    assert "refused" in got["tcp"]["summary"]
    assert "not running" in got["tcp"]["fix"] and "port" in got["tcp"]["fix"]
    assert [got[k]["status"] for k in ("tls", "ws", "auth")] == ["skip", "skip", "skip"]

    text = agent_env.cli("doctor")
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    tcp = next(i for i, line in enumerate(lines) if "✗ tcp" in line)
    assert "connection refused" in lines[tcp] and lines[tcp + 1].strip().startswith("fix: the relay is not running")


def test_a_revoked_session_fails_the_auth_step_and_changes_nothing(relay_proc, make_agent_env) -> None:
    alice, bob = make_agent_env("alice"), make_agent_env("bob")
    alice.pair(relay_proc)
    bob.pair(relay_proc)
    wait_state(alice, lambda s: s["state"] == api.CONNECTED)
    prefix = alice.store()["sessions"][relay_proc.url]["token"][:8]
    with bob.client() as c:
        c.call(api.DEVICES_REVOKE, {"prefix": prefix})
    wait_state(alice, lambda s: s["state"] == api.REVOKED)
    store_before = alice.store_path.read_bytes()

    code, report = doctor(alice)
    assert code == 1 and report["ok"] is False
    [relay] = report["relays"]
    got = steps(relay)
    assert [got[k]["status"] for k in ("dns", "tcp", "ws")] == ["ok", "ok", "ok"]
    auth = got["auth"]
    assert auth["status"] == "fail"
    assert auth["reason"] == "Invalid pairing code or session token" and auth["reason"] in auth["summary"]
    assert "pair again" in auth["fix"]
    assert relay["status"] == "fail" and relay["link"]["state"] == api.REVOKED
    assert alice.store_path.read_bytes() == store_before  # doctor looks; it never rewrites the pairing

    # Bob's session is untouched by Alice's failed check.
    code, report = doctor(bob)
    assert code == 0 and steps(report["relays"][0])["auth"]["status"] == "ok"


def test_black_holed_routes_cost_one_timeout_not_one_each(relay_proc, agent_env) -> None:
    holes = [BlackHole(), BlackHole()]
    try:
        invite = payload.build(code=relay_proc.mint_code(), ttl_seconds=3600, transport_hint="ws", endpoints=[
            ("lan", f"ws://127.0.0.1:{holes[0].port}"),
            ("tailscale", f"ws://127.0.0.1:{holes[1].port}"),
            ("public", relay_proc.url),
        ])
        with agent_env.client() as c:
            c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
        with agent_env.client() as c:
            result = c.call(api.DOCTOR, {}, timeout=20)
        [relay] = result["relays"]
        by_role = {r["role"]: r for r in relay["routes"]}
        dead_ms = []
        for role in ("lan", "tailscale"):
            tcp = {s["step"]: s for s in by_role[role]["steps"]}["tcp"]
            assert tcp["status"] == "fail" and tcp["error"] == "timeout" and "firewall" in tcp["fix"]
            dead_ms.append(tcp["ms"])
        # Measured by the agent's own clock: the whole run took less than the two timeouts one after
        # the other, so the dead routes were checked side by side (no bound on how busy this machine is).
        assert result["elapsed_ms"] < sum(dead_ms)
        assert by_role["public"]["status"] == "ok"
        assert relay["status"] == "warn" and relay["working_routes"] == 1  # reachable, just not by every route
    finally:
        for hole in holes:
            hole.close()


def test_a_changed_certificate_fails_the_tls_step_before_any_token_is_sent(tmp_path, agent_env) -> None:
    port = free_port()
    relay = RelayProc(tmp_path / "relay", port=port, tls=True).start()
    try:
        agent_env.pair(relay)
        wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
        pinned = agent_env.store()["sessions"][relay.url]["cert_pin_sha256"]
        relay.stop()
        cert, key = tls.ensure_certificate(tmp_path / "other-cert", ["127.0.0.1"])
        relay = RelayProc(tmp_path / "relay", port=port, extra=["--cert", str(cert), "--key", str(key)]).start()
        code, report = doctor(agent_env)
        assert code == 1
        got = steps(report["relays"][0])
        step = got["tls"]
        assert step["status"] == "fail" and step["recorded_pin"] == pinned != step["presented_pin"]
        assert f"hermes-relay pin accept {relay.url}" in step["fix"]
        assert got["ws"]["status"] == got["auth"]["status"] == "skip"
        assert agent_env.store()["sessions"][relay.url]["cert_pin_sha256"] == pinned
    finally:
        relay.stop()


def test_wss_to_a_plain_relay_fails_the_tls_step_with_a_scheme_fix(relay_proc, agent_env) -> None:
    wrong = relay_proc.url.replace("ws://", "wss://")
    agent_env.store_path.parent.mkdir(parents=True, exist_ok=True)
    agent_env.store_path.write_text(json.dumps({"version": 1, "sessions": {wrong: {"token": "x" * 43}}}))
    agent_env.client().close()  # start the agent: doctor itself never does
    code, report = doctor(agent_env)
    assert code == 1
    got = steps(report["relays"][0])
    assert got["tcp"]["status"] == "ok"
    assert got["tls"]["status"] == "fail" and "TLS handshake failed" in got["tls"]["summary"]
    assert "ws:// URL (wrong scheme)" in got["tls"]["fix"]
    assert got["auth"]["status"] == "skip"
