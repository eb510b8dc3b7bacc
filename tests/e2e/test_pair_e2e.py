"""Pairing and session management end to end: relay process + agent process + blocking IPC client."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from procs import BlackHole, free_port, wait_state

from hermes_relay.core import api, payload
from hermes_relay.core.errors import PairingRejectedError, PayloadError

pytestmark = pytest.mark.integration


def test_pair_by_code_stores_token_and_stays_connected(relay_proc, agent_env) -> None:
    result = agent_env.pair(relay_proc)
    assert result["url"] == relay_proc.url
    assert result["route"]["label"] == "LAN" and result["verified"] is None
    state = wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    assert state["route"]["url"] == relay_proc.url
    store = agent_env.store()
    record = store["sessions"][relay_proc.url]
    assert store["version"] == 1 and len(record["token"]) >= 32
    assert record["grants"].keys() >= {"chat", "terminal", "bridge"}
    assert isinstance(record["paired_at"], int)
    assert stat.S_IMODE(os.stat(agent_env.store_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(agent_env.store_path.parent).st_mode) == 0o700
    with agent_env.client() as c:
        status = c.call(api.STATUS, {})
        devices = c.call(api.DEVICES_LIST, {})
    (relay_state,) = status["relays"]
    assert relay_state["token_prefix"] == record["token"][:8] and "token" not in relay_state
    (me,) = devices["sessions"]
    assert me["is_current"] and me["token_prefix"] == record["token"][:8]


def test_used_code_is_rejected_and_nothing_is_stored(relay_proc, agent_env) -> None:
    code = relay_proc.mint_code()
    with agent_env.client() as c:
        c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30)
        before = agent_env.store_path.read_bytes()
        with pytest.raises(PairingRejectedError) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": code}, timeout=30)
    assert "Invalid pairing code or session token" in info.value.message
    assert "hermes-pair" in (info.value.hint or "")
    assert agent_env.store_path.read_bytes() == before


def test_pair_by_invite_with_dead_routes_picks_the_live_tier(relay_proc, agent_env) -> None:
    hole = BlackHole()
    refused = free_port()
    try:
        code = relay_proc.mint_code()
        invite = payload.build(code=code, ttl_seconds=3600, transport_hint="ws", endpoints=[
            ("lan", f"ws://127.0.0.1:{hole.port}"),
            ("tailscale", f"ws://127.0.0.1:{refused}"),
            ("public", relay_proc.url),
        ])
        lines: list[str] = []
        with agent_env.client() as c:
            result = c.call(api.PAIR_START, {"invite": payload.invite_url(invite)}, timeout=30,
                            on_notify=lambda m, p: lines.append(p["line"]))
    finally:
        hole.close()
    assert result["route"]["role"] == "public" and result["url"] == relay_proc.url
    text = "\n".join(lines)
    assert f"✗ Tailscale  ws://127.0.0.1:{refused}" in text and "refused" in text
    assert f"✗ LAN        ws://127.0.0.1:{hole.port}" in text and "timed out after 1.5s" in text
    assert f"✓ Public     {relay_proc.url}" in text and "→ using Public route" in text
    # Tiers are probed side by side: the public route answered while the dead top tier was still waiting
    # out its 1.5 s timeout (probed one tier after the other, its line could only come after). The margin
    # is the whole probe timeout against one loopback connect, not a bound on how busy this machine is.
    lan_timeout = next(i for i, line in enumerate(lines) if "timed out after" in line)
    public_ok = next(i for i, line in enumerate(lines) if line.lstrip().startswith("✓ Public"))
    assert public_ok < lan_timeout, lines
    record = agent_env.store()["sessions"][relay_proc.url]
    assert [c["relay"]["url"] for c in record["route_candidates"]] == [
        f"ws://127.0.0.1:{hole.port}", f"ws://127.0.0.1:{refused}", relay_proc.url]
    assert result["verified"] is None and "no signature" in result["verify_note"]


def test_signed_invite_is_verified_on_the_relay_host(relay_proc, agent_env) -> None:
    secret = payload.load_or_create_secret(agent_env.home / "hermes-relay-qr-secret")
    invite = payload.build(code=relay_proc.mint_code(ttl="never"), ttl_seconds=0, transport_hint="ws",
                           endpoints=[("lan", relay_proc.url)], secret=secret)
    with agent_env.client() as c:
        result = c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    assert result["verified"] is True and result["expires_at"] is None


def test_bad_invite_is_a_usage_error(agent_env) -> None:
    with agent_env.client() as c:
        with pytest.raises(PayloadError) as info:
            c.call(api.PAIR_START, {"invite": '{"hermes":3,"key":"APIKEY","relay":{"url":"ws://a:1"}}'})
    assert "no relay.code" in info.value.message


def test_revoke_from_a_second_client_stops_the_first_without_deleting_it(relay_proc, make_agent_env) -> None:
    alice, bob = make_agent_env("alice"), make_agent_env("bob")
    alice.pair(relay_proc)
    bob.pair(relay_proc)
    wait_state(alice, lambda s: s["state"] == api.CONNECTED)
    alice_prefix = alice.store()["sessions"][relay_proc.url]["token"][:8]
    with bob.client() as c:
        listed = c.call(api.DEVICES_LIST, {})["sessions"]
        assert {s["token_prefix"] for s in listed} >= {alice_prefix}
        revoked = c.call(api.DEVICES_REVOKE, {"prefix": alice_prefix})
    assert revoked["revoked"] == alice_prefix and revoked["is_current"] is False
    state = wait_state(alice, lambda s: s["state"] == api.REVOKED)
    assert "Invalid pairing code or session token" in state["last_error"]["message"]
    # The pairing stays in the store: only the user removes it.
    assert relay_proc.url in alice.store()["sessions"]


def test_extend_changes_expiry(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    prefix = agent_env.store()["sessions"][relay_proc.url]["token"][:8]
    with agent_env.client() as c:
        session = c.call(api.DEVICES_EXTEND, {"prefix": prefix, "ttl_seconds": 86400})["session"]
    assert 86000 < session["expires_at"] - time.time() <= 86400


def test_corrupt_store_is_reported_and_kept(relay_proc, agent_env) -> None:
    agent_env.store_path.parent.mkdir(parents=True, exist_ok=True)
    agent_env.store_path.write_text('{"version": 1, "sessions": {"ws://x:1": ')
    before = agent_env.store_path.read_bytes()
    with agent_env.client() as c:
        status = c.call(api.STATUS, {})
        assert status["agent"]["store_error"]["code"] == "state_corrupt"
        with pytest.raises(Exception) as info:
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
    assert "doctor" in (getattr(info.value, "hint", "") or "") or "cannot be parsed" in str(info.value)
    assert agent_env.store_path.read_bytes() == before
