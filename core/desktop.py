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

from . import wire
from .confine import UNCONFINED, Confinement

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
    max_output: int = 1 << 20  # per stream (a command has two), bytes; a response frame stays under wire.MAX_WS_MESSAGE
    # One desktop_read_file: what fits in a response frame with its truncation line, FRAME_MARGIN to spare
    # (bound_response still cuts what JSON escaping grows).
    max_read: int = wire.MAX_WS_MESSAGE - (8 << 10)
    env: dict[str, str] = field(default_factory=dict)  # the agent's environment for child processes
    # What this call may touch (core/confine.py); tools read it with ``confined()``.
    confinement: Confinement = UNCONFINED
    # Set by the desktop channel: the host's confinement, its roots resolved when called (user paths, which
    # may be on a hung mount: a file tool first asks in its worker thread, never on the event loop; ``here``
    # below is the one exception). The ``confinement`` beside it then reaches nothing (PENDING), so a read
    # of the field fails closed.
    resolve: Callable[[], Confinement] | None = field(default=None, compare=False, repr=False)
    # The host's confinement as a worker thread resolved it moments ago, when every path it names is on a
    # local file system (agent/desktop/tools/_mounts.py): a small read may then be answered on the event loop
    # (never anything that could cross into another file system). None: every file tool uses its thread.
    here: Confinement | None = field(default=None, compare=False, repr=False)
    _resolved: list[Confinement] = field(default_factory=list, init=False, compare=False, repr=False)

    def confined(self) -> Confinement:
        """What this call may touch (worked out at the first ask, then the same for the whole call)."""
        if self.resolve is None:
            return self.confinement
        if not self._resolved:
            self._resolved.append(self.resolve())
        return self._resolved[0]


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
    return {"channel": CHANNEL, "type": type_, "id": _ids.next(), "payload": payload}


class _EnvelopeIds:
    """Envelope ids in UUID v4 form: random per process, then counted (an id only traces a message; a
    uuid4 for each one cost a random read from the kernel per answer)."""

    def __init__(self) -> None:
        import itertools
        import os
        import uuid

        self._head = str(uuid.uuid4())[:24]  # 8-4-4(version 4)-4(variant)-, random
        self._count = itertools.count(int.from_bytes(os.urandom(6), "big"))

    def next(self) -> str:
        return f"{self._head}{next(self._count) % (1 << 48):012x}"


_ids = _EnvelopeIds()


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
    budget: float | None = None  # seconds the caller still waits (``budget_ms`` beside args), when the relay says


MAX_BUDGET: Final = 24 * 3600.0  # a budget_ms beyond a day is not a deadline anyone waits for: ignored


def budget_seconds(value: Any) -> float | None:
    """``budget_ms`` as seconds, or None when absent or not a positive finite number (then the default holds)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value) / 1000
    return seconds if math.isfinite(seconds) and 0 < seconds <= MAX_BUDGET else None


def call_limit(default: float, *, cap: float | None = None, budget: float | None = None) -> float:
    """Seconds a call may take: the tool's default, shortened (never lengthened) by a cap and the caller's
    budget. A budget keeps back a small answer margin, so the answer reaches a relay that gives up on time."""
    limit = default if cap is None else min(default, cap)
    if budget is not None:
        limit = min(limit, budget - min(ANSWER_MARGIN, budget * 0.05))
    return max(0.0, limit)


def approval_margin(limit: float) -> float:
    """How long before the call's deadline an unanswered approval expires: 10% of it, 0.5-3 s, so the
    refusal still reaches the relay in time and a 3 s call keeps a real approval window (2.5 s)."""
    return min(MAX_APPROVAL_MARGIN, max(MIN_APPROVAL_MARGIN, 0.1 * limit))


ANSWER_MARGIN: Final = 0.25  # seconds kept back from a caller's budget for the answer's way back
MIN_APPROVAL_MARGIN: Final = 0.5
MAX_APPROVAL_MARGIN: Final = 3.0


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
    return Command(rid, tool, args, budget_seconds(payload.get("budget_ms")))


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

        try:
            text = json.dumps(args, ensure_ascii=False, default=str, separators=(",", ":"))
        except (ValueError, RecursionError):  # nested deeper than JSON can encode
            text = "(arguments nested too deeply to show)"
    return clip(text if isinstance(text, str) else str(text))


# -- bounding ------------------------------------------------------------------------------------
def encoded_size(obj: Any) -> int:
    """Bytes of ``obj`` as the link sends it (core/envelope.py: compact JSON, UTF-8, and ASCII escapes when a
    lone surrogate is in it; the same encoder, so a value the link could not send raises TypeError or
    ValueError here, where the caller can still answer with an error)."""
    from .envelope import encoded

    return encoded(obj)[1]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate counts, and is kept, as 3 bytes


def _cut_utf8(text: str, max_bytes: int) -> str:
    data = _utf8(text)[: max(0, max_bytes)]
    for trim in range(4):  # a cut through a multi-byte sequence: drop its start
        try:
            return data[: len(data) - trim].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "ignore")


def _largest_string(obj: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], int] | None:
    best: tuple[tuple[Any, ...], int] | None = None
    if isinstance(obj, str):
        return path, len(_utf8(obj))
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = _largest_string(value, path + (key,))
        if found and (best is None or found[1] > best[1]):
            best = found
    return best


def bound_encoded(envelope: dict[str, Any], limit: int = wire.MAX_WS_MESSAGE - FRAME_MARGIN) -> dict[str, Any]:
    """``bound_response``; an envelope that fits as it is comes back with its UTF-8 text (``envelope.Encoded``),
    so the link does not encode it a second time."""
    from .envelope import Encoded, utf8

    data = utf8(envelope)
    if len(data) <= limit:
        return Encoded.of(envelope, data)
    return bound_response(envelope, limit)


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
    from . import paths

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


def audit_segments(path: Path) -> list[Path]:
    """The kept segments of the audit log beside ``path``, oldest first (``desktop-audit.<UTC stamp>.jsonl``:
    named so the reference daemon's own rotation, to a single ``.1``, never overwrites them)."""
    stem, suffix = path.stem, path.suffix
    try:
        names = [p for p in path.parent.glob(f"{stem}.*{suffix}") if p.name != path.name]
    except OSError:
        return []
    return sorted(p for p in names if p.name[len(stem) + 1:len(stem) + 2].isdigit())


def read_audit(path: Path, *, since: float | None = None) -> list[dict[str, Any]]:
    """Every readable record, oldest first: the kept segments, another client's rotated ``.1``, the live file.

    Args:
        since: epoch seconds; segments last written before it are not read (their records are older).

    Raises:
        StateError: the live file exists but cannot be read (a directory, a device, no permission): an
            audit that cannot be read is never shown as an empty one.
    """
    from .errors import StateError

    out: list[dict[str, Any]] = []
    for part in (*audit_segments(path), path.with_name(path.name + ".1"), path):
        try:
            data = _read_regular(part, since=None if part == path else since)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if part == path:
                raise StateError(f"cannot read the desktop audit log {path}: {exc.strerror or exc}",
                                 hint="the agent refuses desktop calls until it can write it again; "
                                      "move whatever is at that path aside") from None
            continue
        out += audit_records(data)
    if any(isinstance(r.get("ts"), (int, float)) for r in out):
        out.sort(key=lambda r: r["ts"] if isinstance(r.get("ts"), (int, float)) else 0)
    return out


def _read_regular(path: Path, *, since: float | None) -> bytes:
    """A regular file's bytes; a FIFO or a device (``/dev/full`` reads zeros forever) is an error, not a hang."""
    import errno
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                          "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        if since is not None and st.st_mtime < since:
            return b""
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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


# -- what the user approves ----------------------------------------------------------------------
_INVISIBLE: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character, ANSI escape, bidi control and lone surrogate shown as a
    visible escape (``\\x1b``, ``\\u202e``, ``\\udce9``), so nothing shown to the user can hide or
    reorder what runs; newlines are kept (a command's lines shown as they are) unless told otherwise."""
    out = []
    for ch in str(text):
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in _INVISIBLE or not ch.isprintable():
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def dangerous_env(name: str) -> str | None:
    """Why an environment override changes what a command does beyond its text (core/envguard), or None."""
    from . import envguard

    return envguard.dangerous_env(str(name))


PATH_ARGS: Final = ("path", "source", "dest", "log_dir")  # the file tools' path arguments (tools/_args.path)
MAX_SHOWN: Final = 8 << 10  # bytes of call details an approval shows whole; a larger call is not asked about


def risky_env(args: dict[str, Any]) -> list[str]:
    """The names in a call's ``env`` overrides that core/envguard refuses, sorted (``call_details``'s
    ``dangerous_env``, without resolving the call's paths)."""
    env = args.get("env")
    if not isinstance(env, dict):
        return []
    return sorted(k for k in map(str, env) if dangerous_env(k) is not None)


def call_details(args: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """What an approval shows of a call, exactly and unredacted: ``command`` (as sent), ``cwd`` and every
    path argument resolved the way the tools resolve them, ``env`` overrides (``dangerous_env`` names the
    risky ones), ``stdin`` and the host's ``reason``. Texts are kept raw here; displays pass them through
    ``visible``."""
    import os

    def resolved(raw: Any) -> str | None:
        if not isinstance(raw, str) or not raw:
            return None
        try:
            return os.path.abspath(cwd / Path(raw).expanduser())
        except (ValueError, RuntimeError):  # a NUL, an unknown ~user: shown as sent
            return raw

    details: dict[str, Any] = {}
    command = args.get("command")
    if isinstance(command, str):
        details["command"] = command
    elif isinstance(command, list) and all(isinstance(a, str) for a in command):
        details["command"] = " ".join(command)
    if "command" in details or "cwd" in args:
        details["cwd"] = resolved(args.get("cwd")) or str(cwd)
    env = args.get("env")
    if isinstance(env, dict) and env:
        details["env"] = {str(k): v if isinstance(v, str) else f"(not a string: {type(v).__name__})"
                          for k, v in env.items()}
        risky = risky_env(args)
        if risky:
            details["dangerous_env"] = risky
    stdin = args.get("stdin")
    if isinstance(stdin, str) and stdin:
        details["stdin"] = stdin
    paths = {key: p for key in PATH_ARGS if (p := resolved(args.get(key))) is not None}
    if paths:
        details["paths"] = paths
    reason = args.get("reason")
    if isinstance(reason, str) and reason.strip():
        details["reason"] = reason
    return details


def details_size(details: dict[str, Any]) -> int:
    """An upper bound of the bytes ``details`` takes once made visible and sent (ASCII-escaped JSON is never
    shorter than the escaped text), so 32 waiting approvals always fit one IPC frame."""
    import json

    return len(json.dumps(details, ensure_ascii=True))
