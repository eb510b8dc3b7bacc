"""A user typing into `hermes-relay shell`, and the count of what arrived: for the e2e tests and the bench.

``Typist`` types a key every ``interval`` seconds on a ``Terminal`` (tests/shell_pty.py) in a thread, keeps
what it typed, and timestamps every read that comes back, so the gaps in the echo during a failover are
measured while the user keeps typing. Its keys are numbered by default: ``key(n)`` is ``b"000123,"``
(``TOKEN`` bytes each, no ``!``: the e2e recorder's end mark). ``key_counts`` reads such keys back from a
recorder's file (the distinct keys, and how many were duplicated, reordered or garbled); ``diff_keys`` says
in those terms how a recording differs from what was typed. The pace is the user's, not a
synchronisation: whatever depends on the keys waits on the screen, a file or ``wait_keys``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

TOKEN = 7  # bytes per numbered key: "000123,"


class _Terminal(Protocol):
    def type(self, data: bytes) -> None: ...

    def read(self, timeout: float) -> bytes: ...


def key(n: int) -> bytes:
    """The numbered key ``n`` (from 0): ``b"000123,"``."""
    return b"%06d," % n


def key_counts(got: bytes) -> tuple[set[int], int, int, int]:
    """The numbered keys a recorder holds: (the distinct keys, duplicated, reordered, garbled pieces)."""
    seen: set[int] = set()
    dup = reorder = bad = 0
    last = -1
    for t in (t for t in got.split(b",") if t):
        if len(t) != TOKEN - 1 or not t.isdigit():
            bad += 1
            continue
        x = int(t)
        if x in seen:
            dup += 1
            continue
        seen.add(x)
        if x < last:
            reorder += 1
        last = max(last, x)
    return seen, dup, reorder, bad


def diff_keys(typed: bytes, got: bytes) -> str:
    """'' when equal; else what differs in numbered keys (lost, duplicated, reordered, garbled, extra)."""
    if typed == got:
        return ""
    want = key_counts(typed)[0]
    have, dup, reorder, bad = key_counts(got)
    lost, extra = sorted(want - have), sorted(have - want)
    return (f"typed {len(typed)} bytes ({len(want)} keys), got {len(got)} ({len(have)} keys): lost {len(lost)} "
            f"{lost[:8]}, duplicated {dup}, reordered {reorder}, garbled {bad}, extra {len(extra)} {extra[:8]}")


class Typist:
    """Types ``keys()`` (numbered keys by default) every ``interval`` s on ``term`` until stopped.

    Every read holding ``echo`` (any read when None) is an arrival: (monotonic time, bytes). ``typing``
    cleared pauses the keys; the reads go on."""

    def __init__(self, term: _Terminal, keys: Callable[[], bytes] | None = None, *, interval: float = 0.01,
                 echo: bytes | None = None):
        self.term = term
        self.next_key = keys or (lambda: key(self.count))
        self.interval = interval
        self.echo = echo  # only reads holding it count (not the CLI's status line during a gap)
        self.count = 0  # keys typed
        self.typed = bytearray()  # what they were
        self.arrivals: list[tuple[float, int]] = []
        self.typing = threading.Event()
        self.typing.set()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="typist", daemon=True)

    def start(self) -> Typist:
        self._thread.start()
        return self

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                if self.typing.is_set():
                    k = self.next_key()
                    self.term.type(k)
                    with self._cond:
                        self.count += 1
                        self.typed += k
                        self._cond.notify_all()
                due = now + self.interval
            chunk = self.term.read(max(0.0, due - time.monotonic()))
            if chunk:
                if self.echo is None or self.echo in chunk:
                    with self._cond:
                        self.arrivals.append((time.monotonic(), len(chunk)))
            elif due > time.monotonic():  # the program closed its side: keep the pace without spinning
                self._stop.wait(due - time.monotonic())

    def wait_keys(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` more keys than now were typed."""
        with self._cond:
            target = self.count + n
            assert self._cond.wait_for(lambda: self.count >= target, timeout), f"typist stuck at {self.count}"

    def last_arrival(self) -> float:
        with self._cond:
            return self.arrivals[-1][0] if self.arrivals else 0.0

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an echo between ``since`` and ``until`` (both ends count as edges)."""
        with self._cond:
            times = [t for t, _ in self.arrivals if since <= t <= until]
        edges = [since, *times]
        return max(b - a for a, b in itertools.pairwise(edges)) if times else until - since

    def first_after(self, since: float) -> float | None:
        with self._cond:
            return next((t for t, _ in self.arrivals if t > since), None)

    def stop(self) -> bytes:
        """Stop typing and reading; everything typed."""
        self._stop.set()
        self._thread.join(5)
        with self._cond:
            return bytes(self.typed)
