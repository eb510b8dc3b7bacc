"""Long work that outlives a call: desktop_job_start/status/logs/cancel/list and desktop_spawn_detached.

Each job is a directory ``ctx.home/desktop-jobs/<job_id>/`` holding ``meta.json`` and its logs
(``stdout.log`` + ``stderr.log`` for jobs, ``combined.log`` for detached spawns), the layout other
Hermes clients share. The agent starts a detached runner (``_jobrunner``, trusted code, unconfined) that
executes the command's argv as the command sandbox wrapped it (``_sandbox.command_argv``, so the job runs
under its call's confinement) and records its end; status, logs and cancel work after the agent restarts.

Relays are isolated: every job has an owner (``ctx.confined().owner``, the pairing's owner URL) in the
agent's own record (``_jobrecord``), never in the forgeable meta.json. A host sees, reads and cancels only
its own jobs; a job without a record (older ones, other clients') is visible only with full access, and
is never signalled. Cancel signals only the process this agent's runner started (pid, create time, runner)
and refuses what desktop_kill_process refuses (``_procguard``). Log paths come from the record or the job
id, never from meta.json.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

import psutil
import trio

from ....core.desktop import COMMANDS, FILES, ToolContext, ToolError, ToolSpec
from . import _args, _fs, _jobrecord, _proc, _procguard, _sandbox, _thread
from ._jobrecord import JOB_ID, job_dir, jobs_root
from ._jobrunner import CANCELLED, encode_spec, read_meta, write_meta

__all__ = ["JOB_ID", "jobs_root"]

STATES = ("running", "exited", "killed", "failed", "unknown")
DEFAULT_LOG_LIMIT = 8192
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
LIST_COMMAND = 2000  # characters of each command kept by desktop_job_list, so a listing stays small
RUNNER_START = 10.0  # seconds for the runner to report the job's pid
STDIN_WRITE = 5.0  # seconds to hand ``stdin`` to the job
RUNNER = Path(__file__).with_name("_jobrunner.py")  # run as a script: the job inherits an untouched environment
# What a job's view shows: from the agent's record, and (end facts only, informational) from meta.json.
RECORD_KEYS: Final[tuple[str, ...]] = ("job_id", "command", "cwd", "shell", "started_at_ms", "log_paths", "detached", "pid",
                      "runner_pid", "had_stdin", "env_keys")
END_KEYS: Final[tuple[str, ...]] = ("ended_at_ms", "exit_code", "signal", "killed_by", "error")
MAX_META_TEXT: Final = 2000  # characters kept of a text field read from meta.json
UNKNOWN = "unknown job_id: {} (desktop_job_list shows the known jobs)"


def _job_id(args: dict[str, Any], *, generate: bool = False) -> str:
    value = _args.text(args, "job_id", default=None) if generate else _args.text(args, "job_id")
    if value is None:
        return secrets.token_hex(8)
    if not JOB_ID.match(value):
        raise ToolError('"job_id" must be 1-96 characters of letters, digits, "_" or "-", starting with a letter '
                        "or digit")
    return value


def _find(ctx: ToolContext, job_id: str) -> dict[str, Any] | None:
    """The agent's record of a job this call may see (None: an unowned job, seen with full access)."""
    record = _jobrecord.load(ctx, job_id)
    if not _jobrecord.visible(record, ctx.confined()):
        raise ToolError(UNKNOWN.format(job_id))
    if record is None and not _real_dir(job_dir(ctx, job_id)):
        raise ToolError(UNKNOWN.format(job_id))
    return record


def _end(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in END_KEYS:
        value = meta.get(key)
        if key in ("ended_at_ms", "exit_code") and (isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
        elif key == "exit_code" and value is None and key in meta:
            out[key] = None
        elif key not in ("ended_at_ms", "exit_code") and isinstance(value, str):
            out[key] = value[:MAX_META_TEXT]
    return out


def _legacy(ctx: ToolContext, job_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The view of a job without a record (full access only): display fields of meta.json, computed logs."""
    out = {k: meta[k] for k in RECORD_KEYS if k in meta and isinstance(meta[k], (str, int, bool, list))}
    out["job_id"] = job_id
    combined = (job_dir(ctx, job_id) / "combined.log").exists()
    out["log_paths"] = _jobrecord.default_logs(ctx, job_id, combined=combined)
    if not isinstance(out.get("started_at_ms"), int):
        out["started_at_ms"] = 0
    return out


def _state(ctx: ToolContext, job_id: str, record: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    if record is not None:
        running = _jobrecord.job_process(record) is not None or _jobrecord.process(record, "runner_pid") is not None
    else:  # display only: an unowned job's pid is never signalled
        running = _jobrecord.process({k: meta.get(k) for k in ("pid", "pid_create_time")}) is not None
    if running:
        return "running"
    if "ended_at_ms" in meta:
        if meta.get("error"):
            return "failed"
        if meta.get("killed_by") in ("user", "signal"):
            return "killed"
        return "exited" if meta.get("exit_code") == 0 else "failed"
    if (job_dir(ctx, job_id) / CANCELLED).exists():
        return "killed"
    return "unknown"


def _view(ctx: ToolContext, job_id: str, record: dict[str, Any] | None, *, brief: bool = False) -> dict[str, Any]:
    meta = read_meta(job_dir(ctx, job_id))
    state = _state(ctx, job_id, record, meta)
    if state == "unknown":  # the runner records the end, then exits: both may have happened since the read
        meta = read_meta(job_dir(ctx, job_id))
        state = _state(ctx, job_id, record, meta)
    out = {k: record[k] for k in RECORD_KEYS if k in record} if record else _legacy(ctx, job_id, meta)
    out.update(_end(meta))
    out["state"] = state
    command = out.get("command")
    if brief and isinstance(command, str) and len(command) > LIST_COMMAND:
        out["command"] = command[:LIST_COMMAND]
        out["command_truncated"] = True
    return out


async def _launch(ctx: ToolContext, job_dir: Path, spec: dict[str, Any], stdin: str | None) -> dict[str, Any]:
    """Start the runner with the agent's own environment; hand it ``spec`` and ``stdin``; its report."""
    runner_log_fd = os.open(job_dir / "runner.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
                            | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(runner_log_fd, "ab") as runner_log:
        for breakaway in (True, False) if sys.platform == "win32" else (False,):
            try:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-I", str(RUNNER), str(job_dir)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=runner_log,
                    cwd=str(job_dir),
                    env=_args.base_env(ctx),
                    **_proc.session_kwargs(detached=True, breakaway=breakaway),
                )
                break
            except OSError as exc:
                if breakaway:  # the agent's own job forbids breaking away: the runner stays in it
                    continue
                raise ToolError(f"could not start the job runner: {exc.strerror or exc}") from exc
    if sys.platform == "win32":  # no fork: the runner stays our child for the job's life; reap it when it ends
        trio.lowlevel.spawn_system_task(proc.wait)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with trio.move_on_after(RUNNER_START):
            await proc.stdin.send_all(encode_spec(spec))
        if stdin is not None:
            with trio.move_on_after(STDIN_WRITE):
                await proc.stdin.send_all(stdin.encode("utf-8"))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await proc.stdin.aclose()
    reply = b""
    with trio.move_on_after(RUNNER_START):
        async with proc.stdout:
            while chunk := await proc.stdout.receive_some(4096):
                reply += chunk
    if sys.platform != "win32":
        with trio.move_on_after(RUNNER_START):
            await proc.wait()
    line = reply.decode("utf-8", "replace").strip()
    if line.startswith("ok "):
        started: dict[str, Any] = json.loads(line[3:])
        return started
    job_id = job_dir.name
    if line.startswith("error "):
        raise ToolError(f"job {job_id} {line[6:]}")
    tail = (job_dir / "runner.log").read_text("utf-8", "replace").strip().splitlines()[-1:]
    raise ToolError(f"the job runner did not report a pid for {job_id}: {tail[0] if tail else 'no output'}")


async def _start(args: dict[str, Any], ctx: ToolContext, *, detached: bool) -> dict[str, Any]:
    # The cwd, the roots and a log_dir are user paths (a hung network mount must not freeze the agent):
    # they are checked, resolved and made in one tool-thread hop; only the launch is awaited here.
    record, spec, stdin, job_dir = await _thread.run(_prepare, args, ctx, detached)
    started = await _launch(ctx, job_dir, spec, stdin)
    record.update({k: started.get(k) for k in ("pid", "pid_create_time", "runner_pid", "runner_create_time")})
    _jobrecord.save(ctx, record)
    return record


def _prepare(stop: threading.Event, args: dict[str, Any], ctx: ToolContext,
             detached: bool) -> tuple[dict[str, Any], dict[str, Any], str | None, Path]:
    """Everything before the launch, in a tool thread: the arguments checked, the job's folder and record
    made (the record before anything runs: a job never exists without its owner)."""
    command = _args.text(args, "command")
    cwd = _args.directory(args, "cwd", ctx)
    overrides = _args.env_map(args)
    stdin = None if detached else _args.text(args, "stdin", default=None, allow_empty=True)
    job_id = _job_id(args, generate=True)
    log_dir = _args.path(args, "log_dir", ctx) if detached and args.get("log_dir") is not None else None
    if log_dir is not None and ctx.confined().kernel_commands:
        raise ToolError('"log_dir" is not available under the workspace preset (the log would be written outside '
                        "the sandbox); omit it: the log is kept with the job, desktop_job_logs reads it")
    argv, shell = _proc.shell_argv(command, _args.base_env(ctx, overrides))
    executed = _sandbox.command_argv(argv, ctx.confined(), str(cwd))
    root = jobs_root(ctx)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _real_dir(root):
        raise ToolError(f"{root} is not a directory; jobs cannot be started")
    _thread.check(stop)  # the call ended meanwhile: make nothing
    try:
        (root / job_id).mkdir(mode=0o700)
    except FileExistsError:
        raise ToolError(f"job_id {job_id} is already used; pick another or omit job_id") from None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_paths = {"combined": str(log_dir / "combined.log")}
    else:
        log_paths = _jobrecord.default_logs(ctx, job_id, combined=detached)
    record: dict[str, Any] = {
        "job_id": job_id,
        "owner": ctx.confined().owner,
        "command": command,
        "cwd": str(cwd),
        "shell": shell,
        "started_at_ms": int(time.time() * 1000),
        "log_paths": log_paths,
        "detached": detached,
        "argv": executed,
    }
    if not detached:
        record["had_stdin"] = stdin is not None
    if overrides:
        record["env_keys"] = sorted(overrides)
    _jobrecord.save(ctx, record)
    write_meta(root / job_id, {k: record[k] for k in RECORD_KEYS if k in record})
    spec = {"argv": _proc.command_line(executed), "cwd": str(cwd), "env": overrides, "logs": log_paths,
            "stdin": stdin is not None}
    return record, spec, stdin, root / job_id


async def desktop_job_start(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    record = await _start(args, ctx, detached=False)
    keys = ("job_id", "pid", "started_at_ms", "command", "cwd", "shell", "log_paths")
    return {k: record[k] for k in keys}


async def desktop_spawn_detached(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    record = await _start(args, ctx, detached=True)
    keys = ("pid", "job_id", "started_at_ms", "command", "cwd", "shell")
    return {**{k: record[k] for k in keys}, "log_path": record["log_paths"]["combined"], "detached": True}


async def desktop_job_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_id = _job_id(args)
    return await trio.to_thread.run_sync(lambda: _view(ctx, job_id, _find(ctx, job_id)))


def read_window(file: str, offset: int | None, limit: int) -> dict[str, Any]:
    """Up to ``limit`` bytes of ``file``: from ``offset`` (negative = from the end), else its tail.

    As in the reference, ``truncated`` means more bytes follow (``offset`` is where to read next);
    ``start`` says where the window began, so a tail that skipped the head is visible too. A log that
    is a symlink or not a regular file reads as empty (a planted link must not read another file).
    """
    empty = {"content": "", "total_bytes": 0, "truncated": False, "offset": 0, "start": 0}
    try:
        fd = os.open(file, os.O_RDONLY | _fs.O_NOFOLLOW | _fs.O_NONBLOCK | _fs.O_BINARY)  # Windows: no CRLF folding
    except OSError:
        return empty
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return empty
        total = st.st_size
        if offset is None:
            start = max(0, total - limit)
        elif offset < 0:
            start = max(0, total + offset)
        else:
            start = min(offset, total)
        f.seek(start)
        data = f.read(min(limit, total - start))
    end = start + len(data)
    return {
        "content": data.decode("utf-8", "replace"),
        "total_bytes": total,
        "truncated": end < total,
        "offset": end,
        "start": start,
    }


def _log_paths(ctx: ToolContext, job_id: str, record: dict[str, Any] | None) -> dict[str, str]:
    if record is not None and isinstance(record.get("log_paths"), dict):
        return {k: v for k, v in record["log_paths"].items() if isinstance(v, str)}
    combined = (job_dir(ctx, job_id) / "combined.log").exists()
    return _jobrecord.default_logs(ctx, job_id, combined=combined)


async def desktop_job_logs(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_id = _job_id(args)
    stream = _args.choice(args, "stream", ("both", "stdout", "stderr"), "both")
    limit = min(_args.integer(args, "limit", default=DEFAULT_LOG_LIMIT, minimum=1), max(1, ctx.max_output // 2))
    offset = _args.integer(args, "offset", default=None)

    def read() -> dict[str, Any]:
        record = _find(ctx, job_id)
        view = _view(ctx, job_id, record)
        paths = _log_paths(ctx, job_id, record)
        out: dict[str, Any] = {"job_id": job_id, "state": view["state"]}
        if "exit_code" in view:
            out["exit_code"] = view["exit_code"]
        if "combined" in paths:
            out["combined"] = True
            if stream in ("both", "stdout"):
                out["stdout"] = read_window(paths["combined"], offset, limit)
            return out
        for name in ("stdout", "stderr"):
            if stream in ("both", name) and name in paths:
                out[name] = read_window(paths[name], offset, limit)
        return out

    return await trio.to_thread.run_sync(read)


def _cancel(ctx: ToolContext, job_id: str, force: bool) -> dict[str, Any]:
    record = _find(ctx, job_id)
    if record is None:
        raise ToolError(f"job {job_id} was not started by this agent (it has no record of the job's process), so "
                        "it is never signalled; desktop_kill_process can stop a process by its pid")
    done = {"job_id": job_id, "ok": False, "signaled": None, "already_exited": True}
    proc = _jobrecord.job_process(record)
    if proc is None:
        return done
    reason = _procguard.refusal(proc.pid)
    if reason:
        raise ToolError(f"job {job_id}: {reason}")
    members = [m for m in _proc.descendants(proc.pid) if _procguard.refusal(m.pid) is None]
    try:
        _jobrecord.create_private(job_dir(ctx, job_id) / CANCELLED, str(int(time.time() * 1000)).encode())
    except OSError:  # the marker only names who ended the job; the cancel goes on without it
        pass
    sig = _proc.KILL if force else signal.SIGTERM
    try:
        _signal_job(proc, members, sig)
    except (OSError, psutil.Error) as exc:
        return {"job_id": job_id, "ok": False, "signaled": None, "already_exited": False, "error": str(exc)}
    return {"job_id": job_id, "ok": True, "signaled": "KILL" if force else "TERM", "already_exited": False}


def _signal_job(proc: psutil.Process, members: list[psutil.Process], sig: int) -> None:
    """Signal the job, its process group (only when the job leads it, as the runner started it) and ``members``.

    Windows has no process groups to signal: the job and ``members`` (its descendants psutil sees) are
    each ended with TerminateProcess, TERM and KILL alike."""
    if sys.platform != "win32":
        try:
            leads = os.getpgid(proc.pid) == proc.pid
        except OSError:
            leads = False
        if leads and _procguard.group_refusal(proc.pid) is None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        proc.send_signal(sig)  # psutil re-checks the create time: a recycled pid is never signalled
    except psutil.NoSuchProcess:
        pass
    for member in members:
        try:
            member.send_signal(sig)
        except psutil.Error:
            pass


async def desktop_job_cancel(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    job_id = _job_id(args)
    force = _args.boolean(args, "force", False)
    return await trio.to_thread.run_sync(_cancel, ctx, job_id, force)


async def desktop_job_list(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    wanted = _args.choice(args, "state", ("any", *STATES), "any")
    since = _args.integer(args, "since_ms", default=0, minimum=0)
    limit = _args.integer(args, "limit", default=DEFAULT_LIST_LIMIT, minimum=1, maximum=MAX_LIST_LIMIT)

    def scan() -> list[dict[str, Any]]:
        ids = set(_jobrecord.record_ids(ctx))
        if ctx.confined().unconfined:
            ids.update(_jobrecord.job_ids(ctx))
        found = []
        for job_id in ids:
            try:
                record = _find(ctx, job_id)
            except ToolError:
                continue
            entry = _view(ctx, job_id, record, brief=True)
            started = entry.get("started_at_ms")
            if not isinstance(started, int) or started < since:
                continue
            if wanted in ("any", entry["state"]):
                found.append(entry)
        found.sort(key=lambda e: e["started_at_ms"], reverse=True)
        return found

    jobs = await trio.to_thread.run_sync(scan)
    return {"jobs": jobs[:limit], "count": min(limit, len(jobs)), "truncated": len(jobs) > limit}


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


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
