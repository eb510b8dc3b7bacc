"""Relays are isolated (issue 17 item 7): a host sees, reads and cancels only its own jobs, and no forged
meta.json (or record) aims a cancel at the agent, init or a process the agent's runner did not start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio
from toolctx import make_ctx
from toolwait import gone, line_of, until

from hermes_relay.agent.desktop.tools import _jobrecord, _jobrunner, _sandbox, jobs
from hermes_relay.core.confine import Confinement
from hermes_relay.core.desktop import ToolError

A = "wss://relay-a.example:8767"
B = "wss://relay-b.example:8767"


def host(tmp_path: Path, owner: str, **fields) -> object:
    return make_ctx(tmp_path, confinement=Confinement(owner=owner, roots=(tmp_path / "work",), **fields))


@pytest.fixture
def decoy():
    """A process the agent's runner did not start (a stand-in for any victim), in its own session."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL,
                            start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


async def running_job(ctx, job_id: str, secret: str = "s3cret") -> dict:
    started = await jobs.desktop_job_start({"command": f"echo {secret}; exec sleep 30", "job_id": job_id}, ctx)
    log = Path(started["log_paths"]["stdout"])
    assert await line_of(log) == secret
    return started


def forge_meta(ctx, job_id: str, **fields) -> None:
    job_dir = ctx.home / "desktop-jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    meta = {"job_id": job_id, "command": "forged", "started_at_ms": 1, **fields}
    (job_dir / "meta.json").write_text(json.dumps(meta))


async def test_relay_b_cannot_list_read_status_or_cancel_relay_a_job(tmp_path):
    a, b = host(tmp_path, A), host(tmp_path, B)
    started = await running_job(a, "build")
    assert (await jobs.desktop_job_list({}, b))["jobs"] == []
    for tool, args in [(jobs.desktop_job_status, {}), (jobs.desktop_job_logs, {}),
                       (jobs.desktop_job_cancel, {"force": True})]:
        with pytest.raises(ToolError) as refused:
            await tool({"job_id": "build", **args}, b)
        assert str(refused.value) == "unknown job_id: build (desktop_job_list shows the known jobs)"
    assert psutil.Process(started["pid"]).status() != psutil.STATUS_ZOMBIE
    # A itself, and a full-access host, still see and control it.
    assert [j["job_id"] for j in (await jobs.desktop_job_list({}, a))["jobs"]] == ["build"]
    assert (await jobs.desktop_job_logs({"job_id": "build"}, a))["stdout"]["content"] == "s3cret\n"
    full = make_ctx(tmp_path)
    assert [j["job_id"] for j in (await jobs.desktop_job_list({}, full))["jobs"]] == ["build"]
    assert (await jobs.desktop_job_cancel({"job_id": "build", "force": True}, a))["signaled"] == "KILL"
    await until(lambda: gone(started["pid"]))


async def test_the_owner_survives_a_route_change_and_is_not_in_meta_json(tmp_path):
    a = host(tmp_path, A)
    await running_job(a, "keep")
    meta = json.loads((a.home / "desktop-jobs" / "keep" / "meta.json").read_text())
    assert A not in json.dumps(meta)
    record = a.home / "hermes-relay-jobs" / "keep.json"
    assert json.loads(record.read_text())["owner"] == A and record.stat().st_mode & 0o777 == 0o600
    again = host(tmp_path, A)  # a new call after a failover: same owner URL, same jobs
    assert (await jobs.desktop_job_status({"job_id": "keep"}, again))["state"] == "running"
    await jobs.desktop_job_cancel({"job_id": "keep", "force": True}, again)


async def test_unowned_jobs_are_visible_only_with_full_access(tmp_path):
    forge_meta(make_ctx(tmp_path), "legacy", ended_at_ms=2, exit_code=0)
    full = make_ctx(tmp_path)
    await jobs.desktop_job_start({"command": "true", "job_id": "nobody"}, full)  # owner ""
    await until(lambda: _ended(full, "nobody"))
    for confinement in [Confinement(owner=A), Confinement(owner=A, kernel_commands=True), Confinement()]:
        ctx = make_ctx(tmp_path, confinement=confinement)
        assert (await jobs.desktop_job_list({}, ctx))["jobs"] == []
        for job_id in ("legacy", "nobody"):
            with pytest.raises(ToolError, match=f"unknown job_id: {job_id}"):
                await jobs.desktop_job_status({"job_id": job_id}, ctx)
            with pytest.raises(ToolError, match=f"unknown job_id: {job_id}"):
                await jobs.desktop_job_logs({"job_id": job_id}, ctx)
    listed = {j["job_id"]: j for j in (await jobs.desktop_job_list({}, full))["jobs"]}
    assert set(listed) == {"legacy", "nobody"} and listed["legacy"]["state"] == "exited"


async def test_a_forged_meta_json_cannot_aim_cancel_at_another_process(tmp_path, decoy):
    full = make_ctx(tmp_path)
    create = psutil.Process(decoy.pid).create_time()
    forge_meta(full, "forged", pid=decoy.pid, pid_create_time=create, runner_pid=decoy.pid)
    with pytest.raises(ToolError, match="not started by this agent"):
        await jobs.desktop_job_cancel({"job_id": "forged", "force": True}, full)
    assert decoy.poll() is None


async def test_a_rewritten_meta_json_neither_redirects_cancel_nor_logs(tmp_path, decoy):
    a = host(tmp_path, A)
    started = await running_job(a, "real")
    secret = tmp_path / "credentials"
    secret.write_text("token=hunter2\n")
    job_dir = a.home / "desktop-jobs" / "real"
    meta = json.loads((job_dir / "meta.json").read_text())
    meta.update(pid=decoy.pid, pid_create_time=psutil.Process(decoy.pid).create_time(), runner_pid=decoy.pid,
                log_paths={"stdout": str(secret), "stderr": str(secret)}, ended_at_ms=5, exit_code=0)
    (job_dir / "meta.json").write_text(json.dumps(meta))
    assert (await jobs.desktop_job_status({"job_id": "real"}, a))["state"] == "running"
    logs = await jobs.desktop_job_logs({"job_id": "real"}, a)
    assert logs["stdout"]["content"] == "s3cret\n" and "hunter2" not in json.dumps(logs)
    result = await jobs.desktop_job_cancel({"job_id": "real", "force": True}, a)
    assert result["signaled"] == "KILL"
    await until(lambda: gone(started["pid"]))
    assert decoy.poll() is None


def forge_record(ctx, job_id: str, pid: int) -> None:
    runner = psutil.Process(pid)
    (ctx.home / "desktop-jobs" / job_id).mkdir(parents=True)
    _jobrecord.save(ctx, {"job_id": job_id, "owner": A, "command": "x", "cwd": "/", "shell": "bash",
                          "started_at_ms": 1, "log_paths": {}, "detached": False, "pid": pid,
                          "pid_create_time": runner.create_time(), "runner_pid": runner.ppid(),
                          "runner_create_time": psutil.Process(runner.ppid()).create_time()})


@pytest.mark.parametrize("target", ["agent", "parent", "group member"])
async def test_even_a_forged_record_never_signals_the_agent_its_group_or_ancestors(tmp_path, target):
    a = host(tmp_path, A)
    member = None
    if target == "agent":
        pid = os.getpid()
    elif target == "parent":
        pid = os.getppid()
    else:
        member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)
        await until(lambda: psutil.Process(member.pid).cmdline()[-1:] == ["import time; time.sleep(60)"])
        pid = member.pid
    try:
        forge_record(a, "aimed", pid)
        with pytest.raises(ToolError, match="refusing to signal"):
            await jobs.desktop_job_cancel({"job_id": "aimed", "force": True}, a)
        if member is not None:
            assert member.poll() is None
    finally:
        if member is not None:
            member.kill()
            member.wait()


async def test_a_record_naming_init_signals_nothing(tmp_path):
    a = host(tmp_path, A)
    (a.home / "desktop-jobs" / "init").mkdir(parents=True)
    _jobrecord.save(a, {"job_id": "init", "owner": A, "command": "x", "cwd": "/", "shell": "bash",
                        "started_at_ms": 1, "log_paths": {}, "detached": False, "pid": 1,
                        "pid_create_time": psutil.Process(1).create_time()})
    result = await jobs.desktop_job_cancel({"job_id": "init", "force": True}, a)
    assert result == {"job_id": "init", "ok": False, "signaled": None, "already_exited": True}


@pytest.mark.parametrize("name", ["BASH_FUNC_echo%%", "LD_PRELOAD", "BASH_ENV", "ENV", "PATH", "GIT_SSH_COMMAND"])
@pytest.mark.parametrize("tool", [jobs.desktop_job_start, jobs.desktop_spawn_detached])
async def test_dangerous_environment_overrides_are_refused_before_anything_runs(ctx, tool, name):
    marker = ctx.cwd / "ran"
    args = {"command": f"echo hello > {marker}", "env": {name: f"() {{ touch {marker}; }}"}, "job_id": "env"}
    with pytest.raises(ToolError, match=f"refusing the environment override .*{name[:8]}"):
        await tool(args, ctx)
    assert not (ctx.home / "desktop-jobs" / "env").exists() and not marker.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc of the runner")
async def test_the_sandbox_wraps_what_the_runner_executes_and_the_runner_stays_clean(ctx, monkeypatch):
    seen = []

    def wrap(argv, confinement, cwd):
        seen.append((list(argv), confinement, cwd))
        return ["env", "HERMES_WRAPPED=yes", *argv]

    monkeypatch.setattr(_sandbox, "command_argv", wrap)
    a = host(ctx.home.parent, A)
    command = ('echo "$HERMES_WRAPPED $GREETING"; tr "\\0" " " < /proc/$PPID/cmdline; echo; '
               'tr "\\0" "\\n" < /proc/$PPID/environ | grep -c -e GREETING -e HERMES_WRAPPED')
    started = await jobs.desktop_job_start({"command": command, "env": {"GREETING": "hi"}}, a)
    status = await until(lambda: _ended(a, started["job_id"]))
    assert status["state"] == "failed" and status["exit_code"] == 1  # grep -c found nothing: exit 1
    out = (await jobs.desktop_job_logs({"job_id": started["job_id"], "stream": "stdout"}, a))["stdout"]["content"]
    wrapped, runner, count = out.splitlines()
    assert wrapped == "yes hi"
    assert "_jobrunner.py" in runner and "-I" in runner.split()
    assert count == "0"  # neither the override nor the sandbox's wrapping reached the runner itself
    ((argv, confinement, cwd),) = seen
    assert argv[-1] == command and confinement is a.confinement and cwd == str(a.cwd)
    spawned = await jobs.desktop_spawn_detached({"command": 'echo "$HERMES_WRAPPED"'}, a)
    await until(lambda: _ended(a, spawned["job_id"]))
    assert Path(spawned["log_path"]).read_text() == "yes\n" and len(seen) == 2


async def _ended(ctx, job_id: str):
    status = await jobs.desktop_job_status({"job_id": job_id}, ctx)
    return status if status["state"] != "running" else None


async def test_log_dir_is_refused_under_the_workspace_preset(tmp_path):
    ws = host(tmp_path, A, kernel_commands=True)
    with pytest.raises(ToolError, match='"log_dir" is not available under the workspace preset'):
        await jobs.desktop_spawn_detached({"command": "true", "log_dir": str(tmp_path / "logs")}, ws)
    assert not (tmp_path / "logs").exists()


async def test_a_planted_log_symlink_reads_as_empty(tmp_path):
    full = make_ctx(tmp_path)
    secret = tmp_path / "credentials"
    secret.write_text("token=hunter2\n")
    forge_meta(full, "linked", ended_at_ms=2, exit_code=0)
    (full.home / "desktop-jobs" / "linked" / "stdout.log").symlink_to(secret)
    logs = await jobs.desktop_job_logs({"job_id": "linked"}, full)
    assert logs["stdout"]["content"] == "" and "hunter2" not in json.dumps(logs)


async def test_job_readers_follow_files_and_cancel_follows_commands():
    caps = {spec.name: spec.capability for spec in jobs.TOOLS}
    assert caps == {"desktop_job_start": "commands", "desktop_spawn_detached": "commands",
                    "desktop_job_cancel": "commands", "desktop_job_status": "files", "desktop_job_logs": "files",
                    "desktop_job_list": "files"}


async def test_the_runner_never_reads_what_to_run_from_meta_json(tmp_path):
    """What to run comes over the runner's stdin; a meta.json naming another argv changes nothing."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    planted = tmp_path / "planted"
    (job_dir / "meta.json").write_text(json.dumps({
        "argv": ["touch", str(planted)], "cwd": str(tmp_path), "log_paths": {"combined": str(job_dir / "x.log")}}))
    spec = {"argv": ["echo", "spec"], "cwd": str(tmp_path), "env": {}, "stdin": False,
            "logs": {"combined": str(job_dir / "combined.log")}}
    runner = await trio.run_process([sys.executable, "-I", str(jobs.RUNNER), str(job_dir)],
                                    stdin=_jobrunner.encode_spec(spec), capture_stdout=True, check=False)
    reply = runner.stdout.decode()
    assert reply.startswith("ok "), reply
    await until(lambda: "ended_at_ms" in _jobrunner.read_meta(job_dir))
    assert (job_dir / "combined.log").read_text() == "spec\n" and not planted.exists()


async def test_a_job_whose_call_ended_while_it_was_being_prepared_is_never_made_nor_run(tmp_path, monkeypatch):
    """A hostile host gives up on (or outlasts the deadline of) a job start whose checks are still running
    in the tool thread (a slow mount): the abandoned thread makes no job folder, saves no record and the
    command never runs."""
    import threading

    from hermes_relay.agent.desktop.tools import _args

    ctx = host(tmp_path, A)
    (tmp_path / "work").mkdir(exist_ok=True)
    checking, release, finished = threading.Event(), threading.Event(), threading.Event()
    real_directory, real_prepare = _args.directory, jobs._prepare

    def slow_directory(*args, **kwargs):
        checking.set()
        release.wait(30)  # a hung mount, until the test lets it go
        return real_directory(*args, **kwargs)

    def prepare(*args, **kwargs):
        try:
            return real_prepare(*args, **kwargs)
        finally:
            finished.set()  # the abandoned thread is done, whatever it did

    monkeypatch.setattr(_args, "directory", slow_directory)
    monkeypatch.setattr(jobs, "_prepare", prepare)
    marker = tmp_path / "work" / "ran"
    with trio.CancelScope() as call:
        async def give_up() -> None:
            await trio.to_thread.run_sync(checking.wait, 30)
            call.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(give_up)
            await jobs.desktop_job_start({"command": f"touch {marker}", "job_id": "late", "cwd": str(tmp_path / "work")},
                                         ctx)
    assert call.cancelled_caught
    release.set()
    await trio.to_thread.run_sync(finished.wait, 30)
    assert not (_jobrecord.jobs_root(ctx) / "late").exists()
    assert _jobrecord.load(ctx, "late") is None
    assert not marker.exists()
