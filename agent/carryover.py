"""A re-pairing that reaches a paired relay under another URL: what the old pairing leaves to the new one.

The relay is recognised by its identity (agent/pairing.py ``_identity``): its certificate pin over
wss:// (authenticated) or the ``relay_id`` its ``/health`` shows (over ws:// only a claim: anyone
answering on that address can repeat it). The old record is replaced in place by the store write;
this module moves what lives beside it, keyed by the pairing's owner URL:

- carried (a matching pin, or the user confirmed): the desktop policy, its roots and the owner of the
  jobs the old host started move to the new URL;
- not carried: the old URL's policy and roots are removed, so the new pairing starts at
  ``ask_every_time`` (agent/desktop/service.py ``paired``) and nothing of the old one is left behind.

Each step is safe to repeat (a kill -9 in between is redone from the pending file at start-up).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..core import fileio, policy, roots
from .desktop.tools import _jobrecord

log = logging.getLogger(__name__)


def _move(path: Path, old: str, new: str, *, ascii_only: bool) -> bool:
    """Rename host entry ``old`` to ``new`` in a policy or roots file (keys by canonical URL)."""
    old_key, new_key = policy.canonical_url(old), policy.canonical_url(new)
    if not old_key or not new_key or old_key == new_key:
        return False
    with fileio.FileLock(path):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        hosts = doc.get("hosts") if isinstance(doc, dict) else None
        if not isinstance(hosts, dict):
            return False
        moved: dict[str, Any] = {}
        for k in [k for k in hosts if policy.canonical_url(k) == old_key]:
            value = hosts.pop(k)
            if isinstance(value, dict):
                moved.update(value)
        if not moved:
            return False
        for k in [k for k in hosts if policy.canonical_url(k) == new_key]:
            del hosts[k]  # a stale entry of the new URL (an earlier pairing under it) gives way
        hosts[new_key] = moved
        text = json.dumps(doc, indent=2, ensure_ascii=ascii_only) + "\n"
        fileio.atomic_write(path, text.encode("ascii" if ascii_only else "utf-8"))
        return True


def move_jobs(home: Path, old: str, new: str) -> int:
    """Jobs the old pairing's host started now belong to the new pairing. Returns how many moved."""
    ctx: Any = SimpleNamespace(home=home)
    moved = 0
    for job_id in _jobrecord.record_ids(ctx):
        record = _jobrecord.load(ctx, job_id)
        if record is None or record.get("owner") != old:
            continue
        record = {k: v for k, v in record.items() if k != "version"}
        record["owner"] = new
        _jobrecord.save(ctx, record)
        moved += 1
    return moved


def carry(policy_path: Path, roots_path: Path, home: Path, old: str, new: str) -> None:
    """Move the old pairing's desktop policy, roots and jobs to ``new``."""
    _move(policy_path, old, new, ascii_only=False)
    _move(roots_path, old, new, ascii_only=True)
    jobs = move_jobs(home, old, new)
    log.info("pairing_carried_over old=%s new=%s jobs=%d", old, new, jobs)


def drop(policy_path: Path, roots_path: Path, old: str) -> None:
    """Not carried over: the old URL's policy and roots go with its record."""
    policy.forget(policy_path, [old])
    roots.forget(roots_path, [old])
    log.info("pairing_not_carried_over old=%s", old)


def describe(policy_path: Path, roots_path: Path, url: str) -> str:
    """What would be carried over, for the question: "trusted, roots ~/src"."""
    label = policy.load(policy_path).for_url(url).label
    try:
        given = roots.load(roots_path).get(policy.canonical_url(url) or url) or ()
    except Exception:  # noqa: BLE001 - a description only
        given = ()
    home = str(Path.home())
    shown = ", ".join("~" + str(p)[len(home):] if str(p).startswith(home) else str(p) for p in given)
    return f"{label}, roots {shown}" if shown else label
