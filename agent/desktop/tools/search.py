"""desktop_search_files: find files by path glob, or by a regex over their contents.

The default is a path glob (``*`` and ``?`` stay within one path segment, ``**`` crosses
segments; a pattern matches the path relative to ``cwd`` or the file's name). ``content: true``
searches contents with ripgrep when ``rg`` is on the agent's PATH, or with a Python walk otherwise.
Both skip .git, node_modules, dist, .next and .cache, stop at ``max_results`` and say ``truncated``.
Matches are absolute file paths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import trio

from hermes_relay.core.desktop import FILES, ToolContext, ToolError, ToolSpec

from . import _args, _proc, _thread

SKIP_DIRS = frozenset({".git", "node_modules", "dist", ".next", ".cache"})
DEFAULT_MAX = 100
MAX_RESULTS = 10_000
_BINARY_SNIFF = 8192


def glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    glob = pattern.replace("\\", "/")
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            i += 2
            if glob.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _walk(root: Path, stop: threading.Event):
    for here, dirs, files in os.walk(root):
        _thread.check(stop)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            yield Path(here) / name


def path_search(stop: threading.Event, root: Path, pattern: str, limit: int) -> tuple[list[str], bool]:
    regex = glob_regex(pattern)
    matches: list[str] = []
    for file in _walk(root, stop):
        rel = file.relative_to(root).as_posix()
        if regex.match(rel) or regex.match(file.name):
            if len(matches) == limit:
                return matches, True
            matches.append(str(file))
    return matches, False


def content_search(stop: threading.Event, root: Path, regex: re.Pattern[bytes], limit: int) -> tuple[list[str], bool]:
    matches: list[str] = []
    for file in _walk(root, stop):
        try:
            with open(file, "rb") as f:
                head = f.read(_BINARY_SNIFF)
                if b"\x00" in head:
                    continue
                f.seek(0)
                found = any(regex.search(line) for line in f)
        except OSError:
            continue
        if found:
            if len(matches) == limit:
                return matches, True
            matches.append(str(file))
    return matches, False


async def ripgrep_search(rg: str, root: Path, pattern: str, limit: int) -> tuple[list[str], bool]:
    argv = [rg, "--files-with-matches", "--no-messages", "--no-config", "--hidden", "--no-ignore", "--sort", "path"]
    for name in sorted(SKIP_DIRS):
        argv += ["--glob", f"!{name}"]
    argv += ["-e", pattern, "--", str(root)]
    try:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_proc.session_kwargs()
        )
    except OSError as exc:
        raise ToolError(f"could not start ripgrep: {exc.strerror or exc}") from exc
    matches: list[str] = []
    truncated = False
    buffer = b""
    errors: bytes | bytearray = b""
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with proc.stdout:
            while not truncated:
                chunk = await proc.stdout.receive_some(65536)
                if not chunk:
                    break
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if len(matches) == limit:
                        truncated = True
                        break
                    matches.append(os.fsdecode(line))
        if not truncated:
            errors = await proc.stderr.receive_some(4096)
            await proc.wait()
    finally:
        if proc.returncode is None:
            await _proc.kill_tree(proc, grace=0.2)
        with trio.CancelScope(shield=True):
            await proc.stderr.aclose()  # type: ignore[union-attr]
    if not truncated and proc.returncode == 2 and not matches:
        message = errors.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"invalid search: {message[-1] if message else 'ripgrep failed'}")
    return matches, truncated


def find_rg(ctx: ToolContext) -> str | None:
    env = _args.base_env(ctx)
    return shutil.which("rg", path=env.get("PATH", os.defpath))


async def desktop_search_files(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pattern = _args.text(args, "pattern")
    root = _args.directory(args, "cwd", ctx)
    limit = _args.integer(args, "max_results", default=DEFAULT_MAX, minimum=1, maximum=MAX_RESULTS)
    content = _args.boolean(args, "content", False)
    if not content:
        matches, truncated = await _thread.run(path_search, root, pattern, limit)
        return {"matches": matches, "truncated": truncated, "mode": "glob"}
    try:
        regex = re.compile(pattern.encode("utf-8"))
    except re.error as exc:
        raise ToolError(f"invalid regex {pattern!r}: {exc}") from exc
    rg = find_rg(ctx)
    if rg:
        matches, truncated = await ripgrep_search(rg, root, pattern, limit)
        impl = "ripgrep"
    else:
        matches, truncated = await _thread.run(content_search, root, regex, limit)
        impl = "python"
    return {"matches": matches, "truncated": truncated, "mode": "content", "impl": impl}


def _preview(args: dict[str, Any]) -> str:
    pattern = args.get("pattern")
    return pattern if isinstance(pattern, str) else ""


TOOLS = [ToolSpec("desktop_search_files", FILES, desktop_search_files, preview=_preview)]
