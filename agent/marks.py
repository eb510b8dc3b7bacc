"""The agent's own per-relay verdicts that must survive a restart: revoked, expired, pin mismatch.

They live in a separate file (``~/.hermes/hermes-relay-agent.json``), not in the shared session store:
a verdict is the agent's reason to stop retrying, not a fact other clients should act on, and the
pairing itself is never deleted because of it. Each verdict is tied to a fingerprint of the token it
was reached with, so a new pairing (a new token) clears it without anyone having to remember to.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import fileio
from ..core.errors import StateError

log = logging.getLogger(__name__)
MARKS_VERSION = 1


def token_fingerprint(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


def update_entries(path: Path, version: int, key: str, read: Callable[[], dict[str, Any]],
                   change: Callable[[dict[str, Any]], bool]) -> bool:
    """Under the file's lock: read the ``{"version", key: {...}}`` entries, let ``change`` edit them, and
    write them back when it says it changed something (the agent's small state files share this)."""
    with fileio.FileLock(path):
        entries = read()
        if not change(entries):
            return False
        fileio.atomic_write(path, fileio.dump_json({"version": version, key: entries}))
        return True


class Marks:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            doc = fileio.read_json_versioned(self.path, supported=MARKS_VERSION)
        except StateError as exc:
            # Unreadable: set it aside (kept for inspection, never overwritten) and start afresh.
            # Losing verdicts costs at most one more rejected auth per pairing.
            moved = fileio.quarantine(self.path)
            log.warning("marks_file_unreadable error=%s moved_to=%s", exc.message, moved)
            return {}
        relays = (doc or {}).get("relays")
        return relays if isinstance(relays, dict) else {}

    def get(self, url: str, token: str | None) -> dict[str, Any] | None:
        mark = self._read().get(url)
        if isinstance(mark, dict) and mark.get("token_fp") == token_fingerprint(token):
            return mark
        return None

    def set(self, url: str, token: str | None, state: str, error: dict[str, Any], at: float) -> None:
        def change(relays: dict[str, Any]) -> bool:
            relays[url] = {"state": state, "error": error, "at": at, "token_fp": token_fingerprint(token)}
            return True

        update_entries(self.path, MARKS_VERSION, "relays", self._read, change)

    def clear(self, url: str, *, only: str | None = None) -> bool:
        """Forget the verdict on ``url`` (only if it is ``only``, when given)."""
        def change(relays: dict[str, Any]) -> bool:
            mark = relays.get(url)
            if mark is None or (only is not None and isinstance(mark, dict) and mark.get("state") != only):
                return False
            del relays[url]
            return True

        return update_entries(self.path, MARKS_VERSION, "relays", self._read, change)


PENDING_VERSION = 1


class Pending:
    """Pairing credentials the relay issued that are not in the shared store yet (its write failed:
    disk full, lock held, store unreadable, or the agent died in between).

    A re-pairing spends the code and makes the relay replace this device's old session, so once
    ``auth.ok`` arrived these are the only credentials that work: they are kept in memory and in a
    0600 file of the agent's own (``hermes-relay-pending.json``, keyed by owner URL) until the store
    write succeeds, and a restarted agent picks them up. Never logged (they hold tokens).
    """

    def __init__(self, path: Path):
        self.path = path
        self.memory: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, Any]:
        try:
            doc = fileio.read_json_versioned(self.path, supported=PENDING_VERSION)
        except StateError as exc:
            log.error("pending_file_unreadable error=%s", exc.message)
            return {}
        entries = (doc or {}).get("pending")
        return {k: v for k, v in entries.items() if _entry_ok(v)} if isinstance(entries, dict) else {}

    def all(self) -> dict[str, dict[str, Any]]:
        return {**self._read(), **self.memory}

    def save(self, owner: str, entry: dict[str, Any]) -> str | None:
        """Keep ``entry`` for ``owner``; the error text when only the in-memory copy could be kept."""
        self.memory[owner] = entry

        def change(entries: dict[str, Any]) -> bool:
            entries[owner] = entry
            return True

        try:
            update_entries(self.path, PENDING_VERSION, "pending", self._read, change)
        except (OSError, StateError) as exc:
            return getattr(exc, "message", None) or exc.strerror or str(exc)  # type: ignore[union-attr]
        return None

    def note(self, owner: str, error: str | None) -> None:
        if owner in self.memory:
            self.memory[owner]["last_error"] = error

    def done(self, owner: str, token: str) -> None:
        """The store now holds (or superseded) ``token`` for ``owner``: forget the pending copy."""
        mem = self.memory.get(owner)
        if mem is not None and mem["fields"].get("token") == token:
            del self.memory[owner]
        def change(entries: dict[str, Any]) -> bool:
            if owner in entries and entries[owner]["fields"].get("token") == token:
                del entries[owner]
                return True
            return False

        try:
            update_entries(self.path, PENDING_VERSION, "pending", self._read, change)
        except (OSError, StateError) as exc:
            log.warning("pending_file_not_cleared url=%s error=%s", owner, getattr(exc, "message", exc))


def _entry_ok(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("fields"), dict) and isinstance(v["fields"].get("token"), str)
            and isinstance(v.get("urls"), list) and isinstance(v.get("at"), (int, float)))
