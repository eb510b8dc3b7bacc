"""Run the agent as a per-user service: which ``Manager`` serves this platform, and whether it owns
the agent.

The package renders the packaging/ templates (quoting.py), writes them and tells the manager through
a ``Plan`` (plan.py): systemd user units on Linux (systemd.py), launchd LaunchAgents on macOS
(launchd.py), the HKCU Run key on Windows (windows.py).

Rejected: systemd socket activation (the agent takes its instance lock and binds its own socket; it
cannot adopt an inherited LISTEN_FDS socket, see packaging/README.md), and resolving
``sys.executable`` through symlinks (that would escape the venv the CLI runs from). Blocking and
trio-free: this runs inside the CLI (house style B2). The launchd and Windows paths are untested.
"""

from __future__ import annotations

import sys

from ...core.errors import UsageError
from .launchd import Launchd
from .manager import Manager
from .plan import Env, Runner
from .systemd import SystemdUser
from .windows import WindowsRunKey

MANAGERS: dict[str, type[Manager]] = {"linux": SystemdUser, "darwin": Launchd, "win32": WindowsRunKey}


def manager_for(env: Env, *, platform: str = sys.platform, python: str | None = None,
                run: Runner | None = None) -> Manager:
    """The service manager for ``platform``. Raises UsageError where there is none we support."""
    key = "linux" if platform.startswith("linux") else platform
    cls = MANAGERS.get(key)
    if cls is None:
        raise UsageError(f"agent install knows no per-user service manager on {platform}",
                         hint="start `hermes-relay agent run` from your init system or login script")
    return cls(env, python=python, run=run)


def controlling_manager(env: Env, *, platform: str = sys.platform, run: Runner | None = None) -> Manager | None:
    """The manager that owns the agent here: installed, reachable and enabled. None means the CLI owns it.

    Costs one stat when nothing is installed, so ``agent start|stop|restart`` stay cheap.
    """
    try:
        manager = manager_for(env, platform=platform, run=run)
    except UsageError:
        return None
    if not manager.can_control or not manager.installed():
        return None
    if manager.unreachable() is not None or not manager.registered():
        return None
    return manager
