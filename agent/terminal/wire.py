"""The ``terminal`` channel's envelopes (docs/shell-protocol.md) and the shell's options.

``ShellOptions.parse`` decodes the ``shell.open`` params (a clear UsageError for each bad one); the
builders make the agent → relay envelopes; ``output_bytes`` reads a relay's output payload (text ``data``
or ``data_b64``). Against the reference relay only its own fields are sent (``resume``/``seq`` are
ignored there anyway, but input that is not UTF-8 goes as text with U+FFFD).
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from ...core.errors import UsageError

CHANNEL = "terminal"
SESSION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_SESSION = "main"
MAX_SIZE = 10_000  # columns or rows
SESSION_FIELDS = ("name", "tmux_name", "attached", "windows", "created_at", "pid", "shell", "live", "owned_by_client")


def envelope(typ: str, payload: dict[str, Any], msg_id: str | None = None) -> dict[str, Any]:
    return {"channel": CHANNEL, "type": typ, "id": msg_id or str(uuid.uuid4()), "payload": payload}


def _int(params: dict[str, Any], key: str, default: int, low: int = 0, high: int | None = None) -> int:
    value = params.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        raise UsageError(f"shell.open: {key} must be an integer {low}..{high if high is not None else ''} (got {value!r:.40})")
    return value


def _str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"shell.open: {key} must be a string or nil (got {type(value).__name__})")
    return value


@dataclass(frozen=True)
class ShellOptions:
    """The ``shell.open`` params, checked."""

    remote: str | None
    session: str
    cols: int
    rows: int
    stream: str
    out_seq: int
    in_base: int
    in_sent: int
    unacked: bytes
    raw: bool = False
    new: bool = False
    conversation: str | None = None
    exec: str | None = None
    reopen: bool = False

    @classmethod
    def parse(cls, params: dict[str, Any]) -> ShellOptions:
        session = params.get("session") or DEFAULT_SESSION
        if not isinstance(session, str) or not SESSION_NAME.fullmatch(session):
            raise UsageError(f"session names are 1-64 letters, digits, '_' or '-' (got {session!r:.80})",
                             hint="names with '.' or ':' do not round-trip through the relay's session list")
        stream = params.get("stream")
        if not isinstance(stream, str) or not 8 <= len(stream) <= 64:
            raise UsageError("shell.open: stream must be the CLI's stream id (a string of 8-64 characters)")
        unacked = params.get("unacked") or b""
        if not isinstance(unacked, bytes):
            raise UsageError("shell.open: unacked must be binary")
        in_base = _int(params, "in_base", 0)
        in_sent = _int(params, "in_sent", in_base, low=in_base)
        return cls(remote=_str(params, "remote"), session=session, cols=_int(params, "cols", 80, 1, MAX_SIZE),
                   rows=_int(params, "rows", 24, 1, MAX_SIZE), stream=stream, out_seq=_int(params, "out_seq", 0),
                   in_base=in_base, in_sent=min(in_sent, in_base + len(unacked)), unacked=unacked,
                   raw=params.get("raw") is True, new=params.get("new") is True,
                   conversation=_str(params, "conversation"), exec=_str(params, "exec"),
                   reopen=params.get("reopen") is True)

    def launch(self) -> bytes | None:
        """What is typed into a fresh shell to start the program (as the reference CLI), or None."""
        if self.exec:
            return _encode(self.exec + "\n")
        if self.raw:
            return None
        if self.conversation:
            return _encode(f"clear; exec hermes --resume {shlex.quote(self.conversation)}\n")
        return b"clear; exec hermes\n"


def _encode(text: str) -> bytes:
    """Text from the CLI's command line: undecodable bytes (U+DC80..U+DCFF) back as they were, any other
    lone surrogate as U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")


def attach(name: str, cols: int, rows: int, stream: str, out_seq: int, in_seq: int, in_shift: int) -> dict[str, Any]:
    """``out_seq``/``in_seq``: where the stream's offsets are in the relay's numbers (a resume's output
    position; where a new attachment's offsets begin, so a relay restart renumbers nothing); ``in_shift``:
    the relay's input offsets minus the CLI's (the bytes the agent typed itself), kept by the relay."""
    return envelope("terminal.attach", {"session_name": name, "cols": cols, "rows": rows, "resume": {
        "v": 1, "stream": stream, "out_seq": out_seq, "in_seq": in_seq, "in_shift": in_shift}})


def input_message(name: str, data: bytes, seq: int | None, *, own: bool = False) -> dict[str, Any]:
    """``seq`` None: the reference relay (text only, invalid bytes as U+FFFD). ``own``: bytes the agent types
    itself (the program launch): our relay adds them to the stream's ``in_shift``."""
    if seq is None:
        return envelope("terminal.input", {"session_name": name, "data": data.decode("utf-8", "replace")})
    payload: dict[str, Any] = {"session_name": name, "seq": seq, **({"own": True} if own else {})}
    try:
        payload["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        payload["data_b64"] = base64.b64encode(data).decode("ascii")
    return envelope("terminal.input", payload)


def resize(name: str, cols: int, rows: int) -> dict[str, Any]:
    return envelope("terminal.resize", {"session_name": name, "cols": cols, "rows": rows})


def named(typ: str, name: str) -> dict[str, Any]:
    """``terminal.detach`` / ``terminal.kill`` / ``terminal.redraw``."""
    return envelope(typ, {"session_name": name})


def ping(msg_id: str) -> dict[str, Any]:
    return {"channel": "system", "type": "ping", "id": msg_id, "payload": {}}


def output_bytes(payload: dict[str, Any]) -> bytes:
    """A ``terminal.output`` payload's bytes (``data_b64`` or text ``data``; anything else is empty)."""
    b64 = payload.get("data_b64")
    if isinstance(b64, str):
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return b""
    data = payload.get("data")
    return data.encode("utf-8", "replace") if isinstance(data, str) else b""


def number(payload: dict[str, Any], key: str) -> int | None:
    value = payload.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def integer(payload: dict[str, Any], key: str) -> int | None:
    """A signed integer field (``in_shift``), None when absent or not an integer."""
    value = payload.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
