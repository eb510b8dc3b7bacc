"""The default relay and relay names: ``use``, ``rename``, ``hosts``, and every command taking a name or the default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hermes_relay.core import hosts, paths, policy

HOME = "ws://192.168.1.5:8767"
OFFICE = "wss://relay.example.com"


@pytest.fixture(autouse=True)
def paired(env: dict[str, str]) -> None:
    store = paths.sessions_file(env)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({"version": 1, "sessions": {HOME: {"token": "abcd1234" + "t" * 35},
                                                            OFFICE: {"token": "q" * 43}}}))


def control(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(paths.desktop_control_file(env).read_text())


def test_use_and_rename_write_the_reference_file_keeping_unknown_fields(cli, env) -> None:
    path = paths.desktop_control_file(env)
    path.write_text(json.dumps({"tray": {"x": 1}, "host_aliases": {"ws://other:1": "lab"}}))
    result = cli("rename", OFFICE, "office")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == f"✓ {OFFICE} is now called office"
    result = cli("use", "office")
    assert result.code == 0, result.err
    assert result.out == f"✓ default relay: office ({OFFICE})\n"
    assert control(env) == {"tray": {"x": 1}, "host_aliases": {"ws://other:1": "lab", OFFICE: "office"},
                            "relay_url": OFFICE}
    assert path.stat().st_mode & 0o777 == 0o600
    listed = cli("hosts")
    assert listed.out.splitlines() == ["     NAME    URL", f"     —       {HOME}", f"  *  office  {OFFICE}"]


def test_two_relays_with_a_default_need_no_remote(cli, env, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": OFFICE, "sessions": []}})
    assert cli("hosts", "select", HOME).code == 0 and control(env)["relay_url"] == HOME  # the reference's word
    assert cli("use", OFFICE).code == 0
    result = cli("devices", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls[0][:2] == ("devices.list", {"url": OFFICE})


def test_without_a_default_the_choice_is_left_to_the_agent(cli, make_agent) -> None:
    agent = make_agent(results={"devices.list": {"url": HOME, "sessions": []}})
    assert cli("devices", agent=agent).code == 0
    assert agent.calls[0][:2] == ("devices.list", {})


def test_a_name_works_wherever_a_url_does_and_a_typo_gets_a_did_you_mean(cli, env, make_agent) -> None:
    assert cli("rename", HOME, "home").code == 0
    agent = make_agent(results={"devices.list": {"url": HOME, "sessions": []}})
    assert cli("devices", "--remote", "home", agent=agent).code == 0
    assert agent.calls[0][:2] == ("devices.list", {"url": HOME})
    agent = make_agent(results={"devices.list": {"url": HOME, "sessions": []}})
    assert cli("devices", agent=agent, environ={**env, "HERMES_RELAY_URL": "HOME"}).code == 0
    assert agent.calls[0][:2] == ("devices.list", {"url": HOME})
    typo = cli("devices", "--remote", "hme")
    assert typo.code == 2
    assert "did you mean 'home'?" in typo.err
    # access: the name is the target, the default serves when none is named
    stopped = make_agent(running=False)  # access tells a running agent first (for its audit); none runs here
    assert cli("access", "home", "trusted", agent=stopped).code == 0
    assert cli("use", "home").code == 0
    assert cli("access", "standard", agent=stopped).code == 0
    mode = policy.load(policy.policy_file(env)).for_url(HOME).access_mode
    assert mode == policy.STRUCTURED


def test_names_are_unique_and_validated(cli) -> None:
    assert cli("rename", HOME, "home").code == 0
    taken = cli("rename", OFFICE, "HOME")
    assert taken.code == 2 and f"already names {HOME}" in taken.err
    for bad in ("", "a" * 65, "two\nlines", "ws://x", "trusted", "-x", "a|b", "\udce9"):
        assert cli("rename", OFFICE, bad).code == 2, bad
    assert cli("rename", "home", "house").code == 0  # renamed by its old name
    assert cli("rename", "ws://nosuch:1", "x").code == 1  # not paired
    assert cli("use", "ws://nosuch:1").code == 1


def test_a_damaged_names_file_is_a_clear_error_and_left_as_it_is(cli, env) -> None:
    path = paths.desktop_control_file(env)
    path.write_bytes(b"{not json")
    result = cli("use", HOME)
    assert result.code == 1
    assert "desktop-control.json cannot be parsed" in result.err
    assert "your pairings are elsewhere and untouched" in result.err
    assert path.read_bytes() == b"{not json"


def test_forget_needs_its_target_named_and_drops_the_name_and_default(cli, env, make_agent) -> None:
    assert cli("rename", OFFICE, "office").code == 0 and cli("use", "office").code == 0
    assert cli("forget", "--yes").code == 2  # never the default: forget names its target
    agent = make_agent(results={"forget": {"url": OFFICE, "prefix": "qqqqqqqq", "removed": ["session"],
                                           "relay": {"status": "revoked"}}})
    result = cli("forget", "office", "--yes", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls[0][:2] == ("forget", {"url": OFFICE})
    assert control(env) == {"host_aliases": {}}


def test_hosts_test_prints_each_route_and_the_best(cli, env, make_agent) -> None:
    assert cli("rename", HOME, "home").code == 0
    ok = {"url": HOME, "label": "LAN", "role": "lan", "priority": 0, "status": "ok",
          "steps": [{"step": "tcp", "status": "ok", "ms": 2.0, "summary": "connected"},
                    {"step": "ws", "status": "ok", "ms": 3.0, "summary": "upgraded"}]}
    refused = {"url": "ws://100.64.0.2:8767", "label": "Tailscale", "role": "tailscale", "priority": 1,
               "status": "fail", "steps": [{"step": "tcp", "status": "fail", "ms": 1.0, "summary": "connection refused"}]}
    agent = make_agent(results={"doctor": {"relays": [{"url": HOME, "routes": [ok, refused]}]}})
    result = cli("hosts", "test", "home", agent=agent)
    assert result.code == 0, result.err
    assert agent.calls[0][1] == {"deadline": 10.0, "url": HOME}
    assert result.out.splitlines() == [
        f"Relay home ({HOME})",
        "  ROUTE      URL                    RESULT                     TIME",
        f"  LAN        {HOME}  ✓ reachable                5 ms",
        "  Tailscale  ws://100.64.0.2:8767   ✗ tcp: connection refused",
        f"✓ best route: LAN ({HOME})",
    ]
    down = make_agent(results={"doctor": {"relays": [{"url": HOME, "routes": [refused]}]}})
    result = cli("hosts", "test", agent=down)
    assert result.code == 1
    assert down.calls[0][1] == {"deadline": 10.0}  # two paired, no default: every pairing
    assert result.out.splitlines()[-1] == "✗ no saved route is reachable (details: hermes-relay doctor)"


def test_the_names_module_keeps_lone_surrogates_and_other_fields(tmp_path: Path) -> None:
    path = tmp_path / "desktop-control.json"
    path.write_text('{"note": "\\udce9", "relay_url": 5}')
    assert hosts.load(path) == hosts.Control()
    hosts.rename(path, HOME, "héme")
    doc = json.loads(path.read_text())
    assert doc == {"note": "\udce9", "relay_url": 5, "host_aliases": {HOME: "héme"}}
    assert hosts.load(path).url_for("HÉME") == HOME
    assert not hosts.Control(relay_url="not a url").is_default("ws://[bad")  # two unreadable URLs are not one relay
    path.write_text('{"host_aliases": []}')
    with pytest.raises(Exception, match="host_aliases is not an object"):
        hosts.rename(path, HOME, "home")
    assert path.read_text() == '{"host_aliases": []}'


def test_a_damaged_names_file_matters_only_when_the_default_would(cli, env, make_agent) -> None:
    paths.desktop_control_file(env).write_bytes(b"[1, 2")
    agent = make_agent(results={"devices.list": {"url": HOME, "sessions": []}})
    assert cli("devices", "--remote", HOME, agent=agent).code == 0  # named: the names file is not needed
    result = cli("devices", agent=make_agent(results={"devices.list": {"url": HOME, "sessions": []}}))
    assert result.code == 1 and "desktop-control.json cannot be parsed" in result.err  # two paired: it decides
    store = paths.sessions_file(env)
    store.write_text(json.dumps({"version": 1, "sessions": {HOME: {"token": "abcd1234" + "t" * 35}}}))
    agent = make_agent(results={"devices.list": {"url": HOME, "sessions": []}})
    assert cli("devices", agent=agent).code == 0  # one pairing: the agent takes it
    assert agent.calls[0][:2] == ("devices.list", {})


def test_pair_and_pin_accept_take_a_name(cli, make_agent, tty) -> None:
    assert cli("rename", OFFICE, "office").code == 0
    route = {"url": OFFICE, "role": "public", "label": "Public", "priority": 0}
    agent = make_agent(results={"pair.check": {"replaces": None},
                                "pair.start": {"url": OFFICE, "route": route, "grants": {}}})
    assert cli("pair", "F3W7EY", "--remote", "office", agent=agent).code == 0
    assert [(m, p["url"]) for m, p, _ in agent.calls] == [("pair.check", OFFICE), ("pair.start", OFFICE)]
    pin = "sha256/" + "A" * 43 + "="
    agent = make_agent(results={"pin.accept": {"url": OFFICE, "old_pin": pin, "new_pin": pin, "changed": False,
                                               "applied": False}})
    assert cli("pin", "accept", "office", agent=agent, stdin=tty("n\n")).code == 0
    assert agent.calls[0][1] == {"url": OFFICE, "apply": False}
