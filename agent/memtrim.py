"""The memory a big message used, given back to the system once the agent is quiet again.

glibc's malloc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so
after one multi-megabyte desktop answer the next ones are carved from the heaps, and it keeps up to
twice that threshold free at the top of each heap. A worker thread gets a heap (an arena) of its own,
and the top of a thread's heap is given back only by a later free in that heap, never by
``malloc_trim``: after a few 3 MB reads (read and decoded in a tool thread) an idle agent held ~6 MB it
no longer used (34 -> 41 MB). So:

- ``one_arena()`` (the agent process, before any thread starts) keeps every thread in the main heap
  (``M_ARENA_MAX`` 1; the GIL already serialises the agent's threads): a 3 MB read cost the same CPU;
- ``Trim.due`` runs ``malloc_trim(0)`` once, after a big message and ``QUIET`` seconds without another,
  so back-to-back big reads keep reusing the same pages (a fixed mmap threshold instead cost ~7 ms of
  page faults per 3 MB read) and an idle agent gives them back.

Where the C library has neither (macOS, musl, Windows) nothing is done. A ``MALLOC_ARENA_MAX`` in the
environment is left to glibc. No trio here: the caller passes its clock (the desktop channel notes each
answer it sends and asks on each heartbeat, about once a second).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

log = logging.getLogger(__name__)

BIG: Final = 1 << 20  # bytes: a message at least this big is worth a trim afterwards
QUIET: Final = 1.0  # seconds without another big message before the trim
_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter


def _libc(name: str) -> Any:
    """The C library's function ``name`` (glibc on Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # musl has no malloc_trim nor M_ARENA_MAX
        return None


def one_arena(env: Mapping[str, str] = os.environ) -> bool:
    """Every thread allocates from the main heap from now on (call before threads start); True when set."""
    if "MALLOC_ARENA_MAX" in env:
        return False
    mallopt = _libc("mallopt")
    return mallopt is not None and mallopt(_M_ARENA_MAX, 1) == 1


def _libc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    fn = _libc("malloc_trim")
    if fn is None:
        return None
    import ctypes

    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


class Trim:
    """Remembers when a big message last went through; ``due`` trims once when the agent has been quiet."""

    def __init__(self, trim: Callable[[], object] | None | bool = True) -> None:
        # True: the C library's (looked up at the first trim); None: never trim; else the function (tests).
        self._trim = trim
        self._last: float | None = None  # when the last big message went through, until trimmed
        self.on_armed: Callable[[], None] | None = None
        self.trims = 0

    def note(self, size: int, now: float) -> None:
        """A message of ``size`` bytes was just sent or received. The first big one since the last trim
        calls ``on_armed`` (whoever sleeps until ``due_at`` must look again: it was None)."""
        if size >= BIG:
            armed, self._last = self._last is None, now
            if armed and self.on_armed is not None:
                self.on_armed()

    def due_at(self) -> float | None:
        """When ``due`` will next trim (None: nothing to give back)."""
        return None if self._last is None else self._last + QUIET

    def due(self, now: float) -> bool:
        """Trim now if a big message went through at least ``QUIET`` s ago and none since; True when it did."""
        if self._last is None or now - self._last < QUIET:
            return False
        self._last = None
        if self._trim is True:
            self._trim = _libc_trim()
        if not callable(self._trim):
            return False
        try:
            self._trim()
        except OSError as exc:  # never fatal: the memory stays with the agent, as before
            log.warning("memory_trim_failed error=%s", exc)
            self._trim = None
            return False
        self.trims += 1
        return True
