"""The shell bench's rig: a terminal on ``openpty`` that types and times, and the programs it talks to.

``Keyboard`` is the bench's pty driver: it holds the master of a pty whose slave runs either the real
``hermes-relay shell --raw`` (the CLI as a whole process, its agent, the relay, a shell on the relay host) or,
for the baseline, the same program on the relay host directly (``sh -c 'stty raw -echo; cat'``). It types
one key at a time and timestamps every byte that comes back; nothing sleeps to synchronise, every read
waits on ``select`` with a deadline.

``Typist`` types a key every ``interval`` seconds in a thread and keeps the arrival time of every byte
read back, so the gaps in the echo during a failover are measured while the user keeps typing.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

RAW_ECHO = "stty raw -echo; exec cat"  # a raw-mode echo program: each byte comes back as cat writes it


class Keyboard:
    """A program on a fresh pty; the bench is its terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], err: Path, *, cols: int = 80, rows: int = 24):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.err_path = err
        self.screen = bytearray()
        with open(err, "ab") as errf:
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=errf,
                                         env={**env, "TERM": "xterm-256color"}, start_new_session=True,
                                         close_fds=True)
        os.close(slave)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        """What arrives within ``timeout`` (b"" when nothing did)."""
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not ready:
            return b""
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the program closed its side (EIO)
            return b""
        self.screen += chunk
        return chunk

    def wait_for(self, data: bytes, *, start: int = 0, timeout: float = 15.0) -> int:
        """Wait until ``data`` shows after ``start``; the offset just past it."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.screen.find(data, start)
            if at >= 0:
                return at + len(data)
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not self.read(0):
                tail = bytes(self.screen[-400:])
                raise TimeoutError(f"{data!r} never showed within {timeout:g} s; screen tail {tail!r}; "
                                   f"stderr: {self.stderr()[-600:]!r}")
            self.read(left)

    def echo_times(self, keys: bytes) -> list[float]:
        """Type each key alone and wait for it to come back: the seconds each round trip took."""
        times = []
        for key in keys:
            k = bytes([key])
            start = len(self.screen)
            t0 = time.perf_counter()
            self.type(k)
            while self.screen.find(k, start) < 0:
                if not self.read(5.0):
                    raise TimeoutError(f"no echo of {k!r} within 5 s; stderr: {self.stderr()[-600:]!r}")
            times.append(time.perf_counter() - t0)
        return times

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        try:
            os.close(self.master)
        except OSError:
            pass


TOKEN = 7  # bytes per numbered key: "000123,"


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


def shell_argv(session: str) -> list[str]:
    return [sys.executable, "-m", "hermes_relay.cli", "shell", "--raw", "--session", session]


class Typist:
    """Types ``next_key()`` every ``interval`` s on a Keyboard and timestamps every read holding ``echo``."""

    def __init__(self, kb: Keyboard, next_key: Any, interval: float = 0.01, echo: bytes | None = None):
        self.kb = kb
        self.next_key = next_key
        self.interval = interval
        self.echo = echo  # only reads holding it count as arrivals (not the CLI's status line during a gap)
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, bytes) of each read
        self.typed = 0
        self.typing = threading.Event()
        self.typing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="typist", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                if self.typing.is_set():
                    self.kb.type(self.next_key())
                    self.typed += 1
                due = now + self.interval
            chunk = self.kb.read(max(0.0, due - time.monotonic()))
            if chunk and (self.echo is None or self.echo in chunk):
                with self._lock:
                    self.arrivals.append((time.monotonic(), len(chunk)))

    def last_arrival(self) -> float:
        with self._lock:
            return self.arrivals[-1][0] if self.arrivals else 0.0

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an echo between ``since`` and ``until`` (both ends count as edges)."""
        with self._lock:
            times = [t for t, _ in self.arrivals if since <= t <= until]
        edges = [since, *times]
        return max(b - a for a, b in itertools.pairwise(edges)) if times else until - since

    def first_after(self, since: float) -> float | None:
        with self._lock:
            for t, _ in self.arrivals:
                if t > since:
                    return t
        return None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
