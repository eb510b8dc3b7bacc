"""The launchd LaunchAgent on macOS: the property list and the ``launchctl`` commands."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ...core import fileio, paths
from .manager import Manager
from .plan import Env, Step, Target
from .quoting import fill, pinned_env, read_template, xml_text

LAUNCHD_LABEL = "com.hermes.relay-agent"
PLIST_NAME = LAUNCHD_LABEL + ".plist"


def render_launchd_plist(python: str, env: Env) -> str:
    pinned = pinned_env(env)
    block = ""
    if pinned:
        entries = "".join(f"        <key>{xml_text(k)}</key>\n        <string>{xml_text(v)}</string>\n"
                          for k, v in pinned.items())
        block = f"    <key>EnvironmentVariables</key>\n    <dict>\n{entries}    </dict>\n"
    return fill(read_template(PLIST_NAME), {"PYTHON": xml_text(python), "ENVIRONMENT": block,
                                            "LOG_DIR": xml_text(str(paths.log_dir(env)))})



class Launchd(Manager):
    """UNTESTED: written from launchctl(1) without a Mac to run it on."""

    kind = "launchd"
    what = "launchd agent"

    def agents_dir(self) -> Path:
        if self.env.get("HERMES_RELAY_LAUNCHD_DIR"):
            return Path(self.env["HERMES_RELAY_LAUNCHD_DIR"])
        return paths.home_dir(self.env) / "Library" / "LaunchAgents"

    @property
    def domain(self) -> str:
        if sys.platform == "win32":  # no uid there (and no launchd): only a dry render reaches this
            return "gui/0"
        return f"gui/{os.getuid()}"

    @property
    def service(self) -> str:
        return f"{self.domain}/{LAUNCHD_LABEL}"

    def targets(self) -> list[Target]:
        return [Target(self.agents_dir() / PLIST_NAME, render_launchd_plist(self.python, self.env))]

    def paths(self) -> list[Path]:
        return [self.agents_dir() / PLIST_NAME]

    def _probe(self) -> str | None:
        if self.which("launchctl") is None:
            return "launchctl is not on PATH"
        if not self._ok(self.which("launchctl") or "launchctl", "print", self.domain):
            return f"no {self.domain} launchd domain (not logged in at the Mac's screen?)"
        return None

    def active(self) -> bool:
        return self._ok(self.which("launchctl") or "launchctl", "print", self.service)

    registered = active  # a bootstrapped job is both loaded and enabled

    def activate(self, *, changed: bool, active: bool, registered: bool, stop_agent: Step) -> list[Step]:
        if active and not changed:
            return []
        log_dir = paths.log_dir(self.env)
        steps = [self._cmd("launchctl", "bootout", self.service, check=False)] if active else []
        return steps + [
            Step(f"create {log_dir}", action=lambda: fileio.ensure_private_dir(log_dir)),
            self._cmd("launchctl", "enable", self.service, check=False),
            stop_agent,
            self._cmd("launchctl", "bootstrap", self.domain, str(self.paths()[0]), starts=True),
        ]

    def deactivate(self) -> list[Step]:
        return [self._cmd("launchctl", "bootout", self.service, check=False)]

    def manual_install(self) -> list[str]:
        return ["hermes-relay agent stop", f'launchctl bootstrap "gui/$(id -u)" {shlex.quote(str(self.paths()[0]))}']

    def manual_uninstall(self) -> list[str]:
        return [f'launchctl bootout "gui/$(id -u)/{LAUNCHD_LABEL}"']

    can_control = True

    def control(self, verb: str) -> list[Step]:
        args = {"start": ("kickstart", self.service), "restart": ("kickstart", "-k", self.service),
                # The agent exits 0 on SIGTERM, so KeepAlive leaves it stopped until the next login.
                "stop": ("kill", "SIGTERM", self.service)}[verb]
        return [self._cmd("launchctl", *args, starts=verb != "stop")]

    def status_hint(self) -> str:
        return (f"see `launchctl print gui/$(id -u)/{LAUNCHD_LABEL}` and "
                f"{paths.log_dir(self.env) / 'agent-launchd.err'}")
