"""Operations on a name inside an opened folder: on its descriptor (POSIX), or on its path (Windows).

The file tools work on folders they opened (``_guard``): every name is looked up relative to the
folder's descriptor (``dir_fd``), so a rename or a link swapped in after a check cannot redirect them.
Windows cannot open a folder as a descriptor and has no ``dir_fd``, so there a folder handle (``Dir``)
is the folder's absolute path and each operation joins the name to it: ordinary path operations,
with the races paths have. That is only used without a confinement (``full_access``, where the
caller may touch any path anyway); a confined guard refuses to start on Windows (``_guard``).

``PATHS`` says which kind this process uses; the tests switch it on Linux to run the file tools the
way Windows does.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from . import _fs

Dir = int | str  # an open folder: its descriptor, or (``PATHS``) its absolute path
PATHS: bool = sys.platform == "win32"


def fd(d: Dir) -> int:
    """``d`` as a descriptor (where only descriptors can arrive: under a confinement)."""
    if isinstance(d, str):
        raise TypeError("a folder path where a descriptor was expected")
    return d


def open_dir(path: str | Path) -> Dir:
    """The folder at ``path`` (links followed), opened; FileNotFoundError/NotADirectoryError as ``open``."""
    if not PATHS:
        return os.open(path, _fs.DIR_FLAGS)
    full = os.path.abspath(path)
    if not stat.S_ISDIR(os.stat(full).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    return full


def sub(d: Dir, name: str, *, follow: bool = False) -> Dir:
    """The folder ``name`` in ``d``, opened; never through a link (or a junction) unless ``follow``."""
    if isinstance(d, int):
        return os.open(name, _fs.DIR_FLAGS | (0 if follow else _fs.O_NOFOLLOW), dir_fd=d)
    full = os.path.join(d, name)
    info = os.stat(full) if follow else os.lstat(full)
    if not follow and (stat.S_ISLNK(info.st_mode) or _reparse(info)):
        raise OSError(errno.ELOOP, "a link where a folder was expected", full)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), full)
    return full


def _reparse(info: os.stat_result) -> bool:
    """A Windows junction or other name surrogate (lstat reports some as folders)."""
    if sys.platform == "win32":
        return bool(info.st_file_attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT)
    return False


def close(d: Dir) -> None:
    if isinstance(d, int):
        os.close(d)


def stat_dir(d: Dir) -> os.stat_result:
    return os.fstat(d) if isinstance(d, int) else os.stat(d)


def lstat(d: Dir, name: str) -> os.stat_result:
    if isinstance(d, int):
        return os.stat(name, dir_fd=d, follow_symlinks=False)
    return os.lstat(os.path.join(d, name))


def stat_follow(d: Dir, name: str) -> os.stat_result:
    if isinstance(d, int):
        return os.stat(name, dir_fd=d)
    return os.stat(os.path.join(d, name))


def lstat_or_none(d: Dir, name: str) -> os.stat_result | None:
    try:
        return lstat(d, name)
    except FileNotFoundError:
        return None


def open_in(d: Dir | None, name: str, flags: int, mode: int = 0o777) -> int:
    """``os.open`` of ``name`` in ``d`` (``None``: ``name`` is a whole path)."""
    if d is None:
        return os.open(name, flags | _fs.O_BINARY, mode)
    if isinstance(d, int):
        return os.open(name, flags | _fs.O_BINARY, mode, dir_fd=d)
    return os.open(os.path.join(d, name), flags | _fs.O_BINARY, mode)


def mkdir(d: Dir, name: str, mode: int = 0o777) -> None:
    if isinstance(d, int):
        os.mkdir(name, mode, dir_fd=d)
    else:
        os.mkdir(os.path.join(d, name), mode)


def unlink(d: Dir, name: str) -> None:
    if isinstance(d, int):
        os.unlink(name, dir_fd=d)
    else:
        os.unlink(os.path.join(d, name))


def replace(d: Dir, src: str, dst: str) -> None:
    """Rename ``src`` over ``dst`` in ``d`` (Windows' ``os.rename`` refuses an existing ``dst``)."""
    if isinstance(d, int):
        os.rename(src, dst, src_dir_fd=d, dst_dir_fd=d)
    else:
        os.replace(os.path.join(d, src), os.path.join(d, dst))


def symlink(d: Dir, target: str, name: str) -> None:
    if isinstance(d, int):
        os.symlink(target, name, dir_fd=d)
    else:
        os.symlink(target, os.path.join(d, name))


def readlink(d: Dir, name: str) -> str:
    if isinstance(d, int):
        return os.readlink(name, dir_fd=d)
    return os.readlink(os.path.join(d, name))


def chmod_dir(d: Dir, mode: int) -> None:
    if sys.platform != "win32":  # Windows folders have no mode bits to give (only the read-only flag)
        os.chmod(d, mode)


def set_times(d: Dir, name: str, fd: int, ns: tuple[int, int]) -> None:
    """Set the times of the file ``fd`` (``name`` in ``d``): on the descriptor, or by path (Windows)."""
    if isinstance(d, int):
        os.utime(fd, ns=ns)
    else:
        os.utime(os.path.join(d, name), ns=ns)


def set_dir_times(d: Dir, ns: tuple[int, int]) -> None:
    os.utime(d, ns=ns)


def fsync_dir(d: Dir) -> None:
    """Make a rename in ``d`` durable where a folder can be synced (not on Windows, not on every file system)."""
    if isinstance(d, int):
        try:
            os.fsync(d)
        except OSError:
            pass


def fchmod(fd: int, mode: int) -> None:
    """Give the open file ``fd`` ``mode``; a no-op on Windows, whose files have no mode bits to give
    (a new file there is writable, which is all a mode could say)."""
    if sys.platform != "win32":
        os.fchmod(fd, mode)


def replace_at(d: Dir, name: str, data: bytes, mode: int, check: Callable[[], None] | None = None) -> None:
    """Write ``data`` to a new file beside ``name`` in ``d`` and rename it over ``name``.

    Readers see the old or the new contents; the old inode is left alone, so another hard link to it
    keeps its contents. Everything is relative to ``d``: a rename of a parent cannot redirect it.
    ``check`` runs just before the rename: raising there (the call ended while the data was written)
    leaves ``name`` as it was.
    """
    tmp, fd = create_temp(d, name)
    try:
        fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if check is not None:
            check()
        replace(d, tmp, name)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            unlink(d, tmp)
        except OSError:
            pass
        raise
    fsync_dir(d)  # some file systems refuse it; the rename itself has happened


def create_temp(d: Dir, name: str) -> tuple[str, int]:
    """A new, empty, private file ``.<name>.<random>.tmp`` in ``d`` (never through a link)."""
    for _ in range(100):
        tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, open_in(d, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _fs.O_NOFOLLOW | _fs.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)
