"""Per relay host, the directories ("roots") its file tools and confined commands may reach.

Kept in ``~/.hermes/hermes-relay-desktop-roots.json`` (ours alone: the shared policy file is
rewritten by other clients from their own model, which drops what they do not know)::

    {"version": 1, "hosts": {"wss://relay.example:8767": {"roots": ["/home/me/src"], "updated_at": "..."}}}

A host without an entry has the default root, the home directory. A root never reaches the
agent's own state (``core.confine.protected_paths``): a root inside a protected path is refused; a
root containing one (the home directory holds ``~/.hermes``) keeps it, with the protected paths beside
it in the call's confinement: the file tools refuse them by identity, and the command sandbox covers
them (a private mount view, or Landlock rules split around them). ``reachable`` resolves the roots per
call; ``expand`` lists a root's entries minus the protected ones, for callers that need whole trees.

Writes are atomic (0600), under the file's lock, and keep every field and list item this module
does not understand; an unparseable file is never overwritten and reaches nothing until fixed.
Strings are written ASCII-escaped so a non-UTF-8 file name (a lone surrogate) survives the round trip.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from . import fileio, paths
from .errors import StateError, StateVersionError, UsageError

VERSION: Final = 1
MAX_EXPANDED: Final = 4096  # entries a root may expand into; beyond that the rest stays out of reach
RESOLVE_TTL: Final = 1.0  # seconds a path's resolution is reused while it still names the same file
_RESOLVED_MAX: Final = 512  # paths whose resolution is remembered (roots and the read-only system folders)
_resolved: dict[str, tuple[float, tuple[int, int] | None, str]] = {}  # path -> (when, its identity, realpath)


@dataclass(frozen=True)
class HostRoots:
    roots: tuple[Path, ...]
    default: bool  # no entry: the home directory


Table = Mapping[str, tuple[Path, ...]]  # canonical URL -> explicit roots


def roots_file(env: Mapping[str, str] | None = None) -> Path:
    return paths.desktop_roots_file(env)


def _key(url: str) -> str:
    from .policy import canonical_url

    key = canonical_url(url)
    if key is None:
        raise UsageError(f"{url!r} is not a relay URL roots can name",
                         hint="use the ws:// or wss:// URL `hermes-relay status` shows")
    return key


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return fileio.read_json_versioned(path, supported=VERSION)
    except StateVersionError:
        raise
    except StateError as exc:
        exc.hint = f"fix or delete {path}; until then file tools and confined commands reach nothing"
        raise


def _entries(doc: dict[str, Any] | None) -> dict[str, Any]:
    hosts = doc.get("hosts") if doc is not None else None
    return hosts if isinstance(hosts, dict) else {}


def load(path: Path) -> dict[str, tuple[Path, ...]]:
    """Every host's explicit roots (canonical URL -> absolute paths); raises StateError when unparseable."""
    from .policy import canonical_url

    out: dict[str, tuple[Path, ...]] = {}
    for url, entry in _entries(_read(path)).items():
        key = canonical_url(url)
        if key is None or not isinstance(entry, dict) or not isinstance(entry.get("roots"), list):
            continue
        found = [Path(r) for r in entry["roots"] if isinstance(r, str) and r and "\0" not in r and os.path.isabs(r)]
        out[key] = tuple(found) if key not in out else tuple(r for r in out[key] if r in found)  # duplicates: the narrower
    return out


def for_url(table: Table, url: str, env: Mapping[str, str] | None = None) -> HostRoots:
    from .policy import canonical_url

    key = canonical_url(url)
    if key is not None and key in table:
        return HostRoots(tuple(table[key]), False)
    return HostRoots((Path(os.path.abspath(paths.home_dir(env))),), True)


def _within(path: Path, parent: Path) -> bool:
    """``path`` is ``parent`` or below it (both absolute and normalised: compared part by part)."""
    here, top = path.parts, parent.parts
    return len(here) >= len(top) and here[:len(top)] == top


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def realpath(path: str | os.PathLike[str], *, clock: Callable[[], float] = time.monotonic) -> str:
    """``os.path.realpath(path)`` (a walk in Python, one lstat per name), reused for up to ``RESOLVE_TTL``
    seconds while ``path`` and that answer still name the same file, or both name nothing (a stat each,
    resolved by the kernel). A link re-pointed elsewhere is seen at the next call; only a folder moved away
    and linked back from its old place keeps its old spelling, which still names it, that long. Spellings
    only choose a root: what a call reaches is checked on opened descriptors (agent/desktop/tools/_guard.py)."""
    return realpaths((os.fspath(path),), clock=clock)[0]


def remembered(names: Iterable[str], *, clock: Callable[[], float] = time.monotonic) -> list[str] | None:
    """The resolutions of ``names`` walked less than ``RESOLVE_TTL`` ago, without a look at the disk (None
    when one is missing): a caller checks the one it uses with ``realpath`` (agent/desktop/tools/_guard.py)."""
    now = clock()
    out: list[str] = []
    for key in names:
        hit = _resolved.get(key)
        if hit is None or now - hit[0] >= RESOLVE_TTL:
            return None
        out.append(hit[2])
    return out


def realpaths(names: Iterable[str], *, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """``realpath`` of each of ``names`` (absolute strings), with one look at the clock."""
    now = clock()
    out: list[str] = []
    for key in names:
        try:
            st = os.stat(key)
            seen: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except (OSError, ValueError):
            seen = None
        hit = _resolved.get(key)
        if hit is not None and now - hit[0] < RESOLVE_TTL and hit[1] == seen and (hit[2] == key or _identity(hit[2]) == seen):
            out.append(hit[2])
            continue
        real = os.path.realpath(key)  # after the stat: a change in between is seen by the next call's stat
        if len(_resolved) >= _RESOLVED_MAX:
            _resolved.clear()
        _resolved[key] = (now, seen, real)
        out.append(real)
    return out


def _forms(paths_: tuple[Path, ...]) -> tuple[Path, ...]:
    """Each path as given and resolved (a protected path reached through a symlink is still protected)."""
    out: list[Path] = []
    for p in paths_:
        for form in (Path(os.path.abspath(p)), Path(os.path.realpath(p))):
            if form not in out:
                out.append(form)
    return tuple(out)


def check_root(raw: str, protected: tuple[Path, ...]) -> tuple[Path, list[Path]]:
    """A root the user named -> (its resolved path, the protected paths inside it that stay out of reach).

    Raises UsageError for a path that is not an existing directory or lies inside a protected path.
    """
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise UsageError(f"{raw!r} is not a directory path", hint="name an existing directory, e.g. --root ~/src")
    root = Path(os.path.realpath(os.path.expanduser(raw)))
    if not root.is_dir():
        raise UsageError(f"{raw} is not an existing directory", hint="create it first, or name another one")
    for p in _forms(protected):
        if _within(root, p):
            raise UsageError(f"{root} is inside {p}, the agent's own state: no relay host may reach it below "
                             "full access", hint="choose a directory outside it")
    inside = sorted({p for p in _forms(protected) if _within(p, root) and p != root})
    return root, inside


def reachable(roots: tuple[Path, ...], protected: tuple[Path, ...],
              guarded: tuple[Path, ...] | None = None) -> tuple[Path, ...]:
    """The roots a call may reach: each resolved (symlinks followed), those inside a protected path
    dropped, duplicates removed. A root that contains a protected path stays whole: the enforcers
    carve the protected paths out (expanding it instead made every file directly in the home
    directory a root of its own, and nothing could be created there). ``guarded``: ``guard_forms(protected)``
    worked out beforehand (the protected paths do not change while the agent runs)."""
    guarded = guard_forms(protected) if guarded is None else guarded
    out: list[Path] = []
    for root in roots:
        real, inside = _resolved_root(realpath(root), guarded)
        if not inside and real not in out:
            out.append(real)
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _resolved_root(real: str, guarded: tuple[Path, ...]) -> tuple[Path, bool]:
    """(``real`` as a Path, whether it is inside one of ``guarded``): a pure function of the names."""
    path = Path(real)
    return path, any(_within(path, p) for p in guarded)


def guard_forms(protected: tuple[Path, ...]) -> tuple[Path, ...]:
    """Every spelling of the protected paths a resolved root is compared with (as written and resolved)."""
    return _forms(protected)


def expand(roots: tuple[Path, ...], protected: tuple[Path, ...]) -> tuple[Path, ...]:
    """The trees a call may reach: each root resolved, those inside a protected path dropped, those
    containing one replaced by their entries minus the protected ones (recursively)."""
    guarded = _forms(protected)
    out: list[Path] = []

    def visit(path: Path, depth: int) -> None:
        real = Path(os.path.realpath(path))
        if len(out) >= MAX_EXPANDED or depth > 64 or any(_within(real, p) for p in guarded):
            return
        if not any(_within(p, real) for p in guarded):
            if real not in out:
                out.append(real)
            return
        try:
            with os.scandir(real) as entries:
                children = sorted(e.name for e in entries)
        except OSError:
            return
        for name in children:
            visit(real / name, depth + 1)

    for root in roots:
        visit(root, 0)
    return tuple(out)


# -- writes ----------------------------------------------------------------------------------------
def _update(path: Path, url: str, change: Callable[[list[Any] | None], list[Any] | None], now: float | None) -> None:
    from .policy import canonical_url, now_iso

    key = _key(url)
    with fileio.FileLock(path):
        doc = _read(path) or {}
        hosts = _entries(doc)
        raw: dict[str, Any] = {}
        for k in [k for k in hosts if canonical_url(k) == key and k != key] + [key]:
            value = hosts.pop(k, None)
            if isinstance(value, dict):
                raw.update(value)
        current = raw.get("roots") if isinstance(raw.get("roots"), list) else None
        new = change(current)
        if new is None:
            raw.pop("roots", None)
        else:
            raw["roots"] = new
            raw["updated_at"] = now_iso(now)
        if raw:
            hosts[key] = raw
        out = {"version": VERSION, "hosts": hosts, **{k: v for k, v in doc.items() if k not in ("version", "hosts")}}
        fileio.atomic_write(path, (json.dumps(out, indent=2, ensure_ascii=True) + "\n").encode("ascii"))


def add(path: Path, url: str, raw: str, *, env: Mapping[str, str] | None = None,
        protected: tuple[Path, ...] = (), now: float | None = None) -> tuple[Path, list[Path], bool]:
    """Add a root for ``url`` -> (the root, protected paths inside it, True when it replaced the default)."""
    root, inside = check_root(raw, protected)
    replaced: list[bool] = []

    def change(current: list[Any] | None) -> list[Any]:
        replaced.append(current is None)
        items = list(current or [])
        if str(root) not in items:
            items.append(str(root))
        return items

    _update(path, url, change, now)
    return root, inside, replaced[0]


def remove(path: Path, url: str, raw: str, *, now: float | None = None) -> bool:
    """Remove a root (as named or resolved); False when the host had no such root. Removing the
    last root leaves the host with none (not the default): its file tools reach nothing."""
    names = {raw, os.path.abspath(os.path.expanduser(raw)), os.path.realpath(os.path.expanduser(raw))}
    found: list[bool] = []

    def change(current: list[Any] | None) -> list[Any] | None:
        items = list(current or [])
        kept = [r for r in items if not (isinstance(r, str) and r in names)]
        found.append(len(kept) != len(items))
        return kept if current is not None else None

    _update(path, url, change, now)
    return found[0]


def reset(path: Path, url: str) -> None:
    """Back to the default root (the home directory)."""
    _update(path, url, lambda current: None, None)


def forget(path: Path, urls: list[str]) -> bool:
    """Remove every entry naming one of ``urls``; True when something was removed (unknown fields kept)."""
    from .policy import canonical_url

    keys = {k for k in (canonical_url(u) for u in urls) if k}
    if not keys:
        return False
    with fileio.FileLock(path):
        doc = _read(path)
        hosts = _entries(doc)
        gone = [k for k in hosts if canonical_url(k) in keys]
        if doc is None or not gone:
            return False
        for k in gone:
            del hosts[k]
        fileio.atomic_write(path, (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii"))
        return True
