"""Where the runtime directory and the logs go on each platform (decided here with an explicit platform)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hermes_relay.core import paths

HOME = "/home/u"
LOCAL = r"C:\Users\u\AppData\Local"


def test_linux_prefers_the_xdg_runtime_dir_and_keeps_logs_in_hermes_home() -> None:
    env = {"HOME": HOME, "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert paths.runtime_dir_str(env, "linux") == os.path.join("/run/user/1000", "hermes-relay")
    assert paths.runtime_dir_str({"HOME": HOME}, "linux") == os.path.join(HOME, ".hermes", "run")
    assert paths.log_dir(env, "linux") == Path(HOME, ".hermes", "logs")


def test_windows_keeps_runtime_state_and_logs_in_the_local_app_data() -> None:
    env = {"USERPROFILE": r"C:\Users\u", "HOME": r"C:\Users\u", "LOCALAPPDATA": LOCAL,
           "XDG_RUNTIME_DIR": "/not/on/windows"}
    assert paths.runtime_dir_str(env, "win32") == os.path.join(LOCAL, "hermes-relay", "run")
    assert paths.runtime_dir(env, "win32") == Path(LOCAL, "hermes-relay", "run")
    assert paths.log_dir(env, "win32") == Path(LOCAL, "hermes-relay", "logs")
    # the store other Hermes clients share stays in ~/.hermes
    assert paths.hermes_home_str(env) == os.path.join(r"C:\Users\u", ".hermes")


def test_windows_without_local_app_data_falls_back_to_hermes_home() -> None:
    env = {"HOME": r"C:\Users\u"}
    assert paths.runtime_dir_str(env, "win32") == os.path.join(r"C:\Users\u", ".hermes", "run")
    assert paths.log_dir(env, "win32") == Path(r"C:\Users\u", ".hermes", "logs")


def test_macos_logs_go_to_library_logs_and_the_runtime_dir_stays_short() -> None:
    env = {"HOME": "/Users/u", "TMPDIR": "/var/folders/xy/T/", "XDG_RUNTIME_DIR": "/tmp/xdg"}
    assert paths.log_dir(env, "darwin") == Path("/Users/u/Library/Logs/hermes-relay")
    assert paths.runtime_dir_str(env, "darwin") == "/Users/u/.hermes/run"
    assert len(os.path.join(paths.runtime_dir_str(env, "darwin"), "agent.sock")) < 104


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_the_overrides_win_everywhere(platform: str) -> None:
    env = {"HOME": HOME, "LOCALAPPDATA": LOCAL, "XDG_RUNTIME_DIR": "/run/user/1",
           "HERMES_RELAY_RUNTIME_DIR": "/r", "HERMES_RELAY_LOG_DIR": "/l"}
    assert paths.runtime_dir_str(env, platform) == "/r"
    assert paths.log_dir(env, platform) == Path("/l")
