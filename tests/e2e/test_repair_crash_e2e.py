"""A kill -9 at any write point of a re-pairing or a token refresh loses nothing.

The relay replaces this device's session as soon as it accepts a code, and retires the old tokens as
soon as it answers a refresh: from then on only the credentials in its answer work. The agent is
killed (real processes, SIGKILL) at each named write point (agent/checkpoints.py) between that
answer and the store; after a restart the pairing must work: the link connects with the new token,
and the relay answers a `devices` call made with it. (A random-timing loop is a soak job, not CI.)
"""

from __future__ import annotations

import json

import pytest
from procs import wait_gone, wait_state

from hermes_relay.agent import checkpoints
from hermes_relay.core import api, knobs
from hermes_relay.core.errors import HermesError

pytestmark = pytest.mark.integration


def _works_after_restart(env, relay, old_token: str) -> None:  # type: ignore[no-untyped-def]
    env.env.pop(knobs.KILL_AT.name)
    wait_state(env, lambda s: s["state"] == api.CONNECTED and s["url"] == relay.url
               and env.store()["sessions"][relay.url]["token"] != old_token)
    with env.client() as c:
        sessions = c.call(api.DEVICES_LIST, {})["sessions"]  # the relay accepts the stored token
        status = c.call(api.STATUS, {})
    assert len(sessions) == 1  # the old session was replaced, not kept beside
    assert status["agent"]["unsaved_pairings"] == []
    assert [r["desktop"]["policy"] for r in status["relays"]] == ["ask_every_time"]
    pending = env.store_path.with_name("hermes-relay-pending.json")
    assert json.loads(pending.read_text())["pending"] == {}


@pytest.mark.parametrize("point", checkpoints.PAIR)
def test_a_kill_9_at_each_write_point_of_a_re_pair_loses_nothing(relay_proc, make_agent_env, point: str) -> None:
    env = make_agent_env()
    env.pair(relay_proc)
    old = env.store()["sessions"][relay_proc.url]["token"]
    env.stop()
    env.env[knobs.KILL_AT.name] = point
    with env.client() as c:
        pid = c.hello["pid"]
        with pytest.raises(HermesError):  # the agent dies before it answers
            c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code()}, timeout=30)
    assert wait_gone(pid, 10)
    _works_after_restart(env, relay_proc, old)


@pytest.mark.parametrize("point", checkpoints.REFRESH)
def test_a_kill_9_at_each_write_point_of_a_token_refresh_loses_nothing(relay_proc, make_agent_env,
                                                                        point: str) -> None:
    env = make_agent_env(HERMES_RELAY_BACKOFF_CAP="0.5", **{knobs.KILL_AT.name: point})
    with env.client() as c:
        pid = c.hello["pid"]
        c.call(api.PAIR_START, {"url": relay_proc.url, "code": relay_proc.mint_code(ttl="2")}, timeout=30)
    old = env.store()["sessions"][relay_proc.url]["token"]
    assert wait_gone(pid, 30)  # the 2 s session expired, the refresh rotated both tokens, the agent died
    _works_after_restart(env, relay_proc, old)
