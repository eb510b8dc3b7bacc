"""Archive tools: desktop_zip (zip, tar, tar.gz) and desktop_unzip (zip or tar, checked first).

desktop_unzip looks at every entry before it writes anything: an entry with an absolute path, a
``..`` that leaves ``dest``, a link pointing out of ``dest`` or a special file refuses the whole
archive, and so does a total size above MAX_EXTRACT_BYTES. desktop_zip writes to a temporary file
beside ``dest`` and renames it into place, then reports its size and SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from hermes_relay.core.desktop import FILES, ToolContext, ToolError, ToolSpec

from . import _args, _thread

MAX_EXTRACT_BYTES = 4 << 30
MAX_ENTRIES = 200_000
FORMATS = ("zip", "tar", "tar.gz", "tgz")
_CHUNK = 1 << 20


def _sha256(stop: threading.Event, target: Path) -> str:
    h = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(_CHUNK):
            _thread.check(stop)
            h.update(chunk)
    return h.hexdigest()


def _entries(stop: threading.Event, source: Path, skip: set[Path]):
    """(path, name in archive) for ``source`` and everything under it, parents before children."""
    base = source.parent
    yield source, source.name
    if not source.is_dir() or source.is_symlink():
        return
    for here, dirs, files in os.walk(source):
        _thread.check(stop)
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            item = Path(here) / name
            if item not in skip:
                yield item, item.relative_to(base).as_posix()


def _write_archive(stop: threading.Event, source: Path, dest: Path, fmt: str, tmp: Path) -> str:
    skip = {dest, tmp}
    if fmt == "zip":
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for item, name in _entries(stop, source, skip):
                if item.is_dir() and not item.is_symlink():
                    zf.write(item, name + "/")
                elif item.is_file():
                    zf.write(item, name)
        return "python-zipfile"
    mode: Literal["w", "w:gz"] = "w" if fmt == "tar" else "w:gz"
    with tarfile.open(tmp, mode) as tf:
        for item, name in _entries(stop, source, skip):
            tf.add(item, name, recursive=False)
    return "python-tarfile"


async def desktop_zip(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    source = _args.path(args, "source", ctx)
    dest = _args.path(args, "dest", ctx)
    fmt = _args.choice(args, "format", FORMATS, "zip")
    if not source.exists():
        raise ToolError(f"source {source} does not exist")
    if dest.is_dir():
        raise ToolError(f"dest {dest} is a directory; pass the archive's file path")
    if not dest.parent.is_dir():
        raise ToolError(f"directory {dest.parent} does not exist")

    def build(stop: threading.Event) -> tuple[str, int, str]:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            impl = _write_archive(stop, source, dest, fmt, tmp)
            digest = _sha256(stop, tmp)
            size = tmp.stat().st_size
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return impl, size, digest

    try:
        impl, size, digest = await _thread.run(build)
    except OSError as exc:
        raise ToolError(f"could not write {dest}: {exc}") from exc
    return {"ok": True, "dest": str(dest), "size_bytes": size, "sha256": digest, "impl": impl, "format": fmt}


def _safe_name(name: str) -> PurePosixPath:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")):
        raise ToolError(f"archive entry {name!r} has an absolute path; nothing was extracted")
    if ".." in posix.parts:
        raise ToolError(f"archive entry {name!r} leaves the destination; nothing was extracted")
    return posix


def _check_total(total: int, count: int) -> None:
    if count > MAX_ENTRIES:
        raise ToolError(f"archive has more than {MAX_ENTRIES} entries; nothing was extracted")
    if total > MAX_EXTRACT_BYTES:
        raise ToolError(f"archive would extract {total} bytes, over the {MAX_EXTRACT_BYTES}-byte limit; nothing was extracted")


def _inside(dest_real: str, target: Path) -> bool:
    real = os.path.realpath(target)
    return real == dest_real or real.startswith(dest_real + os.sep)


def _unzip(stop: threading.Event, source: Path, dest: Path) -> tuple[int, int]:
    with zipfile.ZipFile(source) as zf:
        members = zf.infolist()
        dest_real = os.path.realpath(dest)
        for m in members:
            target = dest / _safe_name(m.filename)
            if not _inside(dest_real, target if m.is_dir() else target.parent):
                raise ToolError(f"archive entry {m.filename!r} would be written through a link out of {dest}; "
                                "nothing was extracted")
        _check_total(sum(m.file_size for m in members), len(members))
        dest.mkdir(parents=True, exist_ok=True)
        written = files = 0
        for m in members:
            _thread.check(stop)
            target = dest / _safe_name(m.filename)
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            with zf.open(m) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > MAX_EXTRACT_BYTES:
                        raise ToolError(f"extraction passed the {MAX_EXTRACT_BYTES}-byte limit and stopped")
                    out.write(chunk)
            files += 1
    return files, written


def _untar(stop: threading.Event, source: Path, dest: Path) -> tuple[int, int]:
    with tarfile.open(source) as tf:
        members = tf.getmembers()
        dest_abs = os.path.abspath(dest)
        checked = []
        for m in members:
            _safe_name(m.name)
            try:
                checked.append(tarfile.data_filter(m, dest_abs))
            except tarfile.FilterError as exc:
                raise ToolError(f"archive entry {m.name!r} refused ({exc}); nothing was extracted") from None
        dest_real = os.path.realpath(dest)
        for m in checked:
            if not _inside(dest_real, (dest / m.name).parent):
                raise ToolError(f"archive entry {m.name!r} would be written through a link out of {dest}; nothing was extracted")
        _check_total(sum(m.size for m in checked if m.isfile()), len(checked))
        dest.mkdir(parents=True, exist_ok=True)
        files = written = 0
        for m in checked:
            _thread.check(stop)
            tf.extract(m, dest, filter="data")
            if m.isfile():
                files += 1
                written += m.size
    return files, written


async def desktop_unzip(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    source = _args.path(args, "source", ctx)
    dest = _args.path(args, "dest", ctx)
    if not source.is_file():
        raise ToolError(f"source {source} is not a file")
    if dest.exists() and not dest.is_dir():
        raise ToolError(f"dest {dest} exists and is not a directory")

    def extract(stop: threading.Event) -> tuple[str, int, int]:
        if zipfile.is_zipfile(source):
            return ("python-zipfile", *_unzip(stop, source, dest))
        if tarfile.is_tarfile(source):
            return ("python-tarfile", *_untar(stop, source, dest))
        raise ToolError(f"{source} is neither a zip nor a tar archive")

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
