"""The shared client session store, ``~/.hermes/remote-sessions.json`` (sync, pure stdlib).

    {"version": 1, "sessions": {URL: record}}

Other Hermes clients read and write this file too, so:
- every read-modify-write holds the sidecar inter-process lock (``FileLock``);
- records and fields we do not know are carried through untouched;
- a file that cannot be parsed, has a newer version, or exists but is empty (something truncated
  it) is never overwritten: ``update`` raises and the caller reports it (``doctor --fix`` moves it
  aside on the user's request); only a missing file is an empty store;
- a record that is not an object (another client's bug) is kept as it is, left out of
  ``sessions()`` and reported by ``records()``; its fields are read through ``core/record.py``;
- writes are atomic, 0600, in a 0700 directory; a symlinked store is written through to its target;
- a failed write (disk full, read-only directory) raises StateError naming the file.

A record may list alternate route URLs (``route_candidates``) for the same pairing; ``resolve`` maps
any of those URLs to the owner URL's record, so one pairing is one record.
"""

from __future__ import annotations

import copy
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import fileio, record
from .errors import NotPairedError, StateCorruptError, StateError

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
    return doc


def route_urls(rec: dict[str, Any]) -> list[str]:
    """Alternate URLs listed in a record's ``route_candidates`` (every shape; unusable ones skipped)."""
    return [c.url for c in record.from_dict("", rec).candidates]


class SessionStore:
    """Typed access to the session store file. Each call re-reads the file: it is small and shared."""

    def __init__(self, path: Path, *, lock_timeout: float = fileio.DEFAULT_LOCK_TIMEOUT):
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def read(self) -> dict[str, Any]:
        """The whole document; an empty document only when the file does not exist."""
        doc = fileio.read_json_versioned(self.path, supported=STORE_VERSION, empty_ok=False)
        if doc is None:
            return {"version": STORE_VERSION, "sessions": {}}
        return _validate(doc, self.path)

    def sessions(self) -> dict[str, dict[str, Any]]:
        """The records that are objects (the rest is reported by ``records()``)."""
        return {url: rec for url, rec in self.read()["sessions"].items() if isinstance(rec, dict)}

    def records(self) -> record.Parsed:
        """Every record as a typed view, plus the entries skipped and why."""
        return record.parse_sessions(self.read()["sessions"])

    def check_writable(self) -> None:
        """Everything a write needs, checked without writing: the file parses, the lock can be taken,
        and the directory accepts a new file. Raises the StateError a write would raise."""
        with fileio.FileLock(self.path, timeout=self.lock_timeout):
            self.read()
            target = fileio.write_target(self.path)
            fileio.ensure_private_dir(target.parent)
            probe = target.with_name(f".{target.name}.probe-{os.getpid()}")
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, fileio.FILE_MODE)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise _write_error(self.path, exc) from exc

    def update(self, fn: Callable[[dict[str, dict[str, Any]]], T]) -> T:
        """Run ``fn(sessions)`` under the lock; write the file only if ``fn`` changed something.

        ``fn`` sees every entry, including ones that are not objects (keep them as they are).
        """
        with fileio.FileLock(self.path, timeout=self.lock_timeout):
            doc = self.read()
            before = copy.deepcopy(doc)
            result = fn(doc["sessions"])
            if doc != before or not self.path.exists():
                doc.setdefault("version", STORE_VERSION)
                try:
                    fileio.atomic_write(self.path, fileio.dump_json(doc))
                except OSError as exc:
                    raise _write_error(self.path, exc) from exc
            return result

    def resolve(self, url: str, sessions: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
        """Find the record owning ``url`` (its key, or one of its alternate routes)."""
        sessions = self.sessions() if sessions is None else sessions
        found = resolve_in(sessions, url)
        if found is None:
            raise NotPairedError(f"no stored session for {url}")
        return found


def resolve_in(sessions: dict[str, Any], url: str) -> tuple[str, dict[str, Any]] | None:
    """The (key, raw record) owning ``url``; entries that are not objects never match."""
    found = record.resolve(record.parse_sessions(sessions).records, url)
    if found is None:
        return None
    return found.owner, sessions[found.owner]


def _write_error(path: Path, exc: OSError) -> StateError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        hint = "free some disk space and try again; nothing stored was changed"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"make {path.parent} writable by you (it should be yours, 0700) and try again"
    else:
        hint = "check the disk and try again; nothing stored was changed"
    return StateError(f"cannot write {path}: {reason}", hint=hint, data={"path": str(path), "errno": exc.errno})


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

    redacted: dict[str, Any] = walk(record)
    return redacted


def _secret_key(key: str) -> bool:
    k = key.lower()
    return k in ("token", "refresh_token", "session_token", "key", "api_key", "secret") or k.endswith("_token")


def join(sessions: dict[str, dict[str, Any]],
         live: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(url, store record or None, live link state or None): store order first, then the links only
    the agent knows. A live link matches a record by its key or one of its alternate routes."""
    by_key: dict[str, dict[str, Any]] = {}
    extra: list[dict[str, Any]] = []
    for state in live:
        url = str(state.get("url") or "")
        found = resolve_in(sessions, url) if url else None
        if found is not None and found[0] not in by_key:
            by_key[found[0]] = state
        else:
            extra.append(state)
    out: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
        (url, rec, by_key.get(url)) for url, rec in sessions.items() if isinstance(rec, dict)]
    out.extend((str(state.get("url") or "?"), None, state) for state in extra)
    return out
