"""The tiny detached runner behind desktop_job_start and desktop_spawn_detached (stdlib + psutil).

``python -I _jobrunner.py DIR`` forks once (its parent exits at once, so the agent is left with no
child to reap; on Windows the agent starts it detached instead, see ``_detach``), then reads what to
run from its stdin: a decimal length, a newline, and that many bytes of JSON
``{argv, cwd, env, logs, stdin}`` (``argv`` is already wrapped by the command sandbox; ``env`` holds
only the call's overrides). Whatever follows on stdin is the job's own stdin. The runner never
reads what to run from a file: ``DIR/meta.json`` is shared with other clients and forgeable.

It starts the job in its own session with its output going straight to the log files, prints
``ok {pid, pid_create_time, runner_pid, runner_create_time}`` (or ``error MESSAGE``) on stdout for the
agent and closes it, then waits and records ``ended_at_ms``, ``exit_code`` and ``signal`` in meta.json
(informational: the agent decides nothing from it). The runner is trusted code: it runs unconfined with
the agent's environment (``-I``; the overrides reach only the job), and confines nothing itself: the
sandbox wraps the job's argv. A ``cancelled`` file in DIR (written by desktop_job_cancel) marks the end
as a kill by the user. Because the runner and the job outlive the agent, a job's end is recorded across
agent restarts.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

META = "meta.json"
CANCELLED = "cancelled"
MAX_SPEC = 64 << 20  # bytes; a spec holds one command (bounded by the relay frame) and a few paths
MAX_META = 16 << 20


def now_ms() -> int:
    return int(time.time() * 1000)


def read_meta(job_dir: Path) -> dict[str, Any]:
    """meta.json of ``job_dir``; {} when it is missing, not a regular file, too large or not an object."""
    try:
        fd = os.open(job_dir / META, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return {}
            meta = json.loads(f.read(MAX_META + 1)[:MAX_META])
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(job_dir: Path, meta: dict[str, Any]) -> None:
    tmp = job_dir / f".{META}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, job_dir / META)


def _record(job_dir: Path, meta: dict[str, Any]) -> None:
    try:
        write_meta(job_dir, meta)
    except OSError:  # meta.json is informational; a job must not fail for it
        pass


def read_spec(fd: int = 0) -> dict[str, Any]:
    """The job's spec from ``fd``: ``<length>\\n`` then that many bytes of JSON; the rest stays unread."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte or len(header) > 20:
            raise ValueError("no job spec on stdin")
        header += byte
    size = int(header)
    if not 0 < size <= MAX_SPEC:
        raise ValueError(f"job spec of {size} bytes")
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise ValueError("job spec cut short")
        data += chunk
    spec = json.loads(data)
    if not isinstance(spec, dict):
        raise ValueError("job spec is not an object")
    return spec


def encode_spec(spec: dict[str, Any]) -> bytes:
    data = json.dumps(spec, ensure_ascii=True).encode("ascii")
    return b"%d\n" % len(data) + data


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _reply(line: str) -> None:
    print(line, flush=True)


def _detach() -> None:
    """Leave the agent: POSIX forks once (the agent reaps the parent at once; the runner lives on,
    adopted by init). On Windows the agent already started the runner detached (DETACHED_PROCESS,
    its own process group, out of the agent's job where allowed: ``_proc.creation_flags``)."""
    if sys.platform == "win32":
        import msvcrt

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        msvcrt.setmode(0, os.O_BINARY)  # the spec's length counts bytes: no CRLF folding on stdin
        return
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    if os.fork() != 0:
        os._exit(0)


def _job_kwargs() -> dict[str, Any]:
    """The job's own process group; on Windows also no console window (the runner has no console,
    so a console program would open a window of its own on the user's desktop)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def main(argv: list[str]) -> int:
    _detach()
    job_dir = Path(argv[1])
    try:
        spec = read_spec()
        logs = spec["logs"]
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        out = _open_log(logs.get("stdout") or logs["combined"])
        err = _open_log(logs["stderr"]) if "stderr" in logs else out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _reply(f"error could not start: {exc}")
        return 1
    stdin = 0 if spec.get("stdin") else subprocess.DEVNULL
    meta = read_meta(job_dir)
    command = spec["argv"]  # a list; on Windows a cmd.exe command line may come as one string (``_proc.command_line``)
    try:
        proc = subprocess.Popen(
            command if isinstance(command, str) else list(command), cwd=spec["cwd"], env=env, stdin=stdin,
            stdout=out, stderr=err, close_fds=True, **_job_kwargs(),
        )
    except (OSError, ValueError, TypeError) as exc:
        error = f"could not start: {getattr(exc, 'strerror', None) or exc}"
        meta.update(ended_at_ms=now_ms(), exit_code=None, error=error)
        _record(job_dir, meta)
        _reply(f"error {error}")
        return 1
    finally:
        os.close(out)
        if err != out:
            os.close(err)
    started = {"pid": proc.pid, "pid_create_time": _create_time(proc.pid), "runner_pid": os.getpid(),
               "runner_create_time": _create_time(os.getpid())}
    meta.update(pid=proc.pid, runner_pid=os.getpid())
    _record(job_dir, meta)
    _reply("ok " + json.dumps(started))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    code = proc.wait()
    meta = read_meta(job_dir) or meta
    meta["ended_at_ms"] = now_ms()
    if code < 0:
        meta["exit_code"] = None
        try:
            meta["signal"] = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            meta["signal"] = str(-code)
    else:
        meta["exit_code"] = code
    if (job_dir / CANCELLED).exists():
        meta["killed_by"] = "user"
    elif code < 0:
        meta["killed_by"] = "signal"
    _record(job_dir, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
