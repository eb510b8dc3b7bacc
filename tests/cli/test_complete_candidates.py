"""``hermes-relay __complete KIND``: the candidates the completion scripts ask for on Tab.

Hidden, instant, and silent: one candidate per line, exit 0 and nothing printed when anything fails,
and never an agent started for it.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from hermes_relay.cli import completion_scripts
from hermes_relay.cli.commands.access import PRESET_NAMES
from hermes_relay.cli.main import build_parser
from hermes_relay.core import paths, policy

NOW = 1_800_000_000.0
LAN = "ws://192.168.1.5:8767"
PUBLIC = "wss://relay.example.com"


def write_store(env: dict[str, str], sessions: dict[str, object] | str) -> None:
    store = paths.sessions_file(env)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(sessions if isinstance(sessions, str) else json.dumps({"version": 1, "sessions": sessions}))


def write_control(env: dict[str, str], doc: object) -> None:
    path = Path(env["HERMES_HOME"]) / "desktop-control.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


@pytest.fixture
def two_relays(env: dict[str, str]) -> None:
    """Two pairings (one with another route, which is not a pairing of its own) and a name for one."""
    write_store(env, {LAN: {"token": "a" * 43, "route_candidates": [{"url": "ws://100.64.0.5:8767", "role": "tailscale"}]},
                      PUBLIC: {"token": "b" * 43},
                      "ws://half.example:8767": {"relay_url": "ws://half.example:8767"}})  # no token: not paired
    write_control(env, {"relay_url": LAN, "host_aliases": {LAN: "office"}, "future_field": [1]})


def test_relays_are_the_paired_urls_then_the_names(cli, two_relays) -> None:
    result = cli("__complete", "relays")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [LAN, PUBLIC, "office"]


@pytest.mark.parametrize("control", [
    "{not json",
    "[]",
    json.dumps({"host_aliases": ["office"]}),
    json.dumps({"host_aliases": "office"}),
    "x" * (2 << 20),
])
def test_a_control_file_that_is_not_what_we_expect_leaves_the_urls(cli, env, two_relays, control: str) -> None:
    write_control(env, control)
    result = cli("__complete", "relays")
    assert (result.code, result.out, result.err) == (0, f"{LAN}\n{PUBLIC}\n", "")


def test_names_a_shell_cannot_take_as_one_word_are_left_out(cli, env, two_relays) -> None:
    names = ["home", "two words", "bell\a", "lone\ud800", "new\nline", "", 5, None, "café", "$(touch pwned)", "a;b",
             "`id`", "-rf", "~root", "lab[2]", "office"]
    aliases = {f"ws://10.0.0.{n}:8767": name for n, name in enumerate(names)}  # {relay URL: name}, as the reference
    write_control(env, json.dumps({"host_aliases": aliases}))  # ASCII JSON: the lone surrogate as \\ud800
    result = cli("__complete", "relays")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [LAN, PUBLIC, "home", "café", "lab[2]", "office"]


def test_each_source_stands_alone(cli, env, two_relays) -> None:
    write_store(env, "{ cut off")  # the store cannot be read: the names still come
    assert cli("__complete", "relays").out == "office\n"
    (Path(env["HERMES_HOME"]) / "desktop-control.json").unlink()
    result = cli("__complete", "relays")  # nothing at all: nothing printed, still exit 0
    assert (result.code, result.out, result.err) == (0, "", "")
    write_store(env, {LAN: {"token": "a" * 43}})
    assert cli("__complete", "relays").out == f"{LAN}\n"  # and no control file is fine


def test_presets_are_what_access_accepts(cli) -> None:
    result = cli("__complete", "presets")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == list(PRESET_NAMES)
    assert {"restricted", "ask_every_time", "standard", "trusted", "full_access"} <= set(PRESET_NAMES)
    for name in PRESET_NAMES:
        policy.normalize_mode(name)  # raises for a name `access` would refuse


def test_approvals_are_the_pending_ids_of_the_running_agent(cli, make_agent) -> None:
    waiting = {"url": LAN, "tool": "desktop_terminal", "capability": "commands", "preview": "ls", "reason": "",
               "request_id": "r1", "created_at": NOW, "expires_at": NOW + 20}
    agent = make_agent(results={"approvals.list": {"approvals": [{**waiting, "id": "a1b2"}, {**waiting, "id": "c3d4"}]}})
    result = cli("__complete", "approvals", agent=agent)
    assert (result.code, result.out, result.err) == (0, "a1b2\nc3d4\n", "")
    assert agent.autostarts == [False]  # asked, never started
    assert agent.calls == [("approvals.list", {}, 0.3)]  # a wedged agent cannot hold the Tab key


def test_approvals_without_a_running_agent_print_nothing_and_start_none(cli, make_agent) -> None:
    agent = make_agent(running=False)
    result = cli("__complete", "approvals", agent=agent)
    assert (result.code, result.out, result.err) == (0, "", "")
    assert (agent.autostarts, agent.running, agent.calls) == ([False], False, [])
    result = cli("__complete", "approvals", real_client=True)  # the real client finds no agent either
    assert (result.code, result.out, result.err) == (0, "", "")


@pytest.mark.skipif(sys.platform == "win32", reason="a Unix socket stands in for a wedged agent")
def test_an_agent_that_never_answers_costs_the_short_timeout_and_prints_nothing(cli, env) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(paths.socket_path(env))
    server.listen(1)  # accepts into the backlog and never answers
    try:
        started = time.monotonic()
        result = cli("__complete", "approvals", real_client=True)
        took = time.monotonic() - started
    finally:
        server.close()
    assert (result.code, result.out, result.err) == (0, "", "")
    assert took < 1.5  # 0.3 s for the answer, not the CLI's 2 s connect or 30 s call timeout


@pytest.mark.parametrize("argv", [(), ("bogus",), ("relays", "extra"), ("--help",), ("RELAYS",)])
def test_anything_else_prints_nothing(cli, two_relays, argv: tuple[str, ...]) -> None:
    result = cli("__complete", *argv)
    assert (result.code, result.out, result.err) == (0, "", "")


def test_it_is_hidden_from_help_and_from_the_completion_tree(cli) -> None:
    assert "__complete" not in cli("--help").out
    tree = completion_scripts.command_tree(build_parser())
    assert all("__complete" not in node.path and "__complete" not in node.words for node in tree.walk())
