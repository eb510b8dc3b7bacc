"""``hermes-relay down`` / ``up``: which relays this computer stays off, in the agent's own file.

``~/.hermes/hermes-relay-down.json`` (0600, written by the agent alone, read by the CLI when the
agent is not running)::

    {"version": 1, "all": {"at": epoch s} | null, "relays": {URL: {"at": epoch s}}}

``all`` takes every relay off, pairings made later included; ``relays`` names single ones. A relay
that is down keeps its record in the shared store (other Hermes clients see no change), its refresh
token and its policy: only the agent's link to it is not run, so the relay host cannot call tools
here. The switch outlives agent restarts and autostart until ``up``.

This is deliberately not the "paused" state (agent/credentials.Paused): a paused pairing is one
another client removed from the store, and the agent keeps its record aside; a down relay stays in
the store untouched, and the user alone decides. Both show the same way (no link, a state and a
hint in ``status``), but ``restore`` does not lift a ``down`` and ``up`` does not restore.
"""

from __future__ import annotations

from typing import Any

from . import fileio
from .errors import StateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

DOWN_VERSION = 1
DOWN_STATE = "down"  # core/api.DOWN: the link state shown for a relay taken off with `down`
REASON = "taken off the relay with `hermes-relay down` (the pairing is kept)"


class Switch:
    """What ``down``/``up`` recorded: ``all`` (every relay) and single relays."""

    def __init__(self, all_at: float | None = None, relays: dict[str, float] | None = None):
        self.all_at = all_at
        self.relays = dict(relays or {})

    def is_down(self, url: str) -> bool:
        return self.all_at is not None or url in self.relays

    def since(self, url: str) -> float | None:
        return self.relays.get(url, self.all_at)

    def any(self) -> bool:
        return self.all_at is not None or bool(self.relays)

    def to_json(self) -> dict[str, Any]:
        return {"version": DOWN_VERSION, "all": None if self.all_at is None else {"at": self.all_at},
                "relays": {url: {"at": at} for url, at in self.relays.items()}}


def parse(doc: dict[str, Any] | None) -> Switch:
    """The switch in a parsed file (None: no file, nothing down). Entries of the wrong shape are skipped."""
    if not doc:
        return Switch()
    every = doc.get("all")
    all_at = _at(every) if isinstance(every, dict) else None
    relays = doc.get("relays")
    return Switch(all_at, {url: _at(entry) or 0.0 for url, entry in relays.items()
                           if isinstance(url, str) and isinstance(entry, dict)} if isinstance(relays, dict) else {})


def _at(entry: dict[str, Any]) -> float:
    at = entry.get("at")
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0


def read(path: Path) -> Switch:
    """The switch on disk. Raises StateError when the file cannot be used (the caller decides)."""
    return parse(fileio.read_json_versioned(path, supported=DOWN_VERSION))


def set_down(path: Path, url: str | None, at: float) -> tuple[Switch, bool]:
    """Take ``url`` (None: every relay) off; returns the new switch and whether that changed anything."""
    with fileio.FileLock(path):
        switch = _read_for_update(path)
        if switch.all_at is not None or (url is not None and url in switch.relays):
            return switch, False
        if url is None:
            switch.all_at = at
        else:
            switch.relays[url] = at
        fileio.atomic_write(path, fileio.dump_json(switch.to_json()))
        return switch, True


def set_up(path: Path, url: str | None, paired: Iterable[str], at: float) -> tuple[Switch, bool]:
    """Put ``url`` (None: every relay) back; returns the new switch and whether anything was down.

    ``up URL`` while every relay is down keeps the others down: ``all`` becomes the list of the
    other ``paired`` relays (a pairing made later is then up)."""
    with fileio.FileLock(path):
        switch = _read_for_update(path)
        if url is None:
            changed = switch.any()
            switch = Switch()
        else:
            changed = switch.is_down(url)
            if switch.all_at is not None:
                for other in paired:
                    if other != url:
                        switch.relays.setdefault(other, switch.all_at)
                switch.all_at = None
            switch.relays.pop(url, None)
        if changed:
            fileio.atomic_write(path, fileio.dump_json(switch.to_json()))
        return switch, changed


def drop(path: Path, url: str) -> bool:
    """Forget ``url``'s own entry (its pairing was removed for good)."""
    with fileio.FileLock(path):
        switch = _read_for_update(path)
        if switch.relays.pop(url, None) is None:
            return False
        fileio.atomic_write(path, fileio.dump_json(switch.to_json()))
        return True


def _read_for_update(path: Path) -> Switch:
    try:
        return read(path)
    except StateError as exc:  # never write over a file we cannot read: the user may want it back
        raise StateError(exc.message, hint=f"move {path} aside (nothing is down then)") from None


def state(url: str, since: float | None, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The RelayState (core/apitypes.py) of a relay that is down: no route, no link, and how to lift it."""
    version = (record or {}).get("server_version")
    return {"url": url, "state": DOWN_STATE, "route": None, "since": since, "latency_ms": None, "attempts": 0,
            "next_retry_at": None, "routes": [], "server_version": version if isinstance(version, str) else None,
            "last_error": {"code": DOWN_STATE, "message": REASON,
                           "data": {"hint": f"back on the relay: hermes-relay up {url}"}}}
