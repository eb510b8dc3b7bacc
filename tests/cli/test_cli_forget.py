"""``hermes-relay forget URL``: lookup before the agent, confirmation, and the exact result lines."""

from __future__ import annotations

import json
from pathlib import Path

from hermes_relay.core import paths

NOW = 1_800_000_000.0
URL = "ws://192.168.1.5:8767"
ALT = "ws://100.64.0.5:8767"
TOKEN = "abcd1234" + "x" * 35


def write_store(env: dict[str, str]) -> Path:
    path = paths.sessions_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "sessions": {URL: {"token": TOKEN, "route_candidates": [ALT]}}}))
    return path


def forgot(status: str, message: str | None = None, removed: tuple[str, ...] = ("pairing (1 alternate route)",)) -> dict:
    relay = {"status": status, **({"message": message} if message else {})}
    return {"url": URL, "prefix": "abcd1234", "relay": relay, "removed": list(removed)}


def test_unknown_url_fails_before_the_agent_and_lists_the_paired_relays(cli, env) -> None:
    write_store(env)
    result = cli("forget", "ws://10.1.1.1:8767", "--yes")
    assert result.code == 1
    assert result.err == ("hermes-relay: no pairing stored for ws://10.1.1.1:8767\n"
                          f"  hint: paired relays: {URL}\n")


def test_without_a_terminal_it_needs_yes_and_changes_nothing(cli, env) -> None:
    write_store(env)
    result = cli("forget", URL)
    assert result.code == 2
    assert result.err == "hermes-relay: forget needs confirmation: run it on a terminal or pass --yes\n"


def test_on_a_terminal_it_asks_and_a_no_changes_nothing(cli, env, make_agent, tty) -> None:
    write_store(env)
    agent = make_agent(results={"forget": forgot("revoked")})
    result = cli("forget", URL, agent=agent, stdin=tty("n\n"))
    assert result.code == 1
    assert result.err == (f"Forget {URL}? This revokes its session abcd1234 on the relay and removes the pairing, "
                          "its routes and pins from this computer. [y/N] not forgotten: nothing changed\n")
    assert agent.calls == []
    result = cli("forget", ALT, agent=agent, stdin=tty("y\n"))  # an alternate route names the same pairing
    assert result.code == 0, result.err
    assert agent.methods() == ["forget"] and agent.calls[0][1] == {"url": URL}


def test_result_lines_for_each_relay_answer(cli, env, make_agent) -> None:
    write_store(env)
    agent = make_agent(results={"forget": forgot("revoked", removed=("pairing (1 alternate route)", "verdict",
                                                                     "refresh token", "desktop access policy"))})
    assert cli("forget", URL, "--yes", agent=agent).out.splitlines() == [
        f"✓ forgot {URL}",
        "  relay:   session abcd1234 revoked",
        "  removed: pairing (1 alternate route), verdict, refresh token, desktop access policy",
    ]
    agent.results["forget"] = forgot("unreachable", "connection refused")
    assert cli("forget", URL, "-y", agent=agent).out.splitlines()[1:] == [
        "  relay:   session NOT revoked: the relay could not be reached (connection refused)",
        "           it stays valid there until it expires; end it from the relay host or another device: "
        "hermes-relay devices revoke abcd1234",
        "  removed: pairing (1 alternate route)",
    ]
    agent.results["forget"] = forgot("already_ended", "the relay had already revoked it")
    assert cli("forget", URL, "--yes", agent=agent).out.splitlines()[1] == (
        "  relay:   the session had already ended (the relay had already revoked it)")
    assert json.loads(cli("forget", URL, "--yes", "--json", agent=agent).out)["relay"]["status"] == "already_ended"


def test_a_url_with_only_a_policy_is_forgotten_without_a_pairing(cli, env, make_agent) -> None:
    from hermes_relay.core import desktop, policy, roots

    write_store(env)
    other = "ws://nosuch:1"
    policy.set_mode(policy.policy_file(env), other, policy.TRUSTED)
    policy.set_mode(policy.policy_file(env), URL, policy.STRUCTURED)
    roots.add(roots.roots_file(env), other + "/", env["HOME"])
    down = make_agent(running=False)
    result = cli("forget", other + "/", "--yes", agent=down)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"✓ forgot {other}", "  relay:   not paired: nothing to revoke",
                                       "  removed: desktop access policy, desktop roots"]
    assert set(policy.load(policy.policy_file(env)).hosts) == {URL}  # the paired relay's policy is kept
    assert roots.load(roots.roots_file(env)) == {}
    records = [r for r in desktop.read_audit(desktop.audit_file(env)) if r.get("kind") == "policy.changed"]
    assert [(r["host_url"], r["by"], r["after"]) for r in records] == [(other, "hermes-relay forget", None)]
    gone = cli("forget", other, "--yes")  # nothing left: an unknown URL again, before any agent
    assert gone.code == 1 and "no pairing stored for ws://nosuch:1" in gone.err


def test_forgetting_a_policy_only_url_tells_a_running_agent(cli, env, make_agent) -> None:
    from hermes_relay.core import policy

    policy.set_mode(policy.policy_file(env), "ws://nosuch:1", policy.TRUSTED)
    agent = make_agent(results={"access.changing": {"url": "ws://nosuch:1"}})
    assert cli("forget", "ws://nosuch:1", "--yes", agent=agent).code == 0
    assert agent.calls == [("access.changing", {"url": "ws://nosuch:1", "command": "forget"}, 2.0)]
    assert policy.load(policy.policy_file(env)).hosts == {}
