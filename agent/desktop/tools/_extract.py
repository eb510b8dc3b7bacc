"""desktop_unzip's engine: every entry is checked before anything is written, then written by descriptor.

An archive becomes a list of ``Entry`` (zip members, or tar members passed through tarfile's
``data`` filter). Refused outright, before anything is written: absolute names, ``..``, links whose
target is absolute or leaves ``dest``, and (under a confinement) any name with a ``.git`` part. Then
each entry's path is looked up below ``dest``: an existing link on the way refuses the archive (it
could lead out), and the guard refuses protected folders and persistence paths by identity, and
creating them by name. Extraction opens every folder with ``O_NOFOLLOW`` relative to its parent's
descriptor and creates every file new (``O_EXCL``), so nothing is ever written through a link, not
even one planted during the extraction.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from ....core.desktop import ToolError
from . import _at, _fs, _guard, _thread

_CHUNK = 1 << 20
_NOTHING = "nothing was extracted"


@dataclass
class Entry:
    name: str
    parts: tuple[str, ...]
    kind: str  # "dir", "file" or "link"
    size: int = 0
    mode: int | None = None
    mtime: float | None = None
    link: str = ""
    data: Callable[[], IO[bytes] | None] | None = None


def safe_parts(name: str) -> tuple[str, ...]:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")):
        raise ToolError(f"archive entry {name!r} has an absolute path; {_NOTHING}")
    if ".." in posix.parts:
        raise ToolError(f"archive entry {name!r} leaves the destination; {_NOTHING}")
    return tuple(p for p in posix.parts if p not in ("", "."))


def zip_entries(zf: zipfile.ZipFile) -> list[Entry]:
    out = []
    for m in zf.infolist():
        parts = safe_parts(m.filename)
        if not parts:
            continue
        kind = "dir" if m.is_dir() else "file"
        out.append(Entry(m.filename, parts, kind, m.file_size, data=partial(zf.open, m)))
    return out


def tar_entries(tf: tarfile.TarFile, dest: Path, limit: int, stop: threading.Event | None = None) -> list[Entry]:
    """The tar's entries, read one header at a time: more than ``limit`` refuses it at once (a compressed
    tar of millions of empty headers is a few kilobytes, and reading them all first took the agent's
    memory and ran past the call's deadline)."""
    out = []
    dest_abs = os.path.abspath(dest)
    for count, m in enumerate(tf, 1):
        if stop is not None:
            _thread.check(stop)
        if count > limit:
            raise ToolError(f"archive has more than {limit} entries; {_NOTHING}")
        parts = safe_parts(m.name)
        try:
            m = tarfile.data_filter(m, dest_abs)
        except tarfile.FilterError as exc:
            raise ToolError(f"archive entry {m.name!r} refused ({exc}); {_NOTHING}") from None
        if not parts:
            continue
        if m.isdir():
            out.append(Entry(m.name, parts, "dir", mode=m.mode, mtime=m.mtime))
        elif m.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(parts)), m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise ToolError(f"archive entry {m.name!r} refused (a link out of the destination); {_NOTHING}")
            out.append(Entry(m.name, parts, "link", link=m.linkname))
        elif m.isfile() or m.islnk():  # a hard link is written as a copy of its target's data
            size = m.size if m.isfile() else 0
            out.append(Entry(m.name, parts, "file", size, m.mode, m.mtime, data=partial(tf.extractfile, m)))
        else:
            raise ToolError(f"archive entry {m.name!r} refused (a special file); {_NOTHING}")
    return out


def check(g: _guard.Guard, entries: list[Entry], dest: Path, dest_fd: _at.Dir | None, parent: _guard.Slot | None
          ) -> None:
    """Refuse the whole archive if any entry may not be written (nothing is created here)."""
    links = {e.parts for e in entries if e.kind == "link"}
    for e in entries:
        path = dest.joinpath(*e.parts)
        try:
            if any(e.parts[:i] in links for i in range(1, len(e.parts))):
                raise ToolError(f"archive entry {e.name!r} would be written through a link in the same archive")
            if g.confined and ".git" in map(_guard.fold, e.parts):
                raise _guard.in_git(path)
            if dest_fd is None:
                if parent is not None:
                    g.check_create(parent.dirfd, [parent.name, *e.parts], path)
                continue
            _check_below(g, dest_fd, e, dest, path)
        except ToolError as exc:
            message = str(exc)
            raise ToolError(message if message.endswith(_NOTHING) else f"{message}; {_NOTHING}") from None


def _check_below(g: _guard.Guard, dest_fd: _at.Dir, e: Entry, dest: Path, path: Path) -> None:
    cur = dest_fd
    try:
        for i, name in enumerate(e.parts):
            info = _at.lstat_or_none(cur, name)
            if info is None:
                g.check_create(cur, list(e.parts[i:]), path)
                return
            last = i == len(e.parts) - 1
            if stat.S_ISLNK(info.st_mode) and not (last and e.kind != "dir"):
                raise ToolError(f"archive entry {e.name!r} would be written through a link out of {dest}")
            if last and e.kind != "dir":
                g.check_create(cur, [name], path)
                return
            if not stat.S_ISDIR(info.st_mode):
                raise ToolError(f"archive entry {e.name!r} needs {name!r} to be a folder, but it is a file")
            nxt = _at.sub(cur, name)
            if cur != dest_fd:
                _at.close(cur)
            cur = nxt
            g.check_file(_at.stat_dir(cur), path, write=True)
    finally:
        if cur != dest_fd:
            _at.close(cur)


def extract(g: _guard.Guard, stop: threading.Event, entries: list[Entry], dest_fd: _at.Dir, dest: Path,
            max_bytes: int) -> tuple[int, int]:
    files = written = 0
    cached: tuple[tuple[str, ...], _at.Dir] | None = None  # the last entry's folder, kept open for the next
    try:
        for e in entries:
            _thread.check(stop)
            path = dest.joinpath(*e.parts)
            folder = e.parts if e.kind == "dir" else e.parts[:-1]
            if cached is not None and cached[0] == folder:
                here = cached[1]
            else:
                if cached is not None:
                    _at.close(cached[1])
                    cached = None
                here = _enter(g, dest_fd, folder, path, dest)
                if here != dest_fd:
                    cached = (folder, here)
            if e.kind == "dir":
                continue
            name = e.parts[-1]
            g.check_create(here, [name], path)
            existing = _at.lstat_or_none(here, name)
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise ToolError(f"archive entry {e.name!r} is a file but {path} is a folder")
                _at.unlink(here, name)
            if e.kind == "link":
                _at.symlink(here, e.link, name)
                continue
            written += _write(stop, here, name, e, max_bytes - written, max_bytes)
            files += 1
    finally:
        if cached is not None:
            _at.close(cached[1])
    return files, written


def _enter(g: _guard.Guard, dest_fd: _at.Dir, folder: tuple[str, ...], path: Path, dest: Path) -> _at.Dir:
    """The folder ``folder`` below ``dest_fd``, made where missing, never through a link."""
    cur = dest_fd
    try:
        for name in folder:
            info = _at.lstat_or_none(cur, name)
            if info is None:
                g.check_create(cur, [name], path)
                g.mkdir(cur, name)
            elif not stat.S_ISDIR(info.st_mode):
                raise ToolError(f"{path} would be written through a link or a file out of {dest}")
            nxt = _at.sub(cur, name)
            if cur != dest_fd:
                _at.close(cur)
            cur = nxt
            g.check_file(_at.stat_dir(cur), path, write=True)
    except BaseException:
        if cur != dest_fd:
            _at.close(cur)
        raise
    return cur


def _write(stop: threading.Event, here: _at.Dir, name: str, e: Entry, budget: int, max_bytes: int) -> int:
    assert e.data is not None
    src = e.data()
    mode = 0o666 if e.mode is None else e.mode & 0o777
    fd = _at.open_in(here, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.O_NOFOLLOW | _fs.O_CLOEXEC, mode)
    written = 0
    try:
        if src is not None:
            with src:
                while chunk := src.read(_CHUNK):
                    _thread.check(stop)
                    written += len(chunk)
                    if written > budget:
                        raise ToolError(f"extraction passed the {max_bytes}-byte limit and stopped")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
        if e.mode is not None:
            _at.fchmod(fd, e.mode & 0o7777)
        if e.mtime is not None:
            ns = int(e.mtime * 1_000_000_000)
            _at.set_times(here, name, fd, (ns, ns))
    finally:
        os.close(fd)
    return written

