"""The relay's stable identity: a random id kept in its state directory, shown by ``/health``.

Clients use it to recognise one relay reached through several spellings (``localhost`` and
``127.0.0.1``, a trailing ``/ws``, another route of an invite), so a re-pairing replaces the old
pairing instead of forking a second one. Over plain ``ws://`` it is only a claim (anyone can answer
with it); over ``wss://`` the certificate pin is what authenticates the relay. A relay without a
state directory gets a fresh id per run (its sessions do not outlive it either).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from ..core import fileio

log = logging.getLogger(__name__)
ID_FILE = "relay-id"


def _valid(text: str) -> bool:
    return 16 <= len(text) <= 64 and all(c.isalnum() or c in "-_" for c in text)


def relay_id(state_dir: Path | None) -> str:
    """The id stored in ``state_dir`` (made on first use); a fresh one when it cannot be kept."""
    fresh = secrets.token_urlsafe(16)
    if state_dir is None:
        return fresh
    path = Path(state_dir) / ID_FILE
    try:
        stored = path.read_text(encoding="ascii").strip()
        if _valid(stored):
            return stored
    except (OSError, UnicodeDecodeError):
        pass
    try:
        fileio.atomic_write(path, (fresh + "\n").encode("ascii"))
    except OSError as exc:
        log.warning("relay_id_not_saved path=%s error=%s", path, exc)
    return fresh
