"""Jobs and detached spawns: real processes, state and logs on disk, readable after the agent is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from toolwait import gone, line_of, until

from hermes_relay.agent.desktop.tools import jobs
from hermes_relay.core.desktop import ToolError


async def finished(ctx, job_id: str, timeout: float = 10.0) -> dict:
    async def done():
        status = await jobs.desktop_job_status({"job_id": job_id}, ctx)
        return status if status["state"] != "running" else None

    return await until(done, timeout)


async def test_job_runs_with_stdin_and_splits_its_streams(ctx):
    started = await jobs.desktop_job_start(
        {"command": "echo out; echo err >&2; cat; exit 4", "stdin": "fed\n", "job_id": "build-1"}, ctx
    )
    job_dir = ctx.home / "desktop-jobs" / "build-1"
    assert started["job_id"] == "build-1" and started["shell"] == "bash"
    assert started["log_paths"] == {"stdout": str(job_dir / "stdout.log"), "stderr": str(job_dir / "stderr.log")}
    assert started["cwd"] == str(ctx.cwd) and isinstance(started["pid"], int)
    status = await finished(ctx, "build-1")
    assert status["state"] == "failed" and status["exit_code"] == 4
    assert status["had_stdin"] is True and "fed" not in json.dumps(status)
    logs = await jobs.desktop_job_logs({"job_id": "build-1"}, ctx)
    assert logs["stdout"]["content"] == "out\nfed\n"
    assert logs["stderr"]["content"] == "err\n"
    assert logs["exit_code"] == 4 and logs["state"] == "failed"


async def test_a_job_survives_the_agent_that_started_it(ctx, tmp_path):
    script = (
        "import json, math, sys, trio\n"
        "from pathlib import Path\n"
        "from hermes_relay.core.desktop import ToolContext\n"
        "from hermes_relay.agent.desktop.tools.jobs import desktop_job_start\n"
        "ctx = ToolContext(home=Path(sys.argv[1]), cwd=Path(sys.argv[2]), deadline=math.inf)\n"
        "args = {'command': 'read go < go.fifo; echo finished; exit 0', 'job_id': 'outlives'}\n"
        "print(json.dumps(trio.run(desktop_job_start, args, ctx)))\n"
    )
    subprocess.run(["mkfifo", str(ctx.cwd / "go.fifo")], check=True)
    agent = await trio.run_process(
        [sys.executable, "-c", script, str(ctx.home), str(ctx.cwd)], capture_stdout=True, check=True
    )
    started = json.loads(agent.stdout)
    assert (await jobs.desktop_job_status({"job_id": "outlives"}, ctx))["state"] == "running"
    await trio.to_thread.run_sync((ctx.cwd / "go.fifo").write_text, "go\n")
    status = await finished(ctx, "outlives")
    assert status["state"] == "exited" and status["exit_code"] == 0 and status["pid"] == started["pid"]
    logs = await jobs.desktop_job_logs({"job_id": "outlives", "stream": "stdout"}, ctx)
    assert logs["stdout"]["content"] == "finished\n" and "stderr" not in logs


async def test_cancel_terminates_then_reports_killed(ctx):
    started = await jobs.desktop_job_start({"command": "sleep 30"}, ctx)
    result = await jobs.desktop_job_cancel({"job_id": started["job_id"]}, ctx)
    assert result == {"job_id": started["job_id"], "ok": True, "signaled": "TERM", "already_exited": False}
    status = await finished(ctx, started["job_id"])
    assert status["state"] == "killed" and status["killed_by"] == "user" and status["signal"] == "SIGTERM"
    again = await jobs.desktop_job_cancel({"job_id": started["job_id"]}, ctx)
    assert again == {"job_id": started["job_id"], "ok": False, "signaled": None, "already_exited": True}


async def test_force_cancel_kills_the_whole_group(ctx):
    pids = ctx.cwd / "pids"
    started = await jobs.desktop_job_start({"command": f"trap '' TERM; sleep 30 & echo $! > {pids}; wait"}, ctx)
    child = int(await line_of(pids))
    result = await jobs.desktop_job_cancel({"job_id": started["job_id"], "force": True}, ctx)
    assert result["signaled"] == "KILL"
    status = await finished(ctx, started["job_id"])
    assert status["state"] == "killed" and status["signal"] == "SIGKILL"
    await until(lambda: gone(child), 5)


async def test_spawn_detached_writes_one_combined_log_with_env(ctx):
    spawned = await jobs.desktop_spawn_detached(
        {"command": 'echo "$GREETING"; echo oops >&2', "env": {"GREETING": "hi"}, "job_id": "bg"}, ctx
    )
    log = ctx.home / "desktop-jobs" / "bg" / "combined.log"
    assert spawned["detached"] is True and spawned["log_path"] == str(log)
    assert set(spawned) == {"pid", "job_id", "log_path", "started_at_ms", "command", "cwd", "shell", "detached"}
    status = await finished(ctx, "bg")
    assert status["state"] == "exited" and status["env_keys"] == ["GREETING"]
    assert sorted(log.read_text().split()) == ["hi", "oops"]
    logs = await jobs.desktop_job_logs({"job_id": "bg"}, ctx)
    assert logs["combined"] is True and sorted(logs["stdout"]["content"].split()) == ["hi", "oops"]


async def test_spawn_detached_log_dir(ctx, tmp_path):
    spawned = await jobs.desktop_spawn_detached({"command": "echo there", "log_dir": str(tmp_path / "logs")}, ctx)
    assert spawned["log_path"] == str(tmp_path / "logs" / "combined.log")
    await finished(ctx, spawned["job_id"])
    assert (tmp_path / "logs" / "combined.log").read_text() == "there\n"


async def test_logs_offsets_limits_and_tail(ctx):
    started = await jobs.desktop_job_start({"command": "printf 0123456789"}, ctx)
    job_id = started["job_id"]
    await finished(ctx, job_id)

    async def window(**kw):
        return (await jobs.desktop_job_logs({"job_id": job_id, "stream": "stdout", **kw}, ctx))["stdout"]

    assert (await window()) == {"content": "0123456789", "total_bytes": 10, "truncated": False, "offset": 10, "start": 0}
    tail = await window(limit=3)
    assert tail["content"] == "789" and tail["truncated"] is False and (tail["start"], tail["offset"]) == (7, 10)
    page = await window(offset=2, limit=4)
    assert page["content"] == "2345" and page["offset"] == 6 and page["truncated"] is True
    assert (await window(offset=-4))["content"] == "6789"
    assert (await window(offset=50))["content"] == ""


async def test_list_newest_first_with_filters(ctx):
    first = await jobs.desktop_job_start({"command": "true", "job_id": "one"}, ctx)
    await finished(ctx, "one")
    await until(lambda: int(time.time() * 1000) > first["started_at_ms"])
    second = await jobs.desktop_job_start({"command": "sleep 30", "job_id": "two"}, ctx)
    listed = await jobs.desktop_job_list({}, ctx)
    assert [j["job_id"] for j in listed["jobs"]] == ["two", "one"]
    assert listed["count"] == 2 and listed["truncated"] is False
    running = await jobs.desktop_job_list({"state": "running"}, ctx)
    assert [j["job_id"] for j in running["jobs"]] == ["two"]
    recent = await jobs.desktop_job_list({"since_ms": second["started_at_ms"]}, ctx)
    assert [j["job_id"] for j in recent["jobs"]] == ["two"]
    limited = await jobs.desktop_job_list({"limit": 1}, ctx)
    assert limited["count"] == 1 and limited["truncated"] is True
    await jobs.desktop_job_cancel({"job_id": "two", "force": True}, ctx)
    await finished(ctx, "two")


async def test_a_dead_pid_without_a_recorded_end_is_unknown(ctx):
    proc = subprocess.Popen(["true"])
    proc.wait()
    job_dir = ctx.home / "desktop-jobs" / "orphan"
    job_dir.mkdir(parents=True)
    meta = {"job_id": "orphan", "command": "x", "pid": proc.pid, "started_at_ms": 1, "log_paths": {}}
    (job_dir / "meta.json").write_text(json.dumps(meta))
    assert (await jobs.desktop_job_status({"job_id": "orphan"}, ctx))["state"] == "unknown"
    with pytest.raises(ToolError, match="not started by this agent"):
        await jobs.desktop_job_cancel({"job_id": "orphan"}, ctx)


async def test_a_command_that_cannot_start_fails_clearly(ctx, tmp_path):
    with pytest.raises(ToolError, match="does not exist"):
        await jobs.desktop_job_start({"command": "true", "cwd": str(tmp_path / "gone")}, ctx)


@pytest.mark.parametrize("bad", ["../escape", "a/b", "x" * 97, "dot.dot", "sp ace", "..", "/abs"])
async def test_job_ids_must_be_path_safe(ctx, bad):
    with pytest.raises(ToolError, match="job_id"):
        await jobs.desktop_job_status({"job_id": bad}, ctx)
    with pytest.raises(ToolError, match="job_id"):
        await jobs.desktop_job_start({"command": "true", "job_id": bad}, ctx)
    assert not (ctx.home / "escape").exists()


async def test_unknown_empty_and_duplicate_job_ids(ctx):
    with pytest.raises(ToolError, match='"job_id" must not be empty'):
        await jobs.desktop_job_status({"job_id": ""}, ctx)
    generated = await jobs.desktop_job_start({"command": "true", "job_id": ""}, ctx)
    assert jobs.JOB_ID.match(generated["job_id"])
    await finished(ctx, generated["job_id"])
    with pytest.raises(ToolError, match="unknown job_id: nope"):
        await jobs.desktop_job_logs({"job_id": "nope"}, ctx)
    await jobs.desktop_job_start({"command": "true", "job_id": "dup"}, ctx)
    with pytest.raises(ToolError, match="already used"):
        await jobs.desktop_job_start({"command": "true", "job_id": "dup"}, ctx)
    await finished(ctx, "dup")


@pytest.mark.parametrize(
    "tool, args, message",
    [
        (jobs.desktop_job_start, {}, 'missing required argument "command"'),
        (jobs.desktop_job_start, {"command": "true", "env": ["A=1"]}, '"env" must be an object'),
        (jobs.desktop_job_start, {"command": "true", "env": {"A": 1}}, "mapped to a string"),
        (jobs.desktop_spawn_detached, {}, 'missing required argument "command"'),
        (jobs.desktop_spawn_detached, {"command": "true", "log_dir": 5}, '"log_dir" must be a string'),
        (jobs.desktop_job_status, {}, 'missing required argument "job_id"'),
        (jobs.desktop_job_logs, {"job_id": "x", "stream": "all"}, "must be one of both, stdout, stderr"),
        (jobs.desktop_job_logs, {"job_id": "x", "limit": 0}, '"limit" must be at least 1'),
        (jobs.desktop_job_cancel, {"job_id": "x", "force": "yes"}, '"force" must be true or false'),
        (jobs.desktop_job_list, {"state": "zombie"}, "must be one of any, running"),
        (jobs.desktop_job_list, {"since_ms": -1}, '"since_ms" must be at least 0'),
    ],
)
async def test_bad_arguments_are_named(ctx, tool, args, message):
    with pytest.raises(ToolError, match=message):
        await tool(args, ctx)
    assert not any(Path(ctx.home / "desktop-jobs").glob("*/meta.json"))


async def test_list_cuts_long_commands_but_status_keeps_them(ctx):
    command = "true " + "x" * 3000
    await jobs.desktop_job_start({"command": command, "job_id": "long"}, ctx)
    status = await finished(ctx, "long")
    assert status["command"] == command
    (entry,) = (await jobs.desktop_job_list({}, ctx))["jobs"]
    assert len(entry["command"]) == 2000 and entry["command_truncated"] is True


async def test_a_job_ended_by_a_signal_without_a_name_is_still_recorded(ctx):
    import signal

    unnamed = next(n for n in range(signal.SIGRTMIN + 1, signal.SIGRTMAX) if n not in {s.value for s in signal.Signals})
    started = await jobs.desktop_job_start({"command": f"kill -{unnamed} $$"}, ctx)
    status = await finished(ctx, started["job_id"])
    assert status["state"] == "killed" and status["signal"] == str(unnamed)
