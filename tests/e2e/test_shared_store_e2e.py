"""The session store is shared with other clients: odd records and re-pairings must not confuse the agent."""

from __future__ import annotations

import json
import urllib.request

import pytest
from procs import wait_state

from hermes_relay.core import api, payload

pytestmark = pytest.mark.integration


def test_unusable_records_from_other_clients_do_not_stop_the_agent(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED and s["url"] == relay_proc.url)
    doc = agent_env.store()
    doc["sessions"]["ws://127.0.0.1:99999"] = {"token": "t" * 43, "future_field": [1, 2]}
    doc["sessions"]["ws://[broken"] = {"token": "u" * 43}
    agent_env.store_path.write_text(json.dumps(doc))
    with agent_env.client() as c:
        assert c.call(api.RELOAD, {}) == {"relays": 3}
    bad = wait_state(agent_env, lambda s: s["url"] == "ws://127.0.0.1:99999" and s["state"] == api.BACKOFF)
    assert bad["last_error"]["code"] == "no_route"
    with agent_env.client() as c:
        states = {s["url"]: s["state"] for s in c.call(api.STATUS, {})["relays"]}
    assert states[relay_proc.url] == api.CONNECTED  # the good pairing is untouched
    assert agent_env.store()["sessions"]["ws://127.0.0.1:99999"]["future_field"] == [1, 2]


def test_repairing_through_another_route_leaves_one_link(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    port = relay_proc.port
    other = f"ws://localhost:{port}"
    invite = payload.build(code=relay_proc.mint_code(), ttl_seconds=3600, transport_hint="ws",
                           endpoints=[("lan", other), ("public", relay_proc.url)])
    with agent_env.client() as c:
        result = c.call(api.PAIR_START, {"invite": json.dumps(invite)}, timeout=30)
    assert result["url"] == other
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED and s["url"] == other)
    assert list(agent_env.store()["sessions"]) == [other]  # one pairing per relay
    with agent_env.client() as c:
        relays = c.call(api.STATUS, {})["relays"]
    assert [r["url"] for r in relays] == [other]
    with urllib.request.urlopen(f"{relay_proc.http}/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["connections"] == 1  # the replaced pairing's link was stopped
