"""The desktop audit log: one JSON line per tool call and per link event.

``~/.hermes/desktop-audit.jsonl`` (0600) in the shape other Hermes clients write (``kind``
``tool.completed`` / ``connection.state``); at 1 MB it is rotated to a single ``.1``. Records are
small (previews are bounded and secrets redacted before they get here), so a write is one cheap
append; a failed write is logged and never fails the call.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hermes_relay.core import desktop

log = logging.getLogger(__name__)

MAX_BYTES = 1_000_000


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES):
        self.path = path
        self.max_bytes = max_bytes

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("audit_write_failed path=%s error=%s", self.path, exc)

    def read(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first (the rotated ``.1`` then the live file)."""
        return desktop.read_audit(self.path)
