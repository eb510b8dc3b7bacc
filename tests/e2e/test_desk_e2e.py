"""Following the desktop channel from the desk, with real relay, agent and CLI processes: the prompt
indicator counts a waiting approval, ``approvals --watch`` follows the agent across a restart and
answers a call after it, ``hosts test`` walks the routes, and doctor names the notifier. Waiting is on
output lines and file contents with deadlines, never on fixed sleeps."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from procs import PY, AgentEnv, RelayProc, wait_state
from test_desktop_e2e import Background, call, pending_approvals, served, until

from hermes_relay.cli import approvals_watch
from hermes_relay.cli.lines import LineReader
from hermes_relay.core import paths

pytestmark = pytest.mark.integration


@pytest.fixture
def desk(make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv]) -> tuple[RelayProc, AgentEnv]:
    relay = make_relay()
    env = make_agent_env(HERMES_RELAY_NOTIFY="0", HERMES_RELAY_DESKTOP_DEADLINE="20")
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    served(relay)  # a fresh pairing is ask_every_time: desktop_terminal is advertised
    return relay, env


def route_label(env: AgentEnv) -> str:
    return paths.route_file(env.env).read_text().splitlines()[0].split(" ", 1)[1]


def test_the_prompt_counts_a_waiting_approval_until_it_is_answered(desk: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desk
    label = until(lambda: route_label(env) if "!" not in route_label(env) else None, 10, "a connected label")
    pending = Background(lambda: call(relay, "desktop_terminal", {"command": "true", "timeout": 5}))
    waiting = until(lambda: pending_approvals(env), 10, "an approval request")
    until(lambda: route_label(env) == f"{label} !1", 10, "the route file counting the approval")
    shown = env.cli("prompt", "show")
    assert shown.stdout == f"[{label} !1]\n", shown.stderr
    denied = env.cli("approvals", "deny", waiting[0]["id"])
    assert denied.returncode == 0, denied.stderr
    status, body = pending.get(30)
    assert status == 200 and body["ok"] is False, body
    until(lambda: route_label(env) == label, 10, "the count gone once answered")


def test_watch_follows_a_restarted_agent_and_answers_a_call_after_it(desk: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desk
    watch = subprocess.Popen([PY, "-m", "hermes_relay.cli", "approvals", "--watch"], env={**env.env, "NO_COLOR": "1"},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = LineReader(watch.stdout), LineReader(watch.stderr)  # type: ignore[arg-type]
        assert out.read(20).startswith("waiting for desktop calls")
        first = Background(lambda: call(relay, "desktop_terminal", {"command": "echo never", "timeout": 5}))
        _until_line(out, lambda line: line.startswith("id "), 20)  # the watch is connected and prompting
        old_pid = env.pids[-1]
        env.stop()  # the user restarts the agent (an upgrade, a crash and its restart)
        assert _until_line(out, lambda line: "gone with the agent" in line, 20)[-1].endswith(
            approvals_watch.PROMPT + "gone with the agent (it did not run)")
        assert "waiting for it to come back" in err.read(20)
        assert first.get(30)[0] != 200
        with env.client() as c:  # a new agent
            assert c.hello["pid"] != old_pid
        assert err.read(20) == "agent restarted; watching again"
        wait_state(env, lambda s: s["state"] == "connected")
        served(relay)
        pending = Background(lambda: call(relay, "desktop_terminal", {"command": "echo answered", "timeout": 5}))
        lines = _until_line(out, lambda line: line.startswith("id "), 20)
        assert any("wants to run desktop_terminal" in line for line in lines)
        assert watch.stdin is not None
        # The first prompt's read is still open (it closed unanswered): a line arriving within half a second of
        # this prompt may be taken as meant for the old one and refused. A person cannot answer that fast;
        # the test can, so it answers twice (the second line is read only if the first was refused).
        watch.stdin.write(b"y\ny\n")
        watch.stdin.flush()
        assert "✓ approved" in _until_line(out, lambda line: "approved" in line, 20)[-1]
        status, body = pending.get(30)
        assert status == 200 and body["result"]["stdout"].strip() == "answered", body
    finally:
        watch.kill()
        watch.wait(10)
        for pipe in (watch.stdin, watch.stdout, watch.stderr):
            if pipe is not None:
                pipe.close()


def _until_line(reader: LineReader, pred: Callable[[str], bool], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        try:
            line = reader.read(max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no matching line within {timeout}s; saw {seen}") from None
        seen.append(line)
        if pred(line):
            return seen


def test_hosts_test_use_rename_and_doctor_against_a_real_agent(desk: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desk
    renamed = env.cli("rename", relay.url, "bench")
    assert renamed.returncode == 0, renamed.stderr
    tested = env.cli("hosts", "test", "bench")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    lines = tested.stdout.splitlines()
    assert lines[0] == f"Relay bench ({relay.url})"
    assert lines[-1].startswith("✓ best route:") and relay.url in lines[-1]
    doctor: dict[str, Any] = json.loads(env.cli("doctor", "--json").stdout)
    notify = {c["id"]: c for c in doctor["checks"]}["desktop.notify"]
    assert notify["summary"] == "desktop notifications are off (HERMES_RELAY_NOTIFY=0)"


def test_two_relays_a_default_and_a_name_in_the_prompt_and_for_devices(
        desk: tuple[RelayProc, AgentEnv], make_relay: Callable[..., RelayProc]) -> None:
    first, env = desk
    second = make_relay("second")
    env.pair(second)
    wait_state(env, lambda s: s["url"] == second.url and s["state"] == "connected")
    without = env.cli("devices")
    assert without.returncode == 1 and "hermes-relay use URL|NAME" in without.stderr  # which one?
    assert env.cli("rename", first.url, "home").returncode == 0
    used = env.cli("use", second.url)
    assert used.returncode == 0, used.stderr
    # the agent rereads the names within 2 s: the default first and unnamed, the other by its name
    label = until(lambda: (lambda t: t if " | home: " in t else None)(route_label(env)), 10, "both relays named")
    part = label.split(" | ", 1)[0]
    assert label == f"{part} | home: {part}"
    devices = env.cli("devices", "--json")
    assert devices.returncode == 0, devices.stderr
    assert json.loads(devices.stdout)["url"] == second.url  # the default, without --remote
    named = env.cli("devices", "--remote", "home", "--json")
    assert json.loads(named.stdout)["url"] == first.url


def test_pair_prints_what_the_new_relay_host_may_do_here(make_relay: Callable[..., RelayProc],
                                                          make_agent_env: Callable[..., AgentEnv]) -> None:
    relay, env = make_relay(), make_agent_env(HERMES_RELAY_NOTIFY="0")
    paired = env.cli("pair", relay.mint_code(), "--remote", relay.url)
    assert paired.returncode == 0, paired.stderr
    lines = paired.stdout.splitlines()
    at = lines.index("  Desktop access: ask every time")
    assert lines[at + 1:] == [
        "    This relay host may now ask to run commands and use files here; you approve",
        "    each call (`hermes-relay approvals`).",
        f"    Change it: hermes-relay access {relay.url} standard|trusted|restricted",
    ]
