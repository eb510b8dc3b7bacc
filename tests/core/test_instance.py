"""core/instance.py: the per-HOME-and-host agent lock and the owner record inside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hermes_relay.core import instance, paths
from hermes_relay.core.errors import AgentAlreadyRunningError


def _owner(sock: str, runtime: str) -> dict:  # type: ignore[type-arg]
    return instance.owner_record(socket_path=sock, runtime_dir=runtime, started_at=1.0)


def test_the_lock_lives_under_hermes_home_and_names_the_host(tmp_path: Path) -> None:
    env = {"HERMES_HOME": str(tmp_path / "h"), "XDG_RUNTIME_DIR": "/run/user/1"}
    assert paths.home_lock_file(env, "box") == tmp_path / "h" / "agent-box.lock"
    assert paths.home_lock_file(env) == tmp_path / "h" / f"agent-{instance.host_name()}.lock"
    assert paths.home_lock_file({**env, "XDG_RUNTIME_DIR": "/elsewhere"}) == paths.home_lock_file(env)


def test_a_second_holder_is_told_who_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "agent-box.lock"
    with instance.hold(lock, _owner("/run/a/agent.sock", "/run/a")):
        assert instance.running_owner(lock) is None or instance.running_owner(lock)["pid"] == os.getpid()
        with pytest.raises(AgentAlreadyRunningError) as info:
            with instance.hold(lock, _owner("/run/b/agent.sock", "/run/b")):
                pass
    assert f"pid {os.getpid()}" in info.value.message and "socket /run/a/agent.sock" in info.value.message
    assert info.value.hint == f"run the CLI with HERMES_RELAY_RUNTIME_DIR=/run/a to reach it, or stop it (`kill {os.getpid()}`) and start it from here"
    assert instance.read_owner(lock) is None  # a clean exit leaves no record


def test_two_hosts_sharing_a_home_each_get_their_agent(tmp_path: Path) -> None:
    env = {"HERMES_HOME": str(tmp_path)}
    a, b = paths.home_lock_file(env, "alpha"), paths.home_lock_file(env, "beta")
    with instance.hold(a, _owner("/run/a/agent.sock", "/run/a")), instance.hold(b, _owner("/run/b/agent.sock", "/run/b")):
        assert instance.read_owner(a)["socket"] == "/run/a/agent.sock"  # type: ignore[index]
        assert instance.read_owner(b)["socket"] == "/run/b/agent.sock"  # type: ignore[index]


def test_a_stale_record_of_a_dead_agent_is_not_reported(tmp_path: Path) -> None:
    lock = tmp_path / "agent-x.lock"
    lock.write_text(json.dumps({"pid": 999999999, "host": instance.host_name(), "socket": "/s"}))
    assert instance.running_owner(lock) is None
    lock.write_text(json.dumps({"pid": os.getpid(), "host": instance.host_name(), "socket": "/s"}))
    assert instance.running_owner(lock)["socket"] == "/s"  # type: ignore[index]
    lock.write_text("not json")
    assert instance.running_owner(lock) is None
