"""The desktop channel's target table without I/O: who each authenticated socket is, which of them are
desktop targets, what they advertise, and which one a call goes to (selection, tool checks, ``_ping``).

relay/desktop.py's router extends it with the calls in flight (trio). The rules are described there.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core import desktop as desktop_wire
from ..core import envelope
from ..core.wire import MAX_DEVICE_NAME
from . import httpmsg
from .rawenv import RawEnvelope

log = logging.getLogger(__name__)

CHANNEL = desktop_wire.CHANNEL
PREFIX = "desktop."
NO_CLIENT = "No desktop client connected. Start the Hermes desktop CLI and pair it."


class Socket(Protocol):
    """What the router needs from a connection: ``send_message`` (relay/ws.py)."""

    async def send_message(self, message: str | bytes) -> None: ...


class RouteFailure(Exception):
    """A call that cannot be routed: ``status`` is the HTTP status, ``message`` says why."""

    def __init__(self, status: int, message: str, target: Target | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.target = target  # the target that refused the tool, for check_tool


def _clean(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _normalized(value: str) -> str:
    return "".join(ch for ch in value.casefold() if ch.isalnum())


@dataclass(eq=False)
class Target:
    """One socket that spoke on the desktop channel."""

    ws: Socket
    seq: int  # order of arrival: a higher number is a newer socket
    auth_device_id: str = ""  # from the session the socket authenticated with, never from the client's words
    auth_device_name: str = ""
    hostname: str = ""  # the session's device_hostname (given at pairing)
    key: str = ""  # sockets with one key are one install (the device id, else the session)
    status: dict[str, Any] = field(default_factory=dict)
    advertised: frozenset[str] = frozenset()
    listed: bool = False  # its status carried an advertised_tools list: that list is all it serves, even empty
    has_status: bool = False
    workspace: dict[str, Any] | None = None
    active_editor: dict[str, Any] | None = None
    last_seen_at: float | None = None

    @property
    def device_id(self) -> str:
        return self.auth_device_id

    @property
    def device_name(self) -> str:
        return self.auth_device_name[:MAX_DEVICE_NAME]

    def names(self) -> set[str]:
        """What a selector may match: the identity its session was paired with (never its status)."""
        return {n for n in (self.auth_device_id, self.auth_device_name, self.hostname) if n}

    def label(self) -> str:
        return f"{self.device_name or 'desktop'} ({self.device_id or 'legacy'})"

    def public(self) -> dict[str, Any]:
        return {"device_id": self.device_id or None, "device_name": self.device_name or None}


@dataclass(eq=False)
class _Identity:
    device_id: str
    name: str
    hostname: str
    key: str
    desktop: bool
    warned: bool = False


class DesktopTable:
    """Targets, their advertisements and statuses; ``_on_response`` and ``detach`` are extended by the router."""

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self.wall_clock = wall_clock
        self._identity: dict[Socket, _Identity] = {}
        self._targets: dict[Socket, Target] = {}
        self._seq = itertools.count(1)
        self._latest_status: dict[str, Any] = {}

    # -- sockets -----------------------------------------------------------------------------
    def authed(self, ws: Socket, *, device_id: str, name: str, hostname: str = "", session_key: str = "",
               desktop: bool = True) -> None:
        """Remember who a socket is: the identity its SESSION was paired with (``device_id``, name, host
        name), never what its auth frame or status claims. Only a session paired as a desktop surface
        (``desktop``) may become a target; another socket's desktop envelopes are ignored."""
        device_id = _clean(device_id)
        if device_id.casefold() in ("unknown", "none", "null"):
            device_id = ""
        key = f"device:{device_id.casefold()}" if device_id else f"session:{session_key or id(ws)}"
        self._identity[ws] = _Identity(device_id, (_clean(name) or _clean(hostname))[:MAX_DEVICE_NAME],
                                       _clean(hostname)[:MAX_DEVICE_NAME], key, desktop)

    def detach(self, ws: Socket) -> Target | None:
        """The socket closed: it is no longer a target. Returns the target it was, if any."""
        self._identity.pop(ws, None)
        target = self._targets.pop(ws, None)
        if target is None:
            return None
        if self._latest_status is target.status:
            self._latest_status = {}
        log.info("desktop_target_gone device=%s", target.label())
        return target

    def on_envelope(self, ws: Socket, env: envelope.Envelope) -> None:
        """Handle one ``desktop`` envelope from an authenticated socket (never raises for bad input)."""
        typ = env.type[len(PREFIX):] if env.type.startswith(PREFIX) else env.type
        target = self._targets.get(ws)
        if target is None:
            who = self._identity.get(ws)
            if who is None or not who.desktop:
                if who is not None and not who.warned:
                    who.warned = True
                    log.warning("desktop_envelope_refused device=%s reason=session_not_paired_as_desktop",
                                who.device_id or "legacy")
                return
            target = Target(ws, next(self._seq), who.device_id, who.name, who.hostname, who.key)
            self._targets[ws] = target
            log.info("desktop_target device=%s", target.label())
        target.last_seen_at = self.wall_clock()
        payload = env.payload
        if httpmsg.nesting(payload) > httpmsg.MAX_NESTING:  # kept or returned, it could not be encoded again
            log.warning("desktop_envelope_too_deep type=%.64s device=%s", env.type, target.label())
            if typ == "response":
                self._on_response(target, {"request_id": payload.get("request_id"), "ok": False,
                                           "error": f"the desktop client's answer nests more than "
                                                    f"{httpmsg.MAX_NESTING} levels"})
            return
        if typ == "status":
            target.status = dict(payload)
            target.has_status = True
            tools = payload.get("advertised_tools")
            names = tools if isinstance(tools, list) else []
            target.advertised = frozenset(t for t in names if isinstance(t, str) and t)
            target.listed = isinstance(tools, list)
            self._latest_status = target.status
        elif typ == "response":
            self._on_response(target, payload, env.span if isinstance(env, RawEnvelope) else None)
        elif typ == "workspace":
            target.workspace = dict(payload)
        elif typ == "active_editor":
            target.active_editor = dict(payload)
        else:
            log.debug("desktop_ignored type=%s", env.type[:64])

    def _on_response(self, target: Target, payload: dict[str, Any], span: tuple[str, int, int] | None = None) -> None:
        """An answer to a call: the table has no calls in flight (the router's do)."""
        log.debug("desktop_response_dropped request_id=%.64s", payload.get("request_id"))

    # -- selection ---------------------------------------------------------------------------
    def targets(self) -> list[Target]:
        """One target per install: sockets sharing a ``device_id`` collapse to the best one."""
        best: dict[str, Target] = {}
        for t in self._targets.values():
            key = t.key or f"socket:{id(t)}"
            current = best.get(key)
            if current is None or (t.has_status, t.seq) > (current.has_status, current.seq):
                best[key] = t
        return sorted(best.values(), key=lambda t: t.seq)

    def resolve(self, selector: str | None = None) -> Target:
        """The target for a call, by the §3.3 rules; RouteFailure (503, 404 or 409) otherwise."""
        targets = self.targets()
        raw = (selector or "").strip()
        if raw:
            folded, norm = raw.casefold(), _normalized(raw)
            # Only the session's identity counts: a status naming another device (its id, name or host)
            # would otherwise take that device's calls whenever it is offline.
            matches = [t for t in targets
                       if any(n.casefold() == folded or (norm and _normalized(n) == norm) for n in t.names())]
            if not matches:
                if not targets:
                    raise RouteFailure(503, NO_CLIENT)
                available = ", ".join(t.label() for t in targets)
                raise RouteFailure(404, f"Unknown desktop device selector {raw!r}. Available: {available}")
            if len(matches) > 1:
                raise RouteFailure(409, f"Ambiguous desktop device selector {raw!r}; use its device_id")
            return matches[0]
        if not targets:
            raise RouteFailure(503, NO_CLIENT)
        if len(targets) > 1:
            raise RouteFailure(409, "Multiple desktop clients are connected; pass device or device_id explicitly. "
                                    "Available: " + ", ".join(t.label() for t in targets))
        return targets[0]

    @staticmethod
    def check_tool(target: Target, tool: str) -> None:
        """Fail closed for a tool the target did not advertise (§3.2); RouteFailure(404).

        Only a client that never listed its tools (no ``desktop.status`` with ``advertised_tools``: an
        older client) is taken to serve any tool; an empty list is a locked client (restricted), which
        serves nothing, where the reference relay would forward every call to it."""
        if tool.startswith("desktop_computer_") and tool not in target.advertised:
            raise RouteFailure(404, f"Desktop client has not advertised experimental computer-use tool {tool!r}",
                               target)
        if (target.listed or target.advertised) and tool not in target.advertised:
            raise RouteFailure(404, f"Desktop client does not advertise tool {tool!r}", target)

    # -- diagnostics -------------------------------------------------------------------------
    def ping(self, tool: str | None, selector: str | None) -> tuple[int, dict[str, Any]]:
        """``GET /desktop/_ping``: 200 when a call to ``tool`` could be forwarded, else 503.

        Without a selector, as the reference relay: 200 when ANY connected client offers the tool (the
        Hermes agent's availability check never names a device; with several computers the call itself
        then asks for one, listing them).
        """
        connected = bool(self._targets)
        try:
            if selector and selector.strip():
                offering = [self.resolve(selector)]
            else:
                offering = self.targets()
                if not offering:
                    raise RouteFailure(503, NO_CLIENT)
            if tool:
                failures: list[RouteFailure] = []
                for target in offering:
                    try:
                        self.check_tool(target, tool)
                    except RouteFailure as exc:
                        failures.append(exc)
                if len(failures) == len(offering):
                    raise failures[0]
                offering = [t for t in offering if not any(f.target is t for f in failures)]
        except RouteFailure as exc:
            return 503, {"ok": False, "connected": connected, "tool": tool, "error": exc.message}
        reply: dict[str, Any] = {"ok": True, "connected": True, "tool": tool, "target": offering[0].public(),
                                 "advertised_tools": sorted(offering[0].advertised)}
        if len(offering) > 1 or len(self.targets()) > 1:
            reply["targets"] = [t.public() for t in offering]
        return 200, reply
