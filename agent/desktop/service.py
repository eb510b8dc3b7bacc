"""The agent's desktop endpoint: one service for all links (policy, approvals, audit, jobs).

Seam with the link (``agent/link.py``): after ``auth.ok`` the link starts
``service.serve_link(port, inbound)`` in the connection's nursery and feeds ``inbound`` every
envelope that is not on the ``system`` channel (the link answers ``system/ping`` itself). The link
cancels ``serve_link`` when the connection ends. ``serve_link`` never raises for a bad message or
a failed tool: one broken call must not take the link down.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

log = logging.getLogger(__name__)


class LinkPort(Protocol):
    """What the desktop channel needs from one authenticated relay connection."""

    url: str  # the pairing's owner URL (the policy key)
    route_url: str  # the route this connection uses

    async def send(self, envelope: dict[str, Any]) -> None:
        """Send one envelope ``{channel, type, id, payload}``; raises ConnectionLostError when closed."""
        ...


class DesktopService:
    def __init__(self, config: Any) -> None:
        self.config = config

    async def serve_link(self, port: LinkPort, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for message in inbound:
            log.debug("desktop_message_ignored url=%s type=%s", port.url, message.get("type"))

    def status_for(self, url: str) -> dict[str, Any] | None:
        """The per-relay summary ``status`` shows (tools advertised, policy, calls today, last call)."""
        return None
