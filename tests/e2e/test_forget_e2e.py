"""`hermes-relay forget URL` against a real relay and agent: revoke first, then remove everything local."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from procs import wait_state

from hermes_relay.agent.marks import Marks
from hermes_relay.core import api, paths

pytestmark = pytest.mark.integration


def _relay_answer(relay_http: str, token: str) -> int:
    request = urllib.request.Request(f"{relay_http}/sessions", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_forget_revokes_on_the_relay_then_removes_record_policy_and_verdict(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    assert _relay_answer(relay_proc.http, token) == 200
    policy = agent_env.store_path.parent / "desktop-host-access.json"
    other = "ws://10.0.0.9:8767"
    policy.write_text(json.dumps({"version": 2, "hosts": {
        relay_proc.url: {"access_mode": "trusted"}, other: {"access_mode": "ask"}}}))

    refused = agent_env.cli("forget", relay_proc.url)  # no terminal, no --yes
    assert refused.returncode == 2 and "forget needs confirmation" in refused.stderr
    assert relay_proc.url in agent_env.store()["sessions"]

    result = agent_env.cli("forget", relay_proc.url, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"✓ forgot {relay_proc.url}",
        f"  relay:   session {token[:8]} revoked",
        "  removed: pairing, refresh token, desktop access policy",
    ]
    assert agent_env.store()["sessions"] == {}
    assert json.loads(policy.read_text())["hosts"] == {other: {"access_mode": "ask"}}
    assert _relay_answer(relay_proc.http, token) == 401
    with agent_env.client() as c:
        assert c.call(api.STATUS, {})["relays"] == []
    assert Marks(paths.agent_state_file(agent_env.env)).get(relay_proc.url, token) is None

    again = agent_env.cli("forget", relay_proc.url, "--yes")
    assert again.returncode == 1
    assert f"hermes-relay: no pairing stored for {relay_proc.url}" in again.stderr


def test_forget_with_the_relay_down_removes_locally_and_says_the_session_stays(make_relay, agent_env) -> None:
    relay = make_relay()
    agent_env.pair(relay)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    token = agent_env.store()["sessions"][relay.url]["token"]
    relay.stop()
    result = agent_env.cli("forget", relay.url, "--yes")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"✓ forgot {relay.url}"
    assert lines[1].startswith("  relay:   session NOT revoked: the relay could not be reached (")
    assert lines[2] == ("           it stays valid there until it expires; end it from the relay host or another "
                        f"device: hermes-relay devices revoke {token[:8]}")
    assert lines[3] == "  removed: pairing, refresh token, desktop access policy"
    assert agent_env.store()["sessions"] == {}


def test_forgetting_a_revoked_pairing_skips_the_relay_and_drops_the_verdict(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    assert agent_env.cli("devices", "revoke", token[:8], "--yes").returncode == 0
    wait_state(agent_env, lambda s: s["state"] == api.REVOKED)
    marks = Marks(paths.agent_state_file(agent_env.env))
    assert marks.get(relay_proc.url, token)["state"] == api.REVOKED

    result = agent_env.cli("forget", relay_proc.url, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "  relay:   the session had already ended (the relay had already revoked it)",
        "  removed: pairing, verdict, refresh token, desktop access policy",
    ]
    assert marks.get(relay_proc.url, token) is None
    assert agent_env.cli("status").returncode == 0  # nothing revoked is left to report
