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

from ....core.desktop import ToolError
from . import _at, _fs, _guard, _thread

_CHUNK = 1 << 20


@dataclass
class Counts:
    files: int = 0
    dirs: int = 0
    skipped: int = 0


def copy_tree(g: _guard.Guard, stop: threading.Event, src: _at.Dir, out: _at.Dir, source: Path, dest: Path, *,
              preserve: bool, dereference: bool, counts: Counts) -> None:
    """Copy the entries of the open folder ``src`` into the open folder ``out``."""
    seen = {_guard.ident(_at.stat_dir(src))}
    _copy_dir(g, stop, src, out, source, dest, preserve, dereference, counts, seen, _guard.ident(_at.stat_dir(out)))


def _copy_dir(g: _guard.Guard, stop: threading.Event, src: _at.Dir, out: _at.Dir, source: Path, dest: Path,
              preserve: bool, dereference: bool, counts: Counts, seen: set[_guard.Ident], top: _guard.Ident) -> None:
    for name in sorted(os.listdir(src)):
        _thread.check(stop)
        try:
            _copy_entry(g, stop, src, out, name, source / name, dest / name, preserve, dereference, counts, seen, top)
        except ToolError:
            if not g.confined:
                raise
            counts.skipped += 1


def _copy_entry(g: _guard.Guard, stop: threading.Event, src: _at.Dir, out: _at.Dir, name: str, spath: Path,
                dpath: Path, preserve: bool, dereference: bool, counts: Counts, seen: set[_guard.Ident],
                top: _guard.Ident) -> None:
    try:
        info = _at.lstat(src, name)
    except FileNotFoundError:
        return
    fd: _at.Dir
    if stat.S_ISLNK(info.st_mode) and not dereference:
        g.check_create(out, [name], dpath)
        _clear(out, name)
        _at.symlink(out, _at.readlink(src, name), name)
        counts.files += 1
        return
    if stat.S_ISLNK(info.st_mode):
        followed = _follow(g, src, name, spath)
        if followed is None:
            return
        fd, info = followed
    elif stat.S_ISDIR(info.st_mode):
        fd = g.keep_dir(_at.sub(src, name))
        info = _at.stat_dir(fd)
        g.check_file(info, spath, write=False)
    elif stat.S_ISREG(info.st_mode):
        fd, info = g.open_entry(src, name, spath)
    else:
        return  # FIFOs, sockets, devices: never opened, never copied
    try:
        _copy_opened(g, stop, fd, info, out, name, spath, dpath, preserve, dereference, counts, seen, top)
    finally:
        g.release(fd)


def _copy_opened(g: _guard.Guard, stop: threading.Event, fd: _at.Dir, info: os.stat_result, out: _at.Dir, name: str,
                 spath: Path, dpath: Path, preserve: bool, dereference: bool, counts: Counts,
                 seen: set[_guard.Ident], top: _guard.Ident) -> None:
    if stat.S_ISDIR(info.st_mode):
        key = _guard.ident(info)
        if key in seen or key == top:
            return  # a link loop, or the destination itself inside the source
        g.check_create(out, [name], dpath)
        existing = _at.lstat_or_none(out, name)
        if existing is None:
            g.mkdir(out, name)
            counts.dirs += 1
        sub = g.keep_dir(_at.sub(out, name))
        try:
            g.check_file(_at.stat_dir(sub), dpath, write=True)
            _copy_dir(g, stop, fd, sub, spath, dpath, preserve, dereference, counts, seen | {key}, top)
            if preserve:
                _at.chmod_dir(sub, stat.S_IMODE(info.st_mode))
                _at.set_dir_times(sub, (info.st_atime_ns, info.st_mtime_ns))
        finally:
            g.release(sub)
        return
    g.check_create(out, [name], dpath)
    _clear(out, name)
    wfd = _at.open_in(out, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.O_NOFOLLOW | _fs.O_CLOEXEC,
                      stat.S_IMODE(info.st_mode))
    try:
        while chunk := os.read(_at.fd(fd), _CHUNK):
            _thread.check(stop)
            view = memoryview(chunk)
            while view:
                view = view[os.write(wfd, view):]
        _at.fchmod(wfd, stat.S_IMODE(info.st_mode))
        if preserve:
            _at.set_times(out, name, wfd, (info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(wfd)
    counts.files += 1


def _follow(g: _guard.Guard, src: _at.Dir, name: str, spath: Path) -> tuple[_at.Dir, os.stat_result] | None:
    """The folder or regular file a link points to (inside the roots when confined), opened."""
    if g.confined:
        try:
            folder = g.open_dir(spath)
            return folder, _at.stat_dir(folder)
        except NotADirectoryError:
            return g.open_file(spath)
        except FileNotFoundError:
            return None
    try:
        info = _at.stat_follow(src, name)
    except OSError:
        return None  # a dangling link
    if stat.S_ISDIR(info.st_mode):
        folder = g.keep_dir(_at.sub(src, name, follow=True))
        return folder, _at.stat_dir(folder)
    if stat.S_ISREG(info.st_mode):
        return g.open_entry(src, name, spath, follow=True)
    return None


def _clear(d: _at.Dir, name: str) -> None:
    """Remove what is at ``name`` (not a folder) so a new file is created there, never written through."""
    existing = _at.lstat_or_none(d, name)
    if existing is not None and not stat.S_ISDIR(existing.st_mode):
        _at.unlink(d, name)
