"""A hostile pattern cannot stop the agent: Python's ``re`` holds the GIL while it backtracks, so a search
pattern that backtracks for minutes in a tool thread stopped every task of the agent (other relays' calls,
heartbeats, the terminal) and ran on past its call's deadline. Globs are matched without backtracking;
content regexes run in a child process that the call kills at its deadline."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import psutil
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_relay.agent.desktop.tools import _glob, _thread, search
from hermes_relay.agent.desktop.tools.search import compile_glob, desktop_search_files

HANG_GUARD = 20.0  # seconds; only a broken test waits this long
MAX_STALL = 1.0  # seconds the event loop may go without running a task (a loaded machine stays far below it)


async def _stall_while(call) -> tuple[float, bool]:
    """Run ``call`` beside a ticker; the longest time the ticker could not run, and whether ``call`` ended."""
    longest = 0.0
    done = False

    async def ticker(cancel: trio.CancelScope) -> None:
        nonlocal longest
        last = trio.current_time()
        while not cancel.cancel_called:
            await trio.sleep(0.02)
            now = trio.current_time()
            longest, last = max(longest, now - last), now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker, nursery.cancel_scope)
        await call()
        done = True
        nursery.cancel_scope.cancel()
    return longest, done


def _children() -> list[str]:
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            out.append(" ".join(child.cmdline()))
        except psutil.Error:
            pass
    return [c for c in out if "_searchchild" in c]


async def test_a_backtracking_glob_never_stops_the_agent(ctx):
    (ctx.cwd / ("a" * 250)).write_text("x")
    found: list[dict] = []

    async def search() -> None:
        found.append(await desktop_search_files({"pattern": "**a**a**a**a**b"}, ctx))

    stall, _ = await _stall_while(search)
    assert found[0]["matches"] == []
    assert stall < MAX_STALL, f"the agent stopped for {stall:.1f} s"


async def test_a_backtracking_content_regex_can_be_ended_while_it_matches_and_leaves_nothing_running(ctx, tmp_path):
    # (a|a)+b over 27 a's: 2**27 ways to fail, minutes of re holding the GIL. In a tool thread nothing else
    # ran until it was done (the call then answered with its result, whatever its deadline); in its own
    # process the agent goes on, ends the call while the match runs, and the process goes with it.
    (ctx.cwd / "aaa.txt").write_text("a" * 27 + "\n")
    no_rg = replace(ctx, env={"PATH": str(tmp_path / "nowhere")})
    finished = []
    seen_running = False
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            async def search() -> None:
                finished.append(await desktop_search_files({"pattern": "(a|a)+b", "content": True}, no_rg))
                nursery.cancel_scope.cancel()

            nursery.start_soon(search)
            while not finished:  # the agent keeps running: it sees the search's process at work
                if _children():
                    seen_running = True
                    nursery.cancel_scope.cancel()  # the call's deadline, while the regex runs
                    break
                await trio.sleep(0.01)
    assert finished == [] and seen_running
    assert _children() == []  # nothing of it runs on


async def test_an_ordinary_content_search_in_its_child_finds_what_it_did(ctx, tmp_path):
    (ctx.cwd / "hit.txt").write_text("one\nneedle here\n")
    (ctx.cwd / "miss.txt").write_text("nothing\n")
    no_rg = replace(ctx, env={"PATH": str(tmp_path / "nowhere")}, deadline=math.inf)
    result = await desktop_search_files({"pattern": r"need\w+", "content": True}, no_rg)
    assert result["matches"] == [str(ctx.cwd / "hit.txt")] and result["impl"] == "python"
    assert _children() == []


@pytest.mark.parametrize("pattern, text, expected", [
    ("*.py", "a.py", True), ("*.py", "sub/a.py", False), ("**/a.py", "a.py", True), ("**/a.py", "x/y/a.py", True),
    ("**.py", "x/y/a.py", True), ("a?c", "abc", True), ("a?c", "a/c", False), ("a[1].py", "a[1].py", True),
    ("src/**/test_*.py", "src/test_x.py", True), ("src/**/test_*.py", "src/a/b/test_x.py", True),
    ("src/**/test_*.py", "src/a/b/x.py", False), ("**a**a**a**a**b", "a" * 4000, False), ("", "", True),
    ("a\\b", "a/b", True), ("*", "", True), ("?", "", False),
])
def test_globs_match_as_before(pattern, text, expected):
    assert compile_glob(pattern).match(text) is expected


async def test_search_processes_per_host_are_bounded_and_the_rest_wait(ctx, tmp_path, autojump_clock, monkeypatch):
    # Each content search is a Python process (about 30 MB): without a bound, one relay's 64 calls in flight
    # were 64 of them. A search over the bound waits for a turn; its call's deadline ends the wait.
    no_rg = replace(ctx, env={"PATH": str(tmp_path / "nowhere")})
    _thread.HOST.set("wss://hostile.example")
    host, _ = search._search_limiters("wss://hostile.example")
    tokens = [object() for _ in range(search.MAX_SEARCHES_PER_HOST)]
    for token in tokens:
        await host.acquire_on_behalf_of(token)
    started = []

    async def spawned(request: bytes) -> tuple[list[str], bool]:  # where the search process would start
        started.append(request)
        return [], False

    monkeypatch.setattr(search, "_child_search", spawned)
    finished = []
    with trio.move_on_after(5):  # virtual seconds: the call's deadline, while it waits for a turn
        finished.append(await desktop_search_files({"pattern": "x", "content": True}, no_rg))
    assert finished == [] and started == []
    for token in tokens[:1]:  # a turn comes free: the next search runs
        host.release_on_behalf_of(token)
    assert (await desktop_search_files({"pattern": "x", "content": True}, no_rg))["matches"] == []
    assert len(started) == 1
    tokens = tokens[1:]
    for token in tokens:
        host.release_on_behalf_of(token)


async def test_two_hosts_searching_leave_a_third_host_its_search_processes():
    # Before, two relays keeping 4 searches each in flight held all 8 search processes: a third relay's
    # searches waited out their deadlines.
    held = []
    for url in ("wss://one.example", "wss://two.example"):
        host, shared = search._search_limiters(url)
        for _ in range(search.MAX_SEARCHES_PER_HOST):
            token = object()
            host.acquire_on_behalf_of_nowait(token)
            shared.acquire_on_behalf_of_nowait(token)
            held.append(token)
    host, shared = search._search_limiters("wss://third.example")
    for _ in range(search.MAX_SEARCHES_PER_HOST):  # its whole share, at once
        token = object()
        host.acquire_on_behalf_of_nowait(token)
        shared.acquire_on_behalf_of_nowait(token)
    for n in range(search.SEARCH_HOSTS_SERVED + 2):
        search._search_limiters(f"wss://more{n}.example")
    assert shared.total_tokens == search.MAX_SEARCHES_PER_HOST * search.SEARCH_HOSTS_SERVED  # and no more


def _regex_of(pattern: str) -> re.Pattern[str]:
    """The regex the glob was translated to before (backtracking; fine for short texts)."""
    out, i, glob = [], 0, pattern.replace("\\", "/")
    while i < len(glob):
        if glob.startswith("**", i):
            i += 2
            if glob.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        c = glob[i]
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab*?/\\", max_size=8), st.lists(st.text(alphabet="ab/", max_size=10), max_size=6))
def test_the_glob_matches_exactly_what_its_regex_did(pattern, texts):
    glob = compile_glob(pattern)
    for text in texts * 2:  # twice: the remembered transitions answer as the computed ones did
        assert glob.match(text) is bool(_regex_of(pattern).match(text)), (pattern, text)


def test_a_glob_that_outgrows_its_memory_starts_over_and_still_matches(monkeypatch):
    monkeypatch.setattr(_glob, "_DFA_CACHE", 3)
    for pattern, text in [("**a**a**b", "aaxaab"), ("**a**a**b", "aaaa"), ("*/**/?.py", "x/y/z/a.py"), ("a*b*c", "abxbc")]:
        assert compile_glob(pattern).match(text) is bool(_regex_of(pattern).match(text)), (pattern, text)
