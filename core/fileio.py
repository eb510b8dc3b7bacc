"""Synchronous state-file primitives: atomic writes, versioned JSON reads, inter-process locks.

Invariants:
- A write never leaves a half-written file: temp file in the same directory, 0600, fsync, rename,
  then fsync of the directory. Unchanged contents are not rewritten.
- A read never turns a damaged file into an empty one: unparseable raises StateCorruptError, a newer
  version raises StateVersionError, and the file is left as it was. Reads are bounded: only a regular
  file (a symlink is followed to its target) of at most ``MAX_STATE_BYTES`` is read, opened without
  blocking (a FIFO cannot hang the reader), and every OSError becomes a StateError naming the file.
  Whether a zero-byte file counts as missing is the caller's choice (``empty_ok``).
- Writes go through a symlink to its target, so a store kept elsewhere stays linked.
- ``FileLock`` is an advisory lock on a sidecar ``<name>.lock`` file (flock on POSIX, msvcrt on
  Windows). Every read-modify-write of a shared file holds it, so the CLI, the agent and other
  processes never lose each other's updates. A sidecar is used (not the data file) because the data
  file is replaced by rename on every write, which would silently drop a lock held on the old inode.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from .errors import StateCorruptError, StateError, StateLockError, StateVersionError

FILE_MODE = 0o600
DIR_MODE = 0o700
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds; a healthy holder keeps the lock for milliseconds
MAX_STATE_BYTES = 16 << 20  # far above any real state file; stops a link to /dev/zero eating memory


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and every missing parent 0700 (whatever the umask); on POSIX take group and other
    access away from an existing ``path`` of ours (0755 -> 0700).

    Existing parents are left as they are: only directories this call creates are ours to set. The
    owner's own bits are never widened: a directory the user made read-only stays read-only.
    """
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        if sys.platform != "win32":
            os.chmod(d, DIR_MODE)
    if sys.platform != "win32":
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, st.st_mode & 0o700)


def write_target(path: Path) -> Path:
    """Where a write to ``path`` lands: the final target when ``path`` is a symlink, else ``path``."""
    if not path.is_symlink():
        return path
    return Path(os.path.realpath(path))


def atomic_write(path: Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> bool:
    """Replace ``path`` with ``data`` atomically. Returns False when the contents were already equal.

    ``durable=False`` skips the fsyncs: still atomic for readers, but may be lost in a power cut
    (right for files rewritten every few seconds that describe the present, like the route indicator).
    A symlink is written through: its target is replaced and the link stays.
    """
    path = write_target(path)
    try:
        if path.is_file() and path.read_bytes() == data:
            if sys.platform != "win32" and path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
            return False
    except OSError:
        pass
    ensure_private_dir(path.parent)
    replace_file(path, data, mode=mode, durable=durable)
    return True


def replace_file(path: Path, data: bytes, *, mode: int, durable: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path`` with ``mode``, then rename it over ``path``.

    Readers see the old or the new contents, never a mix. The directory is used as it is (state files
    go through ``atomic_write``, which also makes it private).
    """
    import tempfile  # only writers pay for it (~2.5 ms): `status` and `route` only read

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if sys.platform != "win32":
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
    if durable and sys.platform != "win32":
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode("utf-8")


def read_bounded(path: Path, *, limit: int = MAX_STATE_BYTES) -> bytes | None:
    """The bytes of the regular file ``path``; None when it does not exist.

    Raises StateError (naming the file and what to do) for anything else: a directory, FIFO, socket
    or device, a file larger than ``limit``, or any OSError (permission denied, I/O error, ...).
    The file is opened with O_NONBLOCK, so a FIFO is refused instead of hanging the reader.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(
                f"{path} is {_kind(st.st_mode)}, not a regular file; it was left untouched",
                hint=f"move {path} aside (it must be a plain JSON file), then pair again or restore it from a backup",
                data={"path": str(path)},
            )
        if st.st_size > limit:
            raise StateError(
                f"{path} is {st.st_size} bytes, more than the {limit >> 20} MB a state file can be; it was not read",
                hint=f"check what wrote it; move {path} aside and pair again",
                data={"path": str(path)},
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:  # grew while we read it (or fstat lied)
                raise StateError(f"{path} is more than {limit >> 20} MB; it was not read",
                                 hint=f"move {path} aside and pair again", data={"path": str(path)})
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        os.close(fd)


def _unreadable(path: Path, exc: OSError) -> StateError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError):
        hint = f"it must belong to you and be readable by you (0600): check `ls -l {path}`"
    elif exc.errno == errno.ELOOP:
        hint = f"{path} is a symlink loop; replace it with the real file"
    else:
        hint = f"check the disk and the file `ls -l {path}`; the file was left untouched"
    return StateError(f"cannot read {path}: {reason}", hint=hint, data={"path": str(path), "errno": exc.errno})


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_json_versioned(path: Path, *, supported: int, empty_ok: bool = True) -> dict[str, Any] | None:
    """Read a ``{"version": N, ...}`` JSON file (bounded, see ``read_bounded``).

    Returns None when the file is missing, or empty when ``empty_ok``; with ``empty_ok=False`` an
    existing empty file raises StateCorruptError (something truncated it: it is not "no data").
    Raises StateCorruptError when it cannot be parsed or is not a JSON object, and
    StateVersionError when ``version`` is newer than ``supported``. A missing ``version`` is
    treated as version 1.
    """
    raw = read_bounded(path)
    if raw is None:
        return None
    if not raw.strip():
        if empty_ok:
            return None
        raise StateCorruptError(
            str(path), f"the file is empty ({len(raw)} bytes): a program or a crash truncated it",
            hint=f"restore {path} from a backup, or run `hermes-relay doctor --fix` to move it aside "
                 "and start a fresh one (then pair again)")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateCorruptError(str(path), f"not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise StateCorruptError(str(path), "nested too deeply to be a state file") from exc
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

    Kept instead of the ``filelock`` package: importing that costs ~70 ms against ~9 ms for this
    whole module, and ``status`` (which imports this) must start instantly. Blocking: the agent
    takes it only in worker threads (``trio.to_thread``).

    Use as a context manager. Blocks up to ``timeout`` seconds, then raises StateLockError. Not
    reentrant; one instance per acquisition.
    """

    def __init__(self, target: Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT, suffix: str = ".lock"):
        self.path = target.with_name(target.name + suffix)
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StateLockError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc}",
                hint=f"make {self.path.parent} a directory you own and can write (0700), then try again",
                data={"path": str(self.path), "errno": exc.errno},
            ) from exc
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

    @property
    def fd(self) -> int | None:
        """The locked file's descriptor while held (the agent's instance lock writes its owner into it)."""
        return self._fd

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
