"""A network change wakes a link out of its backoff at once (event injected through the watcher's seam).

The relay and the agent run in this test's trio loop over real loopback sockets; only the interface
snapshots are scripted, because this test cannot plug in a cable.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import trio

import helpers
from hermes_relay.agent import pairing
from hermes_relay.agent.app import Agent
from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.netwatch import InterfaceWatcher
from hermes_relay.core import api
from hermes_relay.core.netif import make_snapshot

BACKOFF = 20.0  # far longer than the test may run: only the network change can end the wait


class QuietOS:
    """A wakeup source that never fires: only ``poke`` makes the watcher look."""

    async def wait(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


class SlowRng(random.Random):
    """Every backoff delay is its ceiling, so a wait really is BACKOFF seconds long."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def _next_state(receive: trio.MemoryReceiveChannel[dict[str, Any]], state: str) -> dict[str, Any]:
    async for s in receive:
        if s["state"] == state:
            return s
    raise AssertionError("watch channel closed")


async def test_network_change_skips_the_backoff(relay_factory, tmp_path: Path) -> None:
    relay = await relay_factory(state_dir=tmp_path / "relay")
    port = relay.info.port
    run_dir = Path(tempfile.mkdtemp(prefix="hr-"))
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": str(run_dir)}
    snapshots = [make_snapshot({"wlan0": ["192.168.1.20"]}, "wlan0")]
    watcher = InterfaceWatcher(snapshot=lambda: snapshots[-1], wakeups=QuietOS, debounce=0.01)
    config = AgentConfig.from_env(env, backoff_base=BACKOFF, backoff_cap=BACKOFF, rng=SlowRng())
    agent = Agent(config, watcher=watcher)
    send, receive = trio.open_memory_channel[dict[str, Any]](100)
    agent.watchers.add(send)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        code = await helpers.register_code(relay.http)

        async def progress(event: dict[str, Any]) -> None:
            pass

        await pairing.pair(agent, {"url": relay.url, "code": code}, progress)
        await _next_state(receive, api.CONNECTED)
        await relay.stop()
        down = await _next_state(receive, api.BACKOFF)
        assert down["next_retry_at"] - config.wall_clock() > BACKOFF - 5
        relay = await relay_factory(state_dir=tmp_path / "relay", port=port)
        snapshots.append(make_snapshot({"eth0": ["10.0.0.7"]}, "eth0"))  # moved from Wi-Fi to a cable
        watcher.poke("test: link change")
        with trio.fail_after(3):
            up = await _next_state(receive, api.CONNECTED)
        assert up["route"]["url"] == f"ws://127.0.0.1:{port}"
        agent.stop()
