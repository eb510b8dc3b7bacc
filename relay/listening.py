"""Where the relay on this host listens, so the relay-host commands find it without flags.

``hermes-relay-server`` writes ``<state dir>/listening.json`` (``{"url", "pid"}``, 0600) once it listens
and removes it when it stops; ``hermes-pair``, ``hermes-relay-server sessions`` and ``call`` read it.
The order for those commands: ``--relay``, then this file (while its process lives), then ``RELAY_PORT``
(which the server honours too), then ``ws://127.0.0.1:8767``. Plain blocking Python, no trio.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..core import fileio, paths
from ..core.routes import DEFAULT_RELAY_PORT

FILE_NAME = "listening.json"
DEFAULT_RELAY = f"ws://127.0.0.1:{DEFAULT_RELAY_PORT}"
RELAY_HELP = "default: the relay hermes-relay-server runs on this host, else RELAY_PORT, else port 8767"


def local_url(scheme: str, host: str, port: int) -> str:
    """The URL a command on this host uses to reach a relay bound to ``host`` (any address -> loopback)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def record(state_dir: Path, url: str, pid: int) -> None:
    """Say where this relay listens; a failure to write is not a reason to stop serving."""
    with contextlib.suppress(OSError):
        fileio.ensure_private_dir(state_dir)
        fileio.atomic_write(state_dir / FILE_NAME, json.dumps({"url": url, "pid": pid}).encode())


def clear(state_dir: Path, pid: int) -> None:
    """Remove the file if it is still this relay's (a newer relay may have replaced it)."""
    path = state_dir / FILE_NAME
    if _read(path).get("pid") == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def recorded(state_dir: Path) -> str | None:
    """The recorded URL while the relay that wrote it still runs; None otherwise."""
    doc = _read(state_dir / FILE_NAME)
    url, pid = doc.get("url"), doc.get("pid")
    if isinstance(url, str) and isinstance(pid, int) and not isinstance(pid, bool) and _alive(pid):
        return url
    return None


def local_relay(env: Mapping[str, str] | None = None) -> str:
    """The relay on this host: its listening file, else ``RELAY_PORT``, else the default port."""
    e = os.environ if env is None else env
    found = recorded(paths.relay_state_dir(e))
    if found:
        return found
    port = (e.get("RELAY_PORT") or "").strip()
    if port.isdigit() and 0 < int(port) < 65536:
        return f"ws://127.0.0.1:{int(port)}"
    return DEFAULT_RELAY


def _read(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        doc = json.loads(data)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _alive(pid: int) -> bool:
    from ..core.ownership import pid_alive

    return pid_alive(pid)
