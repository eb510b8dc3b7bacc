"""The seams of the terminal service: what it needs from one relay connection (``TerminalPort``, served
by agent/link.py) and what the link asks of it (``TerminalSeam``, served by agent/terminal/service.py).

Both are Protocols, so the link does not import the service and the service does not import the link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio


class TerminalPort(Protocol):
    """One authenticated relay connection, as the terminal sessions use it."""

    url: str  # the pairing's owner URL
    route_url: str
    route_label: str  # "LAN", "Tailscale", "public"... (shown to the user during a gap)

    async def send(self, envelope: dict[str, Any]) -> None:
        """Send one envelope ``{channel, type, id, payload}``; raises ConnectionLostError when closed."""
        ...

    def check(self) -> None:
        """Input goes unacknowledged for too long: check this connection now (a keepalive ping with the
        probe timeout; a dead one is replaced and the sessions reattach on the new one)."""
        ...


class TerminalSeam(Protocol):
    """What agent/link.py asks of the terminal service."""

    async def serve_link(self, port: TerminalPort, inbound: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        """Serve the terminal channel on one connection until it ends (cancelled): entering is "connected
        on this route", leaving is "lost". ``inbound`` carries ``terminal`` envelopes and ``system``
        ``pong``/``error`` ones."""
        ...

    def attached(self, url: str) -> bool:
        """A shell is attached through ``url``'s link (its keepalive tightens)."""
        ...

    def on_open(self, url: str, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever a shell of ``url`` opens (its link's keepalive tightens at once,
        without polling ``attached``); a later call for the same ``url`` replaces it."""
        ...

    async def leave(self, url: str, *, drain: bool) -> None:
        """A planned move: detach every attached session of ``url`` (after its input is acknowledged, with
        ``drain``) before the link closes, so the relay keeps no stale client."""
        ...

    def refused(self, url: str, verdict: str) -> None:
        """The relay refused ``url``'s credentials (the link's verdict: revoked, expired...): its shells end
        now with an error that says so, instead of waiting for a link that will not come back."""
        ...
