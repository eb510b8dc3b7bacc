"""desktop_copy_directory's walk: directory descriptor to directory descriptor, never by path.

Each entry is opened with ``O_NOFOLLOW`` relative to its folder's descriptor and created relative
to the destination folder's descriptor, so a link swapped in during the copy cannot redirect it.
Under a confinement the guard decides per entry: protected files and folders are left out before
anything is read from them, and nothing is created below a ``.git`` folder, a persistence path or
a protected one; what was left out is counted, not named.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from hermes_relay.core.desktop import ToolError

from . import _fs, _guard, _thread

_CHUNK = 1 << 20


@dataclass
class Counts:
    files: int = 0
    dirs: int = 0
    skipped: int = 0


def copy_tree(g: _guard.Guard, stop: threading.Event, src: int, out: int, source: Path, dest: Path, *,
              preserve: bool, dereference: bool, counts: Counts) -> None:
    """Copy the entries of the open folder ``src`` into the open folder ``out``."""
    seen = {_guard.ident(os.fstat(src))}
    _copy_dir(g, stop, src, out, source, dest, preserve, dereference, counts, seen, _guard.ident(os.fstat(out)))


def _copy_dir(g: _guard.Guard, stop: threading.Event, src: int, out: int, source: Path, dest: Path,
              preserve: bool, dereference: bool, counts: Counts, seen: set[_guard.Ident], top: _guard.Ident) -> None:
    for name in sorted(os.listdir(src)):
        _thread.check(stop)
        try:
            _copy_entry(g, stop, src, out, name, source / name, dest / name, preserve, dereference, counts, seen, top)
        except ToolError:
            if not g.confined:
                raise
            counts.skipped += 1


def _copy_entry(g: _guard.Guard, stop: threading.Event, src: int, out: int, name: str, spath: Path, dpath: Path,
                preserve: bool, dereference: bool, counts: Counts, seen: set[_guard.Ident], top: _guard.Ident) -> None:
    try:
        info = os.stat(name, dir_fd=src, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) and not dereference:
        g.check_create(out, [name], dpath)
        _clear(out, name)
        os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=out)
        counts.files += 1
        return
    if stat.S_ISLNK(info.st_mode):
        followed = _follow(g, src, name, spath)
        if followed is None:
            return
        fd, info = followed
    elif stat.S_ISDIR(info.st_mode):
        fd = g.keep(os.open(name, _fs.DIR_FLAGS | _fs.O_NOFOLLOW, dir_fd=src))
        info = os.fstat(fd)
        g.check_file(info, spath, write=False)
    elif stat.S_ISREG(info.st_mode):
        fd, info = g.open_entry(src, name, spath)
    else:
        return  # FIFOs, sockets, devices: never opened, never copied
    try:
        _copy_opened(g, stop, fd, info, out, name, spath, dpath, preserve, dereference, counts, seen, top)
    finally:
        g.release(fd)


def _copy_opened(g: _guard.Guard, stop: threading.Event, fd: int, info: os.stat_result, out: int, name: str,
                 spath: Path, dpath: Path, preserve: bool, dereference: bool, counts: Counts,
                 seen: set[_guard.Ident], top: _guard.Ident) -> None:
    if stat.S_ISDIR(info.st_mode):
        key = _guard.ident(info)
        if key in seen or key == top:
            return  # a link loop, or the destination itself inside the source
        g.check_create(out, [name], dpath)
        existing = _lstat(out, name)
        if existing is None:
            g.mkdir(out, name)
            counts.dirs += 1
        sub = g.keep(os.open(name, _fs.DIR_FLAGS | _fs.O_NOFOLLOW, dir_fd=out))
        try:
            g.check_file(os.fstat(sub), dpath, write=True)
            _copy_dir(g, stop, fd, sub, spath, dpath, preserve, dereference, counts, seen | {key}, top)
            if preserve:
                os.chmod(sub, stat.S_IMODE(info.st_mode))
                os.utime(sub, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            g.release(sub)
        return
    g.check_create(out, [name], dpath)
    _clear(out, name)
    wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.O_NOFOLLOW | _fs.O_CLOEXEC,
                  stat.S_IMODE(info.st_mode), dir_fd=out)
    try:
        while chunk := os.read(fd, _CHUNK):
            _thread.check(stop)
            view = memoryview(chunk)
            while view:
                view = view[os.write(wfd, view):]
        os.fchmod(wfd, stat.S_IMODE(info.st_mode))
        if preserve:
            os.utime(wfd, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(wfd)
    counts.files += 1


def _follow(g: _guard.Guard, src: int, name: str, spath: Path) -> tuple[int, os.stat_result] | None:
    """The folder or regular file a link points to (inside the roots when confined), opened."""
    if g.confined:
        try:
            fd = g.open_dir(spath)
            return fd, os.fstat(fd)
        except NotADirectoryError:
            return g.open_file(spath)
        except FileNotFoundError:
            return None
    try:
        info = os.stat(name, dir_fd=src)
    except OSError:
        return None  # a dangling link
    if stat.S_ISDIR(info.st_mode):
        fd = g.keep(os.open(name, _fs.DIR_FLAGS, dir_fd=src))
        return fd, os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        return g.open_entry(src, name, spath, follow=True)
    return None


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _clear(dirfd: int, name: str) -> None:
    """Remove what is at ``name`` (not a folder) so a new file is created there, never written through."""
    existing = _lstat(dirfd, name)
    if existing is not None and not stat.S_ISDIR(existing.st_mode):
        os.unlink(name, dir_fd=dirfd)
