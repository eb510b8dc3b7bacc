"""agent/runner.py's periodic watchers on an idle agent: they wake rarely and cheaply, and still act.

Each watcher runs alone against a stand-in for the backend (only the attributes it reads), under trio's
autojump clock, so "wakes N times in 10 minutes" takes no real time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
from helpers import run_inline

from hermes_relay.agent import runner


@pytest.fixture(autouse=True)
def _inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker-thread hops run inline: the autojump clock would jump ahead while a thread runs."""
    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


class _Follower:
    def __init__(self) -> None:
        self.known: dict[str, Any] = {}
        self.reads = 0

    def entries(self) -> dict[str, Any]:
        self.reads += 1
        return {}


def _idle_agent(**overrides: Any) -> Any:
    stopped = trio.Event()
    agent = SimpleNamespace(config=SimpleNamespace(idle_exit=60.0), links={}, down=False,
                            pending=SimpleNamespace(memory={}), follower=_Follower(),
                            approvals=SimpleNamespace(pending={}), ipc=None, stopped=stopped, stop=stopped.set)
    for name, value in overrides.items():
        setattr(agent, name, value)
    return agent


async def test_idle_exit_reads_no_file_while_a_link_runs(autojump_clock: trio.abc.Clock) -> None:
    """It read the paused pairings (a worker-thread hop) every 30 s whatever else said busy."""
    agent = _idle_agent(links={"ws://relay:8767": object()})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._idle_exit, agent)
        await trio.sleep(600)
        assert agent.follower.reads == 0 and not agent.stopped.is_set()
        agent.links = {}  # unpaired: it stops after idle_exit with nothing paired, reading the file to know
        with trio.fail_after(2 * agent.config.idle_exit):
            await agent.stopped.wait()
        assert agent.follower.reads >= 2


async def test_idle_exit_waits_for_a_paused_pairing(autojump_clock: trio.abc.Clock) -> None:
    agent = _idle_agent()
    agent.follower.entries = lambda: {"ws://relay:8767": {}}
    with trio.move_on_after(600):
        await runner._idle_exit(agent)
    assert not agent.stopped.is_set()
