"""`hermes-relay shell` under faults while the user types: the bytes that reach the remote PTY are exactly
what was typed (none lost, doubled or reordered), and the shell keeps working after. Real relay, agent and
CLI processes on a pty (tests/e2e/shellrig.py); the recorder on the relay host is the witness."""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest
from procs import wait_state
from shell_typist import TOKEN, Typist, diff_keys, key, key_counts
from shellrig import ShellRig, ShellScreen

from hermes_relay.core import api

pytestmark = pytest.mark.integration


def _typed_through(rig: ShellRig, fault, settle, *, history: bool = False) -> ShellScreen:  # type: ignore[no-untyped-def]
    """Type keys, cause ``fault`` mid-stream, wait for ``settle`` while typing on, then compare. ``history``:
    first print more than a screenful (a new attachment's output must not hide behind the old offsets)."""
    sh = rig.shell()
    if history:
        start = sh.mark()
        sh.type(b"seq 100001 102000; echo seq-$((1+1))\r")
        sh.wait_screen(b"seq-2", start=start, timeout=15)
    rec = rig.start_recorder(sh)
    typist = Typist(sh).start()
    try:
        typist.wait_keys(40)
        fault()
        settle()
        at = typist.count
        typist.wait_keys(40)
        sh.wait_screen(key(at + 5), timeout=20)  # the recorder echoes keys typed after the fault
    finally:
        typed = typist.stop()
    count = rig.stop_recorder(sh, timeout=30)
    assert diff_keys(typed, rec.read_bytes()) == "", rig.dump(sh)
    assert count == len(typed)
    assert b"in doubt" not in sh.screen and b"were dropped" not in sh.screen, rig.dump(sh)  # our relay: exact
    rig.wait_prompt_works(sh, "after")
    return sh


def test_failover_while_typing(tmp_path) -> None:
    rig = ShellRig(tmp_path).start()
    try:
        _typed_through(rig, lambda: rig.proxy.command("down"),
                       lambda: wait_state(rig.agent, lambda s: s["state"] == api.CONNECTED
                                          and s["route"]["role"] == "public", timeout=20))
    finally:
        rig.close()


def test_black_hole_while_typing(tmp_path) -> None:
    rig = ShellRig(tmp_path).start()  # the default 20 s keepalive: the shell's own suspicion must move it
    try:
        _typed_through(rig, lambda: rig.proxy.command("blackhole"),
                       lambda: wait_state(rig.agent, lambda s: s["state"] == api.CONNECTED
                                          and s["route"]["role"] == "public", timeout=20))
    finally:
        rig.close()


def test_relay_restart_while_typing_in_tmux(tmp_path) -> None:
    """A clean relay restart: the final ack on shutdown leaves no input in doubt; the tmux session (and the
    recorder in it) lives on, the new attachment is fresh, and the unacknowledged input is sent to it once."""
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        def restart() -> None:
            rig.restart_relay()

        _typed_through(rig, restart,
                       lambda: wait_state(rig.agent, lambda s: s["state"] == api.CONNECTED, timeout=20), history=True)
    finally:
        rig.close()


@pytest.mark.parametrize("tmux", [False, True], ids=["bare", "tmux"])
def test_agent_kill_9_while_typing(tmp_path, tmux: bool) -> None:
    """The CLI restarts the agent and reopens with its stream, out_seq and unacknowledged input: our relay
    resumes the same attachment exactly once and the screen continues."""
    rig = ShellRig(tmp_path, tmux=tmux).start()
    try:
        old = rig.agent_pid()
        sh = _typed_through(rig, lambda: os.kill(old, signal.SIGKILL), lambda: None)
        assert rig.agent_pid() != old
        assert b"in doubt" not in sh.screen
    finally:
        rig.close()


def test_bare_relay_restart_while_typing_keeps_what_was_acked_and_says_what_was_dropped(tmp_path) -> None:
    """A bare shell ends with the relay: the keys it got are in the file exactly once, the keys typed during
    the gap are dropped with a notice (never typed into the new shell meant for the old one), and the new
    shell works."""
    rig = ShellRig(tmp_path).start()
    try:
        sh = rig.shell()
        rec = rig.start_recorder(sh)
        typist = Typist(sh).start()
        try:
            typist.wait_keys(30)
            sh.wait_screen(key(29), timeout=15)  # the 30th key, echoed by the recorder: it reached the PTY
            rig.restart_relay()
            sh.wait_screen(b"typed during the gap were dropped (the relay started a new shell)", timeout=20)
        finally:
            typed = typist.stop()
        got = rec.read_bytes()
        assert typed.startswith(got) and got.startswith(typed[:30 * TOKEN]), diff_keys(typed, got)
        sh.type(b"\x15")  # the keys typed into the new shell after the reattach: erase them
        rig.wait_prompt_works(sh, "fresh")
    finally:
        rig.close()


def test_a_paste_through_failover_arrives_exactly_once(tmp_path) -> None:
    """245 KB pasted at once (beyond the CLI's and the agent's windows) while LAN goes down."""
    rig = ShellRig(tmp_path).start()
    try:
        sh = rig.shell()
        rec = rig.start_recorder(sh)
        blob = b"".join(key(i) for i in range(35000))
        paster = threading.Thread(target=sh.type, args=(blob,), daemon=True)  # blocks while the CLI is full
        paster.start()
        sh.wait_screen(key(1000), timeout=20)
        rig.proxy.command("down")
        sh.wait_screen(key(34999), timeout=60)
        paster.join(10)
        assert rig.stop_recorder(sh, timeout=30) == len(blob)
        assert diff_keys(blob, rec.read_bytes()) == "", rig.dump(sh)
        assert rig.route()["label"] != "LAN"
    finally:
        rig.close()


def test_relay_crash_while_typing_in_tmux_is_at_most_once(tmp_path) -> None:
    """kill -9 of the relay: no final ack, so what was in flight is in doubt. Nothing is doubled or
    reordered, and what is lost is no more than the in-doubt bytes the user was told about."""
    rig = ShellRig(tmp_path, tmux=True).start()
    try:
        sh = rig.shell()
        rec = rig.start_recorder(sh)
        typist = Typist(sh).start()
        try:
            typist.wait_keys(40)
            rig.crash_relay()
            at = typist.count
            typist.wait_keys(40)
            sh.wait_screen(key(at + 5), timeout=20)
        finally:
            typed = typist.stop()
        assert rig.stop_recorder(sh, timeout=30) == len(rec.read_bytes())
        got = rec.read_bytes()
        have, dup, reorder, garbled = key_counts(got)
        assert (dup, reorder, garbled) == (0, 0, 0), diff_keys(typed, got)  # nothing doubled, reordered or cut
        assert have <= key_counts(typed)[0], diff_keys(typed, got)
        told = sum(int(n) for n in re.findall(rb"(\d+) bytes typed just before the drop are in doubt", sh.screen))
        assert len(typed) - len(got) <= told, (diff_keys(typed, got), told)
        rig.wait_prompt_works(sh, "after")
    finally:
        rig.close()
