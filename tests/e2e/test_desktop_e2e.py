"""The desktop channel end to end: a real relay process calls tools on a real agent process.

The relay host's side is what the Hermes agent does: ``POST /desktop/<tool>`` on the relay's loopback
HTTP port. Waiting is on conditions with deadlines (the relay's ``_ping``/health, the agent's approvals
list, a job's state), never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import AgentEnv, RelayProc, wait_state

from hermes_relay.core import api, paths
from hermes_relay.relay import desktop as relay_desktop

pytestmark = pytest.mark.integration


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 40) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def call(relay: RelayProc, tool: str, args: dict[str, Any], timeout: float = 40) -> tuple[int, dict[str, Any]]:
    return http_json(f"{relay.http}/desktop/{tool}", args, timeout=timeout)


def until(pred: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def served(relay: RelayProc, tool: str = "desktop_terminal", timeout: float = 20) -> None:
    """Wait until the relay routes ``tool`` to this agent (its desktop.status arrived)."""
    until(lambda: http_json(f"{relay.http}/desktop/_ping?tool={tool}", timeout=5)[0] == 200, timeout,
          f"the relay serving {tool}")


def advertised(relay: RelayProc) -> set[str]:
    status, health = http_json(f"{relay.http}/desktop/health", timeout=5)
    assert status == 200
    return set(health.get("advertised_tools") or [])


def access(env: AgentEnv, relay: RelayProc, preset: str) -> None:
    out = env.cli("access", relay.url, preset, "--yes")
    assert out.returncode == 0, out.stderr


class Background:
    """One blocking call in a thread, its result collected."""

    def __init__(self, fn: Callable[[], Any]):
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # handed to the test thread
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def get(self, timeout: float) -> Any:
        assert self.done.wait(timeout), f"no answer within {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


def pending_approvals(env: AgentEnv) -> list[dict[str, Any]]:
    with env.client(autostart=False) as c:
        return c.call(api.APPROVALS_LIST, {}, timeout=5)["approvals"]


@pytest.fixture
def desktop(make_relay: Callable[..., RelayProc], make_agent_env: Callable[..., AgentEnv]) -> tuple[RelayProc, AgentEnv]:
    relay = make_relay()
    env = make_agent_env(HERMES_RELAY_NOTIFY="0", HERMES_RELAY_DESKTOP_DEADLINE="8")
    env.pair(relay)
    wait_state(env, lambda s: s["state"] == "connected")
    return relay, env


def test_a_trusted_host_runs_a_command_here_and_every_call_is_audited(desktop: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    status, body = call(relay, "desktop_terminal", {"command": "echo hello from $0", "timeout": 5})
    assert status == 200, body
    assert body["ok"] is True and body["result"]["exit_code"] == 0
    assert body["result"]["stdout"].startswith("hello from")
    device_id = paths.device_id_file(env.env).read_text().strip()
    assert body["target"]["device_id"] == device_id
    audit = [json.loads(line) for line in (paths.hermes_home(env.env) / "desktop-audit.jsonl").read_text().splitlines()]
    calls = [r for r in audit if r.get("kind") == "tool.completed"]
    assert [(r["tool"], r["ok"], r["request_id"]) for r in calls] == [("desktop_terminal", True, body["request_id"])]
    assert (paths.hermes_home(env.env) / "desktop-audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_restricted_host_is_advertised_nothing_and_refused_at_call_time(desktop: tuple[RelayProc, AgentEnv],
                                                                           tmp_path: Path) -> None:
    relay, env = desktop
    access(env, relay, "ask")  # "restricted": every capability disabled
    until(lambda: not (advertised(relay) & {"desktop_terminal", "desktop_write_file"}), 10, "tools withdrawn")
    marker = tmp_path / "ran"
    # A relay forwards a tool to a target that advertised nothing (the reference's legacy optimism):
    # the agent checks the policy again when the call arrives.
    status, body = call(relay, "desktop_terminal", {"command": f"touch {marker}"})
    assert body.get("ok") is not True, body
    assert not marker.exists()


def test_an_ask_call_waits_for_the_user_and_runs_once_approved(desktop: tuple[RelayProc, AgentEnv],
                                                               tmp_path: Path) -> None:
    relay, env = desktop  # a fresh pairing is ask_every_time
    served(relay)
    marker = tmp_path / "approved"
    pending = Background(lambda: call(relay, "desktop_terminal", {"command": f"touch {marker}"}))
    waiting = until(lambda: pending_approvals(env), 10, "an approval request")
    assert [(a["tool"], a["url"]) for a in waiting] == [("desktop_terminal", relay.url)]
    assert not marker.exists()
    out = env.cli("approvals", "approve", waiting[0]["id"])
    assert out.returncode == 0, out.stderr
    status, body = pending.get(20)
    assert status == 200 and body["ok"] is True, body
    assert marker.exists()


def test_an_ask_call_denied_from_the_cli_runs_nothing(desktop: tuple[RelayProc, AgentEnv], tmp_path: Path) -> None:
    relay, env = desktop
    served(relay)
    marker = tmp_path / "denied"
    pending = Background(lambda: call(relay, "desktop_terminal", {"command": f"touch {marker}"}))
    waiting = until(lambda: pending_approvals(env), 10, "an approval request")
    out = env.cli("approvals", "deny", waiting[0]["id"], "--reason", "not now")
    assert out.returncode == 0, out.stderr
    status, body = pending.get(20)
    assert status == 200 and body["ok"] is False and "not now" in body["error"], body
    assert not marker.exists()


def test_an_unanswered_ask_times_out_and_a_late_approval_runs_nothing(desktop: tuple[RelayProc, AgentEnv],
                                                                     tmp_path: Path) -> None:
    relay, env = desktop
    served(relay)
    marker = tmp_path / "late"
    pending = Background(lambda: call(relay, "desktop_terminal", {"command": f"touch {marker}"}))
    waiting = until(lambda: pending_approvals(env), 10, "an approval request")
    status, body = pending.get(30)  # the agent's 8 s deadline; the approval expires 3 s before it
    assert status == 200 and body["ok"] is False, body
    late = env.cli("approvals", "approve", waiting[0]["id"])
    assert late.returncode != 0
    assert "no pending approval" in late.stderr
    assert pending_approvals(env) == []
    assert not marker.exists()


def test_a_9_mb_output_is_bounded_and_the_link_stays_up(desktop: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    cmd = f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 9_000_000)\""
    status, body = call(relay, "desktop_terminal", {"command": cmd, "timeout": 20})
    assert status == 200 and body["ok"] is True, {k: v for k, v in body.items() if k != "result"}
    result = body["result"]
    assert result["exit_code"] == 0
    assert len(result["stdout"]) < 4 << 20
    assert result.get("stdout_truncated") is True or result.get("truncated") is True
    status, body = call(relay, "desktop_terminal", {"command": "echo still-up"})
    assert status == 200 and body["result"]["stdout"] == "still-up\n"
    with env.client(autostart=False) as c:
        (link,) = c.call(api.STATUS, {}, timeout=5)["relays"]
    assert link["state"] == "connected" and link["attempts"] == 0


def test_a_3_mb_file_is_read_whole_through_the_relay(desktop: tuple[RelayProc, AgentEnv]) -> None:
    """max_bytes is honoured up to what fits in one 4 MiB frame (it was cut at 1 MiB)."""
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    big = Path(env.env["HOME"]) / "three-mb.txt"
    big.write_bytes(b"0123456789abcd\xc3\xa9\n" * ((3 << 20) // 17))
    status, body = call(relay, "desktop_read_file", {"path": str(big), "max_bytes": 4_000_000})
    assert status == 200 and body["ok"] is True, {k: v for k, v in body.items() if k != "result"}
    assert body["result"] == big.read_text()


def test_a_job_keeps_running_across_a_relay_restart_and_its_logs_are_read_afterwards(
        desktop: tuple[RelayProc, AgentEnv], tmp_path: Path) -> None:
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    gate = tmp_path / "gate"
    script = f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"
    status, body = call(relay, "desktop_job_start", {"command": script})
    assert status == 200 and body["ok"] is True, body
    job_id = body["result"]["job_id"]
    port = relay.port
    relay.stop()
    wait_state(env, lambda s: s["state"] != "connected")
    gate.touch()
    relay.port = port
    relay.start()
    served(relay, "desktop_job_logs")

    def finished() -> dict[str, Any] | None:
        st, b = call(relay, "desktop_job_status", {"job_id": job_id})
        return b if st == 200 and b.get("ok") and b["result"].get("state") == "exited" else None

    until(finished, 20, "the job finishing")
    status, body = call(relay, "desktop_job_logs", {"job_id": job_id, "stream": "stdout"})
    assert status == 200 and body["ok"] is True, body
    assert body["result"]["stdout"]["content"] == "started\nfinished\n"


def test_the_agent_killed_mid_call_makes_the_relay_answer_502_at_once(desktop: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    with env.client(autostart=False) as c:
        pid = c.hello["pid"]
    pending = Background(lambda: call(relay, "desktop_terminal", {"command": "sleep 30", "timeout": 60}))
    until(lambda: http_json(f"{relay.http}/desktop/health", timeout=5)[1].get("pending_commands") == 1, 10,
          "the call in flight")
    os.kill(pid, signal.SIGKILL)
    # Not after the relay's own timeout: that answer would be a 504, and would come 30 s after the call
    # was sent, at least 20 s after the kill; half the timeout is a margin no busy machine eats.
    status, body = pending.get(relay_desktop.response_timeout("desktop_terminal") / 2)
    assert status == 502, body


def test_cli_processes_beside_the_agent_never_make_a_call_ambiguous(desktop: tuple[RelayProc, AgentEnv]) -> None:
    relay, env = desktop
    access(env, relay, "trusted")
    served(relay)
    procs = [subprocess.Popen([sys.executable, "-m", "hermes_relay.cli", *args], env=env.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for args in (["status"], ["devices"], ["approvals"], ["status", "--json"])]
    try:
        for n in range(6):
            status, body = call(relay, "desktop_terminal", {"command": f"echo {n}"})
            assert status == 200 and body["ok"] is True and body["result"]["stdout"] == f"{n}\n", body
    finally:
        for p in procs:
            p.wait(30)
    status, health = http_json(f"{relay.http}/desktop/health", timeout=5)
    assert len(health["clients"]) == 1
