"""What a service install is made of, before any plan: the files it writes (``Target``), the things it
runs (``Step``), and how commands run (``Runner``). manager.py and the per-platform managers build these;
plan.py orders and executes them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Env = Mapping[str, str]

SERVICE_FILE_MODE = 0o644  # what systemd and launchd expect of unit files; they hold no secrets
COMMAND_TIMEOUT = 30.0  # seconds for one systemctl/launchctl call (a stop may wait for the agent)


@dataclass(frozen=True)
class Proc:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Proc]


def subprocess_runner(env: Env) -> Runner:
    def run(argv: Sequence[str]) -> Proc:
        try:
            done = subprocess.run(list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            return Proc(124, "", f"no answer within {COMMAND_TIMEOUT:g}s")
        except OSError as exc:
            return Proc(127, "", exc.strerror or str(exc))
        return Proc(done.returncode, done.stdout, done.stderr)

    return run


@dataclass(frozen=True)
class Target:
    """A file the install writes."""

    path: Path
    content: str
    mode: int = SERVICE_FILE_MODE

    @property
    def data(self) -> bytes:
        return self.content.encode("utf-8")


@dataclass(frozen=True)
class Step:
    """One thing an install or uninstall does: run ``argv``, or call ``action`` (which may return a note).

    ``text`` is what ``--dry-run`` and the progress lines show. A failing step with ``check`` stops
    the plan; without it, it is reported and the plan goes on. ``starts`` marks the step after which
    the service's agent should answer.
    """

    text: str
    argv: tuple[str, ...] = ()
    action: Callable[[], str | None] | None = None
    check: bool = True
    starts: bool = False


def remove_step(path: Path) -> Step:
    def remove() -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    return Step(f"remove {path}", action=remove)
