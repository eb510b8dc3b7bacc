"""``devices``, ``agent`` and ``pin`` against a scripted agent; ``agent`` also against no agent at all."""

from __future__ import annotations

import json
import sys

import pytest

from hermes_relay.cli.commands import agent as agent_cmd
from hermes_relay.core import paths
from hermes_relay.core.errors import AmbiguousError, NotFoundError

NOW = 1_800_000_000.0
URL = "ws://192.168.1.5:8767"
SESSIONS = [
    {"token_prefix": "abcd1234", "device_name": "laptop", "device_id": "d1", "created_at": NOW - 3 * 86400,
     "first_seen": NOW - 3 * 86400, "last_seen": NOW - 120, "expires_at": NOW + 27 * 86400, "grants": {},
     "transport_hint": "ws", "client_surface": "desktop", "device_form_factor": None, "device_model": None,
     "device_platform": "linux", "is_current": True},
    {"token_prefix": "ef567890", "device_name": "Pixel 9", "device_id": "d2", "created_at": NOW - 40 * 86400,
     "first_seen": NOW - 40 * 86400, "last_seen": None, "expires_at": None, "grants": {},
     "transport_hint": "wss", "client_surface": "android", "device_form_factor": "phone",
     "device_model": "Pixel 9", "device_platform": "android", "is_current": False},
]


# -- devices ---------------------------------------------------------------------------------------
def test_devices_lists_a_table_marking_this_device(cli, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": SESSIONS}})
    result = cli("devices", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls == [("devices.list", {}, 30.0)]
    assert result.out.splitlines() == [
        f"Devices paired with {URL} (2)",
        "",
        "  PREFIX    DEVICE                PLATFORM           CREATED  LAST SEEN  EXPIRES",
        "  abcd1234  laptop (this device)  linux · desktop    3d ago   2m ago     in 27d",
        "  ef567890  Pixel 9               Pixel 9 · android  40d ago  —          never",
        "",
        "revoke: hermes-relay devices revoke PREFIX    extend: hermes-relay devices extend PREFIX --ttl 30d",
    ]


def test_devices_list_with_remote_and_json(cli, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": URL, "sessions": []}})
    result = cli("devices", "list", "--remote", "ws://192.168.1.5", agent=agent)
    assert result.out == f"(no paired devices on {URL})\n"
    assert agent.calls[0][1] == {"url": URL}
    result = cli("devices", "--json", agent=agent)
    assert json.loads(result.out) == {"url": URL, "sessions": []}


def test_devices_revoke_and_extend(cli, make_agent) -> None:
    agent = make_agent(results={
        "devices.revoke": {"url": URL, "revoked": "abcd1234", "is_current": True},
        "devices.extend": {"url": URL, "session": {**SESSIONS[1], "expires_at": NOW + 30 * 86400}},
    })
    result = cli("devices", "revoke", "abcd1234", agent=agent)
    assert result.out == "✓ revoked abcd1234 (this device: pair again to reconnect)\n"
    result = cli("devices", "extend", "ef567890", "--ttl", "30d", agent=agent)
    assert result.out == "✓ extended ef567890: now expires in 30 days\n"
    # The relay capped the TTL: what is actually left is shown.
    assert cli("devices", "extend", "ef567890", agent=agent).out == "✓ extended ef567890: now expires in 30d\n"
    agent.results["devices.extend"] = {"url": URL, "session": {**SESSIONS[1], "expires_at": None}}
    assert cli("devices", "extend", "ef567890", "--ttl", "never", agent=agent).out == (
        "✓ extended ef567890: now never expires\n")
    assert agent.calls == [
        ("devices.revoke", {"prefix": "abcd1234"}, 30.0),
        ("devices.extend", {"prefix": "ef567890", "ttl_seconds": 30 * 86400}, 30.0),
        ("devices.extend", {"prefix": "ef567890", "ttl_seconds": 86400}, 30.0),
        ("devices.extend", {"prefix": "ef567890", "ttl_seconds": 0}, 30.0),
    ]


@pytest.mark.parametrize(
    ("error", "lines"),
    [
        (NotFoundError('no session matches prefix "zz"'), ['hermes-relay: no session matches prefix "zz"']),
        (AmbiguousError("2 relays are paired; choose one with --remote URL", hint="paired: ws://a, ws://b"),
         ["hermes-relay: 2 relays are paired; choose one with --remote URL", "  hint: paired: ws://a, ws://b"]),
    ],
)
def test_devices_errors_from_the_agent_exit_1(cli, make_agent, error, lines) -> None:
    result = cli("devices", "revoke", "zz", agent=make_agent(results={"devices.revoke": error}))
    assert (result.code, result.out, result.err.splitlines()) == (1, "", lines)


# -- agent -----------------------------------------------------------------------------------------
def test_agent_status_without_an_agent_exits_3(cli, env) -> None:
    result = cli("agent", "status", real_client=True)
    assert result.code == 3
    assert result.err == (f"hermes-relay: the hermes-relay agent is not running (no answer on {paths.socket_path(env)})\n"
                          "  hint: start it with `hermes-relay agent start`\n")
    result = cli("agent", "status", "--json", real_client=True)
    assert result.code == 3
    assert json.loads(result.out)["running"] is False


def test_agent_stop_without_an_agent_is_fine(cli) -> None:
    result = cli("agent", "stop", real_client=True)
    assert (result.code, result.out, result.err) == (0, "agent: not running\n", "")


def test_agent_status_with_an_agent(cli, env, make_agent) -> None:
    agent = make_agent()
    agent.hello["pid"] = 4242
    result = cli("agent", "status", agent=agent)
    assert result.code == 0
    assert result.out.splitlines() == [
        "agent: running",
        "  pid:      4242",
        "  version:  0.1.0 (IPC API 1)",
        "  uptime:   3h",
        f"  socket:   {paths.socket_path(env)}",
        "  logs:     ~/.hermes/logs/hermes-relay-agent.log",
    ]
    assert agent.autostarts == [False]


def test_agent_start_reports_whether_it_started_one(cli, make_agent) -> None:
    agent = make_agent(running=False)
    assert cli("agent", "start", agent=agent).out.splitlines()[0] == "✓ agent: started (pid None)"
    assert agent.autostarts == [False, True]
    assert cli("agent", "start", agent=agent).out.splitlines()[0] == "agent: already running (pid None)"


def test_agent_stop_asks_the_agent_and_waits_for_it_to_go(cli, make_agent) -> None:
    agent = make_agent(results={"agent.stop": {"stopping": True}})
    result = cli("agent", "stop", agent=agent)
    assert (result.code, result.out) == (0, "✓ agent: stopped (pid ?)\n")
    assert agent.methods() == ["agent.stop"]


def test_agent_restart_stops_then_starts(cli, make_agent) -> None:
    agent = make_agent(results={"agent.stop": {"stopping": True}})
    result = cli("agent", "restart", agent=agent)
    assert result.code == 0
    assert result.out.splitlines()[0] == "✓ agent: restarted (pid None)"
    assert agent.methods() == ["agent.stop"] and agent.autostarts == [False, True]


def test_wait_until_stopped_sees_a_vanished_socket_and_process(tmp_path) -> None:
    assert agent_cmd.wait_until_stopped(str(tmp_path / "none.sock"), None, 0.1) is True
    # A live process that never exits: the deadline ends the wait.
    import os

    assert agent_cmd.wait_until_stopped(str(tmp_path / "none.sock"), os.getppid(), 0.05) is False


def test_agent_logs_prints_the_last_lines(cli, env) -> None:
    log = paths.agent_log_file(env)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    result = cli("agent", "logs", "-n", "3", agent=None)
    assert (result.code, result.out) == (0, "line 4997\nline 4998\nline 4999\n")
    assert cli("agent", "logs", "-n", "0").out == ""
    assert cli("agent", "logs").out.splitlines()[0] == "line 4950"


def test_agent_logs_follow_prints_appended_lines_and_survives_truncation(env, tmp_path) -> None:
    import io

    from hermes_relay.cli.context import Context

    log = tmp_path / "agent.log"
    log.write_text("old\n")
    out = io.StringIO()
    ctx = Context(out, io.StringIO(), env)
    lines, offset = agent_cmd.tail(log, 10)
    assert (lines, offset) == (["old"], 4)
    steps = iter([lambda: log.write_text("old\nnew 1\npart"), lambda: log.write_text("x\n"), lambda: None])

    def keep_going() -> bool:
        step = next(steps, None)
        if step is None:
            return False
        step()
        return True

    agent_cmd.follow(log, offset, ctx, poll=0, keep_going=keep_going)
    assert out.getvalue() == "new 1\nx\n"


def test_agent_run_replaces_the_process_with_the_agent(cli, env, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(agent_cmd, "_execve", lambda path, argv, environ: seen.append((path, argv, environ)))
    assert cli("agent", "run", "--foreground", "--log-level", "debug").code == 0
    assert cli("agent", "run", "--", "--detached").code == 0
    assert [s[1] for s in seen] == [
        [sys.executable, "-I", "-m", "hermes_relay.agent", "run", "--foreground", "--log-level", "debug"],
        [sys.executable, "-I", "-m", "hermes_relay.agent", "run", "--detached"],
    ]
    assert seen[0][0] == sys.executable and seen[0][2] == env


def test_agent_without_a_subcommand_is_a_usage_error(cli) -> None:
    result = cli("agent")
    assert result.code == 2
    assert "agent needs a subcommand" in result.err


# -- pin -------------------------------------------------------------------------------------------
def test_pin_accept_prints_both_pins_and_why(cli, make_agent) -> None:
    old, new = "sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "="
    agent = make_agent(results={"pin.accept": {"url": "wss://relay.example.com", "old_pin": old, "new_pin": new}})
    result = cli("pin", "accept", "https://relay.example.com/", agent=agent)
    assert result.code == 0
    assert agent.calls == [("pin.accept", {"url": "wss://relay.example.com"}, 30.0)]
    lines = result.out.splitlines()
    assert lines[:3] == ["✓ accepted the new certificate for wss://relay.example.com",
                         f"  old pin: {old}", f"  new pin: {new}"]
    assert lines[3].startswith("This deliberately trusts the certificate the relay presents now.")
