"""The macOS ``sandbox-exec`` (Seatbelt) profile of a workspace command, as text (pure).

Deny by default; read below the read-only system paths and the roots, write below the roots, never
below a protected path (no access at all), a write-protected path or a ``.git`` folder (read only);
the harmless devices; IP networking only when allowed, and never a Unix socket (``network-outbound``
to a socket path stays denied). Signals reach only processes of the same sandbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

SANDBOX_EXEC = "/usr/bin/sandbox-exec"
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/dtracehelper")


def quote(text: str) -> str:
    """An SBPL string literal: backslashes and double quotes escaped, control characters refused."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"a path with control characters cannot be put in a sandbox profile: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex(pattern: str) -> str:
    """An SBPL regex literal (``#"…"``: backslashes reach the regex engine as written)."""
    if '"' in pattern or any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        raise ValueError(f"a path with quotes or control characters cannot be put in a sandbox profile: {pattern!r}")
    return '#"' + pattern + '"'


def _paths(items: Iterable[object]) -> list[str]:
    return [os.path.abspath(os.fspath(p)) for p in items]  # type: ignore[call-overload]


def _unless(excluded: list[str]) -> str:
    return "".join(f" (require-not (subpath {quote(p)}))" for p in excluded)


def profile(spec: dict[str, Any]) -> str:
    """The profile for ``spec`` (the JSON form of a Confinement: roots, read_only, protected, …)."""
    roots = _paths(spec["roots"])
    hidden = _paths(spec["protected"])
    frozen = _paths(spec["write_protected"])
    lines = [
        "(version 1)",
        "(deny default)",
        "(allow process-exec process-fork)",
        "(allow signal (target same-sandbox))",
        "(allow sysctl-read)",
        f"(allow file-read-metadata (require-all (subpath \"/\"){_unless(hidden)}))",
        "(allow file-read* file-write-data file-ioctl (require-any "
        + " ".join(f"(literal {quote(d)})" for d in _DEVICES) + "))",
    ]
    for path in _paths(spec["read_only"]) + roots:
        lines.append(f"(allow file-read* (require-all (subpath {quote(path)}){_unless(hidden)}))")
    for root in roots:
        git = "^" + re.escape(root.rstrip("/")) + r"/(.*/)?\.git(/|$)"
        lines.append(
            f"(allow file-write* (require-all (subpath {quote(root)}){_unless(hidden + frozen)}"
            f" (require-not (regex {regex(git)}))))"
        )
    if spec.get("network"):
        lines += [
            '(allow network-outbound (remote ip "*:*"))',
            '(allow network-inbound (local ip "*:*"))',
            '(allow network-bind (local ip "*:*"))',
            "(allow system-socket)",
        ]
    return "\n".join(lines) + "\n"


def argv(spec: dict[str, Any], command: list[str]) -> list[str]:
    return [SANDBOX_EXEC, "-p", profile(spec), *command]
