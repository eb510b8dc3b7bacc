"""The desktop channel's pure parts: limits, the tool table's shape, and tool failures.

The Hermes agent on the relay host calls tools on this computer over the relay's ``desktop``
channel (``desktop.command`` in, exactly one ``desktop.response`` out). This module holds what the
agent's dispatcher (``agent/desktop/``), the tools (``agent/desktop/tools/``), the CLI and the relay
share without importing trio. The full wire contract is shared/reference/desktop-channel.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hermes_relay.core import wire
from hermes_relay.core.confine import UNCONFINED, Confinement

if TYPE_CHECKING:
    import re

CHANNEL: Final = "desktop"
DEFAULT_DEADLINE: Final = 30.0  # the relay waits 30 s for desktop.response
HEARTBEAT_INTERVAL: Final = 30.0  # desktop.status cadence
POLICY_POLL_INTERVAL: Final = 1.0  # how often the agent looks for policy edits (they apply within 2 s)
MAX_REQUEST_ID: Final = 256
REMEMBERED_REQUEST_IDS: Final = 2048

# Capabilities of the host access policy (desktop-host-access.json); None = always allowed.
COMMANDS: Final = "commands"
FILES: Final = "files"


class ToolError(Exception):
    """A tool call failed in a way the caller should read: the message becomes ``error``."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use besides its arguments.

    ``deadline`` is the trio time (``trio.current_time()``) after which the call is cancelled;
    tools that start processes must kill the whole process tree when cancelled.
    """

    home: Path  # ~/.hermes (jobs live in home / "desktop-jobs")
    cwd: Path  # relative paths resolve against this
    deadline: float
    max_output: int = 1 << 20  # per stream / per read, bytes; a response frame stays under wire.MAX_WS_MESSAGE
    env: dict[str, str] = field(default_factory=dict)  # the agent's environment for child processes
    # What this call may touch (core/confine.py); the service sets it from the host's policy.
    confinement: Confinement = UNCONFINED


ToolFn = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its wire name, the policy capability it needs, its deadline class and its body.

    ``run`` validates its own arguments (raising ToolError with a clear message) and returns the
    JSON-able result the spec gives for the tool. ``preview`` renders the arguments for approvals
    and the audit log (<= 120 chars is enforced by the caller).
    """

    name: str
    capability: str | None
    run: ToolFn
    deadline: float = DEFAULT_DEADLINE
    preview: Callable[[dict[str, Any]], str] = lambda args: ""


# -- envelopes -----------------------------------------------------------------------------------
COMMAND_TYPES: Final = ("desktop.command", "command")
CONTROL_SESSION_END_TYPES: Final = ("desktop.control_session_end", "control_session_end")
ARGS_PREVIEW: Final = 120
FRAME_MARGIN: Final = 4096  # room for the envelope around the payload and a relay that re-wraps it
INVALID_ID: Final = "duplicate or invalid desktop request_id"
ABORTED: Final = "aborted"


def _envelope(type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    import uuid

    return {"channel": CHANNEL, "type": type_, "id": str(uuid.uuid4()), "payload": payload}


def response_envelope(request_id: str, ok: bool, *, result: Any = None, error: str | None = None) -> dict[str, Any]:
    """``desktop.response``: ``{request_id, ok:true, result}`` or ``{request_id, ok:false, error}``."""
    payload: dict[str, Any] = {"request_id": request_id, "ok": ok}
    if ok:
        payload["result"] = result
    else:
        payload["error"] = error or "failed"
    return _envelope("desktop.response", payload)


def status_envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return _envelope("desktop.status", payload)


def valid_request_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID


class RequestIds:
    """The last ``REMEMBERED_REQUEST_IDS`` request ids: a repeated id is refused, never run twice."""

    def __init__(self, size: int = REMEMBERED_REQUEST_IDS):
        from collections import deque

        self._order: Any = deque()
        self._seen: set[str] = set()
        self._size = size

    def admit(self, request_id: Any) -> bool:
        """True (and remembered) for a valid id not seen recently; False otherwise."""
        if not valid_request_id(request_id) or request_id in self._seen:
            return False
        self._seen.add(request_id)
        self._order.append(request_id)
        while len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True


@dataclass(frozen=True)
class Command:
    request_id: str
    tool: str
    args: dict[str, Any]


class BadCommand(Exception):
    """A ``desktop.command`` that cannot be run; ``request_id`` is set when it can still be answered."""

    def __init__(self, message: str, request_id: str | None):
        super().__init__(message)
        self.request_id = request_id


def parse_command(payload: Any) -> Command:
    """Validate a ``desktop.command`` payload; raises BadCommand (answerable when it has a request_id)."""
    if not isinstance(payload, dict):
        raise BadCommand("malformed desktop.command: payload is not an object", None)
    rid = payload.get("request_id")
    if not isinstance(rid, str):
        raise BadCommand("malformed desktop.command: no string request_id", None)
    if not valid_request_id(rid):
        raise BadCommand(INVALID_ID, rid if rid else None)
    tool = payload.get("tool")
    if not isinstance(tool, str) or not tool:
        raise BadCommand("malformed desktop.command: 'tool' must be a non-empty string", rid)
    args = payload.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadCommand(f"malformed desktop.command: 'args' of {tool} must be an object", rid)
    return Command(rid, tool, args)


# -- tool table ----------------------------------------------------------------------------------
CATEGORIES: Final = {COMMANDS: "command", FILES: "files", "screen_input": "screen", "usb": "devices"}


def category(capability: str | None) -> str:
    """The audit log's category for a capability (spec §3.5.7)."""
    return CATEGORIES.get(capability, "system") if capability is not None else "system"


class ToolTable:
    """Tool name -> ToolSpec; the dispatcher's only view of the tools."""

    def __init__(self, specs: list[ToolSpec]):
        self._specs = {s.name: s for s in specs}

    def get(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def capability(self, name: str) -> str | None:
        spec = self._specs.get(name)
        return spec.capability if spec else None

    def deadline(self, name: str) -> float:
        spec = self._specs.get(name)
        return spec.deadline if spec else DEFAULT_DEADLINE


def clip(text: str, limit: int = ARGS_PREVIEW) -> str:
    """One line, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def args_preview(spec: ToolSpec | None, args: dict[str, Any]) -> str:
    """The tool's own preview, or a compact JSON of the arguments; never over ARGS_PREVIEW chars."""
    text = ""
    if spec is not None:
        try:
            text = spec.preview(args)
        except Exception:  # a preview is cosmetic: a bad one must never fail the call
            text = ""
    if not text:
        import json

        text = json.dumps(args, ensure_ascii=False, default=str, separators=(",", ":"))
    return clip(text)


# -- bounding ------------------------------------------------------------------------------------
def encoded_size(obj: Any) -> int:
    """Bytes of ``obj`` as the link sends it (compact JSON, UTF-8; the same encoder, so a value the link
    could not send raises TypeError or ValueError here, where the caller can still answer with an error)."""
    import json

    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _cut_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[: max(0, max_bytes)].decode("utf-8", "ignore")


def _largest_string(obj: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], int] | None:
    best: tuple[tuple[Any, ...], int] | None = None
    if isinstance(obj, str):
        return path, len(obj.encode("utf-8"))
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = _largest_string(value, path + (key,))
        if found and (best is None or found[1] > best[1]):
            best = found
    return best


def bound_response(envelope: dict[str, Any], limit: int = wire.MAX_WS_MESSAGE - FRAME_MARGIN) -> dict[str, Any]:
    """``envelope`` if it encodes under ``limit`` bytes, else a copy whose result fits.

    The largest strings are cut (a dict field ``f`` gains ``f_truncated: true`` and ``f_bytes``, and
    the result ``truncated: true``; a bare string result ends with a ``[... truncated at N bytes]``
    line); long lists are shortened. A result that still cannot fit becomes an error naming its size.
    """
    import copy

    size = encoded_size(envelope)
    if size <= limit:
        return envelope
    payload = envelope["payload"]
    if not payload.get("ok"):
        return {**envelope, "payload": {**payload, "error": _cut_utf8(str(payload.get("error")), 64 << 10)}}
    result = copy.deepcopy(payload.get("result"))
    holder: dict[str, Any] = {"r": result}
    for _ in range(64):
        over = encoded_size({**envelope, "payload": {**payload, "result": holder["r"]}}) - limit
        if over <= 0:
            return {**envelope, "payload": {**payload, "result": holder["r"]}}
        found = _largest_string(holder["r"], ("r",))
        if found is None or found[1] < 1024:
            if not _shorten_list(holder):
                break
            continue
        path, nbytes = found
        parent: Any = holder
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        text = parent[key]
        ratio = max(1.0, encoded_size(text) / max(1, nbytes))  # JSON escaping can grow a string up to 6x
        keep = max(0, int(nbytes - (over + 1024) / ratio) - 1024)
        if parent is holder:
            parent[key] = _cut_utf8(text, keep) + f"\n[... truncated at {keep} bytes of {nbytes}]"
        else:
            parent[key] = _cut_utf8(text, keep)
            if isinstance(parent, dict) and isinstance(key, str):
                parent.setdefault(f"{key}_bytes", nbytes)
                parent[f"{key}_truncated"] = True
            if isinstance(holder["r"], dict):
                holder["r"]["truncated"] = True
    return {**envelope, "payload": {"request_id": payload.get("request_id"), "ok": False,
                                    "error": f"result too large to send ({size} bytes encoded, limit {limit})"}}


def _shorten_list(holder: dict[str, Any]) -> bool:
    """Halve the longest list in the result; False when there is none worth cutting."""
    best: tuple[Any, Any, int] | None = None

    def walk(parent: Any, key: Any) -> None:
        nonlocal best
        value = parent[key]
        if isinstance(value, list):
            if len(value) > 1 and (best is None or len(value) > best[2]):
                best = (parent, key, len(value))
            for i in range(len(value)):
                walk(value, i)
        elif isinstance(value, dict):
            for k in value:
                walk(value, k)

    walk(holder, "r")
    if best is None:
        return False
    parent, key, n = best
    parent[key] = parent[key][: n // 2]
    if isinstance(holder["r"], dict):
        holder["r"]["truncated"] = True
    return True


def audit_file(env: Any = None) -> Path:
    """``~/.hermes/desktop-audit.jsonl``, the file other Hermes clients also append to."""
    from hermes_relay.core import paths

    return paths.hermes_home(env) / "desktop-audit.jsonl"


def audit_records(data: bytes) -> list[dict[str, Any]]:
    """The records in JSONL ``data``; a line cut by a crash or written by something else is skipped."""
    import json

    out = []
    for raw in data.splitlines():
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every readable record, oldest first: the rotated ``.1``, then the live file (an unreadable one is skipped)."""
    out: list[dict[str, Any]] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            out += audit_records(part.read_bytes())
        except OSError:
            continue
    return out


_SECRETS: list[re.Pattern[str]] = []


def redact(text: str) -> str:
    """Hide bearer/basic credentials, ``token=``/``password:``-style values and similar secrets."""
    import re

    if not _SECRETS:
        _SECRETS.append(re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"'&,;]+"))
        _SECRETS.append(re.compile(r"(?i)\b(token|password|passwd|secret|api[_-]?key|authorization)"
                                   r"([\"']?\s*[=:]\s*[\"']?)(?!bearer\b|basic\b)[^\s\"'&,;]+"))
    text = _SECRETS[0].sub(lambda m: m.group(1) + " ***", text)
    return _SECRETS[1].sub(lambda m: m.group(1) + m.group(2) + "***", text)
