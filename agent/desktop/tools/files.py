"""File tools: desktop_read_file, desktop_write_file, desktop_patch, desktop_checksum, desktop_copy_directory.

Reads are bounded (``max_bytes``, never more than ``ctx.max_output``) and say when they cut; writes
go to a temporary file beside the target and replace it in one rename, so a failed write or a
rejected patch leaves the old file as it was. Paths resolve against the call's cwd.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from hermes_relay.core import fileio
from hermes_relay.core.desktop import FILES, ToolContext, ToolError, ToolSpec

from . import _args, _diff, _thread

DEFAULT_READ = 1_000_000
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


def _regular(target: Path) -> os.stat_result:
    try:
        info = target.stat()
    except FileNotFoundError:
        raise ToolError(f"no such file: {target}") from None
    except OSError as exc:
        raise _os_error("read", target, exc) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ToolError(f"not a regular file: {target}")
    return info


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any tool thread runs
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # a new file gets 0666 minus this, as open() would give it


def write_atomic(target: Path, data: bytes) -> None:
    """Replace ``target`` (following a symlink to its file) with ``data``, keeping its mode."""
    real = fileio.write_target(target)
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fileio.replace_file(real, data, mode=mode)


async def desktop_read_file(args: dict[str, Any], ctx: ToolContext) -> str:
    target = _args.path(args, "path", ctx)
    limit = min(_args.integer(args, "max_bytes", default=DEFAULT_READ, minimum=0), ctx.max_output)

    def read(stop: threading.Event) -> str:
        _regular(target)
        try:
            with open(target, "rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise _os_error("read", target, exc) from exc
        if len(data) <= limit:
            return data.decode("utf-8", "replace")
        head = _utf8_prefix(data[:limit]).decode("utf-8", "replace")
        return f"{head}\n[... truncated at {limit} bytes]"

    return await _thread.run(read)


async def desktop_write_file(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = _args.path(args, "path", ctx)
    content = _args.text(args, "content", allow_empty=True)
    create_dirs = _args.boolean(args, "create_dirs", False)
    data = content.encode("utf-8", "surrogatepass")

    def write(stop: threading.Event) -> None:
        if target.is_dir():
            raise ToolError(f"{target} is a directory; pass the path of a file")
        parent = target.parent
        if not parent.is_dir():
            if not create_dirs:
                raise ToolError(f"directory {parent} does not exist; pass create_dirs: true to create it")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _os_error("create directory", parent, exc) from exc
        try:
            write_atomic(target, data)
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
        original: str | None = None
        if target.exists() or target.is_symlink():
            _regular(target)
            try:
                original = target.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise ToolError(f"{target} is not UTF-8 text; desktop_patch leaves it unchanged") from None
            except OSError as exc:
                raise _os_error("read", target, exc) from exc
        elif not target.parent.is_dir():
            raise ToolError(f"directory {target.parent} does not exist")
        try:
            result = _diff.apply(diff, original)
        except _diff.PatchError as exc:
            raise ToolError(f"patch did not apply, {target} is unchanged: {exc}") from exc
        try:
            write_atomic(target, result.encode("utf-8"))
        except OSError as exc:
            raise _os_error("write", target, exc) from exc

    await _thread.run(apply)
    return {"ok": True, "hunks_applied": len(diff.hunks), "path": str(target)}


async def desktop_checksum(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = _args.path(args, "path", ctx)
    algorithm = _args.choice(args, "algorithm", ("sha256", "sha1", "md5"), "sha256")

    def digest(stop: threading.Event) -> tuple[str, int]:
        _regular(target)
        h = hashlib.new(algorithm)
        size = 0
        try:
            with open(target, "rb") as f:
                while chunk := f.read(_CHUNK):
                    _thread.check(stop)
                    h.update(chunk)
                    size += len(chunk)
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
    if not source.is_dir():
        raise ToolError(f"source {source} is not a directory")
    if dest == source or source in dest.parents:
        raise ToolError(f"dest {dest} is inside source {source}; choose a destination outside it")
    if dest.exists() and not overwrite:
        raise ToolError(f"dest {dest} already exists; pass overwrite: true to copy over it")
    counts = {"files": 0, "dirs": 0}

    def copy(stop: threading.Event) -> None:
        copier = shutil.copy2 if preserve else shutil.copy
        for root, dirs, files in os.walk(source, followlinks=dereference):
            _thread.check(stop)
            rel = Path(root).relative_to(source)
            out_dir = dest / rel
            if not out_dir.is_dir():
                out_dir.mkdir(parents=True, exist_ok=True)
                counts["dirs"] += 1
            names = list(files)
            if not dereference:
                names += [d for d in dirs if (Path(root) / d).is_symlink()]
            for name in names:
                _thread.check(stop)
                src, dst = Path(root) / name, out_dir / name
                if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
                    dst.unlink()
                if src.is_symlink() and not dereference:
                    os.symlink(os.readlink(src), dst)
                elif src.is_file():
                    copier(src, dst)
                else:
                    continue
                counts["files"] += 1
            if preserve:
                shutil.copystat(root, out_dir)

    try:
        await _thread.run(copy)
    except OSError as exc:
        raise ToolError(f"copy stopped at an error ({exc}); files copied so far stay in {dest}") from exc
    return {
        "ok": True,
        "source": str(source),
        "dest": str(dest),
        "files_copied": counts["files"],
        "dirs_copied": counts["dirs"],
    }


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
