"""`hermes-relay shell` on a real pty against a fake agent: keys, chords, resize, and the terminal back
exactly as it was on every way out."""

from __future__ import annotations

import re
import signal
import subprocess
import termios
from typing import Any

import pytest
from shell_fake import FakeShellCall
from shell_pty import Terminal, set_size

from hermes_relay.cli.termmode import MODE_RESET


def ready(sh: Terminal, call: FakeShellCall, **attached: Any) -> int:
    """Attach and wait until the CLI has written output (so it runs its loop, in raw mode)."""
    call.attached(**attached)
    call.write(b"READY")
    at = sh.wait_screen(b"READY")
    assert sh.is_raw()
    return at


def assert_restored(sh: Terminal, after: int = 0) -> None:
    assert sh.termios_now() == sh.before  # termios exactly as saved
    assert sh.is_raw() is False
    assert MODE_RESET in sh.screen[after:]  # alternate screen, mouse, paste, keys, cursor, SGR reset


def test_keys_go_out_and_output_comes_back_and_a_remote_exit_ends_with_its_code(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    p = call.params
    assert (p["session"], p["cols"], p["rows"], p["term"], p["reopen"]) == ("main", 80, 24, "xterm-256color", False)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", p["stream"])
    assert (p["out_seq"], p["in_base"], p["in_sent"], p["unacked"], p["exec"]) == (0, 0, 0, b"", None)
    at = ready(sh, call, replay=b"line one\nline two\n")
    assert b"line one\r\nline two\r\n" in sh.screen  # OPOST is off: the replay's LF became CRLF
    sh.type(b"echo hi\r")
    assert call.wait_input(b"echo hi\r") == b"echo hi\r"
    assert call.received[0] == ("shell.input", {"seq": 0, "d": call.received[0][1]["d"]})
    call.write(b"echo hi\r\nhi\r\n\x1b[?1049h\x1b[?1000h")
    at = sh.wait_screen(b"hi\r\n", start=at)
    call.respond("exit", 3)
    assert sh.wait_exit() == 3
    assert_restored(sh, at)


def test_detach_chord_asks_the_agent_and_exits_0(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty("--session", "build-2")
    call = shell_agent.next_call()
    assert call.params["session"] == "build-2"
    at = ready(sh, call)
    sh.type(b"ls\x01.")
    call.expect("shell.detach")
    assert call.inputs() == b"ls"  # the chord itself never reaches the remote
    call.respond("detached")
    assert sh.wait_exit() == 0
    assert_restored(sh, at)
    assert "detached from 'build-2'" in sh.stderr()


def test_kill_chord_asks_nothing_more(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    sh.type(b"\x01k")
    call.expect("shell.kill")
    call.respond("killed")
    assert sh.wait_exit() == 0
    assert_restored(sh, at)
    assert "killed" in sh.stderr()


def test_escape_twice_sends_it_once_help_shows_and_other_keys_pass(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    sh.type(b"\x01\x01a")
    call.wait_input(b"\x01a")
    sh.type(b"\x01?")
    sh.wait_screen(b"detach", start=at)
    sh.type(b"\x01xb")  # not a command: both keys go out as typed
    assert call.wait_input(b"\x01a\x01xb") == b"\x01a\x01xb"
    call.respond("exit", 0)
    assert sh.wait_exit() == 0


def test_another_escape_key_and_none(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty("--escape", "^B")
    call = shell_agent.next_call()
    ready(sh, call)
    sh.type(b"\x01.\x02.")
    call.expect("shell.detach")
    assert call.inputs() == b"\x01."
    call.respond("detached")
    assert sh.wait_exit() == 0

    sh = shell_on_pty(extra_env={"HERMES_RELAY_ESCAPE": "none"})
    call = shell_agent.next_call()
    ready(sh, call)
    sh.type(b"\x01.\x01k")
    call.wait_input(b"\x01.\x01k")
    call.respond("exit", 0)
    assert sh.wait_exit() == 0
    assert "shell.detach" not in call.methods() and "shell.kill" not in call.methods()


def test_a_resize_is_sent_on_sigwinch_only_when_the_size_changed(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty(cols=100, rows=30)
    call = shell_agent.next_call()
    assert (call.params["cols"], call.params["rows"]) == (100, 30)
    ready(sh, call)
    set_size(sh.slave, 132, 43)
    sh.signal(signal.SIGWINCH)
    assert call.expect("shell.resize") == {"cols": 132, "rows": 43}
    sh.signal(signal.SIGWINCH)  # the same size again: nothing to send
    sh.type(b"x")
    call.wait_input(b"x")
    assert call.methods() == ["shell.resize", "shell.input"]
    call.respond("exit", 0)
    assert sh.wait_exit() == 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signals_end_the_shell_in_order_with_128_plus_signo(shell_agent, shell_on_pty, signum: int, code: int) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    call.write(b"\x1b[?1049h\x1b[?1003h\x1b[?2004h")  # a full-screen program with mouse and paste on
    sh.signal(signum)
    assert sh.wait_exit() == code
    assert_restored(sh, at)
    call.expect("shell.detach")  # the session lives on; the agent was told
    assert "left session 'main' running" in sh.stderr()


@pytest.mark.parametrize(("frame", "said"), [
    ([0, 99, "surprise", {}], "unexpected message"),  # a request from the agent: not in the protocol
    ([2, "shell.output", {"d": "text, not bytes", "seq_end": 20}], "'d' is not bytes"),
    ([2, "shell.ack", {"in_seq": None, "sent": 1}], "'in_seq' is not int"),
])
def test_an_error_inside_the_loop_restores_the_terminal(shell_agent, shell_on_pty, frame: list[Any], said: str) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    call.send(frame)
    assert sh.wait_exit() == 1
    assert_restored(sh, at)
    assert said in sh.stderr()


def test_an_agent_error_answer_restores_the_terminal_and_says_why(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    call.error("forbidden", "this device has no terminal grant")
    assert sh.wait_exit() == 1
    assert_restored(sh, at)
    assert "no terminal grant" in sh.stderr()


def test_not_a_tty_exits_2_before_contacting_the_agent(shell_agent, shell_on_pty, cli) -> None:
    sh = shell_on_pty(stdin=subprocess.PIPE)
    assert sh.wait_exit() == 2
    assert "needs a terminal" in sh.stderr()
    assert shell_agent.hello_count == 0
    result = cli("shell")  # in-process: StringIO streams; the default fake fails the test if contacted
    assert result.code == 2 and "stdin and stdout must both be ttys" in result.err


def test_bad_session_name_and_escape_key_are_usage_errors(cli) -> None:
    assert cli("shell", "--session", "a.b").code == 2
    assert cli("shell", "--session", "x" * 65).code == 2
    result = cli("shell", "--escape", "^[")
    assert result.code == 2 and "invalid escape key" in result.err


def test_exec_and_conversation_are_bounded_utf8_text(cli) -> None:
    assert "too long" in cli("shell", "--exec", "x" * 4097).err
    assert "NUL" in cli("shell", "--exec", "a\0b").err
    result = cli("shell", "--conversation", "\udcff")
    assert result.code == 2 and "not valid UTF-8" in result.err


def test_a_job_control_stop_and_continue_reenters_raw_mode_and_asks_for_a_redraw(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    ready(sh, call)
    sh.signal(signal.SIGSTOP)
    termios.tcsetattr(sh.slave, termios.TCSANOW, sh.before)  # the user's shell set its own modes meanwhile
    assert not sh.is_raw()
    sh.signal(signal.SIGCONT)
    call.expect("shell.redraw")
    assert sh.is_raw()
    call.respond("exit", 0)
    assert sh.wait_exit() == 0
    assert sh.termios_now() == sh.before


def test_suspend_chord_restores_the_terminal_then_comes_back(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    at = ready(sh, call)
    sh.type(b"\x01z")  # in the test's orphaned process group SIGTSTP is discarded: it comes straight back
    call.expect("shell.redraw")
    assert MODE_RESET in sh.screen[at:] or sh.wait_screen(MODE_RESET, start=at)
    assert sh.is_raw()
    call.respond("exit", 0)
    assert sh.wait_exit() == 0
    assert sh.termios_now() == sh.before


def test_final_reasons_map_to_exit_codes() -> None:
    from hermes_relay.cli.shellscreen import outcome

    codes = [outcome("exit", c, "main").code for c in (0, 3, 255, -9, 300, None, True)]
    assert codes == [0, 3, 255, 1, 1, 0, 0]
    assert [outcome(r, None, "main").code for r in ("detached", "killed", "replaced", "lost", "???")] == [0, 0, 1, 1, 1]
