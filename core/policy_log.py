"""Audit records of desktop policy changes (``kind: policy.changed``): who changed what a host may do.

The agent compares each re-read of the policy and roots files with the previous one and writes one
record per host whose view changed, with ``before`` and ``after``. ``by`` says who: the agent's own
writers (``hermes-relay access``, ``approvals --always``, ``pair``, ``forget``) announce a change just before
they write it; anything else is "changed outside hermes-relay access" (another client, an editor, a
restored backup). When the agent is not running, ``hermes-relay access`` appends its own record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .policy import Policies

KIND: Final = "policy.changed"
BY_ACCESS: Final = "hermes-relay access"
BY_ALWAYS: Final = "hermes-relay approvals (always)"
BY_PAIR: Final = "hermes-relay pair"
BY_FORGET: Final = "hermes-relay forget"
BY_OUTSIDE: Final = "changed outside hermes-relay access"
ANNOUNCE_TTL: Final = 10.0  # seconds an announced change waits to be seen (the agent polls every second)

Roots = Mapping[str, tuple[Path, ...]]


def view(policies: Policies, roots: Roots, key: str) -> dict[str, Any] | None:
    """One host's stored policy and roots as an audit record shows them (None: no record at all)."""
    host, listed = policies.hosts.get(key), roots.get(key)
    if host is None and listed is None:
        return None
    out: dict[str, Any] = {}
    if host is not None:
        out.update(access_mode=host.access_mode, capabilities=dict(host.capabilities))
        if host.confined:
            out["confined"] = True
    if listed is not None:
        out["roots"] = [str(p) for p in listed]
    return out


def changes(before: tuple[Policies, Roots], after: tuple[Policies, Roots]) -> list[tuple[str, Any, Any]]:
    """``(host, before, after)`` for every host whose view differs, in a stable order."""
    keys = sorted({*before[0].hosts, *before[1], *after[0].hosts, *after[1]})
    out = []
    for key in keys:
        old, new = view(before[0], before[1], key), view(after[0], after[1], key)
        if old != new:
            out.append((key, old, new))
    return out


def record(ts: float, host: str, before: Any, after: Any, by: str) -> dict[str, Any]:
    return {"ts": int(ts * 1000), "kind": KIND, "host_url": host, "before": before, "after": after, "by": by}


def append(path: Path, entry: dict[str, Any]) -> None:
    """Append one record as a JSON line (0600); raises OSError when it cannot be written."""
    line = (json.dumps(entry, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
