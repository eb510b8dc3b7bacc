"""Every fault-injection and test switch the processes read from the environment, in one table.

Like tailscale's envknob: each knob has a name, what it does, and whether it exists only for
tests. The environment is parsed once, where the config is built (``parse``); code receives what a
knob configures as a seam through that config (a checkpoint callable, a store-write fault counter, a
deadline cap), never by reading the environment itself. A process logs the knobs that are set when
it starts (``describe``) and ``status``/``doctor`` show them, so a test switch left set in a real
environment is visible.

This module is plain data and parsing: it imports nothing of the project and no trio.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Knob:
    name: str  # the environment variable
    meaning: str  # what setting it does
    test_only: bool = True  # a switch for tests: never set in a real installation


KILL_AT = Knob("HERMES_RELAY_TEST_KILL_AT",
               "the agent dies as kill -9 would at this named write point (agent/checkpoints.py)")
STORE_WRITE_FAULTS = Knob("HERMES_RELAY_TEST_STORE_WRITE_FAULTS",
                          "the first N store writes of pairing credentials fail as on a full disk")
DESKTOP_DEADLINE = Knob("HERMES_RELAY_DESKTOP_DEADLINE",
                        "caps every desktop call's deadline at this many seconds (never lengthens one)")

KNOBS: tuple[Knob, ...] = (KILL_AT, STORE_WRITE_FAULTS, DESKTOP_DEADLINE)
BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}


class Countdown:
    """A fault that fires for the next N uses (thread-safe: store writes run in worker threads)."""

    def __init__(self, count: int = 0):
        self._left = max(0, count)
        self._lock = threading.Lock()

    def fire(self) -> bool:
        """True (and one fewer left) while faults remain."""
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    @property
    def left(self) -> int:
        return self._left


@dataclass(frozen=True)
class Knobs:
    """The parsed knobs; ``set`` keeps the raw values of those present (for the start-up log and status)."""

    kill_at: str | None = None
    store_write_faults: int = 0
    desktop_deadline: float | None = None
    set: tuple[tuple[str, str], ...] = ()

    def shown(self) -> dict[str, str]:
        """The knobs that are set, name -> value (status and doctor show these)."""
        return dict(self.set)


def parse(env: Mapping[str, str]) -> Knobs:
    """Read every knob once; a value that does not parse configures nothing (and is still shown as set)."""
    present = tuple((knob.name, env[knob.name]) for knob in KNOBS if env.get(knob.name))
    return Knobs(
        kill_at=env.get(KILL_AT.name) or None,
        store_write_faults=_int(env.get(STORE_WRITE_FAULTS.name)),
        desktop_deadline=_positive(env.get(DESKTOP_DEADLINE.name)),
        set=present,
    )


PREFIX = "HERMES_RELAY_"


def describe(knobs: Knobs) -> list[str]:
    """One line per knob that is set, for the start-up log: ``knob=NAME value='…' test_only=yes (meaning)``.

    NAME drops the common ``HERMES_RELAY_`` prefix: the log's token filter masks any 32-character word,
    and most full names are that long."""
    out = []
    for name, value in knobs.set:
        knob = BY_NAME[name]
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        out.append(f"knob={short} value={value!r} test_only={'yes' if knob.test_only else 'no'} ({knob.meaning})")
    return out


def _int(text: str | None) -> int:
    try:
        return max(0, int(text)) if text else 0
    except ValueError:
        return 0


def _positive(text: str | None) -> float | None:
    try:
        value = float(text) if text else 0.0
    except ValueError:
        return None
    return value if value > 0 else None
