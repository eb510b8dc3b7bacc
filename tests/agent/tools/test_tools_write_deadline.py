"""A write whose call ended (its deadline, or its host lowered) while the data was on its way to the disk
replaces nothing: the caller was told the call was aborted, so the file must be as it was.

The slow disk is faked (``os.fsync`` blocks until the test lets it go): a real one cannot be made slow on
demand. Everything else is real: the tool, its worker thread, the rename it must not do."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from hermes_relay.agent.desktop.tools import _at
from hermes_relay.agent.desktop.tools.files import desktop_patch, desktop_write_file

HANG_GUARD = 20.0  # seconds; only a broken test waits this long


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch):
    """(entered, release, finished): the first fsync blocks until ``release``; ``finished`` is set when the
    worker renamed its temporary file over the target or removed it."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real_fsync, real_replace, real_unlink = os.fsync, _at.replace, _at.unlink

    def fsync(fd: int) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(HANG_GUARD)
        real_fsync(fd)

    def replace(*a, **k):
        try:
            return real_replace(*a, **k)
        finally:
            finished.set()

    def unlink(*a, **k):
        try:
            return real_unlink(*a, **k)
        finally:
            finished.set()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_at, "replace", replace)
    monkeypatch.setattr(_at, "unlink", unlink)
    return entered, release, finished


@pytest.mark.parametrize("tool", ["write", "patch"])
async def test_a_write_cut_by_its_deadline_during_the_disk_write_replaces_nothing(ctx, slow_disk, tool):
    entered, release, finished = slow_disk
    target: Path = ctx.cwd / "notes.txt"
    target.write_text("old\n")
    if tool == "write":
        call = desktop_write_file({"path": "notes.txt", "content": "new\n"}, ctx)
    else:
        call = desktop_patch({"path": "notes.txt", "patch": "@@ -1 +1 @@\n-old\n+new\n"}, ctx)
    ended = []
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            with trio.CancelScope() as scope:
                cancel_scopes.append(scope)
                ended.append(await call)

        cancel_scopes: list[trio.CancelScope] = []
        nursery.start_soon(run)
        assert await trio.to_thread.run_sync(entered.wait, HANG_GUARD)
        cancel_scopes[0].cancel()  # the deadline, while the data is on its way to the disk
    assert ended == []  # the caller was answered "aborted"
    release.set()
    assert await trio.to_thread.run_sync(finished.wait, HANG_GUARD)
    assert target.read_text() == "old\n"
    assert [p.name for p in ctx.cwd.iterdir()] == ["notes.txt"]  # and no temporary file is left
