"""Environment knobs: one registry of the variables that change behaviour, read once into the config.

A knob has a name, what it means, and whether it exists only for tests (fault injection). A program
reads the knobs it understands once at start-up (``read``), logs the ones that are set (``log_set``),
and hands the code below seams built from them (a checkpoint, a writer), never the environment
itself. This is tailscale's envknob, kept small. The registry serves the relay (``RELAY``) and is
shaped to take the agent's knobs too (``AGENT``, empty until the agent moves its fault switches here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Knob:
    name: str
    meaning: str
    test_only: bool = False


FAULT_SAVE = Knob(
    "HERMES_RELAY_FAULT_SAVE",
    "a file path: while that file exists, every write of the relay's sessions.json fails (save-failure tests)",
    test_only=True,
)

RELAY: tuple[Knob, ...] = (FAULT_SAVE,)
AGENT: tuple[Knob, ...] = ()
REGISTRY: dict[str, Knob] = {k.name: k for k in (*RELAY, *AGENT)}


@dataclass(frozen=True)
class Knobs:
    """The registered knobs that were set (non-empty) when the program started."""

    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, knob: Knob) -> str | None:
        return self.values.get(knob.name)

    def set(self) -> list[Knob]:
        return [REGISTRY[name] for name in sorted(self.values)]


def read(env: Mapping[str, str], knobs: Iterable[Knob]) -> Knobs:
    """The given knobs' values from ``env``; an empty value counts as unset."""
    return Knobs({k.name: env[k.name] for k in knobs if env.get(k.name)})


def log_set(knobs: Knobs, log: logging.Logger) -> None:
    """One line per knob that is set, so a log shows when a test-only switch was on (values are not logged)."""
    for knob in knobs.set():
        level = logging.WARNING if knob.test_only else logging.INFO
        log.log(level, "knob_set name=%s test_only=%s", knob.name, str(knob.test_only).lower())
