"""The tiny detached runner behind desktop_job_start and desktop_spawn_detached (stdlib only).

``python -I _jobrunner.py DIR`` forks once (its parent exits at once, so the agent is left with
no child to reap), reads ``DIR/meta.json``, starts the
job's command in its own session with its output going straight to the log files named there,
records the pid in meta.json, prints ``pid N`` (or ``error MESSAGE``) on stdout for the agent and
closes it, then waits and records ``ended_at_ms``, ``exit_code`` and ``signal``. Because the runner
and the job outlive the agent, a job keeps running and its end is recorded across agent restarts.
A ``cancelled`` file in DIR (written by desktop_job_cancel) marks the end as a kill by the user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

META = "meta.json"
CANCELLED = "cancelled"


def now_ms() -> int:
    return int(time.time() * 1000)


def read_meta(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / META).read_text("utf-8"))


def write_meta(job_dir: Path, meta: dict[str, Any]) -> None:
    tmp = job_dir / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True), "utf-8")
    os.replace(tmp, job_dir / META)


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def main(argv: list[str]) -> int:
    for name in ("SIGINT", "SIGHUP", "SIGPIPE"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if os.name != "nt" and os.fork() != 0:
        os._exit(0)  # the agent reaps this parent at once; the runner lives on, adopted by init
    job_dir = Path(argv[1])
    meta = read_meta(job_dir)
    logs = meta["log_paths"]
    out = _open_log(logs.get("stdout") or logs["combined"])
    err = _open_log(logs["stderr"]) if "stderr" in logs else out
    stdin = sys.stdin.fileno() if meta.get("had_stdin") else subprocess.DEVNULL
    session: dict[str, Any]
    if sys.platform == "win32":
        session = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        session = {"start_new_session": True}
    try:
        proc = subprocess.Popen(
            meta["argv"], cwd=meta["cwd"], stdin=stdin, stdout=out, stderr=err, close_fds=True, **session
        )
    except OSError as exc:
        meta.update(ended_at_ms=now_ms(), exit_code=None, error=f"could not start: {exc.strerror or exc}")
        write_meta(job_dir, meta)
        print(f"error {meta['error']}", flush=True)
        return 1
    finally:
        os.close(out)
        if err != out:
            os.close(err)
    meta.update(pid=proc.pid, pid_create_time=_create_time(proc.pid), runner_pid=os.getpid())
    write_meta(job_dir, meta)
    print(f"pid {proc.pid}", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    code = proc.wait()
    meta = read_meta(job_dir)
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
    write_meta(job_dir, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
