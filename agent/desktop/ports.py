"""The seams of the desktop channel: what it needs from one relay connection (``LinkPort``, served by
agent/link.py) and from the desktop service (``ChannelService``, served by agent/desktop/service.py).

Both are Protocols so the channel imports neither the link nor the service: the service starts a
channel per link (``DesktopService.serve_link``), and nothing imports back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import trio

    from ...core.confine import Confinement
    from ...core.desktop import ToolTable
    from ..memtrim import Trim
    from .approvals import Approvals
    from .audit import AuditLog


class LinkPort(Protocol):
    """What the desktop channel needs from one authenticated relay connection."""

    url: str  # the pairing's owner URL (the policy key)
    route_url: str  # the route this connection uses
    # Set by the desktop channel once it has caught up with the envelopes sent to ``serve_link``'s inbound
    # channel, cleared when it ends: the link then calls it with each desktop envelope instead.
    direct: Callable[[dict[str, Any]], None] | None

    async def send(self, envelope: dict[str, Any]) -> None:
        """Send one envelope ``{channel, type, id, payload}``; raises ConnectionLostError when closed. Sends
        are serialised here (the channel sends from several tasks without a lock of its own)."""
        ...

    def reconnect(self, reason: str) -> None:
        """End this connection and connect again at once, so the relay forgets it as a desktop target
        (every desktop tool withdrawn, or the desktop service failed); ``serve_link`` is then cancelled."""
        ...


class ChannelService(Protocol):
    """What one link's desktop channel uses of the desktop service: policy, tools, approvals, audit."""

    env: Any
    home: Path
    cwd: Path
    table: ToolTable
    approvals: Approvals
    audit: AuditLog
    memory: Trim
    deadline_cap: float | None
    wall_clock: Callable[[], float]

    def stale(self) -> bool:
        """Whether the policy view may be behind the disk (a heartbeat then refreshes it)."""
        ...

    def changes(self) -> trio.Event:
        """Set at the next change of the policy files or view (a heartbeat waits on it)."""
        ...

    def look_again_at(self, now: float) -> float:
        """When a heartbeat must look at the files though nothing changed (trio time)."""
        ...

    def current(self) -> bool:
        """Whether the policy view is the disk's now, known without a look at it (``refresh`` would return at once)."""
        ...

    async def refresh(self) -> None:
        """Bring the policy view up to the disk as it is now (blocking reads off the event loop)."""
        ...

    def decide(self, url: str, tool: str) -> str: ...

    def advertised(self, url: str) -> list[str]: ...

    def confinement(self, url: str) -> Confinement: ...

    def confinement_plan(self, url: str) -> Callable[[], Confinement]: ...

    def confinement_here(self, url: str) -> Confinement | None: ...

    def status_payload(self, url: str, advertised: list[str]) -> dict[str, Any]: ...

    def record_call(self, url: str, record: dict[str, Any], *, outcome: str = "") -> None: ...

    def record_link(self, url: str, state: str, **fields: Any) -> None: ...
