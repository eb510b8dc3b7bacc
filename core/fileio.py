"""Synchronous state-file primitives: atomic writes, versioned JSON reads, inter-process locks.

Invariants:
- A write never leaves a half-written file: temp file in the same directory, 0600, fsync, rename,
  then fsync of the directory. Unchanged contents are not rewritten.
- A read never turns a damaged file into an empty one: empty counts as missing, unparseable raises
  StateCorruptError, a newer version raises StateVersionError, and the file is left as it was.
- ``FileLock`` is an advisory lock on a sidecar ``<name>.lock`` file (flock on POSIX, msvcrt on
  Windows). Every read-modify-write of a shared file holds it, so the CLI, the agent and other
  processes never lose each other's updates. A sidecar is used (not the data file) because the data
  file is replaced by rename on every write, which would silently drop a lock held on the old inode.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hermes_relay.core.errors import StateCorruptError, StateLockError, StateVersionError

FILE_MODE = 0o600
DIR_MODE = 0o700
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds; a healthy holder keeps the lock for milliseconds


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700 on POSIX."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        st = path.stat()
        if st.st_mode & 0o777 != DIR_MODE and st.st_uid == os.getuid():
            os.chmod(path, DIR_MODE)


def atomic_write(path: Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> bool:
    """Replace ``path`` with ``data`` atomically. Returns False when the contents were already equal.

    ``durable=False`` skips the fsyncs: still atomic for readers, but may be lost in a power cut
    (right for files rewritten every few seconds that describe the present, like the route indicator).
    """
    try:
        if path.read_bytes() == data:
            if os.name == "posix" and path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
            return False
    except OSError:
        pass
    import tempfile  # only writers pay for it (~2.5 ms): `status` and `route` only read

    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if os.name == "posix":
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable and os.name == "posix":
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return True


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode("utf-8")


def read_json_versioned(path: Path, *, supported: int) -> dict[str, Any] | None:
    """Read a ``{"version": N, ...}`` JSON file.

    Returns None when the file is missing or empty. Raises StateCorruptError when it cannot be
    parsed or is not a JSON object, and StateVersionError when ``version`` is newer than
    ``supported``. A missing ``version`` is treated as version 1.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateCorruptError(str(path), f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise StateCorruptError(str(path), f"top level is {type(obj).__name__}, expected an object")
    version = obj.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateCorruptError(str(path), f"version is {version!r}, expected an integer")
    if version > supported:
        raise StateVersionError(str(path), version, supported)
    return obj


def quarantine(path: Path, *, now: float | None = None) -> Path:
    """Move a damaged file aside as ``<name>.corrupt-<UTC stamp>`` and return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, dest)
    return dest


class FileLock:
    """An exclusive advisory inter-process lock on ``<target>.lock``.

    Use as a context manager. Blocks up to ``timeout`` seconds, then raises StateLockError. Not
    reentrant; one instance per acquisition.
    """

    def __init__(self, target: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT, suffix: str = ".lock"):
        self.path = target.with_name(target.name + suffix)
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            if _try_lock(fd):
                self._fd = fd
                return True
            if not blocking:
                os.close(fd)
                return False
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StateLockError(
                    f"timed out after {self.timeout:g}s waiting for the lock {self.path}",
                    hint="another hermes-relay process is holding it; if none is running, delete the .lock file",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
