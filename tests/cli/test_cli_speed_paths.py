"""The fast paths give the same answers: status from the agent's joined view, route from the plain
file with the agent's pid, JSON failures, and suggestions for mistyped commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_status import NOW, STORE, TOKEN, write_store

from hermes_relay.agent.statusview import paired_view
from hermes_relay.core import paths
from hermes_relay.core.errors import NotPairedError


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def write_route(env: dict[str, str], text: str) -> Path:
    path = paths.route_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- status ----------------------------------------------------------------------------------------
LIVE = [{"url": "ws://100.64.1.2:8767", "state": "backoff", "route": None, "since": None, "latency_ms": None,
         "attempts": 3, "next_retry_at": NOW + 9.5, "routes": [], "server_version": None, "last_error": None,
         "token_prefix": TOKEN[:8]},
        {"url": "ws://agent-only:8767", "state": "connecting", "route": None, "since": None, "latency_ms": None,
         "attempts": 1, "next_retry_at": None, "routes": [], "server_version": None, "last_error": None,
         "token_prefix": None}]
AGENT = {"pid": 7, "version": "0.1.0", "started_at": NOW - 30, "store_error": None}


@pytest.mark.parametrize("reveal", [False, True])
def test_status_from_the_agents_joined_view_matches_reading_the_store(cli, env, make_agent, reveal) -> None:
    path = write_store(env, STORE)
    old = make_agent(results={"status": {"agent": AGENT, "relays": LIVE}})  # an agent without `paired`
    flags = ["--reveal-tokens"] if reveal else []
    from_store = cli("status", *flags, agent=old)
    path.unlink()  # the CLI must not need it when the agent answers with `paired`
    new = make_agent(results={"status": {"agent": AGENT, "relays": LIVE,
                                         "paired": paired_view(STORE["sessions"], LIVE, reveal=reveal)}})
    from_agent = cli("status", *flags, agent=new)
    assert from_agent == from_store
    assert from_agent.code == 1  # the store holds an expired pairing: status says so and fails
    assert "    routes:   ws://192.168.1.5:8767, ws://100.64.1.2:8767" in from_agent.out
    assert (TOKEN in from_agent.out) is reveal
    assert json.loads(cli("status", "--json", *flags, agent=new).out)["relays"][0]["in_store"] is True


def test_a_store_error_reported_by_the_agent_fails_status_after_showing_it(cli, make_agent) -> None:
    error = {"code": "state_corrupt", "message": "/x/remote-sessions.json cannot be parsed", "data": {}}
    agent = make_agent(results={"status": {"agent": {**AGENT, "store_error": error}, "relays": [], "paired": []}})
    result = cli("status", agent=agent)
    assert result.code == 1
    assert "(unreadable: see the error below)" in result.out
    assert result.err == "hermes-relay: /x/remote-sessions.json cannot be parsed\n"


# -- route and prompt ------------------------------------------------------------------------------
def test_route_with_a_live_agent_pid_is_fresh(cli, env) -> None:
    write_route(env, f"{int(NOW) + 60} LAN\n{os.getpid()} connected {NOW - 180} ws://10.0.0.2:8767\n")
    assert cli("route").out == "LAN (ws://10.0.0.2:8767, since 3m ago)\n"
    doc = json.loads(cli("route", "--json").out)
    assert doc["running"] is True and doc["stale"] is False and doc["pid"] == os.getpid()


def test_route_after_the_agent_died_is_stale_even_before_valid_until(cli, env, dead_pid) -> None:
    path = write_route(env, f"{int(NOW) + 60} LAN\n{dead_pid} connected {NOW - 180} ws://10.0.0.2:8767\n")
    assert cli("route").out == "LAN (stale: agent not running)\n"
    doc = json.loads(cli("route", "--json").out)
    assert (doc["running"], doc["stale"], doc["label"], doc["file"]) == (False, True, "LAN", str(path))
    assert cli("prompt", "show").out == "[LAN?]\n"


def test_a_clean_stop_stays_offline_agent_stopped(cli, env, dead_pid) -> None:
    write_route(env, f"{int(NOW) + 86400} offline\n{dead_pid} stopped - -\n")
    assert cli("route").out == "offline (agent stopped)\n"
    assert cli("prompt", "show").out == "[offline]\n"


@pytest.mark.parametrize("label", ["revoked", "expired"])
def test_revoked_and_expired_are_shown_by_name(cli, env, label) -> None:
    write_route(env, f"{int(NOW) + 60} {label}\n{os.getpid()} {label} - -\n")
    assert cli("route").out == f"{label}\n"
    assert cli("prompt", "show").out == f"[{label}]\n"


# -- errors ----------------------------------------------------------------------------------------
def test_json_failures_are_json_on_stdout_with_the_same_exit_code(cli, make_agent) -> None:
    result = cli("--json", "stauts")
    assert (result.code, result.err) == (2, "")
    assert json.loads(result.out) == {"ok": False, "error": {
        "code": "usage_error", "message": "unknown command 'stauts'",
        "hint": "did you mean `hermes-relay status`? see `hermes-relay --help`"}}
    agent = make_agent(results={"devices.list": NotPairedError("no relay is paired", hint="run `hermes-relay pair`")})
    result = cli("devices", "--json", agent=agent)
    assert result.code == NotPairedError.exit_code and result.err == ""
    assert json.loads(result.out)["error"] == {  # found before asking the agent: nothing is paired here
        "code": "not_paired", "message": "this computer is not paired with any relay",
        "hint": "run `hermes-relay pair --remote ws://HOST:8767` (it asks for the code), or `hermes-relay pair --pair-qr INVITE`"}
    plain = cli("devices", agent=agent)
    assert plain.out == "" and plain.err.startswith("hermes-relay: this computer is not paired with any relay\n")


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["stauts"], "did you mean `hermes-relay status`? see `hermes-relay --help`"),
        (["devics", "list"], "did you mean `hermes-relay devices`? see `hermes-relay --help`"),
        (["agent", "strat"], "did you mean `hermes-relay agent start`? see `hermes-relay agent --help`"),
        (["xyzzy"], "see `hermes-relay --help`"),
    ],
)
def test_mistyped_commands_get_a_suggestion(cli, argv, hint) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert result.err.splitlines()[-1] == f"  hint: {hint}"


def test_the_hot_path_and_argparse_agree_on_flag_positions(cli, env) -> None:
    write_route(env, f"{int(NOW) + 60} LAN\n{os.getpid()} connected - -\n")
    outputs = {tuple(argv): cli(*argv).out for argv in (["route", "--json"], ["--json", "route"],
                                                         ["--no-autostart", "route", "--json"])}
    assert len(set(outputs.values())) == 1
    assert cli("route", "--bogus").code == 2  # not a hot-path flag: argparse reports it


# -- help ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["start", "stop", "restart", "status", "logs", "run", "install", "uninstall"])
def test_agent_verbs_help_has_a_description_an_example_and_no_meaningless_flags(cli, verb) -> None:
    result = cli("agent", verb, "--help")
    assert result.code == 0
    usage, blank, description = result.out.splitlines()[:3]
    assert usage.startswith(f"usage: hermes-relay agent {verb} ") and blank == "" and description
    assert f"example:\n  hermes-relay agent {verb}" in result.out
    assert "--no-autostart" not in result.out
    assert ("--json" in result.out) is (verb not in ("logs", "run"))


@pytest.mark.parametrize("verb", ["init", "show"])
def test_prompt_verbs_help_has_an_example(cli, verb) -> None:
    result = cli("prompt", verb, "--help")
    assert result.code == 0 and "example:\n  " in result.out and "--no-autostart" not in result.out


# -- prompt snippets -------------------------------------------------------------------------------
_DRAW = {"bash": (["--norc", "--noprofile", "-c"], "PS1='$ '; source {init}; __hermes_relay_prompt"),
         "zsh": (["-f", "-c"], "PROMPT=''; source {init}; __hermes_relay_precmd")}


@pytest.mark.parametrize("shell", sorted(_DRAW))
def test_bash_and_zsh_snippets_mark_a_dead_agents_label_stale_with_kill_0(shell, tmp_path, dead_pid) -> None:
    import shutil
    import time

    from hermes_relay.cli.commands.prompt import snippet

    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    route = tmp_path / "route"
    init = tmp_path / "init"
    init.write_text(snippet(shell, str(route)))
    flags, program = _DRAW[shell]
    for pid, shown in ((dead_pid, "[LAN?]"), (os.getpid(), "[LAN]")):
        route.write_text(f"{int(time.time()) + 60} LAN\n{pid} connected - ws://10.0.0.2:8767\n")
        drawn = subprocess.run([path, *flags, program.format(init=init) + '; printf %s "$HERMES_RELAY_INDICATOR"'],
                               capture_output=True, text=True, timeout=30, env={"PATH": "/nonexistent"})
        assert (drawn.stdout, drawn.stderr) == (shown, "")
