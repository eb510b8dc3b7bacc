"""The agent's own per-relay verdicts that must survive a restart: revoked, expired, pin mismatch.

They live in a separate file (``~/.hermes/hermes-relay-agent.json``), not in the shared session store:
a verdict is the agent's reason to stop retrying, not a fact other clients should act on, and the
pairing itself is never deleted because of it. Each verdict is tied to a fingerprint of the token it
was reached with, so a new pairing (a new token) clears it without anyone having to remember to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hermes_relay.core import fileio
from hermes_relay.core.errors import StateError

MARKS_VERSION = 1


def token_fingerprint(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()[:16]


class Marks:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            doc = fileio.read_json_versioned(self.path, supported=MARKS_VERSION)
        except StateError:
            # Our own cache of verdicts: unreadable means "no verdicts"; the file is kept for doctor.
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

    def clear(self, url: str) -> bool:
        with fileio.FileLock(self.path):
            relays = self._read()
            if relays.pop(url, None) is None:
                return False
            fileio.atomic_write(self.path, fileio.dump_json({"version": MARKS_VERSION, "relays": relays}))
            return True
