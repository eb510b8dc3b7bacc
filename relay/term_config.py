"""The terminal channel's settings, limits and per-message access rule (pure: no trio, no I/O).

``TerminalSettings`` is built once (relay/main.py from ``--terminal`` and the tmux flags, tests directly)
and lives in ``RelayConfig.terminal``; None means the relay serves no terminal (relay/unserved.py answers).
``refusal`` is the per-message check the core makes before a terminal message reaches the service
(relay/terminal.py): the session must hold an unexpired ``terminal`` grant, else the reference relay's
``system/error`` ("Terminal grant expired for this device"), which echoes the message id.

The numbers follow ../shared/design/shell.md §3(c): rings of 256 KiB (tmux redraws anything older) and
1 MiB (a bare PTY has nothing that could redraw), 64 KiB unsent per socket before the PTY is no longer
read, frames of at most 16 KiB coalesced over 16 ms, grace periods of 10 min (tmux) and 1 h (bare).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.envelope import Envelope

CHANNEL = "terminal"
GRANT = "terminal"
TMUX_SOCKET = "hermes-relay"  # the reference relay's private tmux server: sessions survive switching relays
TMUX_PREFIX = "hermes-"  # the reference's session names: hermes-<name>
RING_TMUX = 256 * 1024  # bytes of output kept for a resume; tmux redraws anything older
RING_BARE = 1024 * 1024  # a bare PTY cannot redraw, so it keeps more
MAX_UNSENT = 64 * 1024  # output not yet sent to the socket before the PTY is no longer read
MAX_FRAME = 16 * 1024  # bytes of output per terminal.output
COALESCE = 0.016  # seconds: a busy PTY's output goes out at most once per frame time (the reference's 16 ms)
EOF_FLUSH = 1.0  # seconds a shell's last output may take to reach the socket once the shell ended
READ_SIZE = 8192  # bytes per PTY read (the reference's)
WRITE_SIZE = 4096  # bytes per PTY write, so acks follow a large paste piece by piece
ACK_EVERY = 16 * 1024  # bytes written between acks while a long paste drains (the agent keeps 16 KiB unacked)
MAX_INPUT_QUEUE = 4 * 1024 * 1024  # input accepted but not yet written; above it input is refused
GRACE_TMUX = 600.0  # seconds an orphaned attachment's tmux client lives (the session lives on)
GRACE_BARE = 3600.0  # seconds an orphaned bare shell lives
SWEEP = 30.0  # seconds between checks for expired sessions and grants
GRACE_REFERENCE = 5.0  # seconds a reference client's attachment outlives its socket (it never resumes)
MAX_PER_SOCKET = 4  # live attachments per socket (the reference's cap)
MAX_PER_DEVICE = 8  # attachments per device, orphans included: the oldest orphan is evicted
MAX_PTYS = 64  # PTYs in all
MAX_DIMENSION = 1000  # columns or rows
NAME_RE = re.compile(r"[A-Za-z0-9_.:\- ]{1,64}")  # what a session name may be (the reference maps . : space to _)
STREAM_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
GRANT_EXPIRED = "Terminal grant expired for this device"
GRANT_MISSING = "Terminal is not granted to this device"
GRANT_HINT = "on the relay host: hermes-pair --grant terminal=30d, then pair the device again"


@dataclass(frozen=True)
class TerminalSettings:
    """How the relay runs shells. ``tmux``: None = use tmux when it is installed, False = bare shells only."""

    tmux: bool | None = None
    tmux_socket: str = TMUX_SOCKET
    tmux_tmpdir: Path | None = None  # TMUX_TMPDIR for the private server (tests: under tmp_path)
    tmux_conf: Path | None = None  # default ~/.hermes/hermes-relay-tmux.conf
    shell: str | None = None  # the bare shell; default: $SHELL, /etc/shells, /bin/sh
    grace_tmux: float = GRACE_TMUX
    grace_bare: float = GRACE_BARE
    grace_reference: float = GRACE_REFERENCE
    sweep: float = SWEEP
    ring_tmux: int = RING_TMUX
    ring_bare: int = RING_BARE
    max_per_socket: int = MAX_PER_SOCKET
    max_per_device: int = MAX_PER_DEVICE
    max_ptys: int = MAX_PTYS
    env: tuple[tuple[str, str], ...] | None = None  # the shells' environment (None: the relay's own)


class TerminalHooks(Protocol):
    """What the driver (relay/conn.py, relay/server.py) calls on the terminal service (relay/terminal.py)."""

    async def run(self, *, task_status: Any = ...) -> None: ...
    async def on_envelope(self, ws: Any, sess: Any, env: Envelope) -> None: ...
    def socket_gone(self, ws: Any) -> None: ...
    async def socket_closing(self, ws: Any) -> None: ...
    def check_sessions(self) -> None: ...
    def goodbye(self, ws: Any, reason: str) -> list[Envelope]: ...


def refusal(grants: dict[str, float | None], now: float, msg_id: str | None) -> Envelope | None:
    """The ``system/error`` a terminal message gets when the session holds no live ``terminal`` grant."""
    if GRANT not in grants:
        message, reason = GRANT_MISSING, "terminal_not_granted"
    else:
        expires = grants[GRANT]
        if expires is None or expires > now:
            return None
        message, reason = GRANT_EXPIRED, "terminal_grant_expired"
    payload: dict[str, Any] = {"message": message, "reason": reason, "channel": CHANNEL, "hint": GRANT_HINT}
    return Envelope("system", "error", payload) if msg_id is None else Envelope("system", "error", payload, msg_id)


def tmux_name(name: str) -> str:
    """The reference's tmux session name for ``name``: ``hermes-<name>`` with ``.``, ``:`` and whitespace as ``_``."""
    return TMUX_PREFIX + re.sub(r"[.:\s]", "_", name)


def grace_for(settings: TerminalSettings, *, tmux: bool, resume: bool) -> float:
    if not resume:
        return settings.grace_reference
    return settings.grace_tmux if tmux else settings.grace_bare


def detached(name: str, reason: str, **extra: Any) -> Envelope:
    return Envelope(CHANNEL, "terminal.detached", {"session_name": name, "reason": reason, **extra})


def size_of(p: dict[str, Any]) -> tuple[int, int] | None:
    """(cols, rows) of an attach or resize (default 80x24), or None when they are not sane integers."""
    cols, rows = p.get("cols", 80), p.get("rows", 24)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIMENSION for v in (cols, rows))
    return (cols, rows) if ok else None
