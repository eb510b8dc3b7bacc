"""The desktop audit log: one JSON line per call event and per link event, written before a tool runs.

``~/.hermes/desktop-audit.jsonl`` (0600), in the shape other Hermes clients write (``kind``
``tool.completed`` / ``connection.state``) plus ``tool.started`` (written before a tool runs: when it
cannot be written the call is refused, ``AuditError``) and ``tool.repeated`` (a summary of coalesced
repeats). Evidence must survive a flood:

- repeats are coalesced per (host, tool, outcome): at most ``BURST`` records of one key are written
  in full per ``WINDOW``; the rest are counted and summarised in one ``tool.repeated`` line;
- the live file is moved aside at ``SEGMENT_BYTES`` into ``desktop-audit.<UTC stamp>.jsonl``, a name
  the reference daemon's own rotation (one ``.1``) never touches; segments are kept at least
  ``RETAIN`` (7 days); older ones are deleted, oldest first, only while the total is over half of
  ``MAX_TOTAL``;
- at ``MAX_TOTAL`` new low-value records (refusals, repeats, link events) are dropped, never old
  ones; calls that run still get their records up to an eighth more, and past that they are refused.

Lines are JSON with ASCII escapes (a lone surrogate or any code point is written, never raises) and
appended with one ``O_APPEND`` write each (~2 µs; on the event loop).
"""

from __future__ import annotations

import json
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ...core import desktop

log = logging.getLogger(__name__)

SEGMENT_BYTES: Final = 1_000_000  # the live file's size before it is kept as a segment (the reference rotates at 1 MB)
MAX_TOTAL: Final = 64_000_000  # all segments: past this only records of calls that ran are written
RETAIN: Final = 7 * 24 * 3600.0  # segments younger than this are never deleted
WINDOW: Final = 60.0  # seconds over which repeats of one (host, tool, outcome) are coalesced
BURST: Final = 5  # records of one key written in full per window
HIGH_VALUE: Final = ("tool.started", "policy.")  # kinds written past MAX_TOTAL (up to the hard cap)
MAX_KEYS: Final = 4096  # coalescing keys remembered (hosts x tools x outcomes); oldest forgotten first
_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)  # one, not one a line


class AuditError(Exception):
    """A record that must be written before a call runs could not be: the call is refused."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class _Run:
    window_start: float
    written: int = 0
    suppressed: int = 0
    first_ts: int = 0
    last_ts: int = 0
    host: str = ""
    tool: str = ""
    outcome: str = ""


class AuditLog:
    def __init__(self, path: Path, *, segment_bytes: int = SEGMENT_BYTES, max_total: int = MAX_TOTAL,
                 hard_total: int | None = None, wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = trio.current_time):
        self.path = path
        self.segment_bytes = segment_bytes
        self.max_total = max_total
        self.hard_total = hard_total if hard_total is not None else max_total + max_total // 8
        self._wall = wall_clock
        self._clock = clock  # coalescing windows (trio time: tests drive it)
        self._runs: dict[tuple[str, str, str], _Run] = {}
        self._kept: int | None = None  # bytes in kept segments (summed once, then tracked)
        self.dropped = 0  # low-value records not written because the log is at its cap
        self._live = _LiveFile()

    # -- writing ---------------------------------------------------------------------------------
    def write(self, record: dict[str, Any], *, essential: bool = False) -> None:
        """Append one record. ``essential`` (a call about to run): raise AuditError when it cannot be
        written; otherwise a failure is logged and the record dropped."""
        line = (_ENCODER.encode(record) + "\n").encode("ascii")
        high_value = essential or str(record.get("kind") or "").startswith(HIGH_VALUE)
        try:
            self._append(line, high_value=high_value)
        except OSError as exc:
            log.warning("audit_write_failed path=%s error=%s", self.path, exc)
            if essential:
                raise AuditError(f"cannot record this call: refusing to run it ({exc.strerror or exc})") from None

    def write_outcome(self, record: dict[str, Any], outcome: str) -> None:
        """Append an outcome record, coalesced per (host, tool, outcome): a flood of one kind of call
        leaves a count, not lines that push earlier evidence out."""
        key = (str(record.get("host_url")), str(record.get("tool")), outcome)
        now = self._clock()
        run = self._runs.get(key)
        if run is not None and now - run.window_start >= WINDOW:
            self._flush_run(key, run)
            run = None
        if run is None:
            if len(self._runs) >= MAX_KEYS:
                oldest = min(self._runs, key=lambda k: self._runs[k].window_start)
                self._flush_run(oldest, self._runs[oldest])
            run = self._runs[key] = _Run(now, host=key[0], tool=key[1], outcome=outcome)
        if run.written < BURST:
            run.written += 1
            self.write(record)
            return
        ts = int(record.get("ts") or self._wall() * 1000)
        run.first_ts = run.first_ts or ts
        run.last_ts = ts
        run.suppressed += 1

    def flush_at(self) -> float | None:
        """When the first coalescing window with suppressed repeats ends, on this log's clock (None: no
        summary is owed); ``flush`` then writes it."""
        ends = [run.window_start + WINDOW for run in self._runs.values() if run.suppressed]
        return min(ends) if ends else None

    def flush(self, *, everything: bool = False) -> None:
        """Write the summaries of coalescing windows that have ended (all of them with ``everything``)."""
        now = self._clock()
        for key, run in list(self._runs.items()):
            if everything or now - run.window_start >= WINDOW:
                self._flush_run(key, run)

    def _flush_run(self, key: tuple[str, str, str], run: _Run) -> None:
        self._runs.pop(key, None)
        if run.suppressed:
            self.write({"ts": run.last_ts, "kind": "tool.repeated", "tool": run.tool, "host_url": run.host,
                        "outcome": run.outcome, "count": run.suppressed, "first_ts": run.first_ts,
                        "last_ts": run.last_ts})

    def _append(self, line: bytes, *, high_value: bool) -> None:
        st: os.stat_result | None
        try:
            st = os.stat(self.path)
            size = st.st_size if _regular(st.st_mode) else 0
        except FileNotFoundError:  # (a file that exists has its folder: made only when missing)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            st, size = None, 0
        total = self._kept_bytes() + size + len(line)
        if total > self.max_total:  # segments may have been removed by hand since: count them again
            self._kept = None
            total = self._kept_bytes() + size + len(line)
        if total > self.hard_total or (total > self.max_total and not high_value):
            self.dropped += 1
            if high_value:
                raise OSError(28, f"the desktop audit log is at its cap ({self.max_total} bytes kept)")
            log.debug("audit_record_dropped at_cap total=%d", total)
            return
        if size and size + len(line) > self.segment_bytes:
            self._keep_segment(size)
            st = None
        fd = self._live.fd(self.path, st)
        try:
            written = os.write(fd, line)
        finally:
            self._live.done(fd)
        if written != len(line):
            raise OSError(28, f"short write to the audit log ({written} of {len(line)} bytes)")

    # -- segments --------------------------------------------------------------------------------
    def _kept_bytes(self) -> int:
        if self._kept is None:
            self._kept = sum(_size(p) for p in desktop.audit_segments(self.path))
        return self._kept

    def _keep_segment(self, size: int) -> None:
        stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(self._wall()))
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
        self._live.close()
        os.replace(self.path, target)
        self._kept = self._kept_bytes() + size
        self._prune()

    def _prune(self) -> None:
        """Delete segments older than RETAIN, oldest first, while the total is over half the cap."""
        cutoff = self._wall() - RETAIN
        for segment in desktop.audit_segments(self.path):
            if self._kept is None or self._kept <= self.max_total // 2:
                return
            try:
                st = segment.stat()
                if st.st_mtime >= cutoff:
                    return
                segment.unlink()
            except OSError:
                continue
            self._kept -= st.st_size

    # -- reading ---------------------------------------------------------------------------------
    def read(self, *, since: float | None = None) -> list[dict[str, Any]]:
        """Every readable record, oldest first (segments, another client's ``.1``, the live file)."""
        return desktop.read_audit(self.path, since=since)


class _LiveFile:
    """The live file's descriptor, kept open between appends on POSIX: an append is then one ``write``, and
    it closes nothing, so the agent's file watches on the same folder (policy, roots, store: inotify
    reports a close after writing) are not woken by every call. It is opened again whenever the path no
    longer names the file it holds (moved aside as a segment, deleted, replaced: the caller's ``stat``
    of the path, taken just before, says so). Elsewhere (Windows: an open file cannot be renamed by
    another client) it is opened and closed for each append."""

    KEEP = os.name == "posix"

    def __init__(self) -> None:
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def fd(self, path: Path, st: os.stat_result | None) -> int:
        if self._fd is not None and (st is None or (st.st_dev, st.st_ino) != self._id):
            self.close()
        if self._fd is not None:
            return self._fd
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        if self.KEEP:
            try:
                info = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise
            self._fd, self._id = fd, (info.st_dev, info.st_ino)
            self._finalizer = weakref.finalize(self, _close_quietly, fd)
        return fd

    def done(self, fd: int) -> None:
        if fd != self._fd:
            os.close(fd)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # closes the descriptor once
        self._fd = self._id = self._finalizer = None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
