"""agent/storewatch.py: a store replaced by another writer is noticed (real files, real clock, bounded)."""

from __future__ import annotations

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
