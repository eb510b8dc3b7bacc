"""The logon entry on Windows: a batch file that starts the agent windowless, a PowerShell script
that registers it by hand, and the HKCU Run key value that points at the batch file."""

from __future__ import annotations

import sys
from pathlib import Path

from ...core import paths
from .manager import Manager
from .plan import Env, Step, Target
from .quoting import cmd_text, fill, pinned_env, ps_single, read_template

WINDOWS_CMD_NAME = "hermes-relay-agent.cmd"
WINDOWS_PS1_NAME = "install-windows.ps1"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "HermesRelayAgent"


def pythonw(python: str) -> str:
    """``pythonw.exe`` next to ``python.exe`` when there is one (no console window at logon)."""
    p = Path(python)
    if p.name.lower() == "python.exe" and (p.parent / "pythonw.exe").exists():
        return str(p.parent / "pythonw.exe")
    return python


def render_windows_cmd(python: str, env: Env) -> str:
    lines = "".join(f'set "{k}={cmd_text(v)}"\n' for k, v in pinned_env(env).items())
    text = fill(read_template(WINDOWS_CMD_NAME), {"PYTHONW": cmd_text(pythonw(python)), "ENVIRONMENT": lines})
    return text.replace("\n", "\r\n")  # cmd.exe mis-parses some LF-only batch files


def render_windows_ps1(python: str, cmd_path: Path) -> str:
    text = fill(read_template(WINDOWS_PS1_NAME), {"PYTHON": ps_single(python), "CMD_PATH": ps_single(str(cmd_path))})
    return "\ufeff" + text.replace("\n", "\r\n")  # the BOM makes Windows PowerShell 5.1 read UTF-8



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
