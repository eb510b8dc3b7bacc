"""``doctor``'s local checks (agent down, isolated HERMES_HOME) and how it shows the agent's route checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from hermes_relay import __version__
from hermes_relay.cli.commands import doctor
from hermes_relay.cli.render import Style
from hermes_relay.core import paths

NOW = 1_800_000_000.0
CORRUPT = b'{"version": 1, "sessions": {"ws://192.168.1.5:8767": {"token": "abc'
# Port 9 (discard) on loopback: nothing listens, so the route checks doctor runs without an agent fail at once.
STORE = {"version": 1, "sessions": {"ws://127.0.0.1:9": {"token": "t" * 43, "server_version": "0.1.0"}}}
CHECK_KEYS = {"id", "status", "summary", "detail", "fix", "fixable", "fixed"}


def write_store(env: dict[str, str], data: bytes | dict[str, Any], mode: int = 0o600) -> Path:
    path = paths.sessions_file(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    os.chmod(path, mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


def test_a_corrupt_store_fails_and_is_left_untouched_without_fix(cli, env) -> None:
    path = write_store(env, CORRUPT)
    result = cli("doctor", real_client=True)
    assert result.code == 1, result.err
    lines = result.out.splitlines()
    bad = lines.index("  ✗ ~/.hermes/remote-sessions.json cannot be parsed")
    assert "not valid JSON" in lines[bad + 1]
    assert lines[bad + 2].startswith("    fix: run `hermes-relay doctor --fix`: it moves the file aside")
    assert "`hermes-relay doctor --fix` can repair 1 of them." in lines
    assert path.read_bytes() == CORRUPT
    assert [p.name for p in path.parent.iterdir() if ".corrupt" in p.name] == []


def test_fix_moves_a_corrupt_store_aside_and_starts_an_empty_one(cli, env) -> None:
    path = write_store(env, CORRUPT)
    result = cli("doctor", "--fix", "--json", real_client=True)
    assert result.code == 0, result.out  # the damage is repaired; only warnings remain
    [kept] = [p for p in path.parent.iterdir() if p.name.startswith("remote-sessions.json.corrupt-")]
    assert kept.read_bytes() == CORRUPT  # the user's data, byte for byte
    assert json.loads(path.read_bytes()) == {"version": 1, "sessions": {}}
    assert mode_of(path) == 0o600
    check = by_id(json.loads(result.out))["store.file"]
    assert check["status"] == "warn" and check["fixed"] is True
    assert str(kept) in check["detail"] and str(kept) in check["fix"]

    again = cli("doctor", real_client=True)  # a second run finds an empty, valid store
    assert again.code == 0
    assert "  ! ~/.hermes/remote-sessions.json: no paired relays" in again.out.splitlines()
    assert len([p for p in path.parent.iterdir() if ".corrupt" in p.name]) == 1


def test_loose_permissions_fail_and_fix_tightens_them(cli, env) -> None:
    path = write_store(env, STORE, mode=0o644)
    os.chmod(path.parent, 0o755)
    result = cli("doctor", real_client=True)
    assert result.code == 1
    out = result.out.splitlines()
    i = out.index("  ✗ ~/.hermes/remote-sessions.json is mode 0644: other users can read the session tokens")
    assert out[i + 1] == f"    fix: run `hermes-relay doctor --fix` (or chmod 600 {path})"
    assert "  ! ~/.hermes is mode 0755: other users can list the Hermes state directory" in out
    assert mode_of(path) == 0o644 and mode_of(path.parent) == 0o755  # looking changes nothing

    fixed = cli("doctor", "--fix", "--json", real_client=True)
    assert fixed.code == 1  # the relay is not there: only that still fails
    assert mode_of(path) == 0o600 and mode_of(path.parent) == 0o700
    checks = by_id(json.loads(fixed.out))
    assert [c["id"] for c in checks.values() if c["status"] == "fail"] == []
    assert [r["status"] for r in json.loads(fixed.out)["relays"]] == ["fail"]
    assert checks["store.mode"] == {"id": "store.mode", "status": "ok", "fixed": True, "fixable": False,
                                    "summary": "~/.hermes/remote-sessions.json was mode 0644, now 0600",
                                    "detail": None, "fix": None}
    assert checks["store.dir"]["status"] == "ok" and checks["store.dir"]["fixed"] is True
    assert json.loads(path.read_bytes()) == STORE  # chmod only: the contents are untouched


def test_json_shape_with_the_agent_down(cli, env) -> None:
    write_store(env, STORE)
    result = cli("doctor", "--json", real_client=True)
    assert result.code == 1 and result.err == ""  # the agent's route checks ran without it: the relay is down
    report = json.loads(result.out)
    assert set(report) == {"checks", "relays", "ok"}
    assert report["ok"] is False
    [relay] = report["relays"]
    assert relay["url"] == "ws://127.0.0.1:9" and relay["status"] == "fail" and relay["link_status"] == "skip"
    assert relay["link"] is None and relay["routes"][0]["steps"][1]["step"] == "tcp"
    assert relay["routes"][0]["steps"][1]["status"] == "fail"
    for c in report["checks"]:
        assert set(c) == CHECK_KEYS and c["status"] in ("ok", "warn", "fail", "skip"), c
        assert isinstance(c["summary"], str) and isinstance(c["fixable"], bool)
    checks = by_id(report)
    assert checks["system.version"]["summary"].startswith(f"hermes-relay {__version__}, Python 3.")
    assert checks["system.clock"]["summary"].startswith("clock: 2027-01-15 08:00:00 UTC, timezone ")
    assert checks["store.file"] == {**checks["store.file"], "status": "ok",
                                    "summary": "~/.hermes/remote-sessions.json: 1 paired relay"}
    assert checks["agent.running"]["status"] == "warn"
    assert checks["agent.running"]["fix"] == "hermes-relay agent start"
    assert "relays" not in checks  # checked: they are in report["relays"]
    assert "t" * 43 not in result.out


def test_doctor_never_starts_the_agent(cli, env, make_agent) -> None:
    agent = make_agent(running=False)
    result = cli("doctor", agent=agent)
    assert agent.autostarts == [False] and agent.calls == []
    assert "  ! the agent is not running" in result.out.splitlines()
    assert "    fix: hermes-relay agent start" in result.out.splitlines()


def test_an_implausible_clock_is_a_warning(cli, env) -> None:
    result = cli("doctor", "--json", real_client=True, now=1_600_000_000.0)
    clock = by_id(json.loads(result.out))["system.clock"]
    assert clock["status"] == "warn" and "2020-09-13" in clock["summary"] and "NTP" in clock["fix"]


def step(name: str, status: str, summary: str, ms: float | None = 1.0, **kw: Any) -> dict[str, Any]:
    return {"step": name, "status": status, "summary": summary, "ms": ms, "detail": None, "fix": None, **kw}


REFUSED_RELAY = {
    "url": "ws://127.0.0.1:8767", "status": "fail", "working_routes": 0, "link_status": "warn",
    "link": {"url": "ws://127.0.0.1:8767", "state": "backoff", "attempts": 3, "next_retry_at": NOW + 9,
             "last_error": {"code": "no_route", "message": "no route to the relay answered", "data": {}},
             "route": None, "since": None, "latency_ms": None, "routes": [], "server_version": "0.1.0"},
    "routes": [{"url": "ws://127.0.0.1:8767", "role": "lan", "label": "LAN", "priority": 0, "address": None,
                "status": "fail", "steps": [
                    step("dns", "ok", "127.0.0.1 is an IP address (no lookup)", 0.0),
                    step("tcp", "fail", "connection refused on port 8767", 0.4, error="refused",
                         fix="the relay is not running there, or the port is wrong (the relay's default is 8767)"),
                    step("tls", "skip", "not tried: no TCP connection", None),
                    step("ws", "skip", "not tried: no TCP connection", None),
                    step("auth", "skip", "not tried: no TCP connection", None)]}],
}


def test_route_checks_from_the_agent_show_each_step_and_its_fix(cli, env, make_agent) -> None:
    write_store(env, STORE)
    agent = make_agent(results={"doctor": {"netwatch": {"backend": "netlink", "enabled": True},
                                           "relays": [REFUSED_RELAY], "store_error": None}},
                       hello={"api_version": 1, "agent_version": __version__, "pid": 4242, "started_at": NOW - 60})
    result = cli("doctor", agent=agent)
    assert result.code == 1
    assert agent.methods() == ["doctor"] and agent.autostarts == [False]
    assert agent.calls[0][1] == {"deadline": doctor.DEADLINE}
    out = result.out.split("\n\n")
    assert out[-3].splitlines()[1:] == [
        "  ✓ running (pid 4242, up 1m)",
        f"  ✓ agent and CLI are both {__version__}",
        "  ✓ network change watcher: netlink",
    ]
    assert out[-2].splitlines() == [
        "Relay ws://127.0.0.1:8767",
        "  ! link: waiting to reconnect (attempt 3, next try in 9s)",
        "    no route to the relay answered",
        "    fix: see the route checks below",
        "  ✗ LAN ws://127.0.0.1:8767",
        "    ✓ dns     0 ms  127.0.0.1 is an IP address (no lookup)",
        "    ✗ tcp     0 ms  connection refused on port 8767",
        "      fix: the relay is not running there, or the port is wrong (the relay's default is 8767)",
    ]
    assert out[-1] == "Problems: 1 failing.\n"


def test_an_agent_of_another_version_is_a_warning(cli, env, make_agent) -> None:
    agent = make_agent(results={"doctor": {"netwatch": {"backend": "poll"}, "relays": []}},
                       hello={"api_version": 1, "agent_version": "0.0.9", "pid": 1, "started_at": NOW})
    report = json.loads(cli("doctor", "--json", agent=agent).out)
    version = by_id(report)["agent.version"]
    assert version["status"] == "warn" and "0.0.9" in version["summary"]
    assert version["fix"] == "hermes-relay agent restart"


def test_test_switches_set_in_the_agents_environment_are_a_warning(cli, env, make_agent) -> None:
    agent = make_agent(results={"doctor": {"netwatch": {"backend": "poll"}, "relays": [],
                                           "knobs": {"HERMES_RELAY_TEST_STORE_WRITE_FAULTS": "2"}}},
                       hello={"api_version": 1, "agent_version": __version__, "pid": 1, "started_at": NOW})
    knobs = by_id(json.loads(cli("doctor", "--json", agent=agent).out))["agent.knobs"]
    assert knobs["status"] == "warn"
    assert knobs["summary"] == "test switches are set in the agent's environment: HERMES_RELAY_TEST_STORE_WRITE_FAULTS=2"
    quiet = make_agent(results={"doctor": {"netwatch": {"backend": "poll"}, "relays": [], "knobs": {}}},
                       hello={"api_version": 1, "agent_version": __version__, "pid": 1, "started_at": NOW})
    assert "agent.knobs" not in by_id(json.loads(cli("doctor", "--json", agent=quiet).out))


def test_fix_tells_a_running_agent_to_reload_the_new_store(cli, env, make_agent) -> None:
    write_store(env, CORRUPT)
    agent = make_agent(results={"reload": {"relays": 0}, "doctor": {"netwatch": {"backend": "netlink"}, "relays": []}},
                       hello={"api_version": 1, "agent_version": __version__, "pid": 1, "started_at": NOW})
    result = cli("doctor", "--fix", agent=agent)
    assert result.code == 0, result.out
    assert agent.methods() == ["reload", "doctor"]


def test_no_colour_unless_a_terminal_and_markers_for_every_status() -> None:
    plain, colour = Style(False), Style(True)
    assert [doctor.marker(s, plain) for s in ("ok", "warn", "fail", "skip")] == ["✓", "!", "✗", "-"]
    assert doctor.marker("fail", colour) == "\x1b[31m✗\x1b[0m"
