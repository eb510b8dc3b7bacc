"""desktop_search_files: find files by path glob, or by a regex over their contents.

The default is a path glob (``*`` and ``?`` stay within one path segment, ``**`` crosses
segments; a pattern matches the path relative to ``cwd`` or the file's name; ``_glob`` matches without
backtracking). ``content: true`` searches contents with ripgrep when ``rg`` is on the agent's PATH, or with
a Python walk otherwise, run in a child process the call kills (``_searchchild``: a backtracking regex
holds the GIL).
Both skip .git, node_modules, dist, .next and .cache, stop at ``max_results`` and say ``truncated``.
Matches are absolute file paths.

The Python walk opens folders by descriptor with O_NOFOLLOW (links to folders are listed, never
entered), looks only at regular files for contents (opened O_NONBLOCK and checked with fstat: a
FIFO or a device never blocks a thread) and reads them in bounded chunks. Under a confinement the
guard prunes protected folders and files *before* a name or a byte is matched, so a search cannot be
used as an oracle on the agent's own state; ripgrep is then not used (it cannot prune by identity).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
from trio.lowlevel import RunVar

from ....core.confine import UNCONFINED, Confinement
from ....core.desktop import FILES, ToolContext, ToolError, ToolSpec
from . import _args, _at, _fs, _guard, _proc, _thread
from ._glob import compile_glob

SKIP_DIRS = frozenset({".git", "node_modules", "dist", ".next", ".cache"})
DEFAULT_MAX = 100
MAX_RESULTS = 10_000
MAX_DEPTH = 256  # folders deeper than this are not entered (each level is a nested generator)
MAX_LINE = 1 << 20  # a longer line is searched in windows of this size
_OVERLAP = 4096  # windows overlap by this much, so a match shorter than it is found across an edge
_READ = 1 << 18
_BINARY_SNIFF = 8192


def _walk(g: _guard.Guard, stop: threading.Event, dirfd: _at.Dir, here: Path, depth: int = 0
          ) -> Iterator[tuple[_at.Dir, str, Path, os.stat_result]]:
    """(folder descriptor, name, path, lstat) of every entry below ``dirfd`` that is not a folder,
    in os.walk's order. Folders are opened with O_NOFOLLOW (links to folders are never entered)
    and one the guard refuses is pruned before anything in it is looked at."""
    try:
        names = sorted(os.listdir(dirfd))
    except OSError:
        return
    folders: list[str] = []
    for name in names:
        _thread.check(stop)
        try:
            info = _at.lstat(dirfd, name)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if name not in SKIP_DIRS:
                folders.append(name)
            continue
        yield dirfd, name, here / name, info
    if depth >= MAX_DEPTH:
        return
    for name in folders:
        try:
            sub = _at.sub(dirfd, name)
        except OSError:
            continue
        try:
            if g.allowed(_at.stat_dir(sub)):
                yield from _walk(g, stop, sub, here / name, depth + 1)
        finally:
            _at.close(sub)


def _open_root(g: _guard.Guard, root: Path) -> _at.Dir:
    try:
        return g.open_dir(root)
    except FileNotFoundError:
        raise ToolError(f"cwd {root} does not exist; pass an existing directory") from None
    except NotADirectoryError:
        raise ToolError(f"cwd {root} is not a directory; pass an existing directory") from None


def path_search(stop: threading.Event, confinement: Confinement, root: Path, pattern: str, limit: int
                ) -> tuple[list[str], bool]:
    regex = compile_glob(pattern)
    matches: list[str] = []
    with _guard.Guard(confinement) as g:
        for _, _, file, info in _walk(g, stop, _open_root(g, root), root):
            rel = file.relative_to(root).as_posix()
            if (regex.match(rel, stop) or regex.match(file.name, stop)) and g.allowed(info):
                if len(matches) == limit:
                    return matches, True
                matches.append(str(file))
    return matches, False


def content_search(stop: threading.Event, confinement: Confinement, root: Path, regex: re.Pattern[bytes],
                   limit: int) -> tuple[list[str], bool]:
    """Files whose contents match ``regex``: regular files only (never a link, FIFO or device), each
    opened without blocking and checked by the guard before a byte of it is read."""
    matches: list[str] = []
    with _guard.Guard(confinement) as g:
        for dirfd, name, file, info in _walk(g, stop, _open_root(g, root), root):
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                fd = _at.open_in(dirfd, name, _fs.READ_FLAGS | _fs.O_NOFOLLOW)
            except OSError:
                continue
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode) or _guard.ident(opened) != _guard.ident(info):
                    continue
                if opened.st_size == 0:
                    continue  # no line to match; and /proc's files (kmsg: it would take the kernel's log) say 0
                if not g.allowed(opened):
                    continue
                found = _matches(fd, regex, stop)
            except OSError:
                continue
            finally:
                os.close(fd)
            if found:
                if len(matches) == limit:
                    return matches, True
                matches.append(str(file))
    return matches, False


def _matches(fd: int, regex: re.Pattern[bytes], stop: threading.Event) -> bool:
    """Does a line of the open file match? Read in chunks; a line longer than MAX_LINE is searched in
    MAX_LINE windows overlapping by _OVERLAP bytes, so no file is ever held whole in memory."""
    pending = os.read(fd, _BINARY_SNIFF)
    if b"\x00" in pending:
        return False
    while True:
        _thread.check(stop)
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if regex.search(pending[start : end + 1]):
                return True
            start = end + 1
        pending = pending[start:]
        while len(pending) > MAX_LINE:
            if regex.search(pending[:MAX_LINE]):
                return True
            pending = pending[MAX_LINE - _OVERLAP :]
        data = os.read(fd, _READ)
        if not data:
            return bool(pending) and regex.search(pending) is not None
        pending += data


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
        await _end(proc, proc.stderr)
    if not truncated and proc.returncode == 2 and not matches:
        message = errors.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"invalid search: {message[-1] if message else 'ripgrep failed'}")
    return matches, truncated


MAX_SEARCHES = 8  # content-search processes at once, all hosts together, while at most two hosts have searched
MAX_SEARCHES_PER_HOST = 4
SEARCH_HOSTS_SERVED = 4  # hosts whose whole share stays free whatever the others hold (16 processes, ~0.5 GB)
MAX_ANSWER = 64 << 20  # bytes of a child's answer (10 000 paths of 4096 bytes, JSON-escaped, fit)
CHILD = __name__.rpartition(".")[0] + "._searchchild"  # by name: it imports this module
CHILD_PATHS = ("roots", "read_only", "protected", "write_protected")  # the Confinement fields that are paths


def child_request(root: Path, pattern: str, limit: int, confinement: Confinement, openat2: bool) -> bytes:
    """The search child's stdin (``_searchchild``)."""
    c: dict[str, Any] = {}
    for f in dataclasses.fields(confinement):
        value = getattr(confinement, f.name)
        c[f.name] = [os.fspath(p) for p in value] if f.name in CHILD_PATHS else value
    doc = {"root": os.fspath(root), "pattern": pattern, "limit": limit, "confinement": c, "openat2": openat2}
    return json.dumps(doc, ensure_ascii=True).encode("ascii")


async def _end(proc: trio.Process, *pipes: trio.abc.AsyncResource | None) -> None:
    """A search process whose call ended first is killed (and what it started); its pipes are closed."""
    if proc.returncode is None:
        await _proc.kill_tree(proc, grace=0.2)
    with trio.CancelScope(shield=True):
        for pipe in pipes:
            if pipe is not None:
                await pipe.aclose()


async def child_search(confinement: Confinement, root: Path, pattern: str, limit: int) -> tuple[list[str], bool]:
    """``content_search`` in a child process (``_searchchild``) that is killed when the call ends: a
    regex that backtracks for minutes holds the GIL, which would stop the whole agent in a thread."""
    host, shared = _search_limiters(_thread.HOST.get())
    async with host, shared:  # waits (the call's deadline ends the wait): every search process ends
        return await _child_search(child_request(root, pattern, limit, confinement, _fs.openat2_available()))


_SEARCHES: RunVar[dict[str, trio.CapacityLimiter]] = RunVar("hermes_relay_search_processes")
_ALL = "\x00all"  # the shared bound's key (no host URL has a NUL)


def _search_limiters(host: str) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
    """This host's and everyone's bound on search processes (about 30 MB each): one relay's 64 calls in
    flight are at most MAX_SEARCHES_PER_HOST processes at once, the others wait their turn. Each host that
    searches adds its share to everyone's bound (up to SEARCH_HOSTS_SERVED hosts' worth): two hosts keeping
    theirs busy leave a third its own."""
    try:
        limiters = _SEARCHES.get()
    except LookupError:
        limiters = {_ALL: trio.CapacityLimiter(MAX_SEARCHES)}
        _SEARCHES.set(limiters)
    if host not in limiters:
        limiters[host] = trio.CapacityLimiter(MAX_SEARCHES_PER_HOST)
        hosts = len(limiters) - 1
        limiters[_ALL].total_tokens = max(MAX_SEARCHES, MAX_SEARCHES_PER_HOST * min(hosts, SEARCH_HOSTS_SERVED))
    return limiters[host], limiters[_ALL]


async def _child_search(request: bytes) -> tuple[list[str], bool]:
    try:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-I", "-m", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, **_proc.session_kwargs())
    except OSError as exc:
        raise ToolError(f"could not start the search: {exc.strerror or exc}") from exc
    out = bytearray()
    errors: bytes | bytearray = b""
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        async with proc.stdin:
            await proc.stdin.send_all(request)
        while chunk := await proc.stdout.receive_some(1 << 20):
            out += chunk
            if len(out) > MAX_ANSWER:
                raise ToolError("the search's answer is too large")
        errors = await proc.stderr.receive_some(4096)
        await proc.wait()
    finally:
        await _end(proc, proc.stdout, proc.stderr)
    try:
        answer = json.loads(out)
    except ValueError:
        last = errors.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"the search failed: {last[-1] if last else f'exit status {proc.returncode}'}") from None
    if "error" in answer:
        raise ToolError(str(answer["error"]))
    return [str(m) for m in answer["matches"]], bool(answer["truncated"])


def _check_root(stop: threading.Event, root: Path) -> None:
    with _guard.Guard(UNCONFINED) as g:
        _open_root(g, root)


def find_rg(ctx: ToolContext) -> str | None:
    env = _args.base_env(ctx)
    return shutil.which("rg", path=env.get("PATH", os.defpath))


async def desktop_search_files(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pattern = _args.text(args, "pattern")
    root = _args.path(args, "cwd", ctx, default=ctx.cwd)
    limit = _args.integer(args, "max_results", default=DEFAULT_MAX, minimum=1, maximum=MAX_RESULTS)
    content = _args.boolean(args, "content", False)
    if not content:
        # The roots are resolved in the search's thread (user paths: never on the loop).
        matches, truncated = await _thread.run(lambda stop: path_search(stop, ctx.confined(), root, pattern, limit))
        return {"matches": matches, "truncated": truncated, "mode": "glob"}
    try:
        re.compile(pattern.encode("utf-8"))
    except (re.error, UnicodeEncodeError) as exc:
        raise ToolError(f"invalid regex {pattern!r}: {exc}") from exc
    confinement = await _thread.run(lambda stop: ctx.confined())  # the roots resolved off the loop
    rg = find_rg(ctx) if confinement.unconfined else None  # ripgrep cannot prune by identity
    if rg:
        await _thread.run(_check_root, root)
        matches, truncated = await ripgrep_search(rg, root, pattern, limit)
        impl = "ripgrep"
    else:
        matches, truncated = await child_search(confinement, root, pattern, limit)
        impl = "python"
    return {"matches": matches, "truncated": truncated, "mode": "content", "impl": impl}


def _preview(args: dict[str, Any]) -> str:
    pattern = args.get("pattern")
    return pattern if isinstance(pattern, str) else ""


TOOLS = [ToolSpec("desktop_search_files", FILES, desktop_search_files, preview=_preview)]
