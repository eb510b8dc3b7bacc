"""The relay's ``desktop`` channel router: which socket serves a tool call, and the call's life.

A *target* is an authenticated socket whose session was paired as a desktop surface
(``client_surface: "desktop"``) and that has sent any ``desktop`` envelope (bare or
``desktop.``-prefixed type). Its ``device_id``, name and host name are the ones its session was paired
with: neither the auth frame nor ``desktop.status`` can claim another device's (a phone reconnecting
with the desktop's id is still the phone, and never a target). ``desktop.status`` replaces that
socket's advertised tool set and its latest status; ``workspace`` and ``active_editor`` snapshots are
kept per socket, in memory only.

Selection follows the reference relay 1.9.0 (shared/reference/desktop-channel.md §3.3) with one
deliberate change: sockets that share a ``device_id`` are ONE target, because they are the same
install (a reconnecting agent whose old socket the relay has not reaped yet, or a CLI process beside
the agent). Within such a group a socket that sent ``desktop.status`` (it serves tools) beats one that
only sent a workspace snapshot, and otherwise the newest socket wins. The reference instead reports
every such call as ambiguous until one socket goes away.

A call (``call``) is bound to the socket it was sent on: only that socket's ``desktop.response``
answers it (responses from other sockets and unknown or late ids are dropped), and it fails at once
with 502 when that socket closes (``detach``), not after its timeout. Timeouts are per tool class:
30 s, ``desktop_computer_*`` 180 s, ``desktop_adb_*`` 300 s; a silent client yields 504. The command
carries ``budget_ms`` beside ``args``: the caller's remaining time, in relative milliseconds.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
import trio_websocket

from hermes_relay.core import desktop as desktop_wire
from hermes_relay.core import envelope
from hermes_relay.core.wire import MAX_DEVICE_NAME
from hermes_relay.relay import catalogue, http

log = logging.getLogger(__name__)

CHANNEL = desktop_wire.CHANNEL
PREFIX = "desktop."
RESPONSE_TIMEOUT, COMPUTER_TIMEOUT, ADB_TIMEOUT = (catalogue.RESPONSE_TIMEOUT, catalogue.COMPUTER_TIMEOUT,
                                                   catalogue.ADB_TIMEOUT)
response_timeout = catalogue.response_timeout  # seconds the relay waits for a tool's answer, per class
RECENT_MAX = 100  # calls kept in memory (the reference's ring size)
HEALTH_RECENT = 20  # of which GET /desktop/health shows the newest
SUMMARY_MAX = 500  # characters of a result kept in the ring
ARG_PREVIEW = 200  # characters of one string argument kept in the ring (a written file can be 2 MiB)
ARG_ITEMS = 20  # list items and object keys kept per level
SECRET_MARKERS = ("token", "secret", "password", "key", "auth")
REDACTED = "[redacted]"
MAX_NESTING = 64  # levels redact() copies; deeper values are cut off
NO_CLIENT = "No desktop client connected. Start the Hermes desktop CLI and pair it."
SHUTTING_DOWN = "Desktop client disconnected (Relay server shutting down)"  # the reference's 502 on shutdown
_PEER_GONE = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Socket(Protocol):
    """What the router needs from a connection: trio-websocket's ``send_message``."""

    async def send_message(self, message: str | bytes) -> None: ...


class RouteFailure(Exception):
    """A call that cannot be routed: ``status`` is the HTTP status, ``message`` says why."""

    def __init__(self, status: int, message: str, target: Target | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.target = target  # the target that refused the tool, for check_tool


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and any(m in key.lower() for m in SECRET_MARKERS)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` whose secret-looking keys (token, secret, password, key, auth) are masked
    (nesting past ``MAX_NESTING`` is cut off: a body may nest as deep as the JSON parser allows)."""
    if depth >= MAX_NESTING and isinstance(value, (dict, list)):
        return "..."
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    return value


def preview(value: Any, depth: int = 0) -> Any:
    """``value`` redacted and cut down for the in-memory ring: short strings, few items, shallow."""
    if isinstance(value, str):
        return value if len(value) <= ARG_PREVIEW else f"{value[:ARG_PREVIEW]}... ({len(value)} chars)"
    if depth >= 4 and isinstance(value, (dict, list)):
        return "..."
    if isinstance(value, dict):
        return {str(k)[:ARG_PREVIEW]: REDACTED if _secret_key(k) else preview(v, depth + 1)
                for k, v in itertools.islice(value.items(), ARG_ITEMS)}
    if isinstance(value, list):
        return [preview(v, depth + 1) for v in value[:ARG_ITEMS]]
    return value


def _encode(env: envelope.Envelope) -> str:
    """The envelope as one text frame. A lone surrogate (JSON's ``"\\udce9"``, what a non-UTF-8 file name
    becomes) cannot be sent as UTF-8, so such a message goes ASCII-escaped: the client decodes it to the
    very same string."""
    text = env.encode()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        obj = {**env.extra, "channel": env.channel, "type": env.type, "id": env.id, "payload": env.payload}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    return text


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


@dataclass(eq=False)
class _Pending:
    target: Target
    record: dict[str, Any]
    done: trio.Event = field(default_factory=trio.Event)
    response: dict[str, Any] | None = None
    failure: str | None = None


class DesktopRouter:
    """Targets, their advertisements and statuses, pending calls and the recent-call ring.

    Args:
        wall_clock: epoch seconds for timestamps shown in ``health`` (tests pass a fake).
        timeout: when set, every call waits this long instead of its class timeout (tests).
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time, timeout: float | None = None):
        self.wall_clock = wall_clock
        self.timeout = timeout
        self._identity: dict[Socket, _Identity] = {}
        self._targets: dict[Socket, Target] = {}
        self._pending: dict[str, _Pending] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_MAX)
        self._seq = itertools.count(1)
        self._latest_status: dict[str, Any] = {}

    @property
    def pending_count(self) -> int:
        """Calls waiting for their client's answer."""
        return len(self._pending)

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

    def detach(self, ws: Socket) -> None:
        """The socket closed: it is no longer a target, and its pending calls fail now (502)."""
        self._identity.pop(ws, None)
        target = self._targets.pop(ws, None)
        if target is None:
            return
        if self._latest_status is target.status:
            self._latest_status = {}
        for pending in self._pending.values():
            if pending.target is target and not pending.done.is_set():
                pending.failure = f"Desktop client disconnected ({target.label()})"
                pending.done.set()
        log.info("desktop_target_gone device=%s", target.label())

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
        if http.nesting(payload) > http.MAX_NESTING:  # kept or returned, it could not be encoded again
            log.warning("desktop_envelope_too_deep type=%.64s device=%s", env.type, target.label())
            if typ == "response":
                self._on_response(target, {"request_id": payload.get("request_id"), "ok": False,
                                           "error": f"the desktop client's answer nests more than "
                                                    f"{http.MAX_NESTING} levels"})
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
            self._on_response(target, payload)
        elif typ == "workspace":
            target.workspace = dict(payload)
        elif typ == "active_editor":
            target.active_editor = dict(payload)
        else:
            log.debug("desktop_ignored type=%s", env.type[:64])

    def _on_response(self, target: Target, payload: dict[str, Any]) -> None:
        request_id = payload.get("request_id")
        pending = self._pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None or pending.done.is_set():
            log.debug("desktop_response_dropped request_id=%.64s", request_id)
            return
        if pending.target is not target:
            log.warning("desktop_response_wrong_socket request_id=%.64s from=%s", request_id, target.label())
            return
        pending.response = dict(payload)
        pending.done.set()

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

    # -- calls -------------------------------------------------------------------------------
    async def call(self, tool: str, args: dict[str, Any], selector: str | None = None,
                   timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        """Send ``desktop.command`` to the selected target and wait for its answer.

        Returns ``(http_status, body)``: 200 with the client's response plus ``target``; otherwise
        ``{ok: false, error}`` with 503 (no client), 404/409 (selection), 502 (send failed or the
        socket closed) or 504 (no answer in time). ``timeout`` may only shorten the class timeout.
        """
        try:
            target = self.resolve(selector)
            self.check_tool(target, tool)
        except RouteFailure as exc:
            return exc.status, {"ok": False, "error": exc.message}
        limit = self.timeout if self.timeout is not None else response_timeout(tool)
        if timeout is not None:
            limit = min(limit, timeout)
        request_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "request_id": request_id, "tool": tool, "args": preview(args), "sent_at": int(self.wall_clock() * 1000),
            "target": target.public(), "response_status": None, "duration_ms": None, "ok": None,
            "result_summary": None, "error": None, "decision": "pending",
        }
        self._recent.append(record)
        pending = _Pending(target, record)
        self._pending[request_id] = pending
        started = trio.current_time()
        deadline = started + limit
        try:
            with trio.move_on_at(deadline):
                # The caller's remaining time travels beside args (relative ms: clocks differ), so the
                # client can give up, and withdraw an approval prompt, when nobody waits any more.
                budget_ms = max(1, math.floor((deadline - trio.current_time()) * 1000))
                payload = {"request_id": request_id, "tool": tool, "args": args,
                           "target_device_id": target.device_id or None, "budget_ms": budget_ms}
                try:
                    message = _encode(envelope.Envelope(CHANNEL, "desktop.command", payload, request_id))
                except (ValueError, TypeError, RecursionError) as exc:
                    pending.failure = f"the arguments cannot be sent: {exc.__class__.__name__}"
                    pending.done.set()
                    message = None
                try:
                    if message is not None:
                        await target.ws.send_message(message)
                except _PEER_GONE as exc:
                    pending.failure = f"Failed to send command to desktop client: {exc.__class__.__name__}"
                    pending.done.set()
                await pending.done.wait()
        finally:
            del self._pending[request_id]
            record["duration_ms"] = round((trio.current_time() - started) * 1000)
        if pending.response is not None:
            return self._finish(record, 200, {**pending.response, "target": target.public()})
        if pending.failure is not None:
            return self._finish(record, 502, {"ok": False, "error": pending.failure})
        return self._finish(record, 504, {"ok": False, "error": f"Desktop client did not respond within {limit:g}s (timeout)"})

    def _finish(self, record: dict[str, Any], status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        record["response_status"] = status
        ok = body.get("ok") is True
        record["ok"] = ok
        error = body.get("error")
        if error is not None:
            record["error"] = str(error)[:SUMMARY_MAX]
        if "result" in body:
            summary = json.dumps(preview(body["result"]), default=str, ensure_ascii=False)  # bounded before encoding
            record["result_summary"] = summary if len(summary) <= SUMMARY_MAX else summary[:SUMMARY_MAX - 3] + "..."
        record["decision"] = "timeout" if status == 504 else "executed" if status == 200 and ok else "error"
        return status, body

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

    def health(self) -> dict[str, Any]:
        """``GET /desktop/health``: clients, advertised tools, latest status, pending, recent calls."""
        chosen = set(map(id, self.targets()))
        latest = self._latest_status
        clients = [{
            **t.public(),
            "host": _clean(t.status.get("host")) or None,
            "advertised_tools": sorted(t.advertised),
            "last_seen_at": t.last_seen_at,
            "serving": id(t) in chosen,
            "workspace": t.workspace,
        } for t in sorted(self._targets.values(), key=lambda t: t.seq)]
        advertised = sorted({name for t in self.targets() for name in t.advertised})
        return {
            "ok": True,
            "connected": bool(self._targets),
            "advertised_tools": advertised,
            **{k: latest.get(k) for k in ("host", "platform", "arch", "node", "version", "pid", "uptime_ms",
                                          "interactive", "last_error", "computer_use")},
            "clients": clients,
            "pending_commands": len(self._pending),
            "recent_commands": [dict(r) for r in list(self._recent)[-HEALTH_RECENT:]],
        }
