"""The agent's own per-relay verdicts that must survive a restart: revoked, expired, pin mismatch.

They live in a separate file (``~/.hermes/hermes-relay-agent.json``), not in the shared session store:
a verdict is the agent's reason to stop retrying, not a fact other clients should act on, and the
pairing itself is never deleted because of it. Each verdict is tied to a fingerprint of the token it
was reached with, so a new pairing (a new token) clears it without anyone having to remember to.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from hermes_relay.core import fileio
from hermes_relay.core.errors import StateError

log = logging.getLogger(__name__)
MARKS_VERSION = 1


def token_fingerprint(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


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
        with fileio.FileLock(self.path):
            relays = self._read()
            relays[url] = {"state": state, "error": error, "at": at, "token_fp": token_fingerprint(token)}
            fileio.atomic_write(self.path, fileio.dump_json({"version": MARKS_VERSION, "relays": relays}))

    def clear(self, url: str, *, only: str | None = None) -> bool:
        """Forget the verdict on ``url`` (only if it is ``only``, when given)."""
        with fileio.FileLock(self.path):
            relays = self._read()
            mark = relays.get(url)
            if mark is None or (only is not None and isinstance(mark, dict) and mark.get("state") != only):
                return False
            del relays[url]
            fileio.atomic_write(self.path, fileio.dump_json({"version": MARKS_VERSION, "relays": relays}))
            return True
