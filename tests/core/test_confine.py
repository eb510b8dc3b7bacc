"""What no relay host may touch below full access: the agent's state and the paths that run code at login."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hermes_relay.core import confine


def test_the_agents_state_and_runtime_directory_are_protected(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "HERMES_RELAY_RUNTIME_DIR": str(tmp_path / "run")}
    protected = confine.protected_paths(env)
    assert tmp_path / ".hermes" in protected and tmp_path / "run" in protected


def test_login_files_path_entries_and_the_agents_own_interpreter_are_never_writable(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": f"{tmp_path}/.local/bin:/usr/bin:relative/bin"}
    written = confine.persistence_paths(env)
    for name in (".bashrc", ".profile", ".zshrc", ".ssh", ".config/systemd", ".config/autostart", ".gitconfig"):
        assert tmp_path / name in written, name
    assert Path("/usr/bin") in written and Path("relative/bin") not in written
    # A pyenv or a venv's base interpreter under the home directory would otherwise be inside a root:
    # changing its site.py runs code in the agent at its next start, outside any sandbox.
    for own in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        assert Path(os.path.abspath(own)) in written, own


def test_the_landlock_abi_is_a_number() -> None:
    abi = confine.landlock_abi()
    assert isinstance(abi, int) and abi >= 0
