"""``agent install|uninstall`` and the packaging/ templates, without touching the real home or systemd.

Every test here runs with PATH pointing at a temporary ``bin`` directory: empty (no systemctl at
all), or holding a fake ``systemctl`` shell script that records its arguments and keeps the unit's
active/enabled state as marker files. The real ``systemctl`` is never on PATH. The rendered unit is
checked by the real ``systemd-analyze verify`` where it exists (it only parses files). launchd and
Windows are covered as far as rendering and planning go: their commands are never run.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hermes_relay.cli.client import agent_command
from hermes_relay.cli.service import launchd, platforms, quoting, systemd, windows
from hermes_relay.cli.service import plan as plans
from hermes_relay.core import paths

UNIT = systemd.UNIT_NAME
PLACEHOLDER = re.compile(r"@[A-Z][A-Z_]*@")

FAKE_SYSTEMCTL = r"""#!/bin/sh
# A stand-in for `systemctl --user ...`: logs its arguments, keeps state as marker files.
PATH=/usr/bin:/bin
echo "$*" >> "$FAKE_SYSTEMCTL_DIR/log"
state="$FAKE_SYSTEMCTL_DIR"
[ "$1" = --user ] || exit 64
verb=$2
shift 2
case "$verb" in
    show-environment)
        if [ -e "$state/down" ]; then echo "Failed to connect to bus: No medium found" >&2; exit 1; fi
        echo "HOME=/nowhere" ;;
    is-active) [ -e "$state/active" ] ;;
    is-enabled) [ -e "$state/enabled" ] ;;
    is-failed) [ -e "$state/failed" ] ;;
    enable)
        if [ -e "$state/refuse" ]; then echo "Failed to enable unit: refused for the test" >&2; exit 1; fi
        touch "$state/enabled"
        [ "$1" = --now ] && touch "$state/active"
        exit 0 ;;
    disable) rm -f "$state/enabled"; [ "$1" = --now ] && rm -f "$state/active"; exit 0 ;;
    start|restart) touch "$state/active" ;;
    stop) rm -f "$state/active" ;;
    reset-failed) rm -f "$state/failed" ;;
    daemon-reload) ;;
    *) exit 64 ;;
esac
"""


@pytest.fixture
def bin_dir(tmp_path: Path, env: dict[str, str]) -> Path:
    """An empty PATH directory: no systemctl, so nothing can reach a real user manager."""
    d = tmp_path / "bin"
    d.mkdir()
    env["PATH"] = str(d)
    return d


@pytest.fixture
def unit_dir(tmp_path: Path, env: dict[str, str], bin_dir: Path) -> Path:
    d = tmp_path / "units"
    env["HERMES_RELAY_SYSTEMD_DIR"] = str(d)
    return d


@pytest.fixture
def systemctl(tmp_path: Path, env: dict[str, str], bin_dir: Path) -> Path:
    """Put the fake systemctl on PATH; returns its state directory (``log`` lists every call)."""
    state = tmp_path / "systemctl-state"
    state.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(0o755)
    env["FAKE_SYSTEMCTL_DIR"] = str(state)
    return state


@pytest.fixture
def unit_agent(make_agent: type, systemctl: Path) -> type:
    """A FakeAgent that answers while the fake unit is active, or while ``cli_agent`` (CLI-started) is set."""

    @dataclass
    class UnitAgent(make_agent):  # type: ignore[misc, valid-type]
        cli_agent: bool = False

        def connect(self, env: Any, *, autostart: bool, stderr: Any) -> Any:
            self.running = self.cli_agent or (systemctl / "active").exists()
            return super().connect(env, autostart=autostart, stderr=stderr)

    return UnitAgent


def calls(state: Path) -> list[str]:
    log = state / "log"
    return log.read_text().splitlines() if log.exists() else []


def linux_only() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("agent install picks the systemd manager on Linux only")


# -- templates -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [systemd.UNIT_NAME, launchd.PLIST_NAME, windows.WINDOWS_CMD_NAME,
                                  windows.WINDOWS_PS1_NAME, "README.md"])
def test_templates_ship_as_package_data(name: str) -> None:
    assert quoting.read_template(name).strip()


def test_fill_replaces_every_placeholder_and_drops_empty_block_lines() -> None:
    template = "a=@A@\n    @BLOCK@\nb=@B@ @A@\n"
    assert quoting.fill(template, {"A": "x@Y@", "B": "2", "BLOCK": ""}) == "a=x@Y@\nb=2 x@Y@\n"
    assert quoting.fill(template, {"A": "1", "B": "2", "BLOCK": "k=v\n"}) == "a=1\nk=v\nb=2 1\n"
    with pytest.raises(KeyError):
        quoting.fill("@MISSING@", {})


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("/home/a b/python", '"/home/a b/python"'),
        ("/opt/100%/py", '"/opt/100%%/py"'),
        ("/opt/$HOME/py", '"/opt/$HOME/py"'),
        ('/o"q\\/py', '"/o\\"q\\\\/py"'),
    ],
)
def test_systemd_quote(value: str, quoted: str) -> None:
    assert quoting.systemd_quote(value) == quoted


def test_a_value_with_a_line_break_is_refused() -> None:
    from hermes_relay.core.errors import ConfigError

    with pytest.raises(ConfigError, match="line break"):
        systemd.render_systemd_unit("/usr/bin/python3", {"HERMES_HOME": "/a\nExecStartPre=/bin/evil"})


def _unit_values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def test_systemd_unit_runs_the_venv_python_with_the_clients_agent_command() -> None:
    unit = systemd.render_systemd_unit(sys.executable, {})
    assert not PLACEHOLDER.search(unit)
    [exec_start] = _unit_values(unit, "ExecStart")
    assert shlex.split(exec_start) == agent_command() + ["--detached"]
    if sys.prefix != sys.base_prefix:  # running in the project's venv: the unit must use it, unresolved
        assert exec_start.startswith(sys.prefix)
    assert _unit_values(unit, "Restart") == ["on-failure"]
    assert _unit_values(unit, "RestartSec") == ["2"]
    assert _unit_values(unit, "NoNewPrivileges") == ["yes"]
    assert _unit_values(unit, "WantedBy") == ["default.target"]
    assert _unit_values(unit, "Environment") == []
    assert _unit_values(unit, "PrivateTmp") == _unit_values(unit, "ProtectHome") == []


def test_systemd_unit_pins_the_path_variables_set_at_install_time() -> None:
    env = {"HERMES_HOME": "/srv/my hermes", "HERMES_RELAY_LOG_DIR": "/var/log/h%r", "UNRELATED": "x",
           "HERMES_RELAY_RUNTIME_DIR": ""}
    unit = systemd.render_systemd_unit("/usr/bin/python3", env)
    assert _unit_values(unit, "Environment") == ['"HERMES_HOME=/srv/my hermes"', '"HERMES_RELAY_LOG_DIR=/var/log/h%%r"']


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


@pytest.mark.parametrize("odd_dir", [None, "dir with space 100% $HOME"])
def test_systemd_analyze_verify_accepts_the_rendered_unit(tmp_path: Path, odd_dir: str | None) -> None:
    tool = _systemd_analyze()
    python = sys.executable
    if odd_dir is not None:  # the quoting must survive systemd's own parser
        (tmp_path / odd_dir).mkdir()
        os.symlink(sys.executable, tmp_path / odd_dir / "python")
        python = str(tmp_path / odd_dir / "python")
    units = tmp_path / "units"
    units.mkdir()
    unit = units / UNIT
    unit.write_text(systemd.render_systemd_unit(python, {"HERMES_HOME": str(tmp_path / "hermes home")}))
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        [tool, "--user", "verify", str(unit)], capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime),
             "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT in line or "ExecStart" in line]
    assert done.returncode == 0, done.stderr
    assert complaints == []


def test_launchd_plist_is_valid_and_keeps_the_agent_alive_after_crashes() -> None:
    env = {"HOME": "/Users/ann", "HERMES_HOME": "/Users/ann/R&D <x>/.hermes"}
    text = launchd.render_launchd_plist("/Users/ann/venv/bin/python", env)
    assert not PLACEHOLDER.search(text)
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == launchd.LAUNCHD_LABEL
    assert plist["ProgramArguments"] == ["/Users/ann/venv/bin/python", "-m", "hermes_relay.agent", "run", "--detached"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    assert plist["EnvironmentVariables"] == {"HERMES_HOME": "/Users/ann/R&D <x>/.hermes"}
    log_dir = str(paths.log_dir(env))
    assert plist["StandardErrorPath"] == log_dir + "/agent-launchd.err"
    assert plist["StandardOutPath"] == log_dir + "/agent-launchd.out"
    assert "EnvironmentVariables" not in plistlib.loads(launchd.render_launchd_plist(sys.executable, {}).encode())


def test_windows_cmd_and_ps1_carry_the_python_path_in_their_own_quoting() -> None:
    python = r"C:\Users\O'Neil\100%\venv\Scripts\python.exe"
    cmd = windows.render_windows_cmd(python, {"HERMES_HOME": r"C:\Users\O'Neil\hermes"})
    assert not PLACEHOLDER.search(cmd)
    assert "\r\n" in cmd and "\n" not in cmd.replace("\r\n", "")
    assert r'"C:\Users\O' + "'" + r'Neil\100%%\venv\Scripts\python.exe" -m hermes_relay.agent run --detached' in cmd
    assert 'set "HERMES_HOME=C:\\Users\\O\'Neil\\hermes"' in cmd
    ps1 = windows.render_windows_ps1(python, Path(r"C:\Users\O'Neil\AppData\Local\hermes-relay\x.cmd"))
    assert not PLACEHOLDER.search(ps1)
    assert ps1.startswith("\ufeff") and "\r\n" in ps1
    assert r"$Python = 'C:\Users\O''Neil\100%\venv\Scripts\python.exe'" in ps1
    assert r"$Cmd = 'C:\Users\O''Neil\AppData\Local\hermes-relay\x.cmd'" in ps1
    assert "CurrentVersion\\Run" in ps1


def test_windows_cmd_prefers_pythonw_next_to_python(tmp_path: Path) -> None:
    (tmp_path / "python.exe").write_text("")
    (tmp_path / "pythonw.exe").write_text("")
    cmd = windows.render_windows_cmd(str(tmp_path / "python.exe"), {})
    assert f'"{tmp_path / "pythonw.exe"}" -m hermes_relay.agent' in cmd


# -- install / uninstall on Linux, systemctl absent ------------------------------------------------
def test_install_print_shows_the_unit_and_writes_nothing(cli, env, unit_dir) -> None:
    linux_only()
    result = cli("agent", "install", "--print")
    assert result.code == 0, result.err
    assert result.out == systemd.render_systemd_unit(sys.executable, env)
    assert not unit_dir.exists()


def test_install_dry_run_shows_the_file_and_the_commands_but_changes_nothing(cli, env, unit_dir) -> None:
    linux_only()
    result = cli("agent", "install", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "dry run: nothing is written, removed or run"
    assert lines[1] == f"would write {unit_dir / UNIT} (new), mode 0644:"
    assert f"    ExecStart={sys.executable} -I -m hermes_relay.agent run --detached" in lines
    assert f"    Environment=HERMES_HOME={env['HERMES_HOME']}" in lines
    assert lines[-5:] == [
        "would not enable it: systemctl is not on PATH",
        "to enable it, run this in a login session:",
        "  systemctl --user daemon-reload",
        "  hermes-relay agent stop",
        f"  systemctl --user enable --now {UNIT}",
    ]
    assert not unit_dir.exists()


def test_install_twice_then_uninstall_without_systemctl(cli, env, unit_dir) -> None:
    linux_only()
    unit = unit_dir / UNIT
    first = cli("agent", "install")
    assert first.code == 0, first.err
    assert first.out.splitlines()[:2] == [
        f"  write {unit} (new)",
        "agent: installed as a systemd user service, not enabled (systemctl is not on PATH)",
    ]
    assert f"    systemctl --user enable --now {UNIT}" in first.out.splitlines()
    assert unit.read_text() == systemd.render_systemd_unit(sys.executable, env)
    assert unit.stat().st_mode & 0o777 == 0o644
    stamp = unit.stat().st_mtime_ns
    os.utime(unit, ns=(stamp - 10**9, stamp - 10**9))  # any rewrite would now show in the mtime
    stamp = unit.stat().st_mtime_ns

    second = cli("agent", "install")
    assert second.code == 0, second.err
    assert second.out.splitlines()[0] == (
        "agent: already installed as a systemd user service, not enabled (systemctl is not on PATH)")
    assert "write" not in second.out
    assert unit.stat().st_mtime_ns == stamp

    dry = cli("agent", "install", "--dry-run")
    assert f"agent: already installed as a systemd user service ({unit} unchanged)" in dry.out

    dry_gone = cli("agent", "uninstall", "--dry-run")
    assert dry_gone.code == 0, dry_gone.err
    assert dry_gone.out.splitlines()[:4] == [
        "dry run: nothing is written, removed or run",
        f"would remove the systemd user service: {unit}",
        "would:",
        f"  remove {unit}",
    ]
    assert "would not enable" not in dry_gone.out and unit.exists()

    gone = cli("agent", "uninstall")
    assert gone.code == 0, gone.err
    assert gone.out.splitlines()[:2] == [
        f"  remove {unit}",
        "✓ agent: removed the systemd user service; the CLI starts the agent on demand again",
    ]
    assert not unit.exists()
    again = cli("agent", "uninstall")
    assert (again.code, again.out) == (0, "agent: no systemd user service is installed; nothing to do\n")
    dry_again = cli("agent", "uninstall", "--dry-run")
    assert dry_again.out.splitlines() == ["dry run: nothing is written, removed or run",
                                          "agent: no systemd user service is installed; nothing to do"]


def test_a_changed_unit_is_rewritten(cli, env, unit_dir) -> None:
    linux_only()
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Service]\nExecStart=/old/python -m hermes_relay.agent run\n")
    result = cli("agent", "install", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["manager"], report["state"]) == ("systemd", "updated")
    assert report["unreachable"] == "systemctl is not on PATH"
    assert report["steps"] == [f"write {unit_dir / UNIT} (changed)"]
    assert (unit_dir / UNIT).read_text() == systemd.render_systemd_unit(sys.executable, env)


def test_unit_dir_follows_xdg_config_home_then_home(env, bin_dir, tmp_path) -> None:
    manager = systemd.SystemdUser(dict(env))
    assert manager.paths() == [Path(env["HOME"]) / ".config/systemd/user" / UNIT]
    manager = systemd.SystemdUser({**env, "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert manager.paths() == [tmp_path / "cfg/systemd/user" / UNIT]


def test_uninstall_without_a_manager_removes_the_enable_symlink_too(cli, unit_dir) -> None:
    linux_only()
    wants = unit_dir / "default.target.wants"
    wants.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Unit]\n")
    (wants / UNIT).symlink_to(unit_dir / UNIT)
    (wants / "other.service").symlink_to("/elsewhere/other.service")
    result = cli("agent", "uninstall")
    assert result.code == 0, result.err
    assert not (unit_dir / UNIT).exists() and not (wants / UNIT).is_symlink()
    assert (wants / "other.service").is_symlink()
    assert f"    systemctl --user stop {UNIT}" in result.out.splitlines()


# -- with a (fake) reachable user manager ----------------------------------------------------------
def test_install_stops_the_cli_agent_then_enables_the_service(cli, env, unit_dir, systemctl, unit_agent) -> None:
    linux_only()
    agent = unit_agent(results={"agent.stop": {}}, hello={"api_version": 1, "pid": os.getpid()}, cli_agent=True)
    result = cli("agent", "install", agent=agent)
    assert result.code == 0, result.err
    assert calls(systemctl) == [
        "--user show-environment",
        f"--user is-active --quiet {UNIT}",
        f"--user is-enabled --quiet {UNIT}",
        f"--user is-failed --quiet {UNIT}",
        "--user daemon-reload",
        f"--user enable --now {UNIT}",
    ]
    assert agent.methods() == ["agent.stop"]
    assert result.out.splitlines()[:5] == [
        f"  write {unit_dir / UNIT} (new)",
        "  ran: systemctl --user daemon-reload",
        f"  stopped the agent the CLI had started (pid {os.getpid()})",
        f"  ran: systemctl --user enable --now {UNIT}",
        f"✓ agent: installed as a systemd user service, running (pid {os.getpid()})",
    ]

    (systemctl / "log").unlink()
    again = cli("agent", "install", agent=agent)
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == (
        "agent: already installed as a systemd user service, enabled and running; nothing changed")
    assert calls(systemctl) == ["--user show-environment", f"--user is-active --quiet {UNIT}",
                                f"--user is-enabled --quiet {UNIT}"]
    assert agent.methods() == ["agent.stop"]  # the service's own agent is left alone


def test_install_over_a_running_service_with_a_new_unit_restarts_it(cli, unit_dir, systemctl, make_agent) -> None:
    linux_only()
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Service]\nExecStart=/old/python\n")
    (systemctl / "active").touch()
    (systemctl / "enabled").touch()
    agent = make_agent(hello={"api_version": 1, "pid": os.getpid()})
    result = cli("agent", "install", agent=agent)
    assert result.code == 0, result.err
    assert calls(systemctl)[3:] == ["--user daemon-reload", f"--user restart {UNIT}"]
    assert agent.methods() == []
    assert f"✓ agent: updated as a systemd user service, running (pid {os.getpid()})" in result.out


def test_install_resets_a_unit_that_hit_its_start_limit(cli, unit_dir, systemctl, unit_agent) -> None:
    linux_only()
    (systemctl / "failed").touch()
    agent = unit_agent()
    result = cli("agent", "install", agent=agent)
    assert result.code == 0, result.err
    assert calls(systemctl)[-2:] == [f"--user reset-failed {UNIT}", f"--user enable --now {UNIT}"]
    assert "  no CLI-started agent was running" in result.out.splitlines()
    assert True not in agent.autostarts  # neither the stop step nor the wait ever starts an agent
    assert agent.methods() == []


def test_install_dry_run_with_a_manager_lists_the_commands(cli, unit_dir, systemctl) -> None:
    linux_only()
    result = cli("agent", "install", "--dry-run")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-4:] == [
        "would then:",
        "  systemctl --user daemon-reload",
        "  stop the agent the CLI started, if one answers",
        f"  systemctl --user enable --now {UNIT}",
    ]
    assert not unit_dir.exists()
    assert all(c.split()[1] in ("show-environment", "is-active", "is-enabled", "is-failed") for c in calls(systemctl))


def test_a_failing_systemctl_is_an_error_with_a_hint(cli, unit_dir, systemctl, make_agent) -> None:
    linux_only()
    (systemctl / "refuse").touch()
    agent = make_agent(results={"agent.stop": {}}, running=False)
    result = cli("agent", "install", agent=agent)
    assert result.code == 1
    assert result.err.splitlines() == [
        f"hermes-relay: `systemctl --user enable --now {UNIT}` failed (exit 1): "
        "Failed to enable unit: refused for the test",
        f"  hint: see `systemctl --user status {UNIT}` and `journalctl --user -u {UNIT}`",
    ]
    assert (unit_dir / UNIT).exists()  # written; a re-run after fixing the cause only enables


def test_an_unreachable_user_manager_is_reported_not_an_error(cli, unit_dir, systemctl) -> None:
    linux_only()
    (systemctl / "down").touch()
    result = cli("agent", "install")
    assert result.code == 0, result.err
    assert ("agent: installed as a systemd user service, not enabled "
            "(no systemd user manager answers (Failed to connect to bus: No medium found))") in result.out
    assert calls(systemctl) == ["--user show-environment"]


def test_uninstall_disables_removes_and_reloads(cli, unit_dir, systemctl) -> None:
    linux_only()
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Unit]\n")
    (systemctl / "active").touch()
    (systemctl / "enabled").touch()
    dry = cli("agent", "uninstall", "--dry-run")
    assert dry.out.splitlines()[-3:] == [f"  systemctl --user disable --now {UNIT}", f"  remove {unit_dir / UNIT}",
                                         "  systemctl --user daemon-reload"]
    assert (unit_dir / UNIT).exists()
    result = cli("agent", "uninstall")
    assert result.code == 0, result.err
    assert calls(systemctl)[-2:] == [f"--user disable --now {UNIT}", "--user daemon-reload"]
    assert not (unit_dir / UNIT).exists() and not (systemctl / "active").exists()


# -- start / stop / restart go through the installed service --------------------------------------
def test_lifecycle_commands_use_systemctl_once_the_service_is_installed(cli, unit_dir, systemctl, unit_agent) -> None:
    linux_only()
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Unit]\n")
    (systemctl / "enabled").touch()
    (systemctl / "active").touch()
    agent = unit_agent(hello={"api_version": 1, "pid": os.getpid()})

    stopped = cli("agent", "stop", agent=agent)
    assert stopped.code == 0, stopped.err
    assert stopped.out == f"✓ agent: stopped (pid {os.getpid()})\n"
    assert calls(systemctl)[-1] == f"--user stop {UNIT}"
    assert agent.methods() == []  # not agent.stop over IPC: the service would then stay down

    started = cli("agent", "start", agent=agent)
    assert started.code == 0, started.err
    assert calls(systemctl)[-1] == f"--user start {UNIT}"
    assert agent.autostarts.count(True) == 0  # the CLI never spawned its own agent
    assert started.out.splitlines()[0] == f"✓ agent: started (pid {os.getpid()})"

    restarted = cli("agent", "restart", agent=agent)
    assert restarted.code == 0, restarted.err
    assert calls(systemctl)[-1] == f"--user restart {UNIT}"
    assert restarted.out.splitlines()[0] == f"✓ agent: restarted (pid {os.getpid()})"


def test_restart_hands_a_cli_started_agent_over_to_the_service(cli, unit_dir, systemctl, unit_agent) -> None:
    linux_only()
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT).write_text("[Unit]\n")
    (systemctl / "enabled").touch()
    agent = unit_agent(results={"agent.stop": {}}, hello={"api_version": 1, "pid": os.getpid()}, cli_agent=True)
    result = cli("agent", "restart", agent=agent)
    assert result.code == 0, result.err
    assert agent.methods() == ["agent.stop"]  # the CLI's agent goes first, or it keeps the instance lock
    assert calls(systemctl)[-1] == f"--user restart {UNIT}"
    assert True not in agent.autostarts
    assert result.out.splitlines()[0] == f"✓ agent: restarted (pid {os.getpid()})"


def test_lifecycle_commands_ignore_systemctl_when_nothing_is_installed(cli, unit_dir, systemctl, make_agent) -> None:
    linux_only()
    agent = make_agent(results={"agent.stop": {}}, hello={"api_version": 1, "pid": os.getpid()})
    assert cli("agent", "stop", agent=agent).code == 0
    assert agent.methods() == ["agent.stop"]
    assert calls(systemctl) == []


# -- launchd and Windows: planned, never run -------------------------------------------------------
class RecordingRunner:
    def __init__(self, ok: set[str]):
        self.ok = ok
        self.argv: list[tuple[str, ...]] = []

    def __call__(self, argv) -> plans.Proc:
        self.argv.append(tuple(argv))
        return plans.Proc(0 if any(word in self.ok for word in argv) else 1)


def test_launchd_plan_bootstraps_the_plist_in_the_gui_domain(tmp_path: Path, env) -> None:
    (tmp_path / "bin").mkdir()
    launchctl = tmp_path / "bin" / "launchctl"
    launchctl.write_text("#!/bin/sh\nexit 99\n")
    launchctl.chmod(0o755)
    env = {**env, "PATH": str(tmp_path / "bin"), "HERMES_RELAY_LAUNCHD_DIR": str(tmp_path / "agents")}
    run = RecordingRunner(ok={f"gui/{os.getuid()}"})
    manager = platforms.manager_for(env, platform="darwin", run=run)
    stop = plans.Step("stop the agent the CLI started, if one answers")
    plan = plans.plan_install(manager, stop)
    plist = tmp_path / "agents" / launchd.PLIST_NAME
    assert [s.text for s in plan.steps] == [
        f"write {plist} (new)",
        f"create {paths.log_dir(env)}",
        f"launchctl enable gui/{os.getuid()}/{launchd.LAUNCHD_LABEL}",
        "stop the agent the CLI started, if one answers",
        f"launchctl bootstrap gui/{os.getuid()} {plist}",
    ]
    assert plan.steps[-1].argv[0] == str(launchctl) and plan.starts
    assert plistlib.loads(plan.writes[0].data)["Label"] == launchd.LAUNCHD_LABEL
    job = f"gui/{os.getuid()}/{launchd.LAUNCHD_LABEL}"
    assert run.argv == [(str(launchctl), "print", f"gui/{os.getuid()}"), (str(launchctl), "print", job),
                        (str(launchctl), "print", job)]  # nothing but read-only queries while planning


def test_windows_plan_off_windows_only_writes_files_and_explains(tmp_path: Path, env) -> None:
    env = {**env, "HERMES_RELAY_WINDOWS_DIR": str(tmp_path / "win")}
    manager = platforms.manager_for(env, platform="win32", run=RecordingRunner(ok=set()))
    plan = plans.plan_install(manager, plans.Step("stop"))
    assert [s.text for s in plan.steps] == [f"write {tmp_path / 'win' / windows.WINDOWS_CMD_NAME} (new)",
                                            f"write {tmp_path / 'win' / windows.WINDOWS_PS1_NAME} (new)"]
    assert plan.reason == "the Windows registry exists only on Windows"
    assert plan.pending == [f'powershell -ExecutionPolicy Bypass -File "{tmp_path / "win" / windows.WINDOWS_PS1_NAME}"']
    assert platforms.controlling_manager(env, platform="win32") is None


def test_unsupported_platform_is_a_usage_error(env) -> None:
    from hermes_relay.core.errors import UsageError

    with pytest.raises(UsageError, match="no per-user service manager on sunos5"):
        platforms.manager_for(env, platform="sunos5")
    assert platforms.controlling_manager(env, platform="sunos5") is None
