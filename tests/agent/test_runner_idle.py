"""agent/runner.py's periodic watchers on an idle agent: they wake rarely and cheaply, and still act.

Each watcher runs alone against a stand-in for the backend (only the attributes it reads), under trio's
autojump clock, so "wakes N times in 10 minutes" takes no real time."""

from __future__ import annotations

import gc
import math
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from helpers import run_inline

from hermes_relay.agent import clockwatch, runner


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


# -- the clock watch ---------------------------------------------------------------------------------
WALL0 = 1_800_000_000.0


class _Steps(trio.abc.Instrument):
    """Task steps of the tasks named ``name``."""

    def __init__(self, name: str):
        self.name, self.count = name, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.count += 1


def _clock_agent(offset: list[float]) -> Any:
    seen: list[tuple[str, float]] = []
    config = SimpleNamespace(wall_clock=lambda: WALL0 + trio.current_time() + offset[0], clock_check_interval=5.0,
                             clock_jump_threshold=10.0)
    return SimpleNamespace(config=config, watcher=None, seen=seen,
                           clock_changed=lambda: seen.append(("clock", trio.current_time())),
                           network_changed=lambda reason: seen.append((reason, trio.current_time())))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd")
async def test_the_clock_watch_told_by_the_kernel_looks_once_a_minute(autojump_clock: trio.abc.Clock) -> None:
    """It compared the clocks every clock_check_interval (5 s): 12 wake-ups a minute of an idle agent."""
    agent = _clock_agent([0.0])
    steps = _Steps("hermes_relay.agent.runner._clock_watch")
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.move_on_after(600):
            await runner._clock_watch(agent, kernel=True)
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.count <= 600 / 60 + 2, steps.count
    assert agent.seen == []


class _Told:
    """A kernel that tells of a clock step at virtual time 100 (what a resume or ``date -s`` makes the timerfd do)."""

    def __init__(self, offset: list[float]):
        self.offset, self.closed = offset, False

    async def wait(self, until: float) -> bool:
        with trio.move_on_at(until):
            if trio.current_time() < 100.0:
                await trio.sleep_until(100.0)
                self.offset[0] += 3600.0  # the lid was closed for an hour
                return True
            await trio.sleep_forever()
        return False

    def close(self) -> None:
        self.closed = True


async def test_a_clock_step_the_kernel_tells_wakes_the_links_at_once(autojump_clock: trio.abc.Clock,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    offset = [0.0]
    told = _Told(offset)
    monkeypatch.setattr(clockwatch, "open_steps", lambda: told)
    agent = _clock_agent(offset)
    with trio.move_on_after(200):
        await runner._clock_watch(agent, kernel=True)
    assert agent.seen == [("clock", 100.0), ("clock jump", 100.0)]
    assert told.closed


async def test_without_the_kernel_the_clock_watch_polls(autojump_clock: trio.abc.Clock) -> None:
    offset = [0.0]
    agent = _clock_agent(offset)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._clock_watch, agent, False)
        await trio.sleep(12.0)
        offset[0] = 3.0  # a step, below the jump threshold: the expiry watches look again, nothing else
        await trio.sleep(10.0)
        offset[0] = 3603.0
        await trio.sleep(10.0)
        nursery.cancel_scope.cancel()
    assert agent.seen == [("clock", 15.0), ("clock", 25.0), ("clock jump", 25.0)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd")
async def test_the_timerfd_wakes_its_waiter_and_is_armed_again() -> None:
    """Real time. The timer expiring stands in for the clock being set (both make the timerfd readable; a
    set makes its read fail with ECANCELED): setting the clock needs CAP_SYS_TIME and would move the
    clock of everything else on this machine."""
    steps = clockwatch.ClockSteps()
    try:
        steps.arm(time.time() + 0.02)
        with trio.fail_after(5):
            assert await steps.wait(trio.current_time() + 5.0) is True
        assert await steps.wait(trio.current_time() + 0.05) is False  # armed a year ahead again
    finally:
        steps.close()


class _Times(trio.abc.Instrument):
    """The trio times at which any task but the test's own took a step."""

    def __init__(self) -> None:
        self.test, self.times = trio.lowlevel.current_task(), set[float]()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.test:
            self.times.add(trio.current_time())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd")
async def test_the_periodic_looks_wake_the_agent_together(autojump_clock: trio.abc.Clock, tmp_path: Any) -> None:
    """The fence, idle exit and the clock watch's own look each woke the agent at their own phase."""
    socket_path = tmp_path / "agent.sock"
    socket_path.write_text("")
    agent = _idle_agent(links={"ws://relay:8767": object()})
    clock = _clock_agent([0.0])
    agent.config = SimpleNamespace(**vars(agent.config), **vars(clock.config), socket_path=str(socket_path),
                                   fence_interval=60.0)
    agent.watcher, agent.clock_changed, agent.network_changed = None, clock.clock_changed, clock.network_changed
    times = _Times()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._fence, agent, runner._identity(str(socket_path)))
        await trio.sleep(7.0)
        nursery.start_soon(runner._idle_exit, agent)
        await trio.sleep(11.0)
        nursery.start_soon(runner._clock_watch, agent, True)
        await trio.sleep(1.0)
        trio.lowlevel.add_instrument(times)
        try:
            await trio.sleep(600)
        finally:
            trio.lowlevel.remove_instrument(times)
        nursery.cancel_scope.cancel()
    assert len(times.times) <= 600 / 30 + 1, sorted(times.times)  # every 30 s (idle exit's period); it was 50
    assert not agent.stopped.is_set() and clock.seen == []


async def test_next_tick_is_the_next_multiple_and_now_for_no_period(autojump_clock: trio.abc.Clock) -> None:
    await trio.sleep(61.0)
    assert (clockwatch.next_tick(30.0), clockwatch.next_tick(60.0), clockwatch.next_tick(0.0)) == (90.0, 120.0, 61.0)


async def test_next_tick_of_no_period_is_never(autojump_clock: trio.abc.Clock) -> None:
    assert clockwatch.next_tick(math.inf) == math.inf  # a safety look switched off (the network watch's tests)


def test_once_started_the_agent_process_freezes_what_start_up_built() -> None:
    """A full collection walked every object start-up built (~25 ms in an idle agent, more than a minute of
    its wake-ups); frozen, they are left out of it."""
    from hermes_relay.agent import main

    before = gc.get_freeze_count()
    built = [[i] for i in range(1000)]  # start-up's objects, as far as this test can tell
    try:
        main.settle_collector()
        assert gc.get_freeze_count() >= before + len(built)
    finally:
        gc.unfreeze()  # this test process keeps its collector as it was
