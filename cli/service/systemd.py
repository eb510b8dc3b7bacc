"""The systemd user service on Linux: the unit file and the ``systemctl --user`` commands."""

from __future__ import annotations

import os
from pathlib import Path

from ...core import paths
from .manager import Manager
from .plan import Env, Step, Target, remove_step
from .quoting import fill, pinned_env, read_template, systemd_quote

UNIT_NAME = "hermes-relay-agent.service"


def render_systemd_unit(python: str, env: Env) -> str:
    lines = "".join(f"Environment={systemd_quote(f'{k}={v}')}\n" for k, v in pinned_env(env).items())
    return fill(read_template(UNIT_NAME), {"PYTHON": systemd_quote(python), "ENVIRONMENT": lines})



class SystemdUser(Manager):
    kind = "systemd"
    what = "systemd user service"

    def unit_dir(self) -> Path:
        e = self.env
        if e.get("HERMES_RELAY_SYSTEMD_DIR"):
            return Path(e["HERMES_RELAY_SYSTEMD_DIR"])
        config = Path(e["XDG_CONFIG_HOME"]) if e.get("XDG_CONFIG_HOME") else paths.home_dir(e) / ".config"
        return config / "systemd" / "user"

    def targets(self) -> list[Target]:
        return [Target(self.unit_dir() / UNIT_NAME, render_systemd_unit(self.python, self.env))]

    def paths(self) -> list[Path]:
        return [self.unit_dir() / UNIT_NAME]

    def _systemctl(self, *args: str, check: bool = True, starts: bool = False) -> Step:
        return self._cmd("systemctl", "--user", *args, check=check, starts=starts)

    def _probe(self) -> str | None:
        if self.which("systemctl") is None:
            return "systemctl is not on PATH"
        proc = self.run((self.which("systemctl") or "systemctl", "--user", "show-environment"))
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            return "no systemd user manager answers" + (f" ({detail[-1]})" if detail else "")
        return None

    def _query(self, what: str) -> bool:
        return self._ok(self.which("systemctl") or "systemctl", "--user", what, "--quiet", UNIT_NAME)

    def active(self) -> bool:
        return self._query("is-active")

    def failed(self) -> bool:
        return self._query("is-failed")

    def _reset_failed(self) -> list[Step]:
        # A unit that hit its start limit refuses every start, manual ones too, until reset.
        return [self._systemctl("reset-failed", UNIT_NAME, check=False)] if self.failed() else []

    def registered(self) -> bool:
        return self._query("is-enabled")

    def activate(self, *, changed: bool, active: bool, registered: bool, stop_agent: Step) -> list[Step]:
        steps = [self._systemctl("daemon-reload")] if changed else []
        if not active:
            enable = self._systemctl("enable", "--now", UNIT_NAME, starts=True)
            return steps + self._reset_failed() + [stop_agent, enable]
        if not registered:
            steps.append(self._systemctl("enable", UNIT_NAME))
        if changed:
            steps.append(self._systemctl("restart", UNIT_NAME, starts=True))
        return steps

    def deactivate(self) -> list[Step]:
        return [self._systemctl("disable", "--now", UNIT_NAME, check=False)]

    def after_remove(self) -> list[Step]:
        return [self._systemctl("daemon-reload")]

    def offline_cleanup(self) -> list[Step]:
        # What `systemctl disable` would remove: our symlinks in the .wants directories.
        unit = self.unit_dir() / UNIT_NAME
        return [remove_step(link) for link in sorted(self.unit_dir().glob(f"*.wants/{UNIT_NAME}"))
                if link.is_symlink() and os.readlink(link) in (str(unit), UNIT_NAME)]

    def manual_install(self) -> list[str]:
        return ["systemctl --user daemon-reload", "hermes-relay agent stop",
                f"systemctl --user enable --now {UNIT_NAME}"]

    def manual_uninstall(self) -> list[str]:
        return [f"systemctl --user stop {UNIT_NAME}", "systemctl --user daemon-reload"]

    can_control = True

    def control(self, verb: str) -> list[Step]:
        steps = self._reset_failed() if verb != "stop" else []
        return steps + [self._systemctl(verb, UNIT_NAME, starts=verb != "stop")]

    def status_hint(self) -> str:
        return f"see `systemctl --user status {UNIT_NAME}` and `journalctl --user -u {UNIT_NAME}`"
