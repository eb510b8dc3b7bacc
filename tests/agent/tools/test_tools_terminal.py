"""desktop_terminal with real shells: bounded output, timeouts and cancellation kill the whole tree."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import replace

import psutil
import pytest
import trio
from toolwait import gone, line_of, until, wait_gone

from hermes_relay.agent.desktop.tools._proc import KILL_GRACE
from hermes_relay.agent.desktop.tools.terminal import MAX_TIMEOUT, desktop_terminal, timeout_seconds
from hermes_relay.core.desktop import ToolError


async def test_output_exit_code_and_duration(ctx):
    result = await desktop_terminal({"command": "echo out; echo err >&2; exit 3"}, ctx)
    assert result["stdout"] == "out\n"
    assert result["stderr"] == "err\n"
    assert result["exit_code"] == 3
    assert isinstance(result["duration_ms"], int) and result["duration_ms"] >= 0
    assert result["truncated"] is False
    assert (result["stdout_bytes"], result["stderr_bytes"]) == (4, 4)


async def test_runs_in_bash_in_the_given_cwd_with_stdin_closed(ctx):
    (ctx.cwd / "sub").mkdir()
    result = await desktop_terminal({"command": 'pwd; echo "${BASH_VERSION:+bash}"; cat', "cwd": "sub"}, ctx)
    assert result["stdout"] == f"{ctx.cwd / 'sub'}\nbash\n"
    assert result["shell"] == "bash"
    assert result["exit_code"] == 0


async def test_a_nonexistent_cwd_is_an_error(ctx):
    with pytest.raises(ToolError, match="does not exist"):
        await desktop_terminal({"command": "true", "cwd": "missing"}, ctx)


async def test_nine_megabytes_of_output_are_bounded_and_counted(ctx):
    small = replace(ctx, max_output=1 << 20)
    command = "python3 -c \"import sys; sys.stdout.write('x' * 9_000_000); sys.stderr.write('e' * 10)\""
    result = await desktop_terminal({"command": command}, small)
    assert len(result["stdout"]) == 1 << 20
    assert result["stdout_bytes"] == 9_000_000
    assert result["stdout_truncated"] is True and result["truncated"] is True
    assert result["stderr"] == "e" * 10 and result["stderr_truncated"] is False
    assert result["exit_code"] == 0


async def test_the_own_timeout_kills_the_tree_and_names_the_job_api(ctx):
    pids = ctx.cwd / "pids"
    command = f"sleep 30 & echo $$ $! > {pids}; wait"
    with pytest.raises(ToolError, match=r"timed out after 300ms.*desktop_job_start"):
        await desktop_terminal({"command": command, "timeout_ms": 300}, ctx)
    for pid in map(int, (await line_of(pids)).split()):
        assert gone(pid), pid


async def test_cancellation_kills_the_tree_including_a_process_that_left_the_group(ctx):
    pids = ctx.cwd / "pids"
    command = f"sleep 30 & setsid sleep 31 & echo $$ $! > {pids}; wait"
    with trio.fail_after(5):  # a hang guard: the call ends as soon as it is cancelled
        async with trio.open_nursery() as nursery:
            nursery.start_soon(desktop_terminal, {"command": command}, ctx)
            text = await line_of(pids)
            nursery.cancel_scope.cancel()
    shell, setsid_child = map(int, text.split())
    assert gone(shell)
    assert gone(setsid_child)


async def test_processes_left_behind_by_the_shell_are_killed(ctx):
    result = await desktop_terminal({"command": "sleep 30 & echo $!"}, ctx)
    assert result["exit_code"] == 0
    assert await wait_gone(int(result["stdout"]))


async def test_a_signalled_command_reports_the_signal(ctx):
    result = await desktop_terminal({"command": "kill -9 $$"}, ctx)
    assert result["exit_code"] is None and result["signal"] == "SIGKILL"


def test_timeout_defaults_wins_and_clamps():
    assert timeout_seconds({}) == 30.0
    assert timeout_seconds({"timeout": 2}) == 2.0
    assert timeout_seconds({"timeout": 2, "timeout_ms": 500}) == 0.5
    assert timeout_seconds({"timeout": 10_000}) == MAX_TIMEOUT
    with pytest.raises(ToolError, match="more than 0"):
        timeout_seconds({"timeout": 0})
    with pytest.raises(ToolError, match='"timeout" must be a number'):
        timeout_seconds({"timeout": "5"})


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, 'missing required argument "command"'),
        ({"command": ["ls"]}, '"command" must be a string, got an array'),
        ({"command": "true", "cwd": 1}, '"cwd" must be a string'),
        ({"command": "true", "timeout_ms": -5}, '"timeout_ms" must be at least 0'),
    ],
)
async def test_bad_arguments_are_named(ctx, args, message):
    with pytest.raises(ToolError, match=message):
        await desktop_terminal(args, ctx)


async def test_the_timeout_stops_short_of_the_call_deadline(ctx):
    soon = replace(ctx, deadline=trio.current_time() + 0.8)
    with trio.fail_after(5):
        with pytest.raises(ToolError, match="desktop_job_start"):
            await desktop_terminal({"command": "sleep 30"}, soon)
    assert trio.current_time() < soon.deadline


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace(ctx):
    pids = ctx.cwd / "pids"
    lives = 30  # seconds the child would run on if nobody killed it
    script = (
        "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}}\\n'); time.sleep({lives})"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(desktop_terminal, {"command": f"{sys.executable} -c \"{script}\""}, ctx)
        pid = int(await line_of(pids))
        cancelled_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert gone(pid)
    waited = trio.current_time() - cancelled_at
    # Never before the grace (a timeout cannot fire early); and killed, not outlived: a child left to
    # run would hold the call for its 30 s, so half of that is a bound no busy machine reaches.
    assert KILL_GRACE <= waited < lives / 2


def survivors(marker: str) -> list[int]:
    """Processes (not zombies) whose argv mentions ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in arg for arg in proc.info["cmdline"] or ()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def detaching(marker: str) -> str:
    """Ways of leaving a process behind with the output redirected, each running ``sleep MARKER``; the last
    one leaves both the process group and the tree (an orphan in its own session)."""
    return (f"nohup sleep {marker} >/dev/null 2>&1 & setsid sleep {marker} >/dev/null 2>&1 & "
            f"( sleep {marker} & ) >/dev/null 2>&1; ( setsid sleep {marker} & ) >/dev/null 2>&1; echo started")


@pytest.fixture
def marker() -> str:
    return f"300.{os.getpid()}{secrets.randbelow(10**6):06d}"  # a unique duration, found in argv


async def test_nothing_outlives_a_call_nohup_setsid_or_a_subshell(ctx, marker):
    result = await desktop_terminal({"command": detaching(marker)}, ctx)
    assert result["stdout"] == "started\n" and result["exit_code"] == 0
    assert survivors(marker) == []


async def test_nothing_outlives_a_timed_out_call(ctx, marker):
    with pytest.raises(ToolError, match="timed out"):
        await desktop_terminal({"command": detaching(marker) + "; sleep 30", "timeout_ms": 500}, ctx)
    assert survivors(marker) == []


async def test_nothing_outlives_a_cancelled_call(ctx, marker):
    flag = ctx.cwd / "flag"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(desktop_terminal, {"command": f"{detaching(marker)}; echo go > {flag}; sleep 30"}, ctx)
        await line_of(flag)
        await until(lambda: len(survivors(marker)) == 4)
        nursery.cancel_scope.cancel()
    assert survivors(marker) == []


async def test_late_output_of_a_background_process_is_still_read(ctx):
    result = await desktop_terminal({"command": "(sleep 0.1; echo late) & echo early"}, ctx)
    assert result["stdout"] == "early\nlate\n"


async def test_a_reaper_killed_from_outside_is_a_clear_error(ctx):
    pids = ctx.cwd / "pids"
    failure: list[BaseException] = []
    answered = trio.Event()

    async def call() -> None:
        try:
            await desktop_terminal({"command": f"echo $$ > {pids}; exec sleep 30"}, ctx)
        except ToolError as exc:
            failure.append(exc)
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        shell = psutil.Process(int(await line_of(pids)))
        reaper = psutil.Process(shell.ppid())
        reaper.kill()
        with trio.fail_after(10):
            await answered.wait()
    shell.kill()  # orphaned when its reaper died: ours to clean up here
    assert "ended unexpectedly" in str(failure[0])  # killed before or after it said the command started
