"""The runtime directory and lock files must be ours alone; the agent at the socket must be us."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hermes_relay.core import ownership
from hermes_relay.core.errors import UnsafeRuntimeError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
NOBODY = 65534


def test_a_missing_path_is_fine_the_caller_creates_it_privately(tmp_path: Path) -> None:
    ownership.check_private(str(tmp_path / "run"), directory=True)
    ownership.check_private(str(tmp_path / "agent.lock"), directory=False)


def test_our_private_directory_and_file_pass(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    lock = run / "agent.lock"
    lock.touch(mode=0o600)
    ownership.check_private(str(run), directory=True)
    ownership.check_private(str(lock), directory=False)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_a_directory_others_can_write_is_refused_naming_it_and_its_mode(tmp_path: Path, mode: int) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    with pytest.raises(UnsafeRuntimeError) as info:
        ownership.check_private(str(run), directory=True)
    assert info.value.message == (f"the runtime directory {run} can be written by other users "
                                  f"(mode {mode & 0o777:04o}): refusing to use it")
    assert info.value.hint == f"run `chmod go-w {run}` (0700 for the directory), or set HERMES_RELAY_RUNTIME_DIR elsewhere"


def test_a_lock_file_others_can_write_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "agent.lock"
    lock.touch()
    lock.chmod(0o666)
    with pytest.raises(UnsafeRuntimeError, match=f"the runtime file {lock} can be written by other users"):
        ownership.check_private(str(lock), directory=False)


def test_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    with pytest.raises(UnsafeRuntimeError, match="is not a directory"):
        ownership.check_private(str(tmp_path / "f"), directory=True)
    with pytest.raises(UnsafeRuntimeError, match="is not a file"):
        ownership.check_private(str(tmp_path), directory=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another uid")
def test_a_directory_owned_by_another_uid_is_refused_even_when_private(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    with pytest.raises(UnsafeRuntimeError) as info:
        ownership.check_private(str(run), directory=True)
    assert info.value.message == (f"the runtime directory {run} belongs to uid {NOBODY}, not to you "
                                  f"(uid {os.getuid()}): refusing to use it")
    assert "remove it" in (info.value.hint or "")


def test_peer_uid_of_our_own_socket_is_ours() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert ownership.peer_uid(a) == os.getuid()
        ownership.check_peer(a, "/x/agent.sock")  # no error
