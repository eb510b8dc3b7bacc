"""Refresh tokens kept where no other client can drop them: ``~/.hermes/hermes-relay-credentials.json``.

Other Hermes clients rewrite the shared store and drop fields they do not know, so a refresh token
kept only there can vanish. The agent keeps its own copy in this 0600 file, keyed by the pairing's
owner URL and a SHA-256 of the session token it belongs to: a new pairing (a new token) never picks
up an old pairing's refresh token, and the file names no token.

    {"version": 1, "relays": {URL: {"token_sha256": hex, "refresh_token": str, "at": epoch s}}}
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from ..core import fileio
from ..core.errors import StateError
from .marks import update_entries

log = logging.getLogger(__name__)
CREDENTIALS_VERSION = 1


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Credentials:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            doc = fileio.read_json_versioned(self.path, supported=CREDENTIALS_VERSION)
        except StateError as exc:
            log.warning("credentials_file_unreadable error=%s (ignored; the store's refresh token is used)",
                        exc.message)
            return {}
        relays = (doc or {}).get("relays")
        return relays if isinstance(relays, dict) else {}

    def refresh_token(self, url: str, token: str | None) -> str | None:
        """The refresh token stored for ``url`` beside session ``token``, if any."""
        if not token:
            return None
        entry = self._read().get(url)
        if isinstance(entry, dict) and entry.get("token_sha256") == token_sha256(token):
            refresh = entry.get("refresh_token")
            return refresh if isinstance(refresh, str) and refresh else None
        return None

    def save(self, url: str, token: str, refresh_token: str, at: float) -> None:
        """Remember ``refresh_token`` for session ``token`` of ``url`` (replacing the previous pair)."""
        entry = {"token_sha256": token_sha256(token), "refresh_token": refresh_token, "at": at}

        def change(relays: dict[str, Any]) -> bool:
            old = relays.get(url)
            if isinstance(old, dict) and all(old.get(k) == entry[k] for k in ("token_sha256", "refresh_token")):
                return False
            relays[url] = entry
            return True

        update_entries(self.path, CREDENTIALS_VERSION, "relays", self._read, change)

    def forget(self, url: str) -> bool:
        def change(relays: dict[str, Any]) -> bool:
            return relays.pop(url, None) is not None

        return update_entries(self.path, CREDENTIALS_VERSION, "relays", self._read, change)


PAUSED_VERSION = 1


class Paused:
    """Pairings another client removed from the shared store, kept so the user can take them back.

    The reference CLI deletes a record after a single failed connection, and any client (or a hand
    edit) may drop one: that must not end a pairing, only ``forget`` or the relay's revocation does.
    The agent keeps the last record it knew (token included, hence this 0600 file of its own,
    ``hermes-relay-paused.json``), stops the link, and ``status`` says how to restore it
    (``hermes-relay restore URL``) or remove it for good (``hermes-relay forget URL``).

        {"version": 1, "paused": {URL: {"record": {...}, "at": epoch s, "reason": str}}}
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            doc = fileio.read_json_versioned(self.path, supported=PAUSED_VERSION)
        except StateError as exc:
            log.error("paused_file_unreadable error=%s", exc.message)
            return {}
        entries = (doc or {}).get("paused")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("record"), dict)}

    def all(self) -> dict[str, dict[str, Any]]:
        return self._read()

    def get(self, url: str) -> dict[str, Any] | None:
        return self._read().get(url)

    def pause(self, url: str, record: dict[str, Any], reason: str, at: float) -> None:
        def change(entries: dict[str, Any]) -> bool:
            entries[url] = {"record": record, "at": at, "reason": reason}
            return True

        update_entries(self.path, PAUSED_VERSION, "paused", self._read, change)

    def drop(self, url: str) -> bool:
        def change(entries: dict[str, Any]) -> bool:
            return entries.pop(url, None) is not None

        return update_entries(self.path, PAUSED_VERSION, "paused", self._read, change)
