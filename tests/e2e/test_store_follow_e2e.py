"""The agent follows the shared store: what another client (or a hand edit) does to it is picked up
within 2 s without a restart, and a pairing another client removed is paused, never dropped.

Real relay and agent processes; the "other client" is another process writing the store the way
Hermes clients do (a temp file renamed over it).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from procs import PY, wait_state

from hermes_relay.core import api

pytestmark = pytest.mark.integration

_WRITE_STORE = textwrap.dedent(
    """
    import json, os, sys
    path, doc = sys.argv[1], json.loads(sys.stdin.read())
    tmp = path + ".other-client.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    """
)


def _other_client_writes(store: Path, doc: dict[str, Any]) -> None:
    subprocess.run([PY, "-c", _WRITE_STORE, str(store)], input=json.dumps(doc), text=True, check=True, timeout=30)


def test_a_pairing_another_client_adds_is_followed_within_2_s(relay_proc, make_agent_env) -> None:
    other = make_agent_env("other-client")  # another Hermes client pairs and writes its record
    other.pair(relay_proc)
    record = other.store()["sessions"][relay_proc.url]
    other.stop()
    env = make_agent_env("user")
    with env.client() as c:
        assert c.call(api.STATUS, {})["relays"] == []
    _other_client_writes(env.store_path, {"version": 1, "sessions": {relay_proc.url: record}})
    started = time.monotonic()
    wait_state(env, lambda s: s["url"] == relay_proc.url, timeout=2)  # a link for it, no restart
    assert time.monotonic() - started < 2
    wait_state(env, lambda s: s["url"] == relay_proc.url and s["state"] == api.CONNECTED)


def test_a_pairing_another_client_removes_is_paused_and_restored(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    token = agent_env.store()["sessions"][relay_proc.url]["token"]
    _other_client_writes(agent_env.store_path, {"version": 1, "sessions": {}})
    paused = wait_state(agent_env, lambda s: s["state"] == api.PAUSED, timeout=5)
    assert "removed from the store by another client" in paused["last_error"]["message"]
    status = agent_env.cli("status")
    assert "paused: another client removed it from the store" in status.stdout
    assert f"hermes-relay restore {relay_proc.url}" in status.stdout
    with agent_env.client() as c:
        assert [s["state"] for s in c.call(api.STATUS, {})["relays"]] == [api.PAUSED]  # the link is stopped
    assert agent_env.store()["sessions"] == {}

    restored = agent_env.cli("restore", relay_proc.url)
    assert restored.returncode == 0, restored
    assert f"restored {relay_proc.url}" in restored.stdout
    wait_state(agent_env, lambda s: s["url"] == relay_proc.url and s["state"] == api.CONNECTED)
    assert agent_env.store()["sessions"][relay_proc.url]["token"] == token


def test_a_paused_pairing_can_be_forgotten_for_good(relay_proc, agent_env) -> None:
    agent_env.pair(relay_proc)
    wait_state(agent_env, lambda s: s["state"] == api.CONNECTED)
    _other_client_writes(agent_env.store_path, {"version": 1, "sessions": {}})
    wait_state(agent_env, lambda s: s["state"] == api.PAUSED, timeout=5)
    forgot = agent_env.cli("forget", relay_proc.url, "--yes")
    assert forgot.returncode == 0, forgot
    assert "revoked" in forgot.stdout  # its session ended on the relay too
    with agent_env.client() as c:
        status = c.call(api.STATUS, {})
    assert status["relays"] == [] and status["paired"] == []
    restore = agent_env.cli("restore", relay_proc.url)
    assert restore.returncode == 1 and "no paused pairing" in restore.stderr


def test_credentials_another_client_changes_are_used_at_once(relay_proc, make_agent_env) -> None:
    env = make_agent_env("user")
    env.pair(relay_proc)
    wait_state(env, lambda s: s["state"] == api.CONNECTED)
    other = make_agent_env("other-client")  # another client's pairing of the same relay: a second valid token
    other.pair(relay_proc)
    theirs = other.store()["sessions"][relay_proc.url]["token"]
    other.stop()
    doc = env.store()
    doc["sessions"][relay_proc.url]["token"] = theirs
    written = time.time()
    _other_client_writes(env.store_path, doc)
    wait_state(env, lambda s: s["state"] == api.CONNECTED and (s.get("since") or 0) >= written, timeout=5)
    with urllib.request.urlopen(f"{relay_proc.http}/sessions", timeout=5) as resp:  # the operator's view
        sessions = json.loads(resp.read())["sessions"]
    assert [s["token_prefix"] for s in sessions if s["connected"]] == [theirs[:8]]  # reconnected with the new token
