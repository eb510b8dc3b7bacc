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
from typing import Any, Final

CHANNEL: Final = "desktop"
MAX_FRAME: Final = 4 << 20  # the reference relay closes a socket on a bigger inbound message (1009)
RESULT_BUDGET: Final = 3 << 20  # what a tool result may take, leaving room for JSON escaping and envelope
DEFAULT_DEADLINE: Final = 30.0  # the relay waits 30 s for desktop.response
HEARTBEAT_INTERVAL: Final = 30.0  # desktop.status cadence
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
    max_output: int = 1 << 20  # per stream / per read, bytes; results stay under RESULT_BUDGET
    env: dict[str, str] = field(default_factory=dict)  # the agent's environment for child processes


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
