"""Another process holding the store lock never freezes the agent: the link's store write waits in a
worker thread while ``status`` keeps answering at once (real relay and agent processes)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from procs import RelayProc, free_port, wait_state

from hermes_relay.core import api, fileio

pytestmark = pytest.mark.integration

FAST = {"HERMES_RELAY_BACKOFF_CAP": "0.5", "HERMES_RELAY_BACKOFF_BASE": "0.1"}
# A frozen event loop would answer status only once the lock is free or the agent's lock wait gives up
# (DEFAULT_LOCK_TIMEOUT, 10 s; the test holds the lock through every call, whose own timeout is 5 s). A
# quarter of that wait tells the two apart however busy this machine is; the answers take milliseconds.
STATUS_BUDGET = fileio.DEFAULT_LOCK_TIMEOUT / 4  # seconds


def _authed_sockets(relay: RelayProc) -> int:
    with urllib.request.urlopen(f"{relay.http}/health", timeout=5) as reply:
        return int(json.load(reply)["connections"])


def test_a_held_store_lock_never_freezes_the_agent(tmp_path, make_agent_env) -> None:
    relay = RelayProc(tmp_path / "relay", port=free_port()).start()
    env = make_agent_env(**FAST)
    try:
        env.pair(relay)
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        with env.client() as c:
            relay.stop()
            wait_state(env, lambda s: s["state"] == api.BACKOFF)
            with fileio.FileLock(env.store_path, timeout=5):  # held by this process, as another client would
                relay.start()
                deadline = time.monotonic() + 20
                while _authed_sockets(relay) < 1:  # the agent is authenticated and now wants to save
                    assert time.monotonic() < deadline, "the agent never reconnected"
                took = []
                for _ in range(20):
                    started = time.monotonic()
                    status = c.call(api.STATUS, {}, timeout=5)
                    took.append(time.monotonic() - started)
                    (link,) = status["relays"]
                    assert link["state"] == api.CONNECTING  # its store write is still waiting for the lock
                assert max(took) < STATUS_BUDGET, took
            up = wait_state(env, lambda s: s["state"] == api.CONNECTED)
            assert up["route"]["url"] == relay.url
    finally:
        relay.stop()


def test_forget_waits_for_a_held_store_lock_without_freezing_the_agent(tmp_path, make_agent_env) -> None:
    import threading

    relay = RelayProc(tmp_path / "relay").start()
    env = make_agent_env(**FAST)
    try:
        env.pair(relay)
        wait_state(env, lambda s: s["state"] == api.CONNECTED)
        answer: dict[str, object] = {}
        with fileio.FileLock(env.store_path, timeout=5):  # held while the agent removes the pairing
            def forget() -> None:
                with env.client() as fc:
                    answer.update(fc.call(api.FORGET, {"url": relay.url}, timeout=30))

            worker = threading.Thread(target=forget)
            worker.start()
            with env.client() as c:
                took = []
                for _ in range(20):
                    started = time.monotonic()
                    c.call(api.STATUS, {}, timeout=5)
                    took.append(time.monotonic() - started)
                assert max(took) < STATUS_BUDGET, took
            assert relay.url in env.store()["sessions"]  # nothing removed while the lock is held elsewhere
        worker.join(30)
        assert answer["url"] == relay.url and "pairing" in str(answer["removed"])
        assert env.store()["sessions"] == {}
    finally:
        relay.stop()
