"""One agent per user and HOME: two runtime directories (su -, cron, ssh) cannot start a second agent.

Real agent processes sharing a HOME with different runtime directories; the second start and a CLI
that finds no agent on its own socket both say where the running agent is.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

from hermes_relay.core import instance, paths

pytestmark = pytest.mark.integration


def _second_shell(make_agent_env, first):  # type: ignore[no-untyped-def]
    """The same user and HOME in another shell: its own XDG_RUNTIME_DIR (as after `su -` or in cron)."""
    other = make_agent_env("other-shell")
    other.env["HERMES_HOME"] = first.env["HERMES_HOME"]
    other.env.pop("HERMES_RELAY_RUNTIME_DIR")
    other.env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="hx-")
    return other


def test_a_second_runtime_dir_does_not_start_a_second_agent(make_agent_env) -> None:
    first = make_agent_env("user")
    with first.client() as c:
        pid = c.hello["pid"]
    other = _second_shell(make_agent_env, first)
    assert paths.socket_path(other.env) != paths.socket_path(first.env)
    second = subprocess.run([sys.executable, "-m", "hermes_relay.agent", "run"], env=other.env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "already running for this user and home" in second.stderr
    assert f"pid {pid} on {instance.host_name()}" in second.stderr
    assert f"socket {paths.socket_path(first.env)}" in second.stderr
    assert f"HERMES_RELAY_RUNTIME_DIR={first.run}" in second.stderr


@pytest.mark.parametrize("autostart", [False, True])
def test_a_cli_with_another_runtime_dir_says_where_the_agent_runs(make_agent_env, autostart: bool) -> None:
    first = make_agent_env("user")
    with first.client() as c:
        pid = c.hello["pid"]
    other = _second_shell(make_agent_env, first)
    out = other.cli("approvals", "list", *([] if autostart else ["--no-autostart"]))
    assert out.returncode == 3, out
    assert "an agent for this home runs with another runtime directory" in out.stderr
    assert f"pid {pid}" in out.stderr and f"HERMES_RELAY_RUNTIME_DIR={first.run}" in out.stderr
    status = other.cli("status")  # never starts an agent; says where the running one is
    assert f"agent: not reachable from this shell: an agent for this home runs with another runtime directory " \
           f"(pid {pid}" in status.stdout.replace("\n", " ")
    with first.client() as c:  # the first agent is the only one, untouched
        assert c.hello["pid"] == pid
