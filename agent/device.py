"""This computer as the relay sees it: the device facts every ``system/auth`` carries, with the device id
kept in its own file (created once; a file that cannot be written gives a fresh id per start, logged)."""

from __future__ import annotations

import logging
import platform
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from ..core import fileio

log = logging.getLogger(__name__)


def facts(device_id_file: Path) -> dict[str, Any]:
    """The device facts (blocking: reads, maybe writes, the id file; call it in a worker thread)."""
    return {
        "device_name": socket.gethostname() or "computer",
        "device_id": _device_id(device_id_file),
        "device_hostname": socket.gethostname(),
        "client_surface": "desktop",
        "device_form_factor": "desktop",
        "device_model": platform.machine() or "unknown",
        "device_platform": sys.platform,
        "supports": {"typed_stream_events": True, "event_schema_version": 1},
    }


def _device_id(path: Path) -> str:
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except OSError:
        pass
    new = str(uuid.uuid4())
    try:
        fileio.atomic_write(path, (new + "\n").encode())
    except OSError as exc:
        log.warning("device_id_not_saved error=%s", exc)
    return new
