"""Archive tools: desktop_zip (zip, tar, tar.gz) and desktop_unzip (zip or tar, checked first).

desktop_unzip looks at every entry before it writes anything: an entry with an absolute path, a
``..`` that leaves ``dest``, a link pointing out of ``dest`` or a special file refuses the whole
archive, and so does a total size above MAX_EXTRACT_BYTES. desktop_zip writes to a temporary file
beside ``dest`` and renames it into place, then reports its size and SHA-256.

desktop_zip walks its source by descriptor and never enters a link to a folder; a link to a file
is stored as a link in a tar and followed (inside the roots only, under a confinement) in a zip.
FIFOs, sockets and devices are left out. Under a confinement, protected folders and files are left
out before they are opened, and desktop_unzip's checks (``_extract.py``) also refuse entries into
protected folders, persistence paths and ``.git`` folders.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from ....core.desktop import FILES, ToolContext, ToolError, ToolSpec
from . import _args, _at, _extract, _guard, _thread

MAX_EXTRACT_BYTES = 4 << 30
MAX_ENTRIES = 200_000
FORMATS = ("zip", "tar", "tar.gz", "tgz")
MAX_DEPTH = 256  # folders deeper than this are left out (each level is a nested generator)
_CHUNK = 1 << 20
_ZIP64_FROM = (1 << 31) - (1 << 20)  # zipfile needs zip64 announced for members it cannot size otherwise


def _sha256(stop: threading.Event, f: IO[bytes]) -> str:
    h = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(_CHUNK):
        _thread.check(stop)
        h.update(chunk)
    return h.hexdigest()


@dataclass
class _Item:
    arcname: str
    kind: str  # "dir", "file" or "link"
    info: os.stat_result
    dirfd: _at.Dir | None  # the folder the entry is in (valid until the walk moves on)
    name: str
    path: Path


def _items(g: _guard.Guard, stop: threading.Event, dirfd: _at.Dir, arc: str, here: Path, skip: set[_guard.Ident],
           depth: int = 0) -> Iterator[_Item]:
    """Entries below the open folder ``dirfd`` in os.walk order: the folder's subfolders, then its
    other entries, then each subfolder's contents. Links are never entered; protected entries
    (under a confinement) are left out before they are opened."""
    entries: list[tuple[str, os.stat_result]] = []
    for name in sorted(os.listdir(dirfd)):
        try:
            entries.append((name, _at.lstat(dirfd, name)))
        except FileNotFoundError:
            continue
    folders = [(n, i) for n, i in entries if stat.S_ISDIR(i.st_mode) and g.allowed(i)]
    for name, info in folders:
        yield _Item(f"{arc}/{name}", "dir", info, dirfd, name, here / name)
    for name, info in entries:
        _thread.check(stop)
        if _guard.ident(info) in skip or stat.S_ISDIR(info.st_mode):
            continue
        kind = "file" if stat.S_ISREG(info.st_mode) else "link" if stat.S_ISLNK(info.st_mode) else ""
        if kind:
            yield _Item(f"{arc}/{name}", kind, info, dirfd, name, here / name)
    if depth >= MAX_DEPTH:
        return
    for name, _info in folders:
        try:
            sub = _at.sub(dirfd, name)
        except OSError:
            continue
        try:
            if g.allowed(_at.stat_dir(sub)):
                yield from _items(g, stop, sub, f"{arc}/{name}", here / name, skip, depth + 1)
        finally:
            _at.close(sub)


def _open_item(g: _guard.Guard, item: _Item, *, follow: bool) -> tuple[int, os.stat_result] | None:
    """The regular file an entry is (or a link leads to, when ``follow``), opened; None to leave it out."""
    assert item.dirfd is not None
    try:
        if item.kind == "file":
            return g.open_entry(item.dirfd, item.name, item.path)
        if not follow:
            return None
        if g.confined:
            return g.open_file(item.path)  # followed inside the roots only
        return g.open_entry(item.dirfd, item.name, item.path, follow=True)
    except (ToolError, OSError):
        return None


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    t = time.localtime(mtime)
    return (1980, 1, 1, 0, 0, 0) if t.tm_year < 1980 else (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                                             t.tm_sec)


def _write_zip(g: _guard.Guard, stop: threading.Event, out: IO[bytes], items: Iterator[_Item]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in items:
            if item.kind == "dir":
                zi = zipfile.ZipInfo(item.arcname + "/", _zip_time(item.info.st_mtime))
                zi.external_attr = (stat.S_IMODE(item.info.st_mode) | stat.S_IFDIR) << 16 | 0x10
                zf.writestr(zi, b"")
                continue
            opened = _open_item(g, item, follow=True)
            if opened is None:
                continue
            fd, info = opened
            try:
                _add_to_zip(stop, zf, item, fd, info)
            finally:
                g.release(fd)


def _write_tar(g: _guard.Guard, stop: threading.Event, out: IO[bytes], items: Iterator[_Item], fmt: str) -> None:
    mode: Literal["w", "w:gz"] = "w" if fmt == "tar" else "w:gz"
    with tarfile.open(fileobj=out, mode=mode) as tf:
        for item in items:
            ti = tarfile.TarInfo(item.arcname)
            info = item.info
            ti.mode, ti.mtime, ti.uid, ti.gid = stat.S_IMODE(info.st_mode), int(info.st_mtime), info.st_uid, info.st_gid
            if item.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif item.kind == "link":
                assert item.dirfd is not None
                ti.type = tarfile.SYMTYPE
                ti.linkname = _at.readlink(item.dirfd, item.name)
                tf.addfile(ti)
            else:
                opened = _open_item(g, item, follow=False)
                if opened is None:
                    continue
                fd, info = opened
                try:
                    ti.size = info.st_size
                    with io.FileIO(fd, closefd=False) as src:
                        tf.addfile(ti, _Checked(src, stop))
                finally:
                    g.release(fd)


class _Checked(io.RawIOBase):
    """A reader that stops with its call (tarfile copies a member in one go)."""

    def __init__(self, src: io.FileIO, stop: threading.Event) -> None:
        self.src, self.stop = src, stop

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        _thread.check(self.stop)
        return self.src.read(size if size >= 0 else _CHUNK) or b""


def _source(g: _guard.Guard, source: Path) -> tuple[_at.Dir, os.stat_result, bool]:
    try:
        folder = g.open_dir(source)
        return folder, _at.stat_dir(folder), True
    except NotADirectoryError:
        pass
    except FileNotFoundError:
        raise ToolError(f"source {source} does not exist") from None
    try:
        fd, info = g.open_file(source)
    except FileNotFoundError:
        raise ToolError(f"source {source} does not exist") from None
    return fd, info, False


def _build(g: _guard.Guard, stop: threading.Event, source: Path, dest: Path, fmt: str) -> tuple[str, int, str]:
    src, src_info, is_dir = _source(g, source)
    try:
        slot = g.locate(dest, write=True)
    except FileNotFoundError:
        raise ToolError(f"directory {dest.parent} does not exist") from None
    if slot.info is not None and stat.S_ISDIR(slot.info.st_mode):
        raise ToolError(f"dest {dest} is a directory; pass the archive's file path")
    tmp, tfd = _at.create_temp(slot.dirfd, slot.name)
    try:
        with os.fdopen(tfd, "w+b") as out:
            skip = {_guard.ident(os.fstat(out.fileno()))} | ({_guard.ident(slot.info)} if slot.info else set())
            top = _Item(source.name, "dir" if is_dir else "file", src_info, None, source.name, source)
            if fmt == "zip":
                impl = "python-zipfile"
                if is_dir:
                    _write_zip(g, stop, out, itertools.chain([top], _items(g, stop, src, source.name, source, skip)))
                else:
                    _write_zip_file(stop, out, top, _at.fd(src), src_info)
            else:
                impl = "python-tarfile"
                if is_dir:
                    _write_tar(g, stop, out, itertools.chain([top], _items(g, stop, src, source.name, source, skip)), fmt)
                else:
                    _write_tar_file(stop, out, top, _at.fd(src), fmt)
            out.flush()
            os.fsync(out.fileno())
            digest = _sha256(stop, out)
            size = os.fstat(out.fileno()).st_size
        _at.replace(slot.dirfd, tmp, slot.name)
    except BaseException:
        try:
            _at.unlink(slot.dirfd, tmp)
        except OSError:
            pass
        raise
    return impl, size, digest


def _write_zip_file(stop: threading.Event, out: IO[bytes], item: _Item, fd: int, info: os.stat_result) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        _add_to_zip(stop, zf, item, fd, info)


def _add_to_zip(stop: threading.Event, zf: zipfile.ZipFile, item: _Item, fd: int, info: os.stat_result) -> None:
    """One opened file into the archive, streamed in chunks (a cancelled call stops between them)."""
    zi = zipfile.ZipInfo(item.arcname, _zip_time(info.st_mtime))
    zi.external_attr = (info.st_mode & 0xFFFF) << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.file_size = info.st_size
    with zf.open(zi, "w", force_zip64=info.st_size > _ZIP64_FROM) as dst:
        while chunk := os.read(fd, _CHUNK):
            _thread.check(stop)
            dst.write(chunk)


def _write_tar_file(stop: threading.Event, out: IO[bytes], item: _Item, fd: int, fmt: str) -> None:
    mode: Literal["w", "w:gz"] = "w" if fmt == "tar" else "w:gz"
    info = item.info
    with tarfile.open(fileobj=out, mode=mode) as tf:
        ti = tarfile.TarInfo(item.arcname)
        ti.mode, ti.mtime, ti.uid, ti.gid = stat.S_IMODE(info.st_mode), int(info.st_mtime), info.st_uid, info.st_gid
        ti.size = info.st_size
        with io.FileIO(fd, closefd=False) as src:
            tf.addfile(ti, _Checked(src, stop))


async def desktop_zip(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    source = _args.path(args, "source", ctx)
    dest = _args.path(args, "dest", ctx)
    fmt = _args.choice(args, "format", FORMATS, "zip")

    def build(stop: threading.Event) -> tuple[str, int, str]:
        with _guard.Guard(ctx.confined()) as g:
            return _build(g, stop, source, dest, fmt)

    try:
        impl, size, digest = await _thread.run(build)
    except OSError as exc:
        raise ToolError(f"could not write {dest}: {exc}") from exc
    return {"ok": True, "dest": str(dest), "size_bytes": size, "sha256": digest, "impl": impl, "format": fmt}


def _check_total(total: int, count: int) -> None:
    if count > MAX_ENTRIES:
        raise ToolError(f"archive has more than {MAX_ENTRIES} entries; nothing was extracted")
    if total > MAX_EXTRACT_BYTES:
        raise ToolError(f"archive would extract {total} bytes, over the {MAX_EXTRACT_BYTES}-byte limit; nothing was extracted")


def _unpack(g: _guard.Guard, stop: threading.Event, f: IO[bytes], source: Path, dest: Path) -> tuple[str, int, int]:
    try:
        slot = g.locate(dest, write=True)
    except FileNotFoundError:
        slot = None  # its parent is missing too: made below, each level checked
    if slot is not None and slot.info is not None and not stat.S_ISDIR(slot.info.st_mode):
        raise ToolError(f"dest {dest} exists and is not a directory")
    if zipfile.is_zipfile(f):
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            return ("python-zipfile", *_unpack_entries(g, stop, _extract.zip_entries(zf), dest, slot))
    f.seek(0)
    try:
        tf = tarfile.open(fileobj=f)
    except tarfile.TarError:
        raise ToolError(f"{source} is neither a zip nor a tar archive") from None
    with tf:
        return ("python-tarfile", *_unpack_entries(g, stop, _extract.tar_entries(tf, dest, MAX_ENTRIES, stop), dest, slot))


def _unpack_entries(g: _guard.Guard, stop: threading.Event, entries: list[_extract.Entry], dest: Path,
                    slot: _guard.Slot | None) -> tuple[int, int]:
    dest_fd: _at.Dir | None = None
    if slot is not None and slot.info is not None:
        dest_fd = g.open_dir(dest, write=True)
    _extract.check(g, entries, dest, dest_fd, slot)
    _check_total(sum(e.size for e in entries if e.kind == "file"), len(entries))
    if dest_fd is None:
        dest_fd = g.make_dirs(dest)
    return _extract.extract(g, stop, entries, dest_fd, dest, MAX_EXTRACT_BYTES)


async def desktop_unzip(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    source = _args.path(args, "source", ctx)
    dest = _args.path(args, "dest", ctx)

    def extract(stop: threading.Event) -> tuple[str, int, int]:
        with _guard.Guard(ctx.confined()) as g:
            try:
                fd, _ = g.open_file(source)
            except (FileNotFoundError, NotADirectoryError):
                raise ToolError(f"source {source} is not a file") from None
            except ToolError as exc:
                if str(exc).startswith("not a regular file") or str(exc).startswith("no such file"):
                    raise ToolError(f"source {source} is not a file") from None
                raise
            with io.BufferedReader(io.FileIO(fd, closefd=False)) as f:
                return _unpack(g, stop, f, source, dest)

    try:
        impl, files, written = await _thread.run(extract)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise ToolError(f"could not extract {source}: {exc}") from exc
    return {"ok": True, "dest": str(dest), "impl": impl, "files_extracted": files, "bytes_extracted": written}


def _preview(args: dict[str, Any]) -> str:
    return " -> ".join(str(args[k]) for k in ("source", "dest") if isinstance(args.get(k), str))


TOOLS = [
    ToolSpec("desktop_zip", FILES, desktop_zip, preview=_preview),
    ToolSpec("desktop_unzip", FILES, desktop_unzip, preview=_preview),
]
