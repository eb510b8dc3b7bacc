"""File tools: desktop_read_file, desktop_write_file, desktop_patch, desktop_checksum, desktop_copy_directory.

Reads are bounded (``max_bytes``, never more than ``ctx.max_read``: what fits in a response frame) and say when they cut; writes
go to a temporary file beside the target and replace it in one rename, so a failed write or a
rejected patch leaves the old file as it was. Paths resolve against the call's cwd.

Every path goes through the call's guard (``_guard.Guard`` over ``ctx.confined()``): under a
confinement it is opened beneath its root and checked by identity, and the tool then works on the
opened descriptors. Only regular files are read, opened without blocking (a FIFO or a device is
refused at once), in bounded chunks.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from functools import partial
from pathlib import Path
from typing import Any

from ....core.desktop import FILES, ToolContext, ToolError, ToolSpec
from . import _args, _at, _copy, _diff, _fs, _guard, _thread

DEFAULT_READ = 1_000_000
HERE_READ = 64 << 10  # a file up to this size may be read on the event loop (see _thread.run_here)
_CHUNK = 1 << 20


def _os_error(action: str, target: Path, exc: OSError) -> ToolError:
    return ToolError(f"could not {action} {target}: {exc.strerror or exc}")


def _utf8_prefix(data: bytes) -> bytes:
    """``data`` without a UTF-8 sequence cut in half at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return data[: len(data) - back] if need > back else data
    return data


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any tool thread runs
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # a new file gets 0666 minus this, as open() would give it


def _read_fd(fd: int, target: Path, limit: int, stop: threading.Event) -> bytes:
    try:
        return _fs.read_upto(fd, limit, partial(_thread.check, stop), _CHUNK)
    except BlockingIOError:
        raise ToolError(f"{target} did not answer (reading it would wait); only regular files are read") from None
    except OSError as exc:
        raise _os_error("read", target, exc) from exc


def _slot(g: _guard.Guard, target: Path, *, create_dirs: bool = False) -> _guard.Slot:
    """Where a write to ``target`` lands (its folder made first when ``create_dirs``)."""
    try:
        return g.locate(target, write=True)
    except FileNotFoundError:
        pass
    if not create_dirs:
        raise ToolError(f"directory {target.parent} does not exist; pass create_dirs: true to create it")
    try:
        g.make_dirs(target.parent)
        return g.locate(target, write=True)
    except FileNotFoundError as exc:
        raise _os_error("create directory", target.parent, exc) from exc


def _write(slot: _guard.Slot, target: Path, data: bytes, stop: threading.Event) -> None:
    if slot.info is not None and stat.S_ISDIR(slot.info.st_mode):
        raise ToolError(f"{target} is a directory; pass the path of a file")
    mode = stat.S_IMODE(slot.info.st_mode) if slot.info is not None else 0o666 & ~_UMASK
    try:
        _at.replace_at(slot.dirfd, slot.name, data, mode, partial(_thread.check, stop))  # ended: nothing replaced
    except OSError as exc:
        raise _os_error("write", target, exc) from exc


async def desktop_read_file(args: dict[str, Any], ctx: ToolContext) -> str:
    target = _args.path(args, "path", ctx)
    limit = min(_args.integer(args, "max_bytes", default=DEFAULT_READ, minimum=0), ctx.max_read)

    def read(stop: threading.Event) -> str:
        with _guard.Guard(ctx.confined()) as g:
            fd, _ = _open(g, target)
            return _text(_read_fd(fd, target, limit + 1, stop), limit)

    def read_here() -> str:  # on the event loop: a small regular file on a local file system, or _fs.Slow
        assert ctx.here is not None
        with _guard.Guard(ctx.here) as g:
            fd, info = g.open_here(target)
            big = limit > HERE_READ  # more than is read here may be wanted
            if big and info.st_size > HERE_READ:
                raise _fs.Slow(str(target))
            try:
                data = _fs.read_upto(fd, min(limit, HERE_READ) + 1)
            except OSError as exc:
                raise _fs.Slow(str(target)) from exc
        if big and len(data) > HERE_READ:  # it grew meanwhile
            raise _fs.Slow(str(target))
        return _text(data, limit)

    return await _thread.run_here(read_here if ctx.here is not None else None, read)


def _text(data: bytes, limit: int) -> str:
    """A read's answer: ``data`` (``limit`` + 1 bytes at most) as text, cut at ``limit`` with a note."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace")
    head = _utf8_prefix(data[:limit]).decode("utf-8", "replace")
    return f"{head}\n[... truncated at {limit} bytes]"


def _open(g: _guard.Guard, target: Path) -> tuple[int, os.stat_result]:
    try:
        return g.open_file(target)
    except FileNotFoundError:
        raise ToolError(f"no such file: {target}") from None
    except NotADirectoryError:
        raise ToolError(f"no such file: {target} (a part of it is not a directory)") from None
    except OSError as exc:
        raise _os_error("read", target, exc) from exc


async def desktop_write_file(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = _args.path(args, "path", ctx)
    content = _args.text(args, "content", allow_empty=True)
    create_dirs = _args.boolean(args, "create_dirs", False)
    data = content.encode("utf-8", "surrogatepass")

    def write(stop: threading.Event) -> None:
        with _guard.Guard(ctx.confined()) as g:
            try:
                _write(_slot(g, target, create_dirs=create_dirs), target, data, stop)
            except OSError as exc:
                raise _os_error("write", target, exc) from exc

    await _thread.run(write)
    return {"ok": True, "bytes_written": len(data), "path": str(target)}


async def desktop_patch(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = _args.path(args, "path", ctx)
    patch = _args.text(args, "patch")
    try:
        diff = _diff.parse(patch)
    except _diff.PatchError as exc:
        raise ToolError(f"patch did not apply: {exc}") from exc

    def apply(stop: threading.Event) -> None:
        with _guard.Guard(ctx.confined()) as g:
            try:
                slot = g.locate(target, write=True)
            except FileNotFoundError:
                raise ToolError(f"directory {target.parent} does not exist") from None
            original: str | None = None
            if slot.info is not None:
                if not stat.S_ISREG(slot.info.st_mode):
                    raise ToolError(f"not a regular file: {target}")
                fd, info = g.open_entry(slot.dirfd, slot.name, target)
                raw = _read_fd(fd, target, info.st_size + 1, stop)
                try:
                    original = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ToolError(f"{target} is not UTF-8 text; desktop_patch leaves it unchanged") from None
            try:
                result = _diff.apply(diff, original)
            except _diff.PatchError as exc:
                raise ToolError(f"patch did not apply, {target} is unchanged: {exc}") from exc
            _write(slot, target, result.encode("utf-8"), stop)

    await _thread.run(apply)
    return {"ok": True, "hunks_applied": len(diff.hunks), "path": str(target)}


async def desktop_checksum(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = _args.path(args, "path", ctx)
    algorithm = _args.choice(args, "algorithm", ("sha256", "sha1", "md5"), "sha256")

    def digest(stop: threading.Event) -> tuple[str, int]:
        h = hashlib.new(algorithm)
        size = 0
        with _guard.Guard(ctx.confined()) as g:
            fd, _ = _open(g, target)
            try:
                while chunk := os.read(fd, _CHUNK):
                    _thread.check(stop)
                    h.update(chunk)
                    size += len(chunk)
            except BlockingIOError:
                raise ToolError(f"{target} did not answer (reading it would wait)") from None
            except OSError as exc:
                raise _os_error("read", target, exc) from exc
        return h.hexdigest(), size

    value, size = await _thread.run(digest)
    return {"path": str(target), "algorithm": algorithm, "hash": value, "size_bytes": size}


async def desktop_copy_directory(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    source = _args.path(args, "source", ctx)
    dest = _args.path(args, "dest", ctx)
    overwrite = _args.boolean(args, "overwrite", False)
    preserve = _args.boolean(args, "preserve_timestamps", True)
    dereference = _args.boolean(args, "dereference", False)
    if dest == source or source in dest.parents:
        raise ToolError(f"dest {dest} is inside source {source}; choose a destination outside it")

    def copy(stop: threading.Event) -> _copy.Counts:
        with _guard.Guard(ctx.confined()) as g:
            try:
                src = g.open_dir(source)
            except (FileNotFoundError, NotADirectoryError):
                raise ToolError(f"source {source} is not a directory") from None
            try:
                existing = g.locate(dest, write=True).info
            except FileNotFoundError:
                existing = None
            if existing is not None and not overwrite:
                raise ToolError(f"dest {dest} already exists; pass overwrite: true to copy over it")
            existed = existing is not None and stat.S_ISDIR(existing.st_mode)
            out = g.make_dirs(dest)
            counts = _copy.Counts(dirs=0 if existed else 1)
            _copy.copy_tree(g, stop, src, out, source, dest, preserve=preserve, dereference=dereference, counts=counts)
            return counts

    try:
        counts = await _thread.run(copy)
    except OSError as exc:
        raise ToolError(f"copy stopped at an error ({exc}); files copied so far stay in {dest}") from exc
    result: dict[str, Any] = {
        "ok": True,
        "source": str(source),
        "dest": str(dest),
        "files_copied": counts.files,
        "dirs_copied": counts.dirs,
    }
    if counts.skipped:
        result["skipped"] = counts.skipped
        result["skipped_reason"] = "entries this relay host may not read or write (its confinement) were left out"
    return result


def _path_preview(*names: str) -> Any:
    def preview(args: dict[str, Any]) -> str:
        return " -> ".join(str(args.get(n)) for n in names if isinstance(args.get(n), str))

    return preview


TOOLS = [
    ToolSpec("desktop_read_file", FILES, desktop_read_file, preview=_path_preview("path")),
    ToolSpec("desktop_write_file", FILES, desktop_write_file, preview=_path_preview("path")),
    ToolSpec("desktop_patch", FILES, desktop_patch, preview=_path_preview("path")),
    ToolSpec("desktop_checksum", FILES, desktop_checksum, preview=_path_preview("path")),
    ToolSpec("desktop_copy_directory", FILES, desktop_copy_directory, preview=_path_preview("source", "dest")),
]
