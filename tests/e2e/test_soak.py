"""Reliability: many route deaths and returns leave the agent with the tasks and sockets it started with."""

from __future__ import annotations

import json

import pytest
from procs import Proxy, wait_state

from hermes_relay.core import api, payload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CYCLES = 25


def _resources(env) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with env.client() as c:
        agent = c.call(api.STATUS, {})["agent"]
    return agent["tasks"], agent["open_files"]


def test_reconnect_soak_leaks_no_tasks_or_sockets(relay_proc, make_agent_env) -> None:
    env = make_agent_env(HERMES_RELAY_BACKOFF_BASE="0.05", HERMES_RELAY_BACKOFF_CAP="0.2",
                         HERMES_RELAY_UPGRADE_INTERVAL="0.2", HERMES_RELAY_UPGRADE_HYSTERESIS="0.1")
    proxy = Proxy(relay_proc.port)
    try:
        lan = f"ws://127.0.0.1:{proxy.port}"
        invite = payload.build(code=relay_proc.mint_code(), ttl_seconds=3600, transport_hint="ws",
                               endpoints=[("lan", lan), ("public", relay_proc.url)])
        with env.client() as c:
            c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
        wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == lan)
        baseline = _resources(env)
        for _ in range(CYCLES):
            proxy.command("down")
            wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["role"] == "public")
            proxy.command("up")
            wait_state(env, lambda s: s["state"] == api.CONNECTED and s["route"]["url"] == lan)
        tasks, files = _resources(env)
        assert tasks == baseline[0], f"tasks {baseline[0]} -> {tasks} after {CYCLES} failover cycles"
        assert files <= baseline[1] + 1, f"open files {baseline[1]} -> {files} after {CYCLES} failover cycles"
    finally:
        proxy.close()
