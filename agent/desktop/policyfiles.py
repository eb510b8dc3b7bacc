"""The desktop service's files as read from disk, off the event loop: the policy, the hosts' roots
(core/roots.py) and the legacy consent other clients keep in the session store.

``read`` is blocking (the service runs it in a worker thread): it stats the three files and, when their
keys differ from the last view's, reads them into a ``View`` (reads only; the service applies it on the
loop). ``FileWatch`` watches them (agent/storewatch.py): a heartbeat looks at the disk only after a
change, or every ``SAFETY_REFRESH`` seconds, while inotify covers every file; otherwise always.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ...core import policy, roots
from ...core.errors import HermesError
from ..storewatch import StoreWatcher

# Seconds between an idle link's refreshes (a worker-thread hop) while the file watch covers every file.
# A net below a net: each watcher's own safety poll (storewatch.SAFETY_INTERVAL) already marks the view
# when a file's key changed without an event, and a refresh compares the same keys.
SAFETY_REFRESH = 300.0
Key = tuple[Any, ...]


@dataclass(frozen=True)
class Files:
    policy: Path
    roots: Path
    sessions: Path | None  # the session store (legacy consent); None: not read

    def paths(self) -> list[Path]:
        return [self.policy, self.roots] + ([self.sessions] if self.sessions is not None else [])


@dataclass(frozen=True)
class View:
    """What one refresh read from disk (in a worker thread); applied on the event loop."""

    key: Key
    policies: policy.Policies
    policy_error: str | None
    roots: dict[str, tuple[Path, ...]]
    roots_error: str | None
    consented: dict[str, bool]
    records: list[dict[str, Any]] | None  # today's audit records, read once to seed the call summary


def stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read(files: Files, known: Any, records: list[dict[str, Any]] | None = None) -> View | None:
    """Blocking: the files' keys, and a fresh view when they differ from ``known`` (or ``records`` came)."""
    key = tuple(stat_key(path) for path in files.paths())
    if key == known and records is None:
        return None
    try:
        roots_map, roots_error = roots.load(files.roots), None
    except HermesError as exc:
        roots_map, roots_error = {}, exc.message
    try:
        policies, policy_error = policy.load(files.policy), None
    except HermesError as exc:
        policies, policy_error = policy.Policies(), exc.message
    # While the policy file is unreadable every host is restricted: an old consent flag must not lift that.
    consented = {} if policy_error else legacy_consent(files.sessions)
    return View(key, policies, policy_error, roots_map, roots_error, consented, records)


def legacy_consent(sessions_file: Path | None) -> dict[str, bool]:
    """Blocking: the per-URL ``tools_consented`` flags other clients stored (an unreadable store: none)."""
    if sessions_file is None:
        return {}
    from ...core.store import SessionStore

    try:
        sessions = SessionStore(sessions_file).sessions()
    except HermesError:
        return {}
    return {policy.canonical_url(url) or url: rec.get("tools_consented") is True
            for url, rec in sessions.items() if isinstance(rec, dict)}


class FileWatch:
    """Whether the files may have changed since the last refresh began (``stale``)."""

    def __init__(self, files: Files, *, on_change: Callable[[], None] | None = None):
        self.files = files
        self.on_change = on_change  # a watcher saw a file change (the desktop heartbeats wake on it)
        self._watchers: list[StoreWatcher] = []  # empty, or not all on inotify: always stale
        self._watched = False
        self._dirty = True
        self._refreshed_at = float("-inf")

    def refreshing(self) -> None:
        """A refresh begins (its stat comes after this): changes from now on mark the view again."""
        self._dirty, self._refreshed_at = False, trio.current_time()

    def stale(self) -> bool:
        watched = bool(self._watchers) and all(w.backend == "inotify" for w in self._watchers)
        if watched != self._watched:  # a watch armed (or re-armed) after its first look: look once more
            self._watched, self._dirty = watched, True
        return self._dirty or not watched or trio.current_time() - self._refreshed_at >= SAFETY_REFRESH

    def look_again_at(self) -> float | None:
        """When a heartbeat must refresh though no change woke it (trio time): ``SAFETY_REFRESH`` after the
        last refresh while inotify covers every file; None while it does not (the caller polls)."""
        if not self._watchers or not all(w.backend == "inotify" for w in self._watchers):
            return None
        return self._refreshed_at + SAFETY_REFRESH

    def unchanged(self) -> bool:
        """The files are as the last refresh found them, known without touching the disk: nothing
        marked them since it began, within ``SAFETY_REFRESH``, and no inotify event about them is
        waiting (``StoreWatcher.quiet``). A call then skips its refresh's worker-thread hop."""
        return not self.stale() and bool(self._watchers) and all(w.quiet() for w in self._watchers)

    async def run(self) -> None:
        """Watch every file until cancelled."""
        watchers = [StoreWatcher(path) for path in self.files.paths()]

        def changed() -> None:
            self._dirty = True
            if self.on_change is not None:
                self.on_change()

        try:
            async with trio.open_nursery() as nursery:
                for watcher in watchers:
                    nursery.start_soon(watcher.run, changed)
                await trio.lowlevel.checkpoint()  # each watcher has taken its first look
                self._watchers = watchers
        finally:
            self._watchers = []
