"""Link behaviour that needs the clock, the relay's limiter or the network under control: the relay and
the agent run in this test's trio loop over real loopback sockets; only interface snapshots are
scripted (a test cannot plug in a cable)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import helpers
import trio

from hermes_relay.agent import pairing, runner
from hermes_relay.agent.backend import AgentBackend
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.netwatch import InterfaceWatcher
from hermes_relay.core import api
from hermes_relay.core.netif import make_snapshot
from hermes_relay.relay.server import SESSION_BLOCK, SESSION_FAIL_LIMIT

LONG = 20.0


class QuietOS:
    """A wakeup source that never fires: only ``poke`` makes the watcher look."""

    async def wait(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


class CeilingRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


async def _until(receive: trio.MemoryReceiveChannel[dict[str, Any]], state: str) -> dict[str, Any]:
    async for s in receive:
        if s["state"] == state:
            return s
    raise AssertionError("watch channel closed")


async def _agent(tmp_path: Path, nursery: trio.Nursery, *, watcher: Any = None,
                 **overrides: Any) -> tuple[AgentBackend, trio.MemoryReceiveChannel[dict[str, Any]]]:
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir)}
    agent = AgentBackend(AgentConfig.from_env(env, **overrides), watcher=watcher)
    send, receive = trio.open_memory_channel[dict[str, Any]](100)
    agent.watchers.add(send)
    await nursery.start(runner.run, agent)
    return agent, receive


async def _pair(agent: AgentBackend, relay: Any) -> None:
    async def progress(event: dict[str, Any]) -> None:
        pass

    await pairing.pair(agent, {"url": relay.url, "code": await helpers.register_code(relay.http)}, progress)


async def test_rate_limited_link_waits_out_the_block(relay_factory, tmp_path: Path) -> None:
    state_dir = tmp_path / "relay"
    relay = await relay_factory(state_dir=state_dir)
    port = relay.info.port
    async with trio.open_nursery() as nursery:
        agent, states = await _agent(tmp_path, nursery, backoff_base=LONG, backoff_cap=LONG, rng=CeilingRng())
        await _pair(agent, relay)
        await _until(states, api.CONNECTED)
        await relay.stop()
        await _until(states, api.BACKOFF)
        relay = await relay_factory(state_dir=state_dir, port=port)
        for i in range(SESSION_FAIL_LIMIT):  # meanwhile someone on this address keeps guessing tokens
            _, reply = await helpers.ws_auth(relay.url, {"session_token": f"guess-{i}"})
            assert reply["type"] == "auth.fail"
            if i == SESSION_FAIL_LIMIT - 1:
                await helpers.expect_closed(_)
        link = agent.links[relay.url]
        link.network_changed()  # retry now: the reconnect meets the block
        limited = await _until(states, api.RATE_LIMITED)
        wait = limited["next_retry_at"] - agent.config.wall_clock()
        assert SESSION_BLOCK - 5 < wait <= SESSION_BLOCK + 1  # the relay's Retry-After, not the backoff
        assert limited["last_error"]["code"] == "rate_limited"
        # That a network change does not shorten the block is proved at exact virtual times by
        # test_link_driver.py::test_a_rate_limit_is_waited_out_whatever_the_network_does; a real-clock
        # wait here could only show that nothing happened *yet*.
        assert link.state == api.RATE_LIMITED
        assert relay.url in agent.store.sessions()  # the pairing is kept
        agent.stop()


async def test_wall_clock_jump_skips_the_backoff(relay_factory, tmp_path: Path) -> None:
    wall = helpers.FakeWallClock(start=trio.current_time() + 1_800_000_000)
    state_dir = tmp_path / "relay"
    relay = await relay_factory(state_dir=state_dir)
    port = relay.info.port
    async with trio.open_nursery() as nursery:
        agent, states = await _agent(tmp_path, nursery, backoff_base=LONG, backoff_cap=LONG, rng=CeilingRng(),
                                     wall_clock=wall, clock_check_interval=0.05)
        await _pair(agent, relay)
        await _until(states, api.CONNECTED)
        await relay.stop()
        await _until(states, api.BACKOFF)
        relay = await relay_factory(state_dir=state_dir, port=port)
        wall.advance(3600)  # the lid was closed for an hour
        with trio.fail_after(3):
            up = await _until(states, api.CONNECTED)
        assert up["route"]["url"] == relay.url
        agent.stop()


async def test_network_change_skips_the_backoff(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory(state_dir=tmp_path / "relay")
    port = relay.info.port
    snapshots = [make_snapshot({"wlan0": ["192.168.1.20"]}, "wlan0")]
    watcher = InterfaceWatcher(snapshot=lambda: snapshots[-1], wakeups=QuietOS, debounce=0.01)
    async with trio.open_nursery() as nursery:
        agent, receive = await _agent(tmp_path, nursery, watcher=watcher, backoff_base=LONG, backoff_cap=LONG,
                                      rng=CeilingRng())
        await _pair(agent, relay)
        await _until(receive, api.CONNECTED)
        await relay.stop()
        down = await _until(receive, api.BACKOFF)
        assert down["next_retry_at"] - agent.config.wall_clock() > LONG - 5
        relay = await relay_factory(state_dir=tmp_path / "relay", port=port)
        snapshots.append(make_snapshot({"eth0": ["10.0.0.7"]}, "eth0"))  # moved from Wi-Fi to a cable
        watcher.poke("test: link change")
        with trio.fail_after(3):
            up = await _until(receive, api.CONNECTED)
        assert up["route"]["url"] == f"ws://127.0.0.1:{port}"
        agent.stop()
