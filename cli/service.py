"""Run the agent as a per-user service: render the packaging/ templates, write them, tell the manager.

One ``Manager`` per platform knows where its file goes, how to ask whether the service manager is
reachable, and which commands (or registry writes) activate, deactivate and control the service:
systemd user units on Linux, launchd LaunchAgents on macOS, the HKCU Run key on Windows. The install
itself is a ``Plan``: an ordered list of ``Step``s computed before anything is touched, so
``--dry-run`` prints exactly what a real run executes. Files go through ``fileio.atomic_write``,
which leaves identical contents alone; that is what makes a second install say "already installed".

Rejected: systemd socket activation (the agent takes its instance lock and binds its own socket; it
cannot adopt an inherited LISTEN_FDS socket, see packaging/README.md), and resolving
``sys.executable`` through symlinks (that would escape the venv the CLI runs from). Blocking and
trio-free: this runs inside the CLI (house style B2). The launchd and Windows paths are untested.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hermes_relay.core import fileio, paths
from hermes_relay.core.errors import ConfigError, IpcError, StateError, UsageError

Env = Mapping[str, str]

PACKAGE = "hermes_relay.packaging"
UNIT_NAME = "hermes-relay-agent.service"
LAUNCHD_LABEL = "com.hermes.relay-agent"
PLIST_NAME = LAUNCHD_LABEL + ".plist"
WINDOWS_CMD_NAME = "hermes-relay-agent.cmd"
WINDOWS_PS1_NAME = "install-windows.ps1"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "HermesRelayAgent"
SERVICE_FILE_MODE = 0o644  # what systemd and launchd expect of unit files; they hold no secrets
COMMAND_TIMEOUT = 30.0  # seconds for one systemctl/launchctl call (a stop may wait for the agent)
# Set at install time, these must reach the service too, or its agent would look elsewhere than the
# CLI for its socket, logs and session store. The service manager supplies HOME and XDG_RUNTIME_DIR.
PINNED_ENV = ("HERMES_HOME", "HERMES_RELAY_RUNTIME_DIR", "HERMES_RELAY_SOCKET", "HERMES_RELAY_IPC",
              "HERMES_RELAY_LOG_DIR", "HERMES_RELAY_SESSIONS_FILE")
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z_]*)@")
_LINE_PLACEHOLDER = re.compile(r"^[ \t]*@([A-Z][A-Z_]*)@[ \t]*\n", re.MULTILINE)
_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


# -- rendering -------------------------------------------------------------------------------------
def read_template(name: str) -> str:
    """The text of a template shipped as package data in ``hermes_relay.packaging``."""
    from importlib import resources

    return resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@NAME@``; a placeholder alone on its line whose value is empty drops the line.

    Raises KeyError for a placeholder without a value, so a template typo never ships. Values are
    not rescanned: a path containing ``@X@`` stays as it is.
    """

    def whole_line(m: re.Match[str]) -> str:
        value = values[m.group(1)]
        return value if not value or value.endswith("\n") else value + "\n"

    text = _LINE_PLACEHOLDER.sub(whole_line, template)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def pinned_env(env: Env) -> dict[str, str]:
    """The path variables set in ``env`` that the service must see as well."""
    return {name: env[name] for name in PINNED_ENV if env.get(name)}


def _no_newline(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"cannot write a service file for a value with a line break: {value!r}")
    return value


def systemd_quote(value: str) -> str:
    """One word for a unit file: ``%`` doubled (specifiers), C-quoted unless plain.

    ``$`` is left alone: systemd does not expand variables in Environment= values nor in the
    executable's own path, the only places this is used (``systemd-analyze verify`` agrees).
    """
    value = _no_newline(value).replace("%", "%%")
    if _SYSTEMD_BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def xml_text(value: str) -> str:
    return _no_newline(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cmd_text(value: str) -> str:
    return _no_newline(value).replace("%", "%%")  # a batch file expands %NAME% even inside quotes


def _ps_single(value: str) -> str:
    return _no_newline(value).replace("'", "''")


def render_systemd_unit(python: str, env: Env) -> str:
    lines = "".join(f"Environment={systemd_quote(f'{k}={v}')}\n" for k, v in pinned_env(env).items())
    return fill(read_template(UNIT_NAME), {"PYTHON": systemd_quote(python), "ENVIRONMENT": lines})


def render_launchd_plist(python: str, env: Env) -> str:
    pinned = pinned_env(env)
    block = ""
    if pinned:
        entries = "".join(f"        <key>{xml_text(k)}</key>\n        <string>{xml_text(v)}</string>\n"
                          for k, v in pinned.items())
        block = f"    <key>EnvironmentVariables</key>\n    <dict>\n{entries}    </dict>\n"
    return fill(read_template(PLIST_NAME), {"PYTHON": xml_text(python), "ENVIRONMENT": block,
                                            "LOG_DIR": xml_text(str(paths.log_dir(env)))})


def pythonw(python: str) -> str:
    """``pythonw.exe`` next to ``python.exe`` when there is one (no console window at logon)."""
    p = Path(python)
    if p.name.lower() == "python.exe" and (p.parent / "pythonw.exe").exists():
        return str(p.parent / "pythonw.exe")
    return python


def render_windows_cmd(python: str, env: Env) -> str:
    lines = "".join(f'set "{k}={_cmd_text(v)}"\n' for k, v in pinned_env(env).items())
    text = fill(read_template(WINDOWS_CMD_NAME), {"PYTHONW": _cmd_text(pythonw(python)), "ENVIRONMENT": lines})
    return text.replace("\n", "\r\n")  # cmd.exe mis-parses some LF-only batch files


def render_windows_ps1(python: str, cmd_path: Path) -> str:
    text = fill(read_template(WINDOWS_PS1_NAME), {"PYTHON": _ps_single(python), "CMD_PATH": _ps_single(str(cmd_path))})
    return "\ufeff" + text.replace("\n", "\r\n")  # the BOM makes Windows PowerShell 5.1 read UTF-8


# -- plans -----------------------------------------------------------------------------------------
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


def _remove_step(path: Path) -> Step:
    def remove() -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    return Step(f"remove {path}", action=remove)


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
    plan.steps += [_remove_step(p) for p in files]
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


# -- managers --------------------------------------------------------------------------------------
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
        return [_remove_step(link) for link in sorted(self.unit_dir().glob(f"*.wants/{UNIT_NAME}"))
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
        return f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/0"

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


class WindowsRunKey(Manager):
    """UNTESTED: written from the winreg documentation without a Windows machine to run it on."""

    kind = "windows"
    what = "logon entry (HKCU Run key)"

    def install_dir(self) -> Path:
        e = self.env
        if e.get("HERMES_RELAY_WINDOWS_DIR"):
            return Path(e["HERMES_RELAY_WINDOWS_DIR"])
        base = Path(e["LOCALAPPDATA"]) if e.get("LOCALAPPDATA") else paths.home_dir(e) / "AppData" / "Local"
        return base / "hermes-relay"

    @property
    def run_value(self) -> str:
        return f'"{self.install_dir() / WINDOWS_CMD_NAME}"'

    def targets(self) -> list[Target]:
        cmd = self.install_dir() / WINDOWS_CMD_NAME
        return [Target(cmd, render_windows_cmd(self.python, self.env)),
                Target(self.install_dir() / WINDOWS_PS1_NAME, render_windows_ps1(self.python, cmd))]

    def _probe(self) -> str | None:
        if sys.platform != "win32":
            return "the Windows registry exists only on Windows"
        return None

    def active(self) -> bool:
        return self.registered()

    def registered(self) -> bool:  # pragma: no cover - Windows only
        if sys.platform != "win32":  # winreg exists only there (mypy checks what follows only there)
            raise OSError("the Run key exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                return winreg.QueryValueEx(key, RUN_VALUE)[0] == self.run_value
        except OSError:
            return False

    def activate(self, *, changed: bool, active: bool, registered: bool, stop_agent: Step) -> list[Step]:
        if registered:
            return []

        def set_value() -> None:  # pragma: no cover - Windows only
            if sys.platform != "win32":  # winreg exists only there (mypy checks what follows only there)
                raise OSError("the Run key exists only on Windows")
            import winreg

            with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, self.run_value)

        return [Step(rf"set HKCU\{RUN_KEY}\{RUN_VALUE} = {self.run_value}", action=set_value)]

    def deactivate(self) -> list[Step]:
        def delete_value() -> None:  # pragma: no cover - Windows only
            if sys.platform != "win32":  # winreg exists only there (mypy checks what follows only there)
                raise OSError("the Run key exists only on Windows")
            import winreg

            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
                    winreg.DeleteValue(key, RUN_VALUE)
            except FileNotFoundError:
                pass

        return [Step(rf"delete HKCU\{RUN_KEY}\{RUN_VALUE}", action=delete_value)]

    def manual_install(self) -> list[str]:
        return [f'powershell -ExecutionPolicy Bypass -File "{self.install_dir() / WINDOWS_PS1_NAME}"']

    def manual_uninstall(self) -> list[str]:
        return [rf'reg delete HKCU\{RUN_KEY} /v {RUN_VALUE} /f']


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
