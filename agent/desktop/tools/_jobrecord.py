"""The agent's own record of each job it started: owner, processes and log paths, where only the agent writes.

A job's directory (``~/.hermes/desktop-jobs/<id>/``, shared with other Hermes clients) holds ``meta.json``,
which the runner, the job itself and any process with the user's rights can rewrite. Nothing that decides
*who may see a job* or *which process a cancel signals* is read from it: that lives in a record per job,
``~/.hermes/hermes-relay-jobs/<id>.json`` (0600, directory 0700), written only by the agent: the owner
(the pairing's owner URL, so a failover between routes keeps the job), the job's pid and its create
time, the runner's pid and create time, the executed argv and the log paths (computed at start: the job
directory's logs from the job id, or the ``log_dir`` the host chose).

Why a record and not an HMAC over meta.json: the key would have to live in the same protected directory
(or only in memory, orphaning every job at a restart), so it would be no harder to reach than the record,
and a record needs no parsing of a forgeable file at all. Both rest on ``~/.hermes`` being out of reach of
confined tools (core/confine.py); under ``trusted`` a command can rewrite it, as it can anything the user can.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any, Final

import psutil

from ....core import fileio
from ....core.confine import Confinement
from ....core.desktop import ToolContext
from . import _proc

JOBS_DIR: Final = "desktop-jobs"
RECORDS_DIR: Final = "hermes-relay-jobs"
VERSION: Final = 1
JOB_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,95}\Z")
MAX_RECORD: Final = 8 << 20  # a record holds the command (bounded by the 4 MiB frame) and little else
CREATE_TIME_SLACK: Final = 0.01  # seconds; psutil's create times of one process agree far closer


def jobs_root(ctx: ToolContext) -> Path:
    return ctx.home / JOBS_DIR


def job_dir(ctx: ToolContext, job_id: str) -> Path:
    return jobs_root(ctx) / job_id


def records_root(ctx: ToolContext) -> Path:
    return ctx.home / RECORDS_DIR


def record_path(ctx: ToolContext, job_id: str) -> Path:
    return records_root(ctx) / f"{job_id}.json"


def default_logs(ctx: ToolContext, job_id: str, *, combined: bool) -> dict[str, str]:
    """A job's log files in its own directory, computed from its id."""
    d = job_dir(ctx, job_id)
    if combined:
        return {"combined": str(d / "combined.log")}
    return {"stdout": str(d / "stdout.log"), "stderr": str(d / "stderr.log")}


def save(ctx: ToolContext, record: dict[str, Any]) -> None:
    """Write ``record`` (atomically, 0600) into the agent's records directory."""
    root = records_root(ctx)
    fileio.ensure_private_dir(root)
    if os.path.islink(root) or not root.is_dir():
        raise OSError(f"{root} is not a directory of the agent's own")
    data = json.dumps({"version": VERSION, **record}, indent=2, ensure_ascii=True).encode("ascii")  # lone surrogates too
    fileio.replace_file(record_path(ctx, record["job_id"]), data, mode=fileio.FILE_MODE, durable=False)


def load(ctx: ToolContext, job_id: str) -> dict[str, Any] | None:
    """The agent's record of ``job_id``; None when it has none (or it is unreadable: then the job is unowned)."""
    path = record_path(ctx, job_id)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD or not _ours(st):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            record = json.loads(f.read(MAX_RECORD))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(record, dict) or record.get("version") != VERSION or record.get("job_id") != job_id:
        return None
    return record


def record_ids(ctx: ToolContext) -> list[str]:
    try:
        names = os.listdir(records_root(ctx))
    except OSError:
        return []
    return [n[:-5] for n in names if n.endswith(".json") and JOB_ID.match(n[:-5])]


def job_ids(ctx: ToolContext) -> list[str]:
    """Every job directory's id (only valid ids, only real directories)."""
    root = jobs_root(ctx)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return [n for n in names if JOB_ID.match(n) and _real_dir(root / n)]


def visible(record: dict[str, Any] | None, confinement: Confinement) -> bool:
    """May a call under ``confinement`` see this job? Full access sees every job; a host only its own."""
    if confinement.unconfined:
        return True
    owner = record.get("owner") if record else None
    return bool(owner) and isinstance(owner, str) and owner == confinement.owner


def process(record: dict[str, Any], key: str = "pid") -> psutil.Process | None:
    """The live process the record names under ``key`` (``pid`` or ``runner_pid``), checked by create time.

    A pid without a recorded create time, a recycled pid (another create time) and a zombie are None.
    """
    pid = record.get(key)
    created = record.get("pid_create_time" if key == "pid" else "runner_create_time")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or not isinstance(created, (int, float)):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > CREATE_TIME_SLACK:
            return None
    except psutil.Error:
        return None
    return proc if _proc.alive(proc) else None


def job_process(record: dict[str, Any]) -> psutil.Process | None:
    """The job's own process, only if it is the one this agent's runner started.

    Beyond pid and create time: while the recorded runner lives, the job must still be its child.
    """
    proc = process(record)
    if proc is None:
        return None
    runner = process(record, "runner_pid")
    if runner is not None:
        try:
            if proc.ppid() != runner.pid:
                return None
        except psutil.Error:
            return None
    return proc


def create_private(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600), never through a symlink planted there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "ab") as f:
        f.write(data)


def _ours(st: os.stat_result) -> bool:
    """POSIX: owned by the agent's user. Windows reports no owner in a stat; the records folder lives
    under the user's profile, whose ACL admits only the user (and administrators and SYSTEM)."""
    if sys.platform == "win32":
        return True
    return st.st_uid == os.getuid()


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
