"""Keeping a pairing connected through relay restarts, revocation, refresh, certificate changes,
route failures and silent links: real relay, proxy and agent processes on loopback."""

from __future__ import annotations

import json

import pytest
from procs import Proxy, RelayProc, free_port, wait_state

from hermes_relay.core import api, payload
from hermes_relay.core.errors import PinMismatchError
from hermes_relay.relay import tls

pytestmark = pytest.mark.integration

FAST = {"HERMES_RELAY_BACKOFF_CAP": "1", "HERMES_RELAY_BACKOFF_BASE": "0.2"}


def test_relay_restart_reconnects_with_the_stored_token(tmp_path, make_agent_env) -> None:
    relay = RelayProc(tmp_path / "relay", port=free_port()).start()
    env = make_agent_env(**FAST)
    try:
        env.pair(relay)
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        relay.stop()
        down = wait_state(env, lambda s: s["state"] == api.BACKOFF)
        assert down["last_error"]["code"] in ("connection_lost", "connect_refused", "no_route")
        relay.start()
        up = wait_state(env, lambda s: s["state"] == api.CONNECTED)
        assert up["route"]["url"] == relay.url
    finally:
        relay.stop()


def test_rejected_token_uses_the_refresh_token(relay_proc, make_agent_env) -> None:
    env = make_agent_env(**FAST)
    env.pair(relay_proc)
    wait_state(env, lambda s: s["state"] == api.CONNECTED)
    env.stop()
    doc = env.store()
    record = doc["sessions"][relay_proc.url]
    assert record["refresh_token"]
    record["token"] = "x" * 43  # as if another client had rotated it
    env.store_path.write_text(json.dumps(doc))
    state = wait_state(env, lambda s: s["state"] == api.CONNECTED)  # autostarts a new agent
    assert state["attempts"] == 0
    fresh = env.store()["sessions"][relay_proc.url]
    assert fresh["token"] not in ("x" * 43, record["token"]) and fresh["refresh_token"] != record["refresh_token"]


def test_new_certificate_is_refused_until_accepted(tmp_path, make_agent_env) -> None:
    port = free_port()
    relay = RelayProc(tmp_path / "relay", port=port, tls=True).start()
    env = make_agent_env(**FAST)
    try:
        env.pair(relay)
        first_pin = env.store()["sessions"][relay.url]["cert_pin_sha256"]
        assert first_pin == relay.pin
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        relay.stop()
        cert, key = tls.ensure_certificate(tmp_path / "other-cert", ["127.0.0.1"])
        relay = RelayProc(tmp_path / "relay", port=port, tls=False, extra=["--cert", str(cert), "--key", str(key)])
        relay.start()
        relay.pin = relay.pin or tls.load_server_context(cert, key)[1]
        state = wait_state(env, lambda s: s["state"] == api.PIN_MISMATCH)
        err = state["last_error"]
        assert err["data"]["expected"] == first_pin and err["data"]["got"] == relay.pin != first_pin
        assert "hermes-relay pin accept" in err["data"]["hint"]
        assert env.store()["sessions"][relay.url]["cert_pin_sha256"] == first_pin  # never re-pinned silently
        with env.client() as c:  # the pin guards the session-management calls too: no token is sent
            with pytest.raises(PinMismatchError) as info:
                c.call(api.DEVICES_LIST, {}, timeout=20)
        assert info.value.data["got"] == relay.pin and "pin accept" in (info.value.hint or "")
        with env.client() as c:
            accepted = c.call(api.PIN_ACCEPT, {"url": relay.url}, timeout=20)
        assert accepted == {"url": relay.url, "old_pin": first_pin, "new_pin": relay.pin, "changed": True,
                            "applied": True}
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        assert env.store()["sessions"][relay.url]["cert_pin_sha256"] == relay.pin
    finally:
        relay.stop()


def _pair_two_routes(relay: RelayProc, proxy: Proxy, env) -> str:  # type: ignore[no-untyped-def]
    lan = f"ws://127.0.0.1:{proxy.port}"
    invite = payload.build(code=relay.mint_code(), ttl_seconds=3600, transport_hint="ws",
                           endpoints=[("lan", lan), ("public", relay.url)])
    with env.client() as c:
        result = c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    assert result["route"]["url"] == lan
    return lan


def test_failover_to_the_next_tier_and_back_up(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_UPGRADE_INTERVAL="0.5", HERMES_RELAY_UPGRADE_HYSTERESIS="0.3", **FAST)
    proxy = Proxy(relay_proc.port)
    try:
        lan = _pair_two_routes(relay_proc, proxy, env)
        wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == lan)
        proxy.command("down")
        public = wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["role"] == "public")
        assert public["route"]["url"] == relay_proc.url
        proxy.command("up")
        back = wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == lan)
        assert back["route"]["label"] == "LAN"
        with env.client() as c:
            assert c.call(api.ROUTE, {})["label"] == "LAN"
    finally:
        proxy.close()


def test_silent_link_is_declared_dead_by_keepalive(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_PING_INTERVAL="0.5", **FAST)
    proxy = Proxy(relay_proc.port)
    try:
        lan = _pair_two_routes(relay_proc, proxy, env)
        wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == lan)
        proxy.command("blackhole")
        dead = wait_state(env, lambda s: s["state"] == api.BACKOFF, timeout=10)
        assert "no keepalive answer" in dead["last_error"]["message"]
        wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["role"] == "public", timeout=30)
    finally:
        proxy.close()
