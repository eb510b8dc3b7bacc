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

The target table (identities, targets, selection, tool checks, ``_ping``) is relay/desktop_table.py,
without I/O; ``DesktopRouter`` extends it with the calls in flight, which wait on trio.
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
from typing import Any

import trio

from ..core import envelope
from . import catalogue, rawenv
from .desktop_table import (  # noqa: F401  (CHANNEL, PREFIX, NO_CLIENT: importable from here)
    CHANNEL,
    NO_CLIENT,
    PREFIX,
    DesktopTable,
    RouteFailure,
    Socket,
    Target,
    _clean,
)
from .ws import ConnectionClosed

log = logging.getLogger(__name__)

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
SHUTTING_DOWN = "Desktop client disconnected (Relay server shutting down)"  # the reference's 502 on shutdown
_SUMMARY = json.JSONEncoder(default=str, ensure_ascii=False)  # a result's summary in the ring, one encoder made once
_PEER_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


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


SMALL_ARGS = 64 << 10  # bytes of a call's JSON arguments up to which its command is encoded the small way


def _encode(env: envelope.Envelope, *, small: bool = False) -> str:
    """The envelope as one text frame. A lone surrogate (JSON's ``"\\udce9"``, what a non-UTF-8 file name
    becomes) cannot be sent as UTF-8, so such a message goes ASCII-escaped: the client decodes it to the
    very same string. ``small``: the arguments are small, so relay/rawenv.py's one-pass encoder is the
    quicker (for megabytes of text, Envelope.encode's ASCII encoder is)."""
    text = rawenv.text(env) if small else env.encode()
    if text.isascii():  # (a flag CPython keeps: no pass over it)
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        obj = {**env.extra, "channel": env.channel, "type": env.type, "id": env.id, "payload": env.payload}
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    return text


@dataclass(eq=False)
class _Pending:
    target: Target
    record: dict[str, Any]
    done: trio.Event = field(default_factory=trio.Event)
    response: dict[str, Any] | None = None
    span: tuple[str, int, int] | None = None  # where the response payload's JSON text is in its frame (relay/rawenv.py)
    failure: str | None = None


class DesktopRouter(DesktopTable):
    """Targets, their advertisements and statuses, pending calls and the recent-call ring.

    Args:
        wall_clock: epoch seconds for timestamps shown in ``health`` (tests pass a fake).
        timeout: when set, every call waits this long instead of its class timeout (tests).
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time, timeout: float | None = None):
        super().__init__(wall_clock)
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_MAX)

    @property
    def pending_count(self) -> int:
        """Calls waiting for their client's answer."""
        return len(self._pending)

    def detach(self, ws: Socket) -> Target | None:
        """The socket closed: it is no longer a target, and its pending calls fail now (502)."""
        target = super().detach(ws)
        if target is not None:
            for pending in self._pending.values():
                if pending.target is target and not pending.done.is_set():
                    pending.failure = f"Desktop client disconnected ({target.label()})"
                    pending.done.set()
        return target

    def _on_response(self, target: Target, payload: dict[str, Any], span: tuple[str, int, int] | None = None) -> None:
        request_id = payload.get("request_id")
        pending = self._pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None or pending.done.is_set():
            log.debug("desktop_response_dropped request_id=%.64s", request_id)
            return
        if pending.target is not target:
            log.warning("desktop_response_wrong_socket request_id=%.64s from=%s", request_id, target.label())
            return
        pending.response = dict(payload)
        pending.span = span
        pending.done.set()

    # -- calls -------------------------------------------------------------------------------
    async def call(self, tool: str, args: dict[str, Any], selector: str | None = None,
                   timeout: float | None = None, *, args_size: int | None = None) -> tuple[int, dict[str, Any]]:
        """Send ``desktop.command`` to the selected target and wait for its answer.

        Returns ``(http_status, body)``: 200 with the client's response plus ``target``; otherwise
        ``{ok: false, error}`` with 503 (no client), 404/409 (selection), 502 (send failed or the
        socket closed) or 504 (no answer in time). ``timeout`` may only shorten the class timeout.
        ``args_size``: the bytes of JSON the arguments came as, when known.
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
                    message = _encode(envelope.Envelope(CHANNEL, "desktop.command", payload, request_id),
                                      small=args_size is not None and args_size <= SMALL_ARGS)
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
            extra = {"target": target.public()}
            body = {**pending.response, **extra}
            parts = rawenv.forwarded(pending.response, pending.span, extra)  # no json.dumps of a big result
            return self._finish(record, 200, body if parts is None else rawenv.Forwarded(body, parts))
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
            summary = _SUMMARY.encode(preview(body["result"]))  # bounded before encoding
            record["result_summary"] = summary if len(summary) <= SUMMARY_MAX else summary[:SUMMARY_MAX - 3] + "..."
        record["decision"] = "timeout" if status == 504 else "executed" if status == 200 and ok else "error"
        return status, body

    # -- diagnostics -------------------------------------------------------------------------
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
