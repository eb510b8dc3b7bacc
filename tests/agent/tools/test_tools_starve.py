"""Blocking I/O cannot starve the agent: FIFOs and devices never block a tool thread, tool threads
draw from their own limiter (full: "busy"), and a line without end is searched in bounded memory."""

from __future__ import annotations

import os
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from hermes_relay.agent.desktop.tools import _thread, search
from hermes_relay.agent.desktop.tools.files import desktop_checksum, desktop_read_file
from hermes_relay.agent.desktop.tools.search import desktop_search_files
from hermes_relay.core.desktop import ToolError


def _release_readers(fifo: Path) -> None:
    """Give any reader stuck in open() of ``fifo`` a writer, so it sees end of file and ends."""
    for _ in range(100):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return


def _no_rg(ctx, tmp_path):
    return replace(ctx, env={"PATH": str(tmp_path / "nowhere")})


async def test_fifo_content_searches_leave_read_file_and_the_default_limiter_working(ctx, tmp_path):
    tree = ctx.cwd / "tree"
    tree.mkdir()
    os.mkfifo(tree / "a.fifo")  # sorted before the hit: a search that opens it blocks before the hit
    (tree / "hit.txt").write_text("a needle\n")
    (ctx.cwd / "readme.txt").write_text("fine")
    plain = _no_rg(ctx, tmp_path)
    results: list[dict] = []

    async def search_once() -> None:
        with trio.move_on_after(2):  # before the fix: a search stuck in open() is abandoned here
            results.append(await desktop_search_files({"pattern": "needle", "content": True, "cwd": "tree"}, plain))

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(search_once)
        start = trio.current_time()
        with trio.fail_after(1):
            assert await desktop_read_file({"path": "readme.txt"}, ctx) == "fine"
            assert await trio.to_thread.run_sync(lambda: 42) == 42
        assert trio.current_time() - start < 1
        assert len(results) == 50
        assert all(r["matches"] == [str(tree / "hit.txt")] for r in results)
    finally:
        _release_readers(tree / "a.fifo")


@pytest.mark.parametrize("make", ["fifo", "device"])
async def test_read_and_checksum_refuse_what_is_not_a_regular_file_at_once(ctx, make):
    if make == "fifo":
        target = ctx.cwd / "pipe"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    try:
        with trio.fail_after(1):
            with pytest.raises(ToolError, match="not a regular file"):
                await desktop_read_file({"path": str(target)}, ctx)
            with pytest.raises(ToolError, match="not a regular file"):
                await desktop_checksum({"path": str(target)}, ctx)
    finally:
        if make == "fifo":
            _release_readers(target)


async def test_a_full_tool_limiter_answers_busy_and_the_agent_keeps_its_threads(monkeypatch):
    monkeypatch.setattr(_thread, "BUSY_WAIT", 0.2)
    release = threading.Event()

    def stuck(stop: threading.Event) -> None:
        release.wait(30)  # a thread in a system call that does not come back (a hung mount, a FIFO)

    async def abandoned() -> None:
        with trio.move_on_after(0.3):
            await _thread.run(stuck)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(_thread.MAX_TOOL_THREADS):
                nursery.start_soon(abandoned)
        start = trio.current_time()
        with pytest.raises(ToolError, match="busy: all 16 tool threads are still working"):
            await _thread.run(lambda stop: 1)
        assert 0.2 <= trio.current_time() - start < 1.5
        with trio.fail_after(1):
            assert await trio.to_thread.run_sync(lambda: 7) == 7
    finally:
        release.set()


async def test_a_line_without_end_is_searched_in_bounded_memory(ctx, tmp_path):
    big = ctx.cwd / "one-line.txt"
    with open(big, "wb") as f:
        f.write(b"a" * (12 << 20) + b"needle")
    edge = ctx.cwd / "edge.txt"  # the match straddles the first window's end
    edge.write_bytes(b"b" * (search.MAX_LINE - 3) + b"needle" + b"b" * 100)
    (ctx.cwd / "none.txt").write_bytes(b"c" * (3 << 20))
    tracemalloc.start()
    try:
        result = await desktop_search_files({"pattern": "needle", "content": True}, _no_rg(ctx, tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(result["matches"]) == [str(edge), str(big)]
    assert peak < 6 << 20
