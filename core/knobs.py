"""Environment knobs: one registry of the variables that change behaviour, parsed once into the config.

Like tailscale's envknob: each knob has a name, what it does, and whether it exists only for tests
(fault injection). A program reads the knobs it understands once, where its config is built
(``read``; the agent's ``parse_agent``); code receives what a knob configures as a seam through that
config (a checkpoint callable, a store-write fault counter, a deadline cap), never by reading the
environment itself. The agent logs the knobs that are set when it starts (``describe``) and
``status``/``doctor`` show them, so a test switch left set in a real environment is visible.

The registry takes every program's knobs: ``AGENT`` and ``RELAY`` (the relay reads its own once into
``RelayConfig.knobs`` and logs the set ones with ``log_set``). Plain data and parsing: it imports
nothing of the project and no trio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Knob:
    name: str  # the environment variable
    meaning: str  # what setting it does
    test_only: bool = False  # a switch for tests: never set in a real installation


KILL_AT = Knob("HERMES_RELAY_TEST_KILL_AT",
               "the agent dies as kill -9 would at this named write point (agent/checkpoints.py)", test_only=True)
STORE_WRITE_FAULTS = Knob("HERMES_RELAY_TEST_STORE_WRITE_FAULTS",
                          "the first N store writes of pairing credentials fail as on a full disk", test_only=True)
DESKTOP_DEADLINE = Knob("HERMES_RELAY_DESKTOP_DEADLINE",
                        "caps every desktop call's deadline at this many seconds (never lengthens one)", test_only=True)

FAULT_SAVE = Knob("HERMES_RELAY_FAULT_SAVE",
                  "a file path: while that file exists, every write of the relay's sessions.json fails (save-failure "
                  "tests)", test_only=True)

SHELL_REOPEN = Knob("HERMES_RELAY_TEST_SHELL_REOPEN",
                    "`hermes-relay shell` gives up getting a restarted agent to take the shell back after this "
                    "many seconds instead of 15", test_only=True)

AGENT: tuple[Knob, ...] = (KILL_AT, STORE_WRITE_FAULTS, DESKTOP_DEADLINE)
RELAY: tuple[Knob, ...] = (FAULT_SAVE,)
CLI: tuple[Knob, ...] = (SHELL_REOPEN,)
KNOBS: tuple[Knob, ...] = (*AGENT, *RELAY, *CLI)  # every registered knob
REGISTRY: dict[str, Knob] = {knob.name: knob for knob in KNOBS}


@dataclass(frozen=True)
class Knobs:
    """The registered knobs that were set (non-empty) when the program started."""

    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, knob: Knob) -> str | None:
        return self.values.get(knob.name)

    def set(self) -> list[Knob]:
        return [REGISTRY[name] for name in sorted(self.values)]

    def shown(self) -> dict[str, str]:
        """name -> value of every knob set (status and doctor show these)."""
        return dict(sorted(self.values.items()))


def read(env: Mapping[str, str], knobs: Iterable[Knob]) -> Knobs:
    """The given knobs' values from ``env``; an empty value counts as unset."""
    return Knobs({k.name: env[k.name] for k in knobs if env.get(k.name)})


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
class AgentKnobs:
    """The agent's knobs, parsed: what each configures (a value that does not parse configures nothing)."""

    kill_at: str | None = None
    store_write_faults: int = 0
    desktop_deadline: float | None = None
    knobs: Knobs = field(default_factory=Knobs)  # the raw values of those set

    def shown(self) -> dict[str, str]:
        return self.knobs.shown()


def parse_agent(env: Mapping[str, str]) -> AgentKnobs:
    """Read the agent's knobs once (AgentConfig.from_env)."""
    knobs = read(env, AGENT)
    return AgentKnobs(kill_at=knobs.get(KILL_AT), store_write_faults=_int(knobs.get(STORE_WRITE_FAULTS)),
                      desktop_deadline=_positive(knobs.get(DESKTOP_DEADLINE)), knobs=knobs)


PREFIX = "HERMES_RELAY_"


def describe(knobs: Knobs) -> list[str]:
    """One line per knob that is set, for the start-up log: ``knob=NAME value='…' test_only=yes (meaning)``.

    NAME drops the common ``HERMES_RELAY_`` prefix: the agent log's token filter masks any 32-character
    word, and most full names are that long."""
    out = []
    for knob in knobs.set():
        short = knob.name[len(PREFIX):] if knob.name.startswith(PREFIX) else knob.name
        out.append(f"knob={short} value={knobs.get(knob)!r} test_only={'yes' if knob.test_only else 'no'} "
                   f"({knob.meaning})")
    return out


def _int(text: str | None) -> int:
    try:
        return max(0, int(text)) if text else 0
    except ValueError:
        return 0


def positive(text: str | None) -> float | None:
    """A knob's value as a positive number of seconds; None when unset or not one."""
    return _positive(text)


def _positive(text: str | None) -> float | None:
    try:
        value = float(text) if text else 0.0
    except ValueError:
        return None
    return value if value > 0 else None


def log_set(knobs: Knobs, log: logging.Logger) -> None:
    """One line per knob that is set, so a log shows when a test-only switch was on (values are not logged)."""
    for knob in knobs.set():
        level = logging.WARNING if knob.test_only else logging.INFO
        log.log(level, "knob_set name=%s test_only=%s", knob.name, str(knob.test_only).lower())
