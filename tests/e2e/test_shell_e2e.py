"""`hermes-relay shell` through real relay, agent and CLI processes on a pty (tests/e2e/shellrig.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from procs import pair_env
from shell_typist import Typist, diff_keys
from shellrig import ShellRig

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path):  # type: ignore[no-untyped-def]
    r = ShellRig(tmp_path).start()
    yield r
    r.close()


def test_echo_and_the_remote_exit_status(rig: ShellRig) -> None:
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    sh.type(b"exit 3\r")
    assert sh.wait_exit(15) == 3
    sh.assert_restored()


def test_detach_chord_restores_the_terminal(rig: ShellRig) -> None:
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    sh.type(b"\x01.")  # Ctrl+A .
    assert sh.wait_exit(15) == 0
    sh.assert_restored()
    assert "detached from 'main'" in sh.stderr()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_the_cli_restores_the_terminal(rig: ShellRig, signum: int) -> None:
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    sh.signal(signum)
    assert sh.wait_exit(15) == 128 + signum
    sh.assert_restored()


def test_agent_killed_with_no_restart_possible_restores_the_terminal(rig: ShellRig) -> None:
    sh = rig.shell(pre=("--no-autostart",), cli_env={"HERMES_RELAY_TEST_SHELL_REOPEN": "1"})
    rig.wait_prompt_works(sh)
    os.kill(rig.agent_pid(), signal.SIGKILL)
    assert sh.wait_exit(15) == 1
    sh.assert_restored()
    assert "lost the agent" in sh.stderr()


def test_the_recorder_holds_exactly_what_was_typed(rig: ShellRig) -> None:
    sh = rig.shell()
    rec = rig.start_recorder(sh)
    typist = Typist(sh, interval=0.002).start()
    typist.wait_keys(200)
    typed = typist.stop()
    assert rig.stop_recorder(sh) == len(typed)
    assert diff_keys(typed, rec.read_bytes()) == ""
    rig.wait_prompt_works(sh, "after")


def test_sessions_list_shows_the_shell_and_kill_ends_it(tmp_path) -> None:
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        sh = rig.shell("--session", "work")
        rig.wait_prompt_works(sh)
        listed = rig.agent.cli("--json", "sessions", "list")
        assert listed.returncode == 0, listed.stderr
        [work] = [s for s in json.loads(listed.stdout)["sessions"] if s["name"] == "work"]
        assert work["tmux_name"] == "hermes-work" and work["attached"] == 1 and work["live"] is True
        assert "work" in rig.agent.cli("sessions", "list").stdout

        killed = rig.agent.cli("sessions", "kill", "work")
        assert killed.returncode == 0, killed.stderr
        assert sh.wait_exit(15) == 0  # the attached CLI is told, and leaves
        sh.assert_restored()
        assert "session 'work' killed" in sh.stderr()
        after = json.loads(rig.agent.cli("--json", "sessions", "list").stdout)["sessions"]
        assert not [s for s in after if s["name"] == "work"]
    finally:
        rig.close()


def _revoke(rig: ShellRig) -> None:
    """``hermes-relay-server sessions revoke`` on the relay host, for the one paired device."""
    relay_cmd = [sys.executable, "-m", "hermes_relay.relay", "sessions", "--relay", rig.relay.url]
    listed = subprocess.run([*relay_cmd, "--json", "list"], capture_output=True, text=True, timeout=30,
                            env=pair_env(rig.relay.state_dir))
    [device] = json.loads(listed.stdout)["sessions"]
    revoked = subprocess.run([*relay_cmd, "revoke", device["token_prefix"], "--yes"], capture_output=True,
                             text=True, timeout=30, env=pair_env(rig.relay.state_dir))
    assert revoked.returncode == 0, revoked.stderr


def test_revocation_unheard_on_a_silent_link_ends_the_shell_when_the_relay_refuses_the_token(rig: ShellRig) -> None:
    """The relay's goodbye is lost in a black hole: the agent learns of the revocation when it reconnects
    (the relay refuses the token) and ends the shell then, not 60 s later as a link that did not come back."""
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    rig.proxy.command("blackhole")
    _revoke(rig)
    sh.type(b"x")  # unacknowledged input: the agent suspects the link within a second or two
    assert sh.wait_exit(30) == 1
    sh.assert_restored()
    err = sh.stderr()
    assert "revoked" in err and "did not come back" not in err, err


def test_revocation_on_the_relay_host_ends_the_shell_with_a_clear_message(rig: ShellRig) -> None:
    sh = rig.shell()
    rig.wait_prompt_works(sh)
    relay_cmd = [sys.executable, "-m", "hermes_relay.relay", "sessions", "--relay", rig.relay.url]
    listed = subprocess.run([*relay_cmd, "--json", "list"], capture_output=True, text=True, timeout=30,
                            env=pair_env(rig.relay.state_dir))
    [device] = json.loads(listed.stdout)["sessions"]
    revoked = subprocess.run([*relay_cmd, "revoke", device["token_prefix"], "--yes"], capture_output=True, text=True,
                             timeout=30, env=pair_env(rig.relay.state_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert sh.wait_exit(20) == 1
    sh.assert_restored()
    err = sh.stderr()
    assert "the relay ended the shell: this device's session was revoked" in err, err
    assert "did not come back" not in err


def test_a_new_shell_on_a_living_tmux_session_types_no_launch_line_into_it(tmp_path) -> None:
    """`hermes-relay shell` (not --raw) starts hermes only in a fresh session: the user's running session,
    reached again from a new CLI, gets no `clear; exec hermes` typed into it."""
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        first = rig.shell("--session", "keep", name="first")
        rig.wait_prompt_works(first)
        first.type(b"\x01.")
        assert first.wait_exit(15) == 0
        again = rig.shell("--session", "keep", name="again", raw=False)
        rig.wait_prompt_works(again, "still")
        # A launch is typed 100 ms after the output goes quiet (2 s after the attach at the latest); the tty
        # echoes it at once, while this command still runs.
        start = again.mark()
        again.type(b"sleep 1; echo done-$((1+1))\r")
        again.wait_screen(b"done-2", start=start, timeout=15)
        again.type(b"\x01.")
        assert again.wait_exit(15) == 0
        assert b"exec hermes" not in again.screen, rig.dump(again)
    finally:
        rig.close()


def test_kill_chord_ends_the_tmux_session_and_restores_the_terminal(tmp_path) -> None:
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        sh = rig.shell("--session", "doomed")
        rig.wait_prompt_works(sh)
        sh.type(b"\x01k")  # Ctrl+A k
        assert sh.wait_exit(15) == 0
        sh.assert_restored()
        assert "session 'doomed' killed" in sh.stderr()
        listed = json.loads(rig.agent.cli("--json", "sessions", "list").stdout)["sessions"]
        assert not [s for s in listed if s["name"] == "doomed"]
    finally:
        rig.close()


def test_a_second_shell_on_the_session_replaces_the_first_which_restores_its_terminal(tmp_path) -> None:
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        first = rig.shell("--session", "two", name="first")
        rig.wait_prompt_works(first)
        second = rig.shell("--session", "two", name="second")
        rig.wait_prompt_works(second, "second")
        assert first.wait_exit(15) == 1
        first.assert_restored()
        assert "another hermes-relay shell took session 'two'" in first.stderr()
        second.type(b"\x01.")
        assert second.wait_exit(15) == 0
    finally:
        rig.close()
