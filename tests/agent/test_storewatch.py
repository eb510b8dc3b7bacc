"""agent/storewatch.py: a store replaced by another writer is noticed (real files, real clock, bounded)."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from hermes_relay.agent.storewatch import StoreWatcher
from hermes_relay.core import fileio

BACKENDS = ["inotify", "poll"] if sys.platform.startswith("linux") else ["poll"]


async def _sees(watcher: StoreWatcher, change) -> None:  # type: ignore[no-untyped-def]
    seen = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, seen.set)
        await wait_all_tasks_blocked()
        change()
        with trio.fail_after(2):  # the promise: within 2 s
            await seen.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_atomic_replace_is_seen(tmp_path: Path, backend: str) -> None:
    store = tmp_path / "remote-sessions.json"
    store.write_text('{"version": 1, "sessions": {}}')
    watcher = StoreWatcher(store, use_inotify=backend == "inotify")
    await _sees(watcher, lambda: fileio.atomic_write(store, b'{"version": 1, "sessions": {"ws://x:1": {}}}'))
    assert watcher.backend == backend


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_removed_store_and_an_edit_in_place_are_seen(tmp_path: Path, backend: str) -> None:
    store = tmp_path / "remote-sessions.json"
    store.write_text("{}")
    await _sees(StoreWatcher(store, use_inotify=backend == "inotify"), store.unlink)
    store.write_text("{}")

    def edit() -> None:
        with open(store, "a") as f:  # by hand: same inode, new size
            f.write(" ")

    await _sees(StoreWatcher(store, use_inotify=backend == "inotify"), edit)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_a_symlinked_store_is_followed_to_its_target_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "sessions.json"
    target.write_text("{}")
    (tmp_path / "home").mkdir()
    store = tmp_path / "home" / "remote-sessions.json"
    os.symlink(target, store)
    watcher = StoreWatcher(store)
    await _sees(watcher, lambda: fileio.atomic_write(store, b'{"version": 1}'))  # replaces the target
    assert watcher.backend == "inotify"


async def test_a_store_directory_created_later_is_watched_by_polling(tmp_path: Path) -> None:
    store = tmp_path / "not-yet" / "remote-sessions.json"
    watcher = StoreWatcher(store)
    await _sees(watcher, lambda: fileio.atomic_write(store, b"{}"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_a_neighbour_written_in_the_directory_wakes_no_look(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The desktop audit log is appended beside the watched files on every call: its events are read and
    dropped, with no settle time and no stat; an event about the file itself is still looked at."""
    from hermes_relay.agent import storewatch

    store = tmp_path / "desktop-host-access.json"
    store.write_text("{}")
    looks: list[Path] = []
    real = storewatch.store_key

    def counting(path: Path) -> storewatch.Key:
        looks.append(path)
        return real(path)

    monkeypatch.setattr(storewatch, "store_key", counting)
    watcher = StoreWatcher(store)
    seen = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, seen.set)
        await wait_all_tasks_blocked()
        looks.clear()
        for _ in range(3):
            with open(tmp_path / "desktop-audit.jsonl", "a") as f:  # one O_APPEND write and close, as the audit
                f.write("{}\n")
            await wait_all_tasks_blocked(cushion=3 * storewatch.SETTLE)  # past any settle time
        assert looks == [] and watcher.quiet()
        fileio.atomic_write(store, b'{"hosts": {}}')
        with trio.fail_after(2):
            await seen.wait()
        assert looks == [store]
        nursery.cancel_scope.cancel()


def _policy_file_watcher(tmp_path: Path) -> tuple[Path, StoreWatcher, trio.Event]:
    """A policy file, a watcher of it (not started) and the event its ``run`` sets on a change."""
    store = tmp_path / "desktop-host-access.json"
    store.write_text("{}")
    return store, StoreWatcher(store), trio.Event()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_an_event_the_loop_read_keeps_the_file_not_quiet_until_it_looked(tmp_path: Path) -> None:
    """Between the loop reading an event about the file and its look (the settle time), ``quiet`` must
    not say the file is unchanged: a call then reads the file itself."""
    store, watcher, seen = _policy_file_watcher(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, seen.set)
        await wait_all_tasks_blocked()
        assert watcher.quiet()
        fileio.atomic_write(store, b'{"hosts": {}}')
        with trio.fail_after(2):
            while not watcher._pending:  # the loop took the event from the kernel's queue
                await trio.sleep(0.001)
        assert not seen.is_set() and not watcher.quiet()
        await seen.wait()
        nursery.cancel_scope.cancel()


class _Steps(trio.abc.Instrument):
    """The trio times at which the tasks named ``name`` took a step."""

    def __init__(self, name: str):
        self.name, self.times = name, set[float]()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.times.add(trio.current_time())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_under_inotify_idle_watches_look_together_once_a_minute(tmp_path: Path,
                                                                      autojump_clock: trio.abc.Clock) -> None:
    """Each safety poll ran every 10 s on its own: the agent's five watches (store, policy, roots, store again,
    names) woke an idle agent 30 times a minute. Now they look together, once a minute. An edit is still
    seen at once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    stores = [tmp_path / "a" / "remote-sessions.json", tmp_path / "b" / "desktop-host-access.json"]
    for store in stores:
        store.write_text("{}")
    watchers = [StoreWatcher(store) for store in stores]
    steps = _Steps("hermes_relay.agent.storewatch.StoreWatcher.run")
    seen = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchers[0].run, seen.set)
        await trio.sleep(7.5)  # the second starts out of step with the first
        nursery.start_soon(watchers[1].run, seen.set)
        await wait_all_tasks_blocked()
        assert [w.backend for w in watchers] == ["inotify", "inotify"]
        trio.lowlevel.add_instrument(steps)
        try:
            await trio.sleep(600)
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert 0 < len(steps.times) <= 11, sorted(steps.times)  # one wake-up a minute; it was 120
        fileio.atomic_write(stores[1], b'{"version": 1}')
        with trio.fail_after(2):
            await seen.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="statfs")
async def test_a_store_on_a_network_file_system_is_polled(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Another machine's write on NFS or SMB makes no inotify event here: such a directory is polled (the 2 s
    promise), not left to the safety poll. (The f_type of this test's own directory stands in for NFS's.)"""
    from hermes_relay.agent import storewatch

    probe = storewatch._Inotify()
    assert not probe.remote(str(tmp_path)) and not probe.remote("/")  # this test's file system is local
    buf = ctypes.create_string_buffer(512)
    assert probe._statfs(os.fsencode(str(tmp_path)), buf) == 0
    probe.close()
    monkeypatch.setattr(storewatch, "_REMOTE", frozenset({ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF}))
    store = tmp_path / "remote-sessions.json"
    store.write_text("{}")
    watcher = StoreWatcher(store)
    await _sees(watcher, lambda: fileio.atomic_write(store, b'{"version": 1}'))
    assert watcher.backend == "poll"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
async def test_an_event_quiet_took_from_the_loop_is_looked_at_at_once(tmp_path: Path) -> None:
    """``quiet`` (a call asking whether to skip its refresh) may read the event about the file before the
    loop does: the loop then never sees it, and looked only at its safety poll (a minute away)."""
    store, watcher, seen = _policy_file_watcher(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run, seen.set)
        await wait_all_tasks_blocked()
        fileio.atomic_write(store, b'{"hosts": {}}')
        assert not watcher.quiet()  # read here, with no checkpoint between: the loop had no chance
        with trio.fail_after(2):
            await seen.wait()
        nursery.cancel_scope.cancel()
