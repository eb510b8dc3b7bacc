"""`hermes-relay sessions`: list and kill over the agent (typed IPC calls), resume/new checks, completion."""

from __future__ import annotations

import json

from hermes_relay.cli import complete
from hermes_relay.core import apitypes
from hermes_relay.core.errors import TerminalRefusedError

LISTED = {"sessions": [{"name": "main", "tmux_name": "hermes-main", "attached": 1, "windows": 2,
                        "created_at": 1_799_990_000.0, "shell": "/bin/bash", "live": True, "owned_by_client": False},
                       {"name": "build", "tmux_name": "hermes-build", "attached": 0, "windows": 1, "live": True}],
          "tmux_available": True}


def _params_fit(agent) -> None:
    for method, params, _ in agent.calls:
        assert not apitypes.check(params, apitypes.METHODS[method][0], where=method)


def test_list_prints_a_table_and_json(cli, make_agent) -> None:
    agent = make_agent(results={"terminal.list": LISTED})
    result = cli("sessions", agent=agent)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "ATTACHED", "WINDOWS", "CREATED", "STATE"]
    assert lines[1].split()[:3] == ["main", "1", "2"] and lines[2].split()[:3] == ["build", "0", "1"]
    assert agent.calls[0][:2] == ("terminal.list", {"remote": None})
    result = cli("sessions", "list", "--json", "--remote", "ws://h:8767", agent=agent)
    assert json.loads(result.out) == LISTED
    assert agent.calls[1][1] == {"remote": "ws://h:8767"}
    _params_fit(agent)


def test_list_says_when_there_is_none_and_when_tmux_is_missing(cli, make_agent) -> None:
    agent = make_agent(results={"terminal.list": {"sessions": [], "tmux_available": False}})
    result = cli("sessions", "list", agent=agent)
    assert "no terminal sessions" in result.out and "no tmux" in result.out


def test_kill_names_the_session(cli, make_agent) -> None:
    agent = make_agent(results={"terminal.kill": {"reason": "client kill"}})
    result = cli("sessions", "kill", "build", agent=agent)
    assert result.code == 0 and "killed session 'build'" in result.out
    assert agent.calls[0][:2] == ("terminal.kill", {"remote": None, "session": "build"})
    _params_fit(agent)


def test_bad_names_are_refused_before_the_agent(cli) -> None:
    for argv in (("sessions", "kill", "a:b"), ("sessions", "resume", "x" * 65), ("sessions", "new", "a b")):
        result = cli(*argv)
        assert result.code == 2 and "invalid session name" in result.err


def test_resume_needs_an_existing_session_and_new_a_free_name(cli, make_agent) -> None:
    agent = make_agent(results={"terminal.list": LISTED})
    result = cli("sessions", "resume", "nope", agent=agent)
    assert result.code == 1 and "no session 'nope'" in result.err
    result = cli("sessions", "new", "build", agent=agent)
    assert result.code == 2 and "exists already" in result.err
    result = cli("sessions", "resume", "build", agent=agent)  # found: then it needs a terminal
    assert result.code == 2 and "needs a terminal" in result.err


def test_session_names_complete_from_the_running_agent(env, make_agent, capsys) -> None:
    import io

    agent = make_agent(results={"terminal.list": LISTED})
    out = io.StringIO()
    assert complete.run(["sessions"], out, env, agent.connect) == 0
    assert out.getvalue() == "main\nbuild\n"
    assert agent.autostarts == [False]  # Tab never starts the agent


def test_resume_still_attaches_when_the_relay_cannot_list(cli, make_agent) -> None:
    # The reference relay's terminal.list fails while a tmux session sits detached; its attach still works.
    broken = TerminalRefusedError("ws://h:8767 refused the terminal request: name '_default_shell' is not defined")
    agent = make_agent(results={"terminal.list": broken})
    result = cli("sessions", "resume", "build", agent=agent)
    assert "could not list its sessions" in result.err and "opening the shell anyway" in result.err
    assert result.code == 2 and "needs a terminal" in result.err  # on to the shell, not stopped by the list
    result = cli("sessions", "list", agent=agent)
    assert result.code == 1 and "_default_shell" in result.err  # the list itself still says what failed
