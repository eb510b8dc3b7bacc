"""Blocking I/O cannot starve the agent: FIFOs and devices never block a tool thread, tool threads
draw from their own limiter (full: "busy"), and a line without end is searched in bounded memory."""

from __future__ import annotations

import os
import re
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from hermes_relay.agent.desktop.tools import _thread, search
from hermes_relay.agent.desktop.tools.files import desktop_checksum, desktop_read_file
from hermes_relay.agent.desktop.tools.search import desktop_search_files
from hermes_relay.core.confine import UNCONFINED
from hermes_relay.core.desktop import ToolError

HANG_GUARD = 20.0  # seconds; only a hung call reaches it (a loaded machine takes well under one)


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
        # A hang guard, not a time budget: before the fix a search stuck in open() never ended.
        with trio.fail_after(HANG_GUARD):
            results.append(await desktop_search_files({"pattern": "needle", "content": True, "cwd": "tree"}, plain))

    searches = _thread.MAX_TOOL_THREADS + 1  # more than the tool threads (each search is now its own process)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(searches):
                nursery.start_soon(search_once)
        assert _thread.limiter().inner.borrowed_tokens == 0  # no tool thread is left stuck in the FIFO
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        with trio.fail_after(HANG_GUARD):
            assert await desktop_read_file({"path": "readme.txt"}, ctx) == "fine"
            assert await trio.to_thread.run_sync(lambda: 42) == 42
        assert len(results) == searches
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
        with trio.fail_after(HANG_GUARD):
            with pytest.raises(ToolError, match="not a regular file"):
                await desktop_read_file({"path": str(target)}, ctx)
            with pytest.raises(ToolError, match="not a regular file"):
                await desktop_checksum({"path": str(target)}, ctx)
    finally:
        if make == "fifo":
            _release_readers(target)


async def test_a_full_tool_limiter_answers_busy_and_the_agent_keeps_its_threads(autojump_clock: trio.abc.Clock) -> None:
    release = threading.Event()

    def stuck(stop: threading.Event) -> None:
        release.wait(30)  # a thread in a system call that does not come back (a hung mount, a FIFO)

    async def abandoned() -> None:
        with trio.move_on_after(0.3):  # virtual seconds: the caller gives up, its thread stays stuck
            await _thread.run(stuck)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(_thread.MAX_TOOL_THREADS):
                nursery.start_soon(abandoned)
        assert _thread.limiter().inner.borrowed_tokens == _thread.MAX_TOOL_THREADS  # every tool thread is stuck
        start = trio.current_time()
        with pytest.raises(ToolError, match="busy: all 16 tool threads are still working"):
            await _thread.run(lambda stop: 1)
        assert trio.current_time() - start == pytest.approx(_thread.BUSY_WAIT)  # neither at once nor later
        # The agent's own threads draw from trio's default limiter, which the stuck tool threads never touched.
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
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
    try:  # the walk the search's child process runs, measured here in this process
        matches, _ = search.content_search(threading.Event(), UNCONFINED, ctx.cwd, re.compile(b"needle"), 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(matches) == [str(edge), str(big)]
    assert peak < 6 << 20
    result = await desktop_search_files({"pattern": "needle", "content": True}, _no_rg(ctx, tmp_path))
    assert sorted(result["matches"]) == sorted(matches)


async def test_two_hosts_with_stuck_calls_leave_a_third_host_its_share(autojump_clock: trio.abc.Clock) -> None:
    # Before, two relays with every call stuck held 8 + 8 = all 16 tool threads: each call of a third relay
    # answered "busy" (a per-host share bounded one host, not a coalition).
    release = threading.Event()

    def stuck(stop: threading.Event) -> None:
        release.wait(30)

    async def hostile_call(host: str) -> None:
        _thread.HOST.set(host)
        with trio.move_on_after(0.3):  # its caller gives up; the thread stays stuck, holding its token
            await _thread.run(stuck)

    try:
        async with trio.open_nursery() as nursery:
            for host in ("wss://one.example", "wss://two.example"):
                for _ in range(_thread.MAX_TOOL_THREADS):
                    nursery.start_soon(hostile_call, host)
        assert _thread.limiter().inner.borrowed_tokens == 2 * _thread.MAX_PER_HOST
        results: list[int] = []

        async def third_call() -> None:
            _thread.HOST.set("wss://third.example")
            results.append(await _thread.run(lambda stop: 7))

        async with trio.open_nursery() as nursery:  # its whole share, several at once
            for _ in range(_thread.MAX_PER_HOST):
                nursery.start_soon(third_call)
        assert results == [7] * _thread.MAX_PER_HOST
    finally:
        release.set()


def test_the_shared_limit_stops_growing_at_its_cap() -> None:
    async def main() -> None:
        for n in range(_thread.MAX_HOSTS_SERVED + 3):
            _thread.HOST.set(f"wss://host{n}.example")
            assert await _thread.run(lambda stop, n=n: n) == n
        assert _thread.limiter().inner.total_tokens == _thread.MAX_PER_HOST * _thread.MAX_HOSTS_SERVED

    trio.run(main)


async def test_one_host_with_stuck_calls_leaves_another_host_its_threads(autojump_clock: trio.abc.Clock) -> None:
    # Before, 16 slow calls of one relay (a hung mount, a huge tree) took every tool thread and each call
    # of every other relay answered "busy": one host could stop the desktop tools of all the others.
    release = threading.Event()

    def stuck(stop: threading.Event) -> None:
        release.wait(30)

    async def hostile_call() -> None:
        _thread.HOST.set("wss://hostile.example")
        with trio.move_on_after(0.3):  # its caller gives up; the thread stays stuck, holding its token
            await _thread.run(stuck)

    async def other_call() -> int:
        _thread.HOST.set("wss://other.example")
        return await _thread.run(lambda stop: 7)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(_thread.MAX_TOOL_THREADS):
                nursery.start_soon(hostile_call)
        assert _thread.limiter().inner.borrowed_tokens == _thread.MAX_PER_HOST  # its share, no more
        _thread.HOST.set("wss://hostile.example")
        with pytest.raises(ToolError, match="this relay host already has 8 tool threads working"):
            await _thread.run(lambda stop: 1)
        async with trio.open_nursery() as nursery:  # another host still has threads, several at once
            results: list[int] = []

            async def collect() -> None:
                results.append(await other_call())

            for _ in range(_thread.MAX_TOOL_THREADS - _thread.MAX_PER_HOST):
                nursery.start_soon(collect)
        assert results == [7] * (_thread.MAX_TOOL_THREADS - _thread.MAX_PER_HOST)
    finally:
        release.set()
