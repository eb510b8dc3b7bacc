"""The per-user service manager interface: where its files go, whether it answers, and which
commands (or registry writes) activate, deactivate and control the service. One subclass per
platform (systemd.py, launchd.py, windows.py); platforms.py picks the one for this computer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .steps import Env, Runner, Step, Target, subprocess_runner


class Manager:
    """A per-user service manager. Subclasses fill in where files go and which commands to run."""

    kind = ""
    what = ""

    def __init__(self, env: Env, *, python: str | None = None, run: Runner | None = None,
                 which: Callable[..., str | None] = shutil.which):
        self.env = env
        self.python = python or sys.executable
        self.run = run if run is not None else subprocess_runner(env)
        self._which = which
        self._reason: tuple[str | None] | None = None

    def which(self, name: str) -> str | None:
        return self._which(name, path=self.env.get("PATH", os.defpath))

    def _ok(self, *argv: str) -> bool:
        return self.run(argv).returncode == 0

    def paths(self) -> list[Path]:
        return [t.path for t in self.targets()]  # subclasses answer without rendering

    def installed(self) -> bool:
        return any(p.exists() for p in self.paths())

    def unreachable(self) -> str | None:
        """None when the service manager answers; otherwise why not (asked once, then remembered)."""
        if self._reason is None:
            self._reason = (self._probe(),)
        return self._reason[0]

    def targets(self) -> list[Target]:
        raise NotImplementedError

    def _probe(self) -> str | None:
        raise NotImplementedError

    def active(self) -> bool:
        raise NotImplementedError

    def registered(self) -> bool:
        raise NotImplementedError

    def activate(self, *, changed: bool, active: bool, registered: bool, stop_agent: Step) -> list[Step]:
        raise NotImplementedError

    def deactivate(self) -> list[Step]:
        return []

    def after_remove(self) -> list[Step]:
        return []

    def offline_cleanup(self) -> list[Step]:
        return []

    def manual_install(self) -> list[str]:
        raise NotImplementedError

    def manual_uninstall(self) -> list[str]:
        return []

    can_control = False  # whether control() can start, stop and restart the service's agent

    def control(self, verb: str) -> list[Step]:
        """The steps that ``start``, ``stop`` or ``restart`` the service's agent (none: cannot)."""
        return []

    def status_hint(self) -> str:
        return "see `hermes-relay agent logs`"

    def _cmd(self, tool: str, *args: str, check: bool = True, starts: bool = False) -> Step:
        return Step(shlex.join((tool, *args)), (self.which(tool) or tool, *args), check=check, starts=starts)
