"""The relay's garbage-collection policy: no full collection over the idle connections while serving.

A full collection walks every tracked object and serves nobody meanwhile (~150 ms per million objects
here; an idle authenticated connection is ~120 of them). The relay's live set is mostly connections
that stay, so the policy keeps them out of the walk:

* at start-up (``settle``): collect, freeze what start-up built, and use thresholds that let a
  handshake's garbage die young (a young collection every 20,000 new objects, not 700);
* on each ``tick`` (once a second when connections were authenticated since the last one, and at once
  every ``FRESH_MAX`` of them):
  collect what is not frozen yet (what arrived since the last tick: small), then ``gc.freeze()`` it.
  A later full collection walks only what arrived since. Pings freeze too (``pinged``): serving a held
  connection (a ping, its pong) replaces some of its frozen objects with new, unfrozen ones (the
  coroutines and trio records of its next wait), the old freed and the new allocated, so no count of the
  collector grows. Left until the next connection arrives, a whole heartbeat round of them (3000 held:
  ~15-20 ms) was walked by that one collection; now at most ``PINGED_MAX`` pings' worth (~2 ms). A freeze
  every second while pinging bounded it further but cost more CPU than the pings themselves gained. Only
  pings whose pong wakes the connection's task count: a quiet connection's pong is read by the relay's
  idle reader (relay/idleread.py), its task left parked, and replaces nothing;
* a connection frees its objects by reference counting when it ends (nothing of it is in a cycle
  once its tasks are done: ``Beat.stop`` drops the heartbeat's references), so freezing leaks
  nothing in the normal case (the bench's leak row: ~2 objects per closed connection, freed when due).
  What would still hide in a frozen cycle is bounded: once as many frozen connections have ended as
  are open now (and at least ``THAW_MIN``), and ``THAW_SPACING`` after the last such pass, a tick
  thaws, collects everything and freezes again. That is the one full pause; it only follows churn,
  and never right after a mass disconnect (when it would walk the half still closing, to find nothing).

``gc.callbacks`` times every collection: ``stats()`` (``GET /health``'s ``gc`` field) shows the worst
pause, so the bench reads it from inside the relay; the loopback-only ``GET /relay/info`` adds the
objects frozen (counting them walks them all, so the public ``/health`` never does). Only
``hermes-relay-server`` installs the policy (relay/main.py); a relay run in a test process leaves the
test's collector alone.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Collector thresholds for a server whose live set is mostly idle connections (see the module text).
GC_THRESHOLDS = (20_000, 20, 20)
TICK = 1.0  # seconds between ticks
LONG_PAUSE = 0.05  # CPU seconds of a collection worth a warning (every connection waited that long)
THAW_MIN = 1000  # ended frozen connections before a full collection may be worth its pause
THAW_SPACING = 600.0  # seconds between full collections at most (one per 10 minutes of churn)
FRESH_MAX = 200  # connections authenticated since the last freeze that make the next one come at once
PINGED_MAX = 500  # held connections pinged since the last freeze that make the next one come at once


class GcPolicy:
    """The policy's counters; ``tick`` decides (synchronous: relay/main.py calls it once per ``TICK``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_thaw = clock()  # start-up's own full collection counts as one
        self.epoch = 0  # freezes so far; a connection authenticated in epoch e is frozen once epoch > e
        self.fresh = 0  # connections authenticated since the last freeze
        self.pinged = 0  # held connections the heartbeat pinged since the last freeze
        self.open = 0  # authenticated connections now
        self.ended_frozen = 0  # connections that ended after being frozen, since the last thaw
        self.freezes = 0
        self.thaws = 0
        self.collections = [0, 0, 0]
        self.worst_pause = [0.0, 0.0, 0.0]  # seconds, per generation
        self.worst_cpu = 0.0  # CPU seconds of the longest collection (wall time may include being descheduled)
        self._started = self._started_cpu = 0.0

    # -- connections -----------------------------------------------------------------------------
    def opened(self) -> int:
        """An authenticated connection: returns its epoch, for ``ended``. Connections arriving fast are
        frozen every ``FRESH_MAX`` of them, not once a second: the collection before a freeze walks what
        arrived since the last one, so that bounds it (a few ms, not a second's worth of arrivals)."""
        self.fresh += 1
        self.open += 1
        epoch = self.epoch
        if self.fresh >= FRESH_MAX:
            self.tick()
        return epoch

    def ping(self) -> None:
        """A held connection was pinged: its pong will replace some of its frozen objects; every
        ``PINGED_MAX`` of them, what they replaced is frozen (at once: a round of pings comes as the
        connections came, a mass reconnect's thousands within a second)."""
        self.pinged += 1
        if self.pinged >= PINGED_MAX:
            self.tick()

    def ended(self, epoch: int) -> None:
        self.open -= 1
        if epoch < self.epoch:
            self.ended_frozen += 1

    # -- the collector ---------------------------------------------------------------------------
    def settle(self) -> None:
        """Once the relay listens: collect, freeze what start-up built, use the server's thresholds."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def tick(self) -> str | None:
        """Freeze what arrived, or thaw and collect everything after churn; what it did, if anything."""
        if self.ended_frozen >= max(THAW_MIN, self.open) and self._clock() - self._last_thaw >= THAW_SPACING:
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.thaws += 1
            self.ended_frozen = 0
            self._last_thaw = self._clock()
            self._frozen_now()
            log.info("gc_thaw unreachable=%d pause_ms=%.1f", found, (time.perf_counter() - t0) * 1000)
            return "thaw"
        if self.fresh or self.pinged >= PINGED_MAX:
            gc.collect()  # only the unfrozen part: what arrived (or was replaced) since the last freeze
            gc.freeze()
            self.freezes += 1
            self._frozen_now()
            return "freeze"
        return None

    def _frozen_now(self) -> None:
        self.epoch += 1
        self.fresh = self.pinged = 0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` hook: the length of each collection, the worst per generation."""
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
            return
        generation = info.get("generation", 2)
        pause = time.perf_counter() - self._started
        cpu = time.thread_time() - self._started_cpu
        self.worst_cpu = max(self.worst_cpu, cpu)
        if cpu >= LONG_PAUSE:
            log.warning("gc_long_pause generation=%d ms=%.1f cpu_ms=%.1f collected=%d", generation,
                        pause * 1000, cpu * 1000, info.get("collected", 0))
        self.collections[generation] += 1
        if pause > self.worst_pause[generation]:
            self.worst_pause[generation] = pause

    def stats(self, *, frozen: bool = False) -> dict[str, Any]:
        """The counters; ``frozen`` adds the objects frozen now, which walks them all (~25 ms per million
        here): for the loopback-only ``GET /relay/info``, never for the public, often-polled ``/health``."""
        out: dict[str, Any] = {
            "worst_pause_ms": round(max(self.worst_pause) * 1000, 2),
            "worst_full_pause_ms": round(self.worst_pause[2] * 1000, 2),
            "worst_pause_cpu_ms": round(self.worst_cpu * 1000, 2),
            "collections": list(self.collections),
            "freezes": self.freezes,
            "thaws": self.thaws,
        }
        if frozen:
            out["frozen"] = gc.get_freeze_count()
        return out


_POLICY: GcPolicy | None = None


def install() -> GcPolicy:
    """The process's policy (the relay server only): settle the collector and start timing it."""
    global _POLICY
    if _POLICY is None:
        _POLICY = GcPolicy()
        _POLICY.settle()
        gc.callbacks.append(_POLICY.on_gc)
    return _POLICY


def opened() -> int:
    return _POLICY.opened() if _POLICY is not None else 0


def pinged() -> None:
    """The heartbeat pinged a held connection (relay/heartbeat.py)."""
    if _POLICY is not None:
        _POLICY.ping()


def ended(epoch: int) -> None:
    if _POLICY is not None:
        _POLICY.ended(epoch)


def stats(*, frozen: bool = False) -> dict[str, Any] | None:
    """For ``GET /health`` (and with ``frozen`` for ``GET /relay/info``): None where the policy is not
    installed (a relay inside a test process)."""
    return _POLICY.stats(frozen=frozen) if _POLICY is not None else None
