"""``hermes-relay access``: golden output per preset, roots, paired URLs only, and the audit of each change.

Real policy, roots and audit files under the test's HOME; the agent is a scripted fake (down unless a
test says otherwise). The kernel's Landlock ABI is the one thing faked (a kernel without it cannot be
made here): ``abi`` sets what ``core.confine.landlock_abi`` answers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hermes_relay.cli import consent
from hermes_relay.core import confine, desktop, fileio

URL = "ws://192.168.1.5:8767"
NOW = 1_800_000_000.0
FULL_RIGHTS = "commands run with your full rights: they can change anything you can, this policy included"


@pytest.fixture
def abi(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_abi(value: int) -> None:
        monkeypatch.setattr(confine, "landlock_abi", lambda: value)

    set_abi(7)
    return set_abi


@pytest.fixture
def down(make_agent) -> Any:
    return make_agent(running=False)


def _pair(env: dict[str, str], *urls: str, consented: bool = False) -> None:
    sessions = {u: {"token": f"tok-{i}", "tools_consented": consented} for i, u in enumerate(urls)}
    fileio.atomic_write(Path(env["HERMES_HOME"]) / "remote-sessions.json",
                        json.dumps({"version": 1, "sessions": sessions}).encode())


def _policy_doc(env: dict[str, str]) -> dict:
    return json.loads((Path(env["HERMES_HOME"]) / "desktop-host-access.json").read_text())


def _audit(env: dict[str, str]) -> list[dict]:
    return [r for r in desktop.read_audit(desktop.audit_file(env)) if r.get("kind") == "policy.changed"]


def _home(env: dict[str, str]) -> str:
    return os.path.realpath(env["HOME"])


def test_show_a_host_without_a_record(cli, env, abi) -> None:
    _pair(env, URL)
    result = cli("access")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"{URL}: restricted",
        "  nothing: no tool is offered to this host",
        "  CAPABILITY    ACCESS",
        "  commands      disabled",
        "  files         disabled",
        "  screen_input  disabled  (no tools here)",  # served by other Hermes clients, not this agent
        "  usb           disabled  (no tools here)",
        "  microphone    disabled  (no tools here)",
        "  camera        disabled  (no tools here)",
        f"  roots: {env['HOME']} (the default: your home directory, without the agent's own state)",
        "",
        "presets: hermes-relay access [URL] restricted|ask_every_time|standard|workspace|trusted|full_access",
        "one capability: hermes-relay access set CAP disabled|ask|allow [URL]",
        "roots: hermes-relay access [URL] --root DIR | --remove-root DIR | --reset-roots",
    ]


def test_presets_and_single_capabilities_write_the_shared_file(cli, env, abi, down) -> None:
    _pair(env, URL)
    result = cli("access", "trusted", agent=down)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"✓ {URL}: trusted",
        f"  {FULL_RIGHTS}; file tools stay inside its roots",
        "  commands allow, files allow, screen_input ask, usb ask, microphone disabled, camera disabled",
        f"  roots: {env['HOME']} (the default: your home directory, without the agent's own state)",
        "the agent applies it within 2 s",
    ]
    assert _policy_doc(env)["hosts"][URL]["access_mode"] == "trusted"
    result = cli("access", "set", "commands", "ask", URL + "/", agent=down)
    assert result.out.splitlines()[:2] == [f"✓ {URL}: custom", f"  custom; {FULL_RIGHTS}; file tools stay inside its roots"]
    assert _policy_doc(env)["hosts"][URL]["capabilities"]["commands"] == "ask"
    assert cli("access", URL, "standard", agent=down).out.splitlines()[:2] == [
        f"✓ {URL}: standard", "  files only, no commands; file tools stay inside its roots"]
    shown = json.loads(cli("access", URL, "--json").out)
    assert shown["hosts"][0]["access_mode"] == "structured" and shown["hosts"][0]["roots_default"] is True


@pytest.mark.parametrize(("level", "enforced"), [
    (7, "kernel-enforced (Landlock ABI 7)"),
    (6, "kernel-enforced (Landlock ABI 6)"),
    (4, "partially enforced (Landlock ABI 4): the kernel cannot stop device ioctls, signals to other processes "
        "and abstract Unix sockets"),
])
def test_workspace_says_what_the_kernel_enforces(cli, env, abi, down, level: int, enforced: str) -> None:
    abi(level)
    _pair(env, URL)
    result = cli("access", "workspace", agent=down)
    assert result.code == 0, result.err
    assert result.out.splitlines()[:3] == [
        f"✓ {URL}: workspace",
        f"  commands and files inside its roots, no network; commands {enforced}; file and process tools are "
        "confined by the agent's own checks",
        "  commands allow, files allow, screen_input disabled, usb disabled, microphone disabled, camera disabled",
    ]
    doc = _policy_doc(env)["hosts"][URL]
    assert (doc["access_mode"], doc["confined"]) == ("workspace", True)
    assert cli("access", "set", "files", "ask", agent=down).out.splitlines()[0] == f"✓ {URL}: workspace (custom)"


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS confines commands with sandbox-exec")
def test_workspace_is_refused_without_a_kernel_sandbox(cli, env, abi) -> None:
    abi(0)
    _pair(env, URL)
    result = cli("access", "workspace")
    assert result.code == 2 and "no Landlock" in result.err and "standard" in result.err
    assert not (Path(env["HERMES_HOME"]) / "desktop-host-access.json").exists()


def test_enforcement_words() -> None:
    assert consent.enforcement(0, "linux") == "not enforced here: refused (this system offers no Landlock sandbox)"
    assert consent.enforcement(2, "linux").endswith("truncating files outside its roots, TCP network access, "
                                                    "device ioctls, signals to other processes and abstract Unix sockets")
    assert consent.enforcement(0, "darwin") == "enforced by the macOS sandbox (sandbox-exec)"
    assert consent.sandbox_available(0, "darwin") and not consent.sandbox_available(0, "win32")


def test_by_another_route_of_a_pairing_sets_the_policy_the_agent_reads(cli, env, down) -> None:
    tailscale = "ws://100.64.1.2:8767"
    fileio.atomic_write(Path(env["HERMES_HOME"]) / "remote-sessions.json", json.dumps({"version": 1, "sessions": {
        URL: {"token": "tok", "route_candidates": [{"role": "tailscale", "priority": 1,
                                                    "relay": {"url": tailscale, "transport_hint": "ws"}}]}}}).encode())
    result = cli("access", tailscale, "trusted", agent=down)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == f"✓ {URL}: trusted"  # the pairing's own URL: the key the agent looks up
    assert set(_policy_doc(env)["hosts"]) == {URL}


def test_full_access_needs_yes(cli, env, down) -> None:
    _pair(env, URL)
    refused = cli("access", "full_access")
    assert refused.code == 2 and "full_access lets the relay host run any command" in refused.err
    assert "--yes" in refused.err
    assert not (Path(env["HERMES_HOME"]) / "desktop-host-access.json").exists()
    result = cli("access", "full_access", "--yes", agent=down)
    assert result.code == 0
    assert result.out.splitlines()[3] == "  roots: not applied (full access reaches everything)"
    assert _policy_doc(env)["hosts"][URL]["access_mode"] == "full_access"


def test_input_errors_change_nothing_and_never_reach_the_agent(cli, env) -> None:
    assert cli("access", "trusted").code == 1  # nothing paired: name the relay
    _pair(env, URL, "ws://10.0.0.9:8767")
    ambiguous = cli("access", "trusted")
    assert ambiguous.code == 1 and "2 relays are paired" in ambiguous.err
    assert cli("access", "set", "teleport", "allow", URL).code == 2
    assert cli("access", "set", "files", "sometimes", URL).code == 2
    assert cli("access", "set", "files").code == 2
    assert cli("access", URL, "root").code == 2
    assert cli("access", "http://x", "trusted").code == 2
    assert cli("access", URL, "custom").code == 2
    assert cli("access", URL, "--root", "/nonexistent/dir").code == 2
    assert cli("access", URL, "--root", env["HERMES_HOME"]).code == 2
    assert not (Path(env["HERMES_HOME"]) / "desktop-host-access.json").exists()
    assert not (Path(env["HERMES_HOME"]) / "hermes-relay-desktop-roots.json").exists()


def test_a_url_that_is_not_paired_is_refused_unless_forced(cli, env, down) -> None:
    _pair(env, URL)
    refused = cli("access", "ws://nosuch:1", "trusted")
    assert refused.code == 1
    assert refused.err == ("hermes-relay: ws://nosuch:1 is not paired with this computer\n"
                           "  hint: `hermes-relay status` lists the paired relays; --force sets a policy for another "
                           "one anyway\n")
    assert cli("access", "set", "files", "allow", "ws://nosuch:1").code == 1
    assert cli("access", "ws://nosuch:1", "--root", env["HOME"]).code == 1
    assert not (Path(env["HERMES_HOME"]) / "desktop-host-access.json").exists()
    forced = cli("access", "ws://nosuch:1", "trusted", "--force", agent=down)
    assert forced.code == 0 and _policy_doc(env)["hosts"]["ws://nosuch:1"]["access_mode"] == "trusted"
    assert cli("access", "ws://nosuch:1").out.splitlines()[0] == "ws://nosuch:1: trusted"  # showing needs no pairing


def test_roots_are_added_removed_reset_and_shown(cli, env, down) -> None:
    _pair(env, URL)
    src = Path(env["HOME"]) / "src"
    src.mkdir()
    result = cli("access", URL, "standard", "--root", str(src), agent=down)
    assert result.code == 0, result.err
    real = os.path.realpath(src)
    assert result.out.splitlines()[3:] == [
        f"  roots: {real}", f"  root {real} added (it replaces the default, your home directory)",
        "the agent applies it within 2 s"]
    result = cli("access", "--root", env["HOME"], agent=down)
    assert result.out.splitlines()[3:6] == [
        f"  roots: {real}, {_home(env)}", f"  root {_home(env)} added",
        f"  {os.path.realpath(env['HERMES_HOME'])} inside it stays out of reach (the agent's own state)"]
    assert f"  roots: {real}, {_home(env)}" in cli("access").out.splitlines()
    result = cli("access", "--remove-root", str(src), "--remove-root", "/elsewhere", agent=down)
    assert result.code == 1
    assert result.out.splitlines()[3:6] == [f"  roots: {_home(env)}", f"  root {src} removed",
                                            "  /elsewhere is not one of its roots: nothing removed"]
    assert cli("access", "--remove-root", env["HOME"], agent=down).out.splitlines()[3] == (
        "  roots: none (file tools and confined commands reach only read-only system paths)")
    assert "(the default: your home directory" in cli("access", "--reset-roots", agent=down).out.splitlines()[3]
    assert _policy_doc(env)["hosts"][URL]["access_mode"] == "structured"  # roots never touch the shared file


def test_an_unparseable_file_says_so_and_is_left(cli, env, down) -> None:
    _pair(env, URL)
    path = Path(env["HERMES_HOME"]) / "desktop-host-access.json"
    path.write_text("{ broken")
    for argv in (("access",), ("access", "trusted")):
        result = cli(*argv, agent=down)
        assert result.code == 1 and "cannot be parsed" in result.err and "restricted" in result.err
    assert path.read_text() == "{ broken"
    roots_path = Path(env["HERMES_HOME"]) / "hermes-relay-desktop-roots.json"
    path.unlink()
    roots_path.write_text("[")
    result = cli("access", "trusted", agent=down)
    assert result.code == 1 and "reach nothing" in result.err
    assert roots_path.read_text() == "[" and not path.exists()


def test_legacy_tools_consent_shows_as_trusted_legacy(cli, env) -> None:
    _pair(env, URL, consented=True)
    assert cli("access").out.splitlines()[:2] == [
        f"{URL}: trusted (legacy consent)",
        f"  {FULL_RIGHTS}; file tools stay inside its roots (from an earlier tools consent: set a preset to make it "
        "explicit)"]


def test_a_running_agent_is_told_before_the_change_and_records_it(cli, env, make_agent) -> None:
    _pair(env, URL)
    path = Path(env["HERMES_HOME"]) / "desktop-host-access.json"

    def changing(params: dict[str, Any]) -> dict[str, Any]:
        assert not path.exists()  # told before the file changes
        return {"url": params["url"]}

    agent = make_agent(results={"access.changing": changing})
    assert cli("access", "trusted", agent=agent).code == 0
    assert agent.calls == [("access.changing", {"url": URL}, 2.0)] and agent.autostarts == [False]
    assert _audit(env) == []  # the agent writes it when it sees the change


def test_without_an_agent_the_change_is_recorded_here(cli, env, down) -> None:
    _pair(env, URL)
    cli("access", "standard", agent=down)
    cli("access", "workspace", agent=down)
    records = _audit(env)
    assert [(r["host_url"], r["by"], r["ts"]) for r in records] == [(URL, "hermes-relay access", int(NOW * 1000))] * 2
    assert records[0]["before"] is None and records[0]["after"]["access_mode"] == "structured"
    assert records[1]["before"]["access_mode"] == "structured" and records[1]["after"]["confined"] is True
    assert desktop.audit_file(env).stat().st_mode & 0o777 == 0o600



def test_a_capability_spelt_with_a_dash_is_the_one_the_presets_name(cli, env, down) -> None:
    # `access set screen-input ask` was refused while `access ask-every-time` was accepted.
    from hermes_relay.core import policy

    _pair(env, URL)
    result = cli("access", "set", "screen-input", "allow", URL, agent=down)
    assert result.code == 0, result.err
    assert policy.load(policy.policy_file(env)).for_url(URL).capabilities["screen_input"] == policy.ALLOW
