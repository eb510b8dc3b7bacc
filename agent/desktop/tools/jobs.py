"""Long work that outlives a call: desktop_job_start/status/logs/cancel/list and desktop_spawn_detached.

Each job is a directory ``ctx.home/desktop-jobs/<job_id>/`` holding ``meta.json`` and its logs
(``stdout.log`` + ``stderr.log`` for jobs, ``combined.log`` for detached spawns). The agent starts a
detached runner (``_jobrunner``) that starts the command and records its end, so nothing about a job
lives only in the agent's memory: status, logs and cancel read the disk and probe the pid, and work
the same after the agent restarts or the relay link drops. Job ids are checked to be path-safe.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from hermes_relay.core.desktop import COMMANDS, FILES, ToolContext, ToolError, ToolSpec

from . import _args, _proc
from ._jobrunner import CANCELLED, META, read_meta, write_meta

JOBS_DIR = "desktop-jobs"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,96}\Z")
STATES = ("running", "exited", "killed", "failed", "unknown")
DEFAULT_LOG_LIMIT = 8192
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
LIST_COMMAND = 2000  # characters of each command kept by desktop_job_list, so a listing stays small
RUNNER_START = 10.0  # seconds for the runner to report the job's pid
STDIN_WRITE = 5.0  # seconds to hand ``stdin`` to the job
RUNNER = Path(__file__).with_name("_jobrunner.py")  # run as a script: the job inherits an untouched environment


def jobs_root(ctx: ToolContext) -> Path:
    return ctx.home / JOBS_DIR


def _job_id(args: dict[str, Any], *, generate: bool = False) -> str:
    value = _args.text(args, "job_id", default=None) if generate else _args.text(args, "job_id")
    if value is None:
        return secrets.token_hex(8)
    if not JOB_ID.match(value):
        raise ToolError('"job_id" must be 1-96 characters of letters, digits, "_" or "-"')
    return value


def _load(ctx: ToolContext, job_id: str) -> tuple[Path, dict[str, Any]]:
    job_dir = jobs_root(ctx) / job_id
    try:
        return job_dir, read_meta(job_dir)
    except FileNotFoundError:
        raise ToolError(f"unknown job_id: {job_id} (desktop_job_list shows the known jobs)") from None
    except (OSError, ValueError) as exc:
        raise ToolError(f"job {job_id} has an unreadable meta.json: {exc}") from exc


def _process(meta: dict[str, Any], key: str = "pid") -> psutil.Process | None:
    """The job's live process, or None; a recycled pid (other start time) counts as gone."""
    pid = meta.get(key)
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        started = meta.get("pid_create_time") if key == "pid" else None
        if started is not None and abs(proc.create_time() - started) > 0.01:
            return None
    except psutil.Error:
        return None
    return proc if _proc.alive(proc) else None


def job_state(job_dir: Path, meta: dict[str, Any]) -> str:
    if "ended_at_ms" in meta:
        if meta.get("error"):
            return "failed"
        if meta.get("killed_by") in ("user", "signal"):
            return "killed"
        return "exited" if meta.get("exit_code") == 0 else "failed"
    if _process(meta) is not None or _process(meta, "runner_pid") is not None:
        return "running"
    if (job_dir / CANCELLED).exists():
        return "killed"
    return "unknown"


def _public(job_dir: Path, meta: dict[str, Any], *, brief: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in meta.items() if k not in ("argv", "pid_create_time")}
    out["state"] = job_state(job_dir, meta)
    command = out.get("command")
    if brief and isinstance(command, str) and len(command) > LIST_COMMAND:
        out["command"] = command[:LIST_COMMAND]
        out["command_truncated"] = True
    return out


async def _launch(ctx: ToolContext, job_dir: Path, meta: dict[str, Any], env: dict[str, str], stdin: str | None) -> int:
    with open(job_dir / "runner.log", "ab") as runner_log:
        try:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-I", str(RUNNER), str(job_dir)],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=runner_log,
                cwd=str(job_dir),
                env=env,
                **_proc.session_kwargs(),
            )
        except OSError as exc:
            raise ToolError(f"could not start the job runner: {exc.strerror or exc}") from exc
    if os.name == "nt":
        trio.lowlevel.spawn_system_task(proc.wait)
    assert proc.stdout is not None
    if stdin is not None and proc.stdin is not None:
        with trio.move_on_after(STDIN_WRITE):
            try:
                await proc.stdin.send_all(stdin.encode("utf-8"))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await proc.stdin.aclose()
    reply = b""
    with trio.move_on_after(RUNNER_START):
        async with proc.stdout:
            while chunk := await proc.stdout.receive_some(4096):
                reply += chunk
    if os.name != "nt":
        with trio.move_on_after(RUNNER_START):
            await proc.wait()
    line = reply.decode("utf-8", "replace").strip()
    if line.startswith("pid "):
        return int(line[4:])
    if line.startswith("error "):
        raise ToolError(f"job {meta['job_id']} {line[6:]}")
    tail = (job_dir / "runner.log").read_text("utf-8", "replace").strip().splitlines()[-1:]
    raise ToolError(f"the job runner did not report a pid for {meta['job_id']}: {tail[0] if tail else 'no output'}")


async def _start(args: dict[str, Any], ctx: ToolContext, *, detached: bool) -> tuple[Path, dict[str, Any]]:
    command = _args.text(args, "command")
    cwd = _args.directory(args, "cwd", ctx)
    overrides = _args.env_map(args)
    stdin = None if detached else _args.text(args, "stdin", default=None, allow_empty=True)
    job_id = _job_id(args, generate=True)
    log_dir = _args.path(args, "log_dir", ctx) if detached and args.get("log_dir") is not None else None
    env = _args.base_env(ctx, overrides)
    argv, shell = _proc.shell_argv(command, env)
    root = jobs_root(ctx)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    job_dir = root / job_id
    try:
        job_dir.mkdir(mode=0o700)
    except FileExistsError:
        raise ToolError(f"job_id {job_id} is already used; pick another or omit job_id") from None
    if detached:
        logs_at = log_dir or job_dir
        logs_at.mkdir(parents=True, exist_ok=True)
        log_paths = {"combined": str(logs_at / "combined.log")}
    else:
        log_paths = {"stdout": str(job_dir / "stdout.log"), "stderr": str(job_dir / "stderr.log")}
    meta: dict[str, Any] = {
        "job_id": job_id,
        "command": command,
        "cwd": str(cwd),
        "shell": shell,
        "argv": argv,
        "started_at_ms": int(time.time() * 1000),
        "log_paths": log_paths,
        "detached": detached,
    }
    if not detached:
        meta["had_stdin"] = stdin is not None
    if overrides:
        meta["env_keys"] = sorted(overrides)
    write_meta(job_dir, meta)
    meta["pid"] = await _launch(ctx, job_dir, meta, env, stdin)
    return job_dir, meta


async def desktop_job_start(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    _, meta = await _start(args, ctx, detached=False)
    keys = ("job_id", "pid", "started_at_ms", "command", "cwd", "shell", "log_paths")
    return {k: meta[k] for k in keys}


async def desktop_spawn_detached(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    _, meta = await _start(args, ctx, detached=True)
    keys = ("pid", "job_id", "started_at_ms", "command", "cwd", "shell")
    return {**{k: meta[k] for k in keys}, "log_path": meta["log_paths"]["combined"], "detached": True}


async def desktop_job_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_dir, meta = _load(ctx, _job_id(args))
    return _public(job_dir, meta)


def read_window(file: str, offset: int | None, limit: int) -> dict[str, Any]:
    """Up to ``limit`` bytes of ``file``: from ``offset`` (negative = from the end), else its tail.

    As in the reference, ``truncated`` means more bytes follow (``offset`` is where to read next);
    ``start`` says where the window began, so a tail that skipped the head is visible too.
    """
    try:
        with open(file, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            if offset is None:
                start = max(0, total - limit)
            elif offset < 0:
                start = max(0, total + offset)
            else:
                start = min(offset, total)
            f.seek(start)
            data = f.read(min(limit, total - start))
    except FileNotFoundError:
        return {"content": "", "total_bytes": 0, "truncated": False, "offset": 0, "start": 0}
    end = start + len(data)
    return {
        "content": data.decode("utf-8", "replace"),
        "total_bytes": total,
        "truncated": end < total,
        "offset": end,
        "start": start,
    }


async def desktop_job_logs(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_id = _job_id(args)
    stream = _args.choice(args, "stream", ("both", "stdout", "stderr"), "both")
    limit = min(_args.integer(args, "limit", default=DEFAULT_LOG_LIMIT, minimum=1), max(1, ctx.max_output // 2))
    offset = _args.integer(args, "offset", default=None)
    job_dir, meta = _load(ctx, job_id)
    paths = meta.get("log_paths") or {}
    out: dict[str, Any] = {"job_id": job_id, "state": job_state(job_dir, meta)}
    if "exit_code" in meta:
        out["exit_code"] = meta["exit_code"]
    if "combined" in paths:
        out["combined"] = True
        if stream in ("both", "stdout"):
            out["stdout"] = await trio.to_thread.run_sync(read_window, paths["combined"], offset, limit)
        return out
    for name in ("stdout", "stderr"):
        if stream in ("both", name) and name in paths:
            out[name] = await trio.to_thread.run_sync(read_window, paths[name], offset, limit)
    return out


async def desktop_job_cancel(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_id = _job_id(args)
    force = _args.boolean(args, "force", False)
    job_dir, meta = _load(ctx, job_id)
    done = {"job_id": job_id, "ok": False, "signaled": None, "already_exited": True}
    if "ended_at_ms" in meta:
        return done
    proc = _process(meta)
    if proc is None:
        return done
    (job_dir / CANCELLED).write_text(str(int(time.time() * 1000)), "utf-8")
    sig = signal.SIGKILL if force and hasattr(signal, "SIGKILL") else signal.SIGTERM
    try:
        _proc.signal_tree(proc.pid, _proc.descendants(proc.pid) + [proc], sig)
    except OSError as exc:
        return {"job_id": job_id, "ok": False, "signaled": None, "already_exited": False, "error": str(exc)}
    return {"job_id": job_id, "ok": True, "signaled": "KILL" if sig != signal.SIGTERM else "TERM", "already_exited": False}


async def desktop_job_list(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    wanted = _args.choice(args, "state", ("any", *STATES), "any")
    since = _args.integer(args, "since_ms", default=0, minimum=0)
    limit = _args.integer(args, "limit", default=DEFAULT_LIST_LIMIT, minimum=1, maximum=MAX_LIST_LIMIT)

    def scan() -> list[dict[str, Any]]:
        found = []
        root = jobs_root(ctx)
        for job_dir in root.iterdir() if root.is_dir() else []:
            if not JOB_ID.match(job_dir.name) or not (job_dir / META).is_file():
                continue
            try:
                meta = read_meta(job_dir)
            except (OSError, ValueError):
                continue
            started = meta.get("started_at_ms")
            if not isinstance(started, int) or started < since:
                continue
            entry = _public(job_dir, meta, brief=True)
            if wanted in ("any", entry["state"]):
                found.append(entry)
        found.sort(key=lambda e: e["started_at_ms"], reverse=True)
        return found

    jobs = await trio.to_thread.run_sync(scan)
    return {"jobs": jobs[:limit], "count": min(limit, len(jobs)), "truncated": len(jobs) > limit}


def _preview(args: dict[str, Any]) -> str:
    for key in ("command", "job_id"):
        if isinstance(args.get(key), str):
            return args[key]
    return ""


TOOLS = [
    ToolSpec("desktop_job_start", COMMANDS, desktop_job_start, preview=_preview),
    ToolSpec("desktop_spawn_detached", COMMANDS, desktop_spawn_detached, preview=_preview),
    ToolSpec("desktop_job_status", FILES, desktop_job_status, preview=_preview),
    ToolSpec("desktop_job_logs", FILES, desktop_job_logs, preview=_preview),
    ToolSpec("desktop_job_cancel", COMMANDS, desktop_job_cancel, preview=_preview),
    ToolSpec("desktop_job_list", FILES, desktop_job_list, preview=_preview),
]
