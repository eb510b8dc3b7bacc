"""Waiting helpers for the tool tests: poll a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

from pathlib import Path

import psutil
from helpers import until

__all__ = ["gone", "line_of", "until", "wait_gone"]  # until: tests/helpers.py


async def line_of(path: Path, timeout: float = 10.0) -> str:
    """The stripped text of ``path`` once a child process has written a full line to it."""

    def ready() -> str | None:
        if path.exists():
            text = path.read_text()
            if text.endswith("\n"):
                return text.strip()
        return None

    return await until(ready, timeout)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    await until(lambda: gone(pid), timeout)
    return True
