"""The shared client session store, ``~/.hermes/remote-sessions.json`` (sync, pure stdlib).

    {"version": 1, "sessions": {URL: record}}

Other Hermes clients read and write this file too, so:
- every read-modify-write holds the sidecar inter-process lock (``FileLock``);
- records and fields we do not know are carried through untouched;
- a file that cannot be parsed, or has a newer version, is never overwritten: ``update`` raises
  and the caller reports it (``doctor --fix`` moves it aside on the user's request);
- writes are atomic, 0600, in a 0700 directory.

A record may list alternate route URLs (``route_candidates``) for the same pairing; ``resolve`` maps
any of those URLs to the owner URL's record, so one pairing is one record.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hermes_relay.core import fileio
from hermes_relay.core.errors import NotPairedError, StateCorruptError

STORE_VERSION = 1
REDACTED = "(redacted)"
T = TypeVar("T")


def _validate(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    sessions = doc.get("sessions")
    if sessions is None:
        doc["sessions"] = {}
        return doc
    if not isinstance(sessions, dict):
        raise StateCorruptError(str(path), f"'sessions' is {type(sessions).__name__}, expected an object")
    for url, rec in sessions.items():
        if not isinstance(rec, dict):
            raise StateCorruptError(str(path), f"record for {url} is {type(rec).__name__}, expected an object")
    return doc


def route_urls(record: dict[str, Any]) -> list[str]:
    """Alternate URLs listed in a record's ``route_candidates`` (strings or ``{"url": ...}`` objects)."""
    out = []
    for cand in record.get("route_candidates") or []:
        if isinstance(cand, str):
            out.append(cand)
        elif isinstance(cand, dict):
            relay = cand.get("relay")
            url = cand.get("url") or (relay.get("url") if isinstance(relay, dict) else None)
            if isinstance(url, str):
                out.append(url)
    return out


class SessionStore:
    """Typed access to the session store file. Each call re-reads the file: it is small and shared."""

    def __init__(self, path: Path, *, lock_timeout: float = fileio.DEFAULT_LOCK_TIMEOUT):
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def read(self) -> dict[str, Any]:
        """The whole document; an empty document when the file is missing or empty."""
        doc = fileio.read_json_versioned(self.path, supported=STORE_VERSION)
        if doc is None:
            return {"version": STORE_VERSION, "sessions": {}}
        return _validate(doc, self.path)

    def sessions(self) -> dict[str, dict[str, Any]]:
        return self.read()["sessions"]

    def update(self, fn: Callable[[dict[str, dict[str, Any]]], T]) -> T:
        """Run ``fn(sessions)`` under the lock; write the file only if ``fn`` changed something."""
        with fileio.FileLock(self.path, timeout=self.lock_timeout):
            doc = self.read()
            before = copy.deepcopy(doc)
            result = fn(doc["sessions"])
            if doc != before or not self.path.exists():
                doc.setdefault("version", STORE_VERSION)
                fileio.atomic_write(self.path, fileio.dump_json(doc))
            return result

    def resolve(self, url: str, sessions: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
        """Find the record owning ``url`` (its key, or one of its alternate routes)."""
        sessions = self.sessions() if sessions is None else sessions
        found = resolve_in(sessions, url)
        if found is None:
            raise NotPairedError(f"no stored session for {url}")
        return found


def resolve_in(sessions: dict[str, dict[str, Any]], url: str) -> tuple[str, dict[str, Any]] | None:
    stripped = url.rstrip("/")
    for key, rec in sessions.items():
        if key == url or key.rstrip("/") == stripped:
            return key, rec
    for key, rec in sessions.items():
        if any(u.rstrip("/") == stripped for u in route_urls(rec)):
            return key, rec
    return None


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """A deep copy with every token-like field replaced by ``(redacted)``."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: (REDACTED if _secret_key(k) and isinstance(v, str) and v else walk(v)) for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(record)


def _secret_key(key: str) -> bool:
    k = key.lower()
    return k in ("token", "refresh_token", "session_token", "key", "api_key", "secret") or k.endswith("_token")
