"""The ``tcp`` IPC endpoint file: where the agent listens on loopback and the nonce that proves a
client may talk to it (pure; see ``paths.ipc_mode``).

    {"port": 50123, "nonce": "<64 hex chars>", "pid": 4242}

The file is written atomically with mode 0600 in the per-user runtime directory; anyone who can
read it is the user. A client connects to 127.0.0.1:port and sends the 32 nonce bytes before its
first frame; the agent drops any connection that does not.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from . import fileio
from .errors import AgentNotRunningError

NONCE_BYTES = 32


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def write(path: Path, port: int, nonce: bytes, pid: int) -> None:
    fileio.atomic_write(path, json.dumps({"port": port, "nonce": nonce.hex(), "pid": pid}).encode())


def read(path: str) -> tuple[int, bytes]:
    """(port, nonce); AgentNotRunningError when the file is missing or not one of ours."""
    try:
        obj = json.loads(Path(path).read_text())
        port, nonce = int(obj["port"]), bytes.fromhex(obj["nonce"])
    except FileNotFoundError:
        raise AgentNotRunningError(path) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AgentNotRunningError(path, f"unreadable endpoint file ({exc})") from None
    if not 0 < port < 65536 or len(nonce) != NONCE_BYTES:
        raise AgentNotRunningError(path, "malformed endpoint file")
    return port, nonce
