"""``hermes-relay down``/``up`` with real relay, agent and CLI processes: down takes the computer off the
relay (the relay sees no desktop client: ``_ping`` 503) and stays down across an agent restart and
autostart, shown by ``status``, ``route`` and the prompt; the shared store is not touched; ``up`` puts
it back. Waiting is on conditions with deadlines, never on fixed sleeps."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from procs import AgentEnv, RelayProc, wait_gone, wait_state
from test_desktop_e2e import http_json, served, until

from hermes_relay.core import paths

pytestmark = pytest.mark.integration


def ping(relay: RelayProc) -> int:
    return http_json(f"{relay.http}/desktop/_ping?tool=desktop_terminal", timeout=5)[0]


def route_label(env: AgentEnv) -> str:
    return paths.route_file(env.env).read_text().splitlines()[0].split(" ", 1)[1]


def test_down_survives_a_restart_and_up_puts_the_computer_back(make_relay: Callable[..., RelayProc],
                                                               make_agent_env: Callable[..., AgentEnv]) -> None:
    relay = make_relay()
    env = make_agent_env(HERMES_RELAY_IDLE_EXIT="0.5")  # an agent with every relay down has work: it stays
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    served(relay)
    store_before = env.store_path.read_bytes()

    down = env.cli("down")
    assert down.returncode == 0, down.stderr
    assert "off every relay" in down.stdout
    until(lambda: ping(relay) == 503, 10, "the relay seeing no desktop client")
    assert env.store_path.read_bytes() == store_before  # other clients see no change
    until(lambda: route_label(env) == "down", 10, "the route file saying down")
    assert env.cli("prompt", "show").stdout == "[down]\n"
    status = env.cli("status")
    assert status.returncode == 0, status.stderr
    assert "down since" in status.stdout and f"hermes-relay up {relay.url}" in status.stdout

    with env.client(autostart=False) as c:  # a restart: stop, then autostart by the next command
        pid = c.hello["pid"]
        c.call("agent.stop", {}, timeout=5)
    assert wait_gone(pid, 10)
    assert "down (agent stopped)" in env.cli("route").stdout
    assert env.cli("prompt", "show").stdout == "[down]\n"
    stopped = env.cli("status", "--no-autostart")
    assert stopped.returncode == 3 and "down since" in stopped.stdout, stopped
    listed = env.cli("approvals")  # autostarts the agent: it must stay off the relay
    assert listed.returncode == 0, listed.stderr
    with env.client(autostart=False) as c:
        restarted = c.hello["pid"]
        assert restarted != pid
        states = c.status()["relays"]
    assert [s["state"] for s in states] == ["down"]
    assert ping(relay) == 503
    assert "down" in env.cli("route").stdout
    assert "down since" in env.cli("status").stdout

    up = env.cli("up")
    assert up.returncode == 0, up.stderr
    assert "back on every relay" in up.stdout
    served(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    until(lambda: route_label(env) != "down", 10, "the route file without down")
    assert env.store_path.read_bytes() == store_before
    with env.client(autostart=False) as c:  # an agent whose relays are all down has work: it never idled out
        assert c.hello["pid"] == restarted


def test_down_one_relay_keeps_the_other(make_relay: Callable[..., RelayProc],
                                        make_agent_env: Callable[..., AgentEnv]) -> None:
    first, second = make_relay("one"), make_relay("two")
    env = make_agent_env()
    env.pair(first)
    env.pair(second)
    served(first)
    served(second)
    assert env.cli("rename", second.url, "office").returncode == 0
    down = env.cli("down", "office")
    assert down.returncode == 0, down.stderr
    until(lambda: ping(second) == 503, 10, "the second relay losing its desktop client")
    assert ping(first) == 200
    doc = json.loads(paths.down_file(env.env).read_text())
    assert doc["all"] is None and list(doc["relays"]) == [second.url]
    until(lambda: route_label(env).endswith("office: down"), 10, "the route naming the down relay")
    assert env.cli("up", "office").returncode == 0
    served(second)
    assert env.cli("down", "office").returncode == 0
    forgotten = env.cli("forget", "office", "--yes")
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(paths.down_file(env.env).read_text())["relays"] == {}  # paired again later, it starts up


def test_doctor_with_the_agent_stopped_checks_the_relay_itself(make_relay: Callable[..., RelayProc],
                                                               make_agent_env: Callable[..., AgentEnv]) -> None:
    relay = make_relay()
    env = make_agent_env()
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    with env.client(autostart=False) as c:
        pid = c.hello["pid"]
        c.call("agent.stop", {}, timeout=5)
    assert wait_gone(pid, 10)

    healthy = env.cli("doctor", "--json")
    report = json.loads(healthy.stdout)
    [checked] = report["relays"]
    assert checked["status"] == "ok" and checked["working_routes"] == 1, checked
    assert [s["status"] for s in checked["routes"][0]["steps"] if s["step"] in ("tcp", "ws", "auth")] == ["ok"] * 3
    assert healthy.returncode == 0, healthy.stdout
    assert "link: none (the agent is not running" in env.cli("doctor").stdout

    relay.stop()
    broken = env.cli("doctor")
    assert broken.returncode == 1, broken.stdout
    assert "connection refused" in broken.stdout
    assert not os.path.exists(paths.socket_path(env.env))  # doctor started no agent


def test_a_command_on_a_fresh_home_leaves_no_agent_behind(make_agent_env: Callable[..., AgentEnv]) -> None:
    env = make_agent_env(HERMES_RELAY_IDLE_EXIT="0.5")
    listed = env.cli("approvals")  # autostarts an agent: nothing is paired
    assert listed.returncode == 0, listed.stderr
    assert os.path.exists(paths.socket_path(env.env))
    until(lambda: not os.path.exists(paths.socket_path(env.env)), 10, "the agent stopping again")
    assert env.cli("route").stdout == "offline (agent stopped)\n"
    assert env.cli("status", "--no-autostart").returncode == 3
