"""What the desktop tools choose on Windows and macOS, checked here by calling the decisions with a platform.

The Windows paths themselves run on the GitHub workflow's Windows job; what can be decided without
Windows (creation flags, command lines, the fail-closed refusal, folder handles as paths) is pinned here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from toolctx import make_ctx
from toolwait import until

from hermes_relay.agent.desktop.tools import _at, _guard, _proc, _sandbox, files, search
from hermes_relay.core.confine import UNCONFINED, Confinement
from hermes_relay.core.desktop import ToolError

DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CREATE_BREAKAWAY_FROM_JOB = 0x01000000


def test_windows_children_get_their_own_group_and_no_console_window() -> None:
    assert _proc.creation_flags("win32") == CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    assert _proc.session_kwargs("win32") == {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}


def test_the_job_runner_starts_detached_on_windows_instead_of_forking() -> None:
    flags = _proc.creation_flags("win32", detached=True)
    assert flags == DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    breakaway = _proc.session_kwargs("win32", detached=True, breakaway=True)["creationflags"]
    assert breakaway == flags | CREATE_BREAKAWAY_FROM_JOB


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_posix_children_start_a_new_session_and_take_no_windows_flags(platform: str) -> None:
    assert _proc.creation_flags(platform, detached=True, breakaway=True) == 0
    assert _proc.session_kwargs(platform, detached=True) == {"start_new_session": True}


def test_the_windows_flags_are_the_ones_subprocess_knows_there() -> None:
    known = {name: getattr(subprocess, name, None) for name in ("DETACHED_PROCESS", "CREATE_NEW_PROCESS_GROUP",
                                                                 "CREATE_NO_WINDOW", "CREATE_BREAKAWAY_FROM_JOB")}
    if None in known.values():
        pytest.skip("subprocess defines the Windows creation flags only on Windows")
    assert known == {"DETACHED_PROCESS": _proc.DETACHED_PROCESS,
                     "CREATE_NEW_PROCESS_GROUP": _proc.CREATE_NEW_PROCESS_GROUP,
                     "CREATE_NO_WINDOW": _proc.CREATE_NO_WINDOW,
                     "CREATE_BREAKAWAY_FROM_JOB": _proc.CREATE_BREAKAWAY_FROM_JOB}


def test_windows_runs_a_command_through_comspec_with_its_quotes_kept() -> None:
    env = {"COMSPEC": r"C:\Windows\system32\cmd.exe"}
    argv, shell = _proc.shell_argv('echo "a b" & dir "C:\\Program Files"', env, platform="win32")
    assert shell == "cmd"
    assert argv == [r"C:\Windows\system32\cmd.exe", "/d", "/s", "/c", 'echo "a b" & dir "C:\\Program Files"']
    # A list would be joined with backslash-escaped quotes, which cmd.exe does not undo: one string it is.
    line = _proc.command_line(argv, platform="win32")
    assert line == r'"C:\Windows\system32\cmd.exe" /d /s /c "echo "a b" & dir "C:\Program Files""'
    assert subprocess.list2cmdline(argv) != line


def test_a_posix_argv_is_given_to_popen_as_a_list() -> None:
    argv = ["/bin/bash", "-c", 'echo "a b"']
    assert _proc.command_line(argv, platform="linux") == argv
    assert _proc.command_line(["prog", "/d", "/s", "/c", "x"], platform="darwin") == ["prog", "/d", "/s", "/c", "x"]


def test_file_confinement_fails_closed_on_windows(tmp_path: Path) -> None:
    confined = Confinement(owner="wss://relay.example", roots=(tmp_path,))
    assert _guard.confinement_refusal(confined, "win32") == _guard.CONFINEMENT_NEEDS_POSIX
    assert "file confinement needs Linux or macOS; only full access works here yet" in _guard.CONFINEMENT_NEEDS_POSIX
    for platform in ("linux", "darwin"):
        assert _guard.confinement_refusal(confined, platform) is None
    assert _guard.confinement_refusal(UNCONFINED, "win32") is None


async def test_a_confined_file_call_with_folder_paths_refuses_before_touching_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_at, "PATHS", True)  # as on Windows: no folder descriptors to confine with
    work = tmp_path / "work"
    ctx = make_ctx(tmp_path, confinement=Confinement(owner="wss://relay.example", roots=(work,)))
    (work / "a.txt").write_text("secret")
    with pytest.raises(ToolError, match="file confinement needs Linux or macOS"):
        await files.desktop_read_file({"path": str(work / "a.txt")}, ctx)
    with pytest.raises(ToolError, match="file confinement needs Linux or macOS"):
        await files.desktop_write_file({"path": str(work / "b.txt"), "content": "x"}, ctx)
    assert not (work / "b.txt").exists()
    with pytest.raises(ToolError, match="file confinement needs Linux or macOS"):
        await search.desktop_search_files({"pattern": "*.txt", "cwd": str(work)}, ctx)


async def test_full_access_with_folder_paths_reads_and_writes_by_path(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_at, "PATHS", True)
    opened: list[object] = []
    real_open_dir = _at.open_dir
    monkeypatch.setattr(_at, "open_dir", lambda p: opened.append(real_open_dir(p)) or opened[-1])
    ctx = make_ctx(tmp_path)
    target = tmp_path / "work" / "sub" / "new.txt"
    await files.desktop_write_file({"path": str(target), "content": "one\r\ntwo\n", "create_dirs": True}, ctx)
    assert target.read_bytes() == b"one\r\ntwo\n"
    assert await files.desktop_read_file({"path": str(target)}, ctx) == "one\r\ntwo\n"
    assert opened and all(isinstance(d, str) for d in opened)  # folders were paths, never descriptors


def test_folder_paths_never_enter_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        _at.sub(str(tmp_path), "link")
    assert _at.sub(str(tmp_path), "link", follow=True) == str(tmp_path / "link")
    assert _at.sub(str(tmp_path), "real") == str(tmp_path / "real")


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="starts /bin/sh (the Windows choice is made by parameter)")


async def _tree() -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    """A shell leading its own session with two children, as a command of the desktop tools is started."""
    root = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    members = await until(lambda: len(_proc.descendants(root.pid)) == 2 and _proc.descendants(root.pid))
    return root, members


def _kill(root: subprocess.Popen[bytes], members: list[psutil.Process]) -> None:
    for m in members:
        try:
            m.kill()
        except psutil.Error:
            pass
    root.kill()
    root.wait()


@posix_only
async def test_the_windows_tree_kill_signals_the_command_and_its_members_never_a_group() -> None:
    root, members = await _tree()
    try:
        _proc.signal_tree(root.pid, [], signal.SIGTERM, platform="win32")
        assert root.wait(timeout=10) == -signal.SIGTERM  # the command itself, which Windows must end too
        assert all(_proc.alive(m) for m in members)  # no process group signal on Windows
        _proc.signal_tree(root.pid, members, signal.SIGTERM, platform="win32")
        _, left = psutil.wait_procs(members, timeout=10)
        assert not left
    finally:
        _kill(root, members)


@posix_only
async def test_the_posix_tree_kill_signals_the_whole_group() -> None:
    root, members = await _tree()
    try:
        _proc.signal_tree(root.pid, [], signal.SIGTERM, platform="linux")
        root.wait(timeout=10)
        _, left = psutil.wait_procs(members, timeout=10)
        assert not left
    finally:
        _kill(root, members)


class _FakeJob:
    """Stands in for the Windows Job Object (no such thing here): records what the command asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def terminate(self) -> None:
        self.calls.append("terminate")

    def close(self) -> None:
        self.calls.append("close")


@posix_only
async def test_a_plain_command_ends_its_job_object_then_its_tree_then_closes_the_job(tmp_path: Path) -> None:
    command = await _sandbox._start_plain(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"], str(tmp_path),
                                          {"PATH": "/usr/bin:/bin"}, UNCONFINED)
    assert isinstance(command, _sandbox._Plain)
    assert command.job is None  # no Job Objects off Windows
    job = _FakeJob()
    command.job = job
    members = await until(lambda: len(_proc.descendants(command.proc.pid)) == 2 and _proc.descendants(command.proc.pid))
    await command.finish(at_once=False, grace=5)
    assert job.calls == ["terminate", "close"]
    assert command.proc.returncode is not None
    _, left = psutil.wait_procs(members, timeout=10)
    assert not left
