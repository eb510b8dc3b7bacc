"""An install or uninstall as a ``Plan``: an ordered list of ``Step``s computed before anything is
touched, so ``--dry-run`` prints exactly what a real run executes, and the executor that carries
it out. Files go through ``fileio.atomic_write``, which leaves identical contents alone; that is
what makes a second install say "already installed".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...core import fileio
from ...core.errors import IpcError, StateError
from .manager import Manager
from .steps import (
    COMMAND_TIMEOUT,
    SERVICE_FILE_MODE,
    Env,
    Proc,
    Runner,
    Step,
    Target,
    remove_step,
    subprocess_runner,
)

# The building blocks live in steps.py (manager.py needs them, and this module needs the manager);
# they stay importable from here.
__all__ = ["COMMAND_TIMEOUT", "SERVICE_FILE_MODE", "Env", "Manager", "Plan", "Proc", "Runner", "Step", "Target",
           "execute", "plan_install", "plan_uninstall", "remove_step", "run_step", "subprocess_runner"]

@dataclass
class Plan:
    manager: Manager
    state: str  # "installed", "updated", "already installed", "uninstalled", "not installed"
    files: list[Path]
    writes: list[Target] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # commands to run by hand later
    reason: str | None = None  # why the service manager could not be reached

    @property
    def starts(self) -> bool:
        return any(step.starts for step in self.steps)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # missing, or unreadable: the write reports what is wrong
        return None


def _write_step(target: Target, how: str) -> Step:
    def write() -> None:
        fileio.atomic_write(target.path, target.data, mode=target.mode)

    return Step(f"write {target.path} ({how})", action=write)


def plan_install(manager: Manager, stop_agent: Step) -> Plan:
    """What ``agent install`` does. ``stop_agent`` ends a CLI-started agent before the service starts."""
    targets = manager.targets()
    existing = {t.path: _read(t.path) for t in targets}
    writes = [t for t in targets if existing[t.path] != t.data]
    steps = [_write_step(t, "new" if existing[t.path] is None else "changed") for t in writes]
    if not writes:
        state = "already installed"
    else:
        state = "updated" if any(existing[t.path] is not None for t in targets) else "installed"
    plan = Plan(manager, state, [t.path for t in targets], writes, steps)
    plan.reason = manager.unreachable()
    if plan.reason is None:
        active, registered = manager.active(), manager.registered()
        plan.steps += manager.activate(changed=bool(writes), active=active, registered=registered,
                                       stop_agent=stop_agent)
    else:
        plan.pending = manager.manual_install()
    return plan


def plan_uninstall(manager: Manager) -> Plan:
    """What ``agent uninstall`` does; nothing at all when nothing is installed."""
    files = [p for p in manager.paths() if p.exists() or p.is_symlink()]
    plan = Plan(manager, "uninstalled", files)
    plan.reason = manager.unreachable()
    reachable = plan.reason is None
    if not files and not (reachable and manager.registered()):
        plan.state = "not installed"
        return plan
    if reachable:
        plan.steps += manager.deactivate()
    plan.steps += [remove_step(p) for p in files]
    if reachable:
        plan.steps += manager.after_remove()
    else:
        plan.steps += manager.offline_cleanup()
        plan.pending = manager.manual_uninstall()
    return plan


def run_step(manager: Manager, step: Step) -> str:
    """Carry out one step and return the line that reports it.

    Raises:
        StateError: a file could not be written or removed.
        IpcError: a checked command failed (talking to the service manager, not to the agent).
    """
    if step.action is not None:
        try:
            note = step.action()
        except OSError as exc:
            raise StateError(f"could not {step.text}: {exc.strerror or exc}") from exc
        return note if note else step.text
    proc = manager.run(step.argv)
    if proc.returncode == 0:
        return f"ran: {step.text}"
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    why = f"`{step.text}` failed (exit {proc.returncode})" + (f": {detail[-1]}" if detail else "")
    if step.check:
        raise IpcError(why, hint=manager.status_hint())
    return f"warning: {why}; going on"


def execute(plan: Plan, report: Callable[[str], None]) -> None:
    """Carry out ``plan``'s steps in order, reporting each. Stops at the first checked failure."""
    for step in plan.steps:
        report(run_step(plan.manager, step))
