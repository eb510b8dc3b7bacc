"""The backend's reload: the store is read in a worker thread, and reloads never overlap (a request made
while one runs is covered by exactly one more run after it)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import trio
import trio.testing

from hermes_relay.agent.backend import AgentBackend
from hermes_relay.agent.config import AgentConfig

RELEASE_TIMEOUT = 10.0  # seconds a blocked read waits at most: a read on the loop fails the test, never hangs it


class BlockingReader:
    """A store read that blocks its thread until released, and records where and when it ran."""

    def __init__(self, *, block_first: int = 1):
        self.block_first = block_first
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[str] = []
        self.threads: list[threading.Thread] = []
        self.active = self.max_active = self.reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self.reads += 1
            n = self.reads
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.append(threading.current_thread())
            self.events.append(f"read{n}-start")
        if n <= self.block_first:
            self.entered.set()
            self.release.wait(RELEASE_TIMEOUT)
        with self._lock:
            self.active -= 1
            self.events.append(f"read{n}-end")
        return {}


def backend_for(tmp_path: Path) -> AgentBackend:
    env = {"HERMES_HOME": str(tmp_path / "home"), "HERMES_RELAY_RUNTIME_DIR": tempfile.mkdtemp(prefix="hr-")}
    return AgentBackend(AgentConfig.from_env(env, netwatch=False))


async def test_a_reload_reads_the_store_in_a_worker_thread_and_the_loop_keeps_running(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    reader = BlockingReader()
    backend.store.sessions = reader  # type: ignore[method-assign]
    result: list[int] = []
    async with trio.open_nursery() as nursery:
        await backend.attach(nursery)

        async def reload() -> None:
            result.append(await backend.reload())

        nursery.start_soon(reload)
        await trio.to_thread.run_sync(reader.entered.wait, RELEASE_TIMEOUT)
        # The read is blocked now, and the loop still runs: other tasks get scheduled, the IPC answers.
        for _ in range(10):
            await trio.sleep(0)
        assert backend.hello()["api_version"]
        assert result == []
        reader.release.set()
    assert result == [0]
    assert reader.threads and all(t is not threading.main_thread() for t in reader.threads)


async def test_reloads_never_overlap_and_those_asked_meanwhile_coalesce_into_one_more_run(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    reader = BlockingReader()
    backend.store.sessions = reader  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await backend.attach(nursery)

        async def reload(name: str) -> None:
            await backend.reload(wake_all=False)
            reader.events.append(f"{name}-done")

        nursery.start_soon(reload, "first")
        await trio.to_thread.run_sync(reader.entered.wait, RELEASE_TIMEOUT)
        for name in ("a", "b", "c"):  # asked while the first run reads: none may start a read of its own now
            nursery.start_soon(reload, name)
        await trio.testing.wait_all_tasks_blocked()
        assert reader.reads == 1
        reader.release.set()
    assert reader.max_active == 1
    assert reader.reads == 2  # the three requests made meanwhile: one more run, not three, not none
    events = reader.events
    assert events.index("read2-start") > events.index("read1-end")
    second_done = events.index("read2-end")
    assert all(events.index(f"{name}-done") > second_done for name in ("a", "b", "c"))


async def test_a_request_after_a_run_finished_runs_again(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    reader = BlockingReader(block_first=0)
    backend.store.sessions = reader  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await backend.attach(nursery)
        await backend.reload()
        await backend.reload()
        nursery.cancel_scope.cancel()
    assert reader.reads == 2
