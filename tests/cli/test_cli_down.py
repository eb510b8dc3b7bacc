"""``down``/``up`` against the fake agent, and what ``--no-autostart`` means for the commands that read files."""

from __future__ import annotations

import json

from hermes_relay.core import errors, paths

NOW = 1_800_000_000.0
URL = "ws://192.168.1.5:8767"
OFFICE = "ws://10.0.0.9:8767"


def write_store(env: dict[str, str]) -> None:
    path = paths.sessions_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = {url: {"token": "t" * 32, "server_version": "0.1.0", "paired_at": int(NOW - 86400)} for url in (URL, OFFICE)}
    path.write_text(json.dumps({"version": 1, "sessions": records}))


def test_down_asks_the_agent_for_every_relay_or_one_by_name(cli, env, make_agent) -> None:
    write_store(env)
    paths.desktop_control_file(env).write_text(json.dumps({"host_aliases": {OFFICE: "office"}}))
    agent = make_agent(results={"down": lambda p: {"url": p.get("url"), "down": [OFFICE], "all": False, "changed": True},
                                "up": {"url": None, "down": [], "all": False, "changed": True}})
    one = cli("down", "office", agent=agent)
    assert one.code == 0, one.err
    assert agent.calls[-1][:2] == ("down", {"url": OFFICE})
    assert f"off office ({OFFICE})" in one.out and f"hermes-relay up {OFFICE}" in one.out
    every = cli("down", agent=agent)
    assert agent.calls[-1][:2] == ("down", {})
    assert "off every relay" in every.out
    back = cli("up", agent=agent)
    assert back.code == 0 and agent.calls[-1][:2] == ("up", {}) and "back on every relay" in back.out


def test_down_with_nothing_paired_starts_no_agent(cli, env) -> None:
    result = cli("down")  # the default fake fails the test if the agent is contacted
    assert result.code == 1 and "not paired with any relay" in result.err
    assert cli("down", "ws://10.9.9.9:8767").code == 1


def test_down_and_up_need_the_agent(cli, env, make_agent) -> None:
    write_store(env)
    agent = make_agent(running=False)
    for verb in ("down", "up"):
        result = cli("--no-autostart", verb, agent=agent)
        assert result.code == errors.EXIT_AGENT_NOT_RUNNING, result
        assert agent.calls == []


def test_status_without_the_agent_shows_down_relays_and_exits_3_only_with_no_autostart(cli, env) -> None:
    write_store(env)
    paths.down_file(env).write_text(json.dumps({"version": 1, "all": None, "relays": {OFFICE: {"at": NOW - 120}}}))
    shown = cli("status", real_client=True)
    assert shown.code == 0, shown.err
    office = shown.out.split(OFFICE, 1)[1]
    assert "down since 2m ago" in office and f"hint: back on: hermes-relay up {OFFICE}" in office
    assert "down" not in shown.out.split(URL, 1)[1].split(OFFICE, 1)[0]
    strict = cli("status", "--no-autostart", real_client=True)
    assert strict.code == errors.EXIT_AGENT_NOT_RUNNING and strict.out == shown.out


def test_route_with_no_autostart_exits_3_without_a_running_agent(cli, env) -> None:
    assert cli("route").code == 0
    assert cli("route", "--no-autostart").code == errors.EXIT_AGENT_NOT_RUNNING
    path = paths.route_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{int(NOW + 10**8)} down\n0 stopped - -\n")  # a clean stop while down
    stopped = cli("route", "--no-autostart")
    assert stopped.out == "down (agent stopped)\n" and stopped.code == errors.EXIT_AGENT_NOT_RUNNING
    assert cli("prompt", "show").out == "[down]\n"


def test_audit_and_access_read_files_and_never_need_the_agent(cli, env) -> None:
    assert cli("--no-autostart", "audit").code == 0
    assert cli("--no-autostart", "access").code == 0
