"""Pairing a paired relay again under another spelling of its URL replaces the pairing in place.

Real relay and agent processes. The relay is recognised by its identity: the certificate pin over
wss:// (authenticated: the desktop access, its roots and its jobs' owner are carried over silently),
the ``relay_id`` of its ``/health`` over ws:// (only a claim: carried over only when the user
confirms, else the new pairing starts at ask_every_time). Either way one pairing remains.
"""

from __future__ import annotations

import pytest
from procs import wait_state

from hermes_relay.core import api, paths, policy, roots

pytestmark = pytest.mark.integration


def _other_spelling(url: str) -> str:
    return url.replace("127.0.0.1", "localhost") + "/ws"


def _customise(env, url: str) -> None:  # type: ignore[no-untyped-def]
    policy.set_mode(policy.policy_file(env.env), url, "trusted")
    src = env.home.parent / "src"
    src.mkdir(exist_ok=True)
    roots.add(roots.roots_file(env.env), url, str(src), env=env.env)


def _pair_again(env, relay, **extra):  # type: ignore[no-untyped-def]
    new_url = _other_spelling(relay.url)
    with env.client() as c:
        lines: list[str] = []
        result = c.call(api.PAIR_START, {"url": new_url, "code": relay.mint_code(), **extra}, timeout=30,
                        on_notify=lambda m, p: lines.append(str(p.get("line"))))
    return result, lines


def _one_pairing_connected(env, url: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert list(env.store()["sessions"]) == [url]  # the old record is gone: no "replaced" leftover
    wait_state(env, lambda s: s["state"] == api.CONNECTED and s["url"] == url)
    with env.client() as c:
        devices = c.call(api.DEVICES_LIST, {})["sessions"]
        status = c.call(api.STATUS, {})
    assert len(devices) == 1
    assert [r["url"] for r in status["relays"]] == [url]
    return {**status["relays"][0], "device_name": devices[0]["device_name"]}


def test_another_spelling_over_ws_replaces_in_place_and_starts_at_ask_every_time(relay_proc, make_agent_env) -> None:
    env = make_agent_env()
    env.pair(relay_proc)
    _customise(env, relay_proc.url)
    result, lines = _pair_again(env, relay_proc)
    new_url = result["url"]
    assert new_url != relay_proc.url
    assert any(line.startswith("already paired as ") and line.endswith("; replacing it") for line in lines), lines
    assert result["replaced"]["url"] == relay_proc.url
    assert result["replaced"]["carried_over"] is False and result["replaced"]["authenticated"] is False
    assert "trusted" in result["replaced"]["access"]
    relay = _one_pairing_connected(env, new_url)
    assert relay["desktop"]["policy"] == "ask_every_time"
    assert policy.canonical_url(relay_proc.url) not in policy.load(policy.policy_file(env.env)).hosts
    assert roots.load(roots.roots_file(env.env)) == {}


def test_another_spelling_over_ws_carries_the_access_over_when_confirmed(relay_proc, make_agent_env) -> None:
    env = make_agent_env()
    with env.client() as c:
        c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code(), "device_name": "desk"}, timeout=30)
    _customise(env, relay_proc.url)
    result, _ = _pair_again(env, relay_proc, carry_over=True)
    new_url = result["url"]
    assert result["replaced"]["carried_over"] is True
    relay = _one_pairing_connected(env, new_url)
    assert relay["device_name"] == "desk"  # the name chosen under the other spelling is kept
    assert relay["desktop"]["policy"] == "trusted"
    key = policy.canonical_url(new_url)
    assert list(roots.load(roots.roots_file(env.env))) == [key]


def test_another_spelling_over_wss_with_the_same_pin_carries_the_access_over(make_relay, make_agent_env) -> None:
    relay = make_relay(tls=True)
    env = make_agent_env()
    env.pair(relay)
    _customise(env, relay.url)
    result, _ = _pair_again(env, relay)
    assert result["replaced"]["authenticated"] is True and result["replaced"]["carried_over"] is True
    assert _one_pairing_connected(env, result["url"])["desktop"]["policy"] == "trusted"
    assert paths.sessions_file(env.env).exists()


def test_the_cli_says_it_replaces_and_carries_over_only_when_told(relay_proc, make_agent_env) -> None:
    env = make_agent_env()
    env.pair(relay_proc)
    _customise(env, relay_proc.url)
    new_url = _other_spelling(relay_proc.url)
    with env.client() as c:  # the check spends nothing: the code still pairs afterwards
        check = c.call(api.PAIR_CHECK, {"url": new_url, "code": "AAAAAA"}, timeout=30)
    assert check["replaces"]["url"] == relay_proc.url and check["replaces"]["authenticated"] is False
    env.env["HERMES_RELAY_CODE"] = relay_proc.mint_code()
    done = env.cli("pair", "--remote", new_url, "--carry-over")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("already paired as ")]
    assert len(said) == 1 and f" at {relay_proc.url} since " in said[0] and said[0].endswith("; replacing it")
    assert "carried over, as you confirmed" in done.stdout
    assert _one_pairing_connected(env, new_url)["desktop"]["policy"] == "trusted"
