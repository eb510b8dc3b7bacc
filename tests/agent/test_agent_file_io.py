"""The agent's blocking file I/O runs off the event loop: the desktop policy's refresh and the route
indicator's writes happen in worker threads, serialised, and never land out of order.

Real files under tmp_path and real worker threads (trio's real clock: the autojump clock would jump
ahead while a thread runs). A read or write that blocks is a ``threading.Event`` the test holds: if
the blocking step ran on the event loop the test task could not run meanwhile, and the step gives up
after ``STUCK`` seconds, so the test fails instead of hanging.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hermes_relay.agent.config import AgentConfig
from hermes_relay.agent.desktop.service import DesktopService
from hermes_relay.agent.indicator import Indicator, summarize
from hermes_relay.core import api, policy

URL = "ws://relay.test:8767"
STUCK = 10.0  # seconds a held step waits for the test before it gives up (and the test fails)
LAN = {"url": "ws://10.0.0.2:8767", "role": "lan", "label": "LAN", "priority": 0}


class Gate:
    """Holds a blocking step (in whatever thread runs it) until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.opened.wait(STUCK), "the held step ran on the event loop: the test could not open it"

    async def wait_entered(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, STUCK)


def _service(tmp_path: Path) -> DesktopService:
    env = {"HOME": str(tmp_path), "HERMES_HOME": str(tmp_path / ".hermes"), "HERMES_RELAY_NOTIFY": "0",
           "HERMES_RELAY_RUNTIME_DIR": str(tmp_path / "run")}
    return DesktopService(AgentConfig.from_env(env), tools=[])  # the default seam: trio.to_thread.run_sync


async def test_the_event_loop_runs_while_a_policy_read_blocks(tmp_path: Path) -> None:
    service = _service(tmp_path)
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    gate, real = Gate(), service._read

    def slow_read(*args: Any) -> Any:
        gate.hold()  # a slow disk, before anything is read
        return real(*args)

    service._read = slow_read  # type: ignore[method-assign]
    done = trio.Event()

    async def refresh() -> None:
        await service.refresh()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refresh)
        await gate.wait_entered()
        assert not done.is_set() and service.host_policy(URL).access_mode == policy.ASK  # not read yet
        gate.opened.set()
        with trio.fail_after(STUCK):
            await done.wait()
    assert service.host_policy(URL).access_mode == policy.TRUSTED


async def test_a_refresh_asked_for_during_a_read_reads_again_and_concurrent_ones_share_it(tmp_path: Path) -> None:
    """A caller is covered only by a read that began after it asked (so an edit made just before it is
    seen); callers that ask while one read runs share one more read."""
    service = _service(tmp_path)
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    gate, real, reads = Gate(), service._read, []

    def read(*args: Any) -> Any:
        view = real(*args)
        reads.append(view)
        if len(reads) == 1:
            gate.hold()  # the first read has seen "trusted" and is slow to come back
        return view

    service._read = read  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.refresh)
        await gate.wait_entered()
        policy.set_mode(service.policy_path, URL, policy.ASK)  # lowered while that read is out
        finished: list[str] = []

        async def caller() -> None:
            await service.refresh()
            finished.append(service.host_policy(URL).access_mode)

        for _ in range(5):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        gate.opened.set()
    assert finished == [policy.ASK] * 5  # every later caller saw the lowered policy
    assert len(reads) == 2  # one read for the five of them
    assert service.decide(URL, "desktop_read_file") == policy.DECIDE_DENY


async def test_a_slow_indicator_write_never_stalls_the_loop_and_only_the_latest_state_follows(tmp_path: Path) -> None:
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    gate, real, written, landed = Gate(), ind._write_files, [], threading.Event()

    def write_files(current: dict[str, Any], durable: bool) -> None:
        written.append(current["state"])
        if len(written) == 1:
            gate.hold()  # the first write is stuck on a slow disk
        real(current, durable)
        if current["state"] == api.CONNECTED:
            landed.set()

    ind._write_files = write_files  # type: ignore[method-assign]
    states = [api.CONNECTING, api.BACKOFF, api.CONNECTING]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ind.run)
        ind.publish(summarize([{"url": "ws://a", "state": api.BACKOFF, "route": None}]), 1_800_000_000.0)
        await gate.wait_entered()
        for n, state in enumerate(states):  # published while the write is stuck: the loop runs on
            assert ind.publish(summarize([{"url": "ws://a", "state": state, "route": None}]), 1_800_000_001.0 + n)
        last = ind.publish(summarize([{"url": "ws://a", "state": api.CONNECTED, "route": LAN, "since": 1.0}]),
                           1_800_000_010.0)
        assert ind.current == last  # `route` answers with the newest state at once
        gate.opened.set()
        assert await trio.to_thread.run_sync(landed.wait, STUCK)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert written == [api.BACKOFF, api.CONNECTED]  # the states published meanwhile coalesced into the latest
    assert json.loads(ind.json_file.read_text())["state"] == api.CONNECTED
    assert ind.route_file.read_text().startswith(f"{last['valid_until']} LAN\n")


async def test_route_answers_once_the_files_show_what_it_answers(tmp_path: Path) -> None:
    """`hermes-relay route` and the prompt (which reads the route file) never disagree: the answer waits
    for the writer to put the published state on disk, and a stuck disk delays it by at most FLUSH_WAIT."""
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    gate, real = Gate(), ind._write_files

    def write_files(current: dict[str, Any], durable: bool) -> None:
        if current["state"] == api.CONNECTED:
            gate.hold()  # the disk is slow for this one
        real(current, durable)

    ind._write_files = write_files  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ind.run)
        last = ind.publish(summarize([{"url": "ws://a", "state": api.CONNECTED, "route": LAN, "since": 1.0}]),
                           1_800_000_010.0)
        answered = trio.Event()

        async def route() -> None:
            await ind.flushed()
            answered.set()

        await gate.wait_entered()  # the writer runs, and is stuck on the disk
        nursery.start_soon(route)
        await trio.testing.wait_all_tasks_blocked()
        assert not answered.is_set()  # the file still shows the old state: no answer yet
        gate.opened.set()
        await answered.wait()
        assert ind.route_file.read_text().startswith(f"{last['valid_until']} LAN\n")
        nursery.cancel_scope.cancel()


async def test_route_is_not_held_by_a_stuck_disk_nor_without_a_writer(tmp_path: Path) -> None:
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    ind.publish(summarize([]), 1_800_000_000.0)
    with trio.fail_after(1):
        await ind.flushed()  # no writer task runs (e.g. a test backend): nothing to wait for
    gate = Gate()
    ind._write_files = lambda current, durable: gate.hold()  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ind.run)
        ind.publish(summarize([]), 1_800_000_001.0)
        await gate.wait_entered()
        with trio.fail_after(STUCK / 2):
            await ind.flushed(timeout=0.2)  # the write is still stuck: answered after the bound anyway
        assert not gate.opened.is_set()
        gate.opened.set()
        nursery.cancel_scope.cancel()


async def test_the_stopped_state_written_after_the_writer_is_gone_is_the_last(tmp_path: Path) -> None:
    ind = Indicator(tmp_path / "route", tmp_path / "route.json", heartbeat=30.0)
    gate, real = Gate(), ind._write_files

    def write_files(current: dict[str, Any], durable: bool) -> None:
        if current["state"] == api.CONNECTED:
            gate.hold()
        real(current, durable)

    ind._write_files = write_files  # type: ignore[method-assign]
    writer_gone: list[bool] = []
    seen: list[bool] = []

    async def open_gate() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the writer's nursery is waiting for the stuck write
        seen.append(bool(writer_gone))
        gate.opened.set()

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ind.run)
            ind.publish(summarize([{"url": "ws://a", "state": api.CONNECTED, "route": LAN, "since": 1.0}]),
                        1_800_000_000.0)
            await gate.wait_entered()
            outer.start_soon(open_gate)
            nursery.cancel_scope.cancel()  # the agent stops while that write is stuck
        writer_gone.append(True)
    assert seen == [False]  # the writer task ended only once its write had landed, never abandoning it
    ind.write_stopped(1_800_000_100.0)
    assert json.loads(ind.json_file.read_text())["state"] == api.STOPPED
    assert ind.route_file.read_text().split()[1] == api.OFFLINE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watch uses inotify; elsewhere heartbeats always refresh")
async def test_under_the_file_watch_an_idle_heartbeat_looks_at_the_disk_only_after_a_change(tmp_path: Path) -> None:
    service = _service(tmp_path)
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)  # creates the directory the three files live in
    assert service.stale()  # no watch: every heartbeat refreshes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.watch)
        with trio.fail_after(STUCK):
            while service.stale():  # until every watch is armed and a refresh has looked after that
                await service.refresh()
        assert service.host_policy(URL).access_mode == policy.TRUSTED
        await trio.testing.wait_all_tasks_blocked()
        assert not service.stale()  # idle: no refresh, no thread hop
        policy.set_mode(service.policy_path, URL, policy.ASK)  # another client lowers it
        with trio.fail_after(STUCK):
            while not service.stale():
                await trio.sleep(0.01)  # the watch's settle time (real inotify events)
        await service.refresh()
        assert service.host_policy(URL).access_mode == policy.ASK and not service.stale()
        nursery.cancel_scope.cancel()
    assert service.stale()  # the watch ended: heartbeats refresh again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watch uses inotify; elsewhere every call refreshes")
async def test_a_call_skips_the_refresh_hop_only_while_no_event_names_a_watched_file(tmp_path: Path) -> None:
    """A call's refresh costs a worker-thread hop (~0.2 ms) only when inotify has something about the
    files: another file written in the same directory (the audit log, each call) does not count, and
    an edit made just before the call is seen by that very call (the kernel queued its event within
    the write), before the watch itself has looked."""
    service = _service(tmp_path)
    policy.set_mode(service.policy_path, URL, policy.TRUSTED)
    hops = []
    real = service.run_sync

    async def counting(fn: Any, *args: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args)

    service.run_sync = counting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.watch)
        with trio.fail_after(STUCK):
            while service.stale():  # until every watch is armed and a refresh has looked after that
                await service.refresh()
        await trio.testing.wait_all_tasks_blocked()
        hops.clear()
        await service.refresh()
        (service.policy_path.parent / "desktop-audit.jsonl").write_text("{}\n")  # a neighbour, as each call writes
        await service.refresh()
        assert hops == []  # nothing about the files: no thread hop
        policy.set_mode(service.policy_path, URL, policy.ASK)  # another client lowers it, just now
        await service.refresh()  # no wait for the watch's settle time
        assert len(hops) == 1 and service.host_policy(URL).access_mode == policy.ASK
        nursery.cancel_scope.cancel()
