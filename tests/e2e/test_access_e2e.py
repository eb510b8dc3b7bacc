"""``hermes-relay access`` against a running agent: a workspace with its own root is applied within
seconds, and every change is audited by the agent with who made it (the CLI, or anything else).

Real relay and agent processes; the CLI runs as its own process, as the user runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import AgentEnv, RelayProc, wait_state
from test_desktop_e2e import advertised, served, until

from hermes_relay.core import api, desktop, policy

pytestmark = pytest.mark.integration


def policy_changes(env: AgentEnv) -> list[dict[str, Any]]:
    return [r for r in desktop.read_audit(desktop.audit_file(env.env)) if r.get("kind") == "policy.changed"]


def desktop_status(env: AgentEnv) -> dict[str, Any]:
    with env.client(autostart=False) as c:
        (link,) = c.call(api.STATUS, {}, timeout=5)["relays"]
    return link["desktop"]


def test_a_workspace_root_set_from_the_cli_is_applied_and_audited(
        make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv], tmp_path: Path) -> None:
    relay = make_relay()
    env = make_agent_env(HERMES_RELAY_NOTIFY="0")
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    served(relay)  # a fresh pairing asks every time: the tools are offered
    work = tmp_path / "work"
    work.mkdir()
    out = env.cli("access", relay.url, "workspace", "--root", str(work))
    assert out.returncode == 0, out.stderr
    assert f"root {os.path.realpath(work)} added" in out.stdout

    def by_cli() -> dict[str, Any] | None:
        found = [r for r in policy_changes(env) if (r.get("after") or {}).get("roots") == [os.path.realpath(work)]]
        return found[-1] if found else None

    record = until(by_cli, 10, "the agent recording the change")
    assert record["by"] == "hermes-relay access" and record["host_url"] == relay.url
    assert record["after"]["confined"] is True and record["after"]["access_mode"] == "workspace"
    assert desktop_status(env)["policy_label"] == "workspace"
    assert "desktop_terminal" in advertised(relay)

    # Anything else that edits the shared file (another client, an editor) is named as such.
    policy.set_mode(policy.policy_file(env.env), relay.url, policy.ASK)
    outside = until(lambda: [r for r in policy_changes(env) if r["by"] == "changed outside hermes-relay access"],
                    10, "the outside change recorded")
    assert outside[-1]["before"]["access_mode"] == "workspace" and outside[-1]["after"]["access_mode"] == "ask"
    until(lambda: "desktop_terminal" not in advertised(relay), 10, "the tools withdrawn")
