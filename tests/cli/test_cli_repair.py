"""``pair`` on a relay that is already paired, against a scripted agent: what it says, asks and sends.

The agent's ``pair.check`` names the stored pairing a pairing would replace (tests/e2e/
test_repair_spelling_e2e.py checks it finds it with real processes); the CLI prints "already paired as
… since …; replacing it", asks on a terminal unless --yes, and over ws:// asks before carrying the
old pairing's desktop access over to another spelling of the relay's URL.
"""

from __future__ import annotations

import json
import time

from test_cli_pair import RESULT

from hermes_relay.core import paths

OLD = "ws://127.0.0.1:8767"
NEW = "ws://localhost:8767/ws"
AT = 1_799_000_000
SINCE = time.strftime("%Y-%m-%d %H:%M", time.localtime(AT))


def _paired(env, url: str = OLD) -> None:  # type: ignore[no-untyped-def]
    path = paths.sessions_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "sessions": {url: {"token": "t" * 43, "paired_at": AT}}}))


def _replaces(url: str = OLD, *, authenticated: bool = False, access: str = "trusted, roots ~/src") -> dict:  # type: ignore[type-arg]
    return {"replaces": {"url": url, "device_name": "laptop", "paired_at": AT, "authenticated": authenticated,
                         "carried_over": False, "access": access}}


def _agent(make_agent, check, result=None):  # type: ignore[no-untyped-def]
    return make_agent(results={"pair.check": check, "pair.start": result or {**RESULT, "url": NEW}},
                      notifies={"pair.start": [("pair.progress", {"kind": "info",
                                                                   "line": f"already paired as laptop at {OLD} since x; replacing it"})]})


def _starts(agent) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [params for method, params, _ in agent.calls if method == "pair.start"]


def test_a_first_pairing_asks_nothing_and_checks_nothing(cli, make_agent) -> None:
    agent = _agent(make_agent, {"replaces": None})
    assert cli("pair", "F3W7EY", "--remote", OLD, agent=agent).code == 0
    assert agent.methods() == ["pair.start"]


def test_re_pairing_the_same_url_says_so_and_goes_ahead_without_a_terminal(cli, env, make_agent) -> None:
    _paired(env)
    agent = _agent(make_agent, _replaces(OLD), {**RESULT, "url": OLD})
    result = cli("pair", "F3W7EY", "--remote", OLD, agent=agent)
    assert result.code == 0, result.err
    assert agent.methods() == ["pair.check", "pair.start"]
    assert agent.calls[0][1] == {"url": OLD, "code": "F3W7EY"}  # the same request; nothing is spent by a check
    assert f"already paired as laptop since {SINCE}; replacing it" in result.err.splitlines()
    assert sum("already paired" in line for line in result.err.splitlines()) == 1  # not again from the agent
    assert "carry_over" not in _starts(agent)[0]
    assert not any(line.startswith("  Replaced:") for line in result.out.splitlines())


def test_at_a_terminal_it_asks_first_and_no_keeps_the_pairing(cli, env, make_agent, tty) -> None:
    _paired(env)
    agent = _agent(make_agent, _replaces(OLD))
    result = cli("pair", "F3W7EY", "--remote", OLD, agent=agent, stdin=tty("n\n"))
    assert result.code == 1
    assert _starts(agent) == []
    assert "Replace it? [Y/n]" in result.err
    assert "not paired: the existing pairing is kept (the code was not used)" in result.err


def test_yes_skips_the_question(cli, env, make_agent, tty) -> None:
    _paired(env)
    agent = _agent(make_agent, _replaces(OLD))
    result = cli("pair", "F3W7EY", "--remote", OLD, "--yes", agent=agent, stdin=tty(""))
    assert result.code == 0 and "Replace it?" not in result.err
    assert len(_starts(agent)) == 1


def test_another_spelling_over_ws_asks_before_carrying_the_access_over(cli, env, make_agent, tty) -> None:
    _paired(env)
    agent = _agent(make_agent, _replaces(OLD))
    result = cli("pair", "F3W7EY", "--remote", NEW, agent=agent, stdin=tty("\ny\n"))
    assert result.code == 0, result.err
    assert f"already paired as laptop at {OLD} since {SINCE}; replacing it" in result.err
    assert f"carry over the desktop access (trusted, roots ~/src) from {OLD}? [y/N]" in result.err
    assert _starts(agent)[0]["carry_over"] is True

    agent = _agent(make_agent, _replaces(OLD))
    assert cli("pair", "F3W7EY", "--remote", NEW, agent=agent, stdin=tty("\n\n")).code == 0
    assert "carry_over" not in _starts(agent)[0]  # the default is no


def test_without_a_terminal_only_carry_over_carries_it_over(cli, env, make_agent) -> None:
    _paired(env)
    agent = _agent(make_agent, _replaces(OLD))
    assert cli("pair", "F3W7EY", "--remote", NEW, agent=agent).code == 0
    assert "carry_over" not in _starts(agent)[0]
    agent = _agent(make_agent, _replaces(OLD))
    assert cli("pair", "F3W7EY", "--remote", NEW, "--carry-over", agent=agent).code == 0
    assert _starts(agent)[0]["carry_over"] is True


def test_a_matching_pin_carries_the_access_over_without_a_question(cli, env, make_agent, tty) -> None:
    _paired(env, "wss://127.0.0.1:8767")
    replaced = {"url": "wss://127.0.0.1:8767", "device_name": "laptop", "paired_at": AT, "authenticated": True,
                "carried_over": True, "access": "trusted, roots ~/src"}
    agent = _agent(make_agent, _replaces("wss://127.0.0.1:8767", authenticated=True),
                   {**RESULT, "url": "wss://localhost:8767", "replaced": replaced})
    result = cli("pair", "F3W7EY", "--remote", "wss://localhost:8767", "--yes", agent=agent, stdin=tty(""))
    assert result.code == 0, result.err
    assert "carry over" not in result.err and "carry_over" not in _starts(agent)[0]
    assert ("  Replaced: wss://127.0.0.1:8767 (the same relay); its desktop access (trusted, roots ~/src) "
            "carried over, the certificate pin matches") in result.out.splitlines()


def test_an_access_left_behind_is_said_with_how_to_change_it(cli, env, make_agent) -> None:
    _paired(env)
    replaced = {"url": OLD, "device_name": "laptop", "paired_at": AT, "authenticated": False,
                "carried_over": False, "access": "trusted"}
    agent = _agent(make_agent, _replaces(OLD, access="trusted"), {**RESULT, "url": NEW, "replaced": replaced})
    result = cli("pair", "F3W7EY", "--remote", NEW, agent=agent)
    line = next(x for x in result.out.splitlines() if x.startswith("  Replaced:"))
    assert "was not carried over" in line and "starts at ask every time" in line
    assert f"hermes-relay access {NEW}" in line


def test_nothing_to_carry_over_asks_nothing(cli, env, make_agent, tty) -> None:
    _paired(env)
    for access in ("ask every time", "restricted"):
        agent = _agent(make_agent, _replaces(OLD, access=access))
        result = cli("pair", "F3W7EY", "--remote", NEW, agent=agent, stdin=tty("\n"))
        assert result.code == 0 and "carry over" not in result.err
