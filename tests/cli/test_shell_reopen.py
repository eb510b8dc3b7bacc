"""`hermes-relay shell` is the source of record: when the agent dies it reopens with its stream, out_seq and
the input not acknowledged (never what was), gives up after the deadline, and bounds what it holds."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from shell_pty import set_size

from hermes_relay.cli.shellsession import MAX_UNACKED
from hermes_relay.cli.termmode import MODE_RESET


def test_a_restarted_agent_gets_the_stream_out_seq_and_only_the_unacked_input(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty("--exec", "htop", "--raw")
    first = shell_agent.next_call()
    assert first.params["exec"] == "htop" and first.params["raw"] is True
    first.attached(replay=b"old screen\n")
    first.write(b"hello")
    at = sh.wait_screen(b"hello")
    sh.type(b"abc")
    first.wait_input(b"abc")
    first.notify("shell.ack", {"in_seq": 2, "sent": 3})  # "ab" reached the PTY, "c" is on a socket
    first.write(b"world")
    at = sh.wait_screen(b"world", start=at)  # the ack was handled before this output
    sh.type(b"de")
    first.wait_input(b"abcde")

    shell_agent.crash()  # kill -9: no response, nothing listens for a while
    sh.wait_screen(b"the agent restarted, reconnecting", start=at)  # the status line after 1 s of gap
    sh.type(b"f")  # typed during the gap: held, carried by the reopen
    shell_agent.listen()
    second = shell_agent.next_call()
    p = second.params
    assert p["reopen"] is True and p["stream"] == first.params["stream"]
    assert (p["out_seq"], p["in_base"], p["in_sent"]) == (10, 2, 3)
    assert p["unacked"] in (b"cde", b"cdef")  # never "ab": acknowledged input is not resent
    assert p["exec"] is None and p["raw"] is True  # --exec is never re-injected
    at = len(sh.screen)
    second.attached(reattach=True, resumed=True, replay=b"old screen\n")  # a reattach's replay is not printed
    second.write(b"again")
    at2 = sh.wait_screen(b"again", start=at)
    assert b"old screen" not in sh.screen[at:]
    assert b"\x1b[2K" in sh.screen[at:at2]  # the status line was erased when the shell came back
    second.expect("shell.redraw")
    if p["unacked"] == b"cde":
        second.wait_input(b"f")
    assert b"c" not in second.inputs()  # what the reopen carried is not sent again as input
    second.respond("exit", 0)
    assert sh.wait_exit() == 0
    assert sh.termios_now() == sh.before


def test_output_already_written_is_not_written_twice_after_a_reopen(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    first = shell_agent.next_call()
    first.attached()
    first.write(b"0123456789")
    sh.wait_screen(b"0123456789")
    first.drop()
    second = shell_agent.next_call()
    assert second.params["out_seq"] == 10
    at = len(sh.screen)
    second.output(b"6789ABC", 13)  # the relay resent from 6: the CLI writes only what is new
    second.write(b"!")
    sh.wait_screen(b"!", start=at)
    assert bytes(sh.screen[at:]).endswith(b"ABC!")
    assert b"6789" not in sh.screen[at:]
    second.respond("exit", 0)
    assert sh.wait_exit() == 0


def test_the_agent_gone_for_good_restores_and_exits_1_after_the_deadline(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty(extra_env={"HERMES_RELAY_TEST_SHELL_REOPEN": "0.5"})
    call = shell_agent.next_call()
    call.attached()
    call.write(b"\x1b[?1049h\x1b[?1000h")
    at = sh.wait_screen(b"\x1b[?1000h")
    shell_agent.crash()
    assert sh.wait_exit() == 1
    assert sh.termios_now() == sh.before
    assert MODE_RESET in sh.screen[at:]
    assert "could not get the shell back within 0.5 s" in sh.stderr()


@pytest.mark.parametrize(("reason", "code", "message"), [("replaced", 1, "another hermes-relay shell took"),
                                                          ("lost", 1, "did not come back")])
def test_replaced_and_lost_exit_1_with_a_message(shell_agent, shell_on_pty, reason: str, code: int, message: str) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    call.attached()
    call.write(b"x")
    sh.wait_screen(b"x")
    call.respond(reason)
    assert sh.wait_exit() == code
    assert message in sh.stderr()
    assert sh.termios_now() == sh.before


def test_a_link_gap_shows_a_status_line_with_the_route_and_queued_keys(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    call.attached()
    call.write(b"x")
    at = sh.wait_screen(b"x")
    call.notify("shell.link", {"state": "reconnecting", "route": "Tailscale", "reason": "LAN down", "queued": 0})
    sh.type(b"12345")
    call.wait_input(b"12345")
    end = sh.wait_screen(b"reconnecting via Tailscale\xe2\x80\xa6 5 keys queued", start=at)
    assert b"\x1b7\x1b[24;1H\x1b[7m" in sh.screen[at:end]  # saved cursor, bottom line, reverse video
    call.notify("shell.link", {"state": "live", "route": "Tailscale", "reason": "", "queued": 0})
    sh.wait_screen(b"\x1b7\x1b[24;1H\x1b[2K\x1b8", start=end)
    call.expect("shell.redraw")
    call.notify("shell.notice", {"text": "3 bytes typed during the drop are in doubt and were not resent"})
    sh.wait_screen(b"in doubt and were not resent", start=end)
    call.respond("exit", 0)
    assert sh.wait_exit() == 0


def test_input_is_bounded_at_64_kib_unacknowledged_then_resumes_on_ack(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty()
    call = shell_agent.next_call()
    call.attached()
    call.write(b"x")
    sh.wait_screen(b"x")
    typed = bytes(i % 200 + 32 for i in range(MAX_UNACKED + 6000)).replace(b"\x01", b"a")
    writer = threading.Thread(target=sh.type, args=(typed,))
    writer.start()
    call.wait_for(lambda: len(call.inputs()) >= MAX_UNACKED, "64 KiB of input")
    # A barrier: a resize is sent after everything the CLI read before it; stdin stays readable meanwhile.
    set_size(sh.slave, 90, 20)
    os.kill(sh.proc.pid, signal.SIGWINCH)
    call.expect("shell.resize")
    call.write(b"probe")
    sh.wait_screen(b"probe")
    set_size(sh.slave, 91, 20)
    os.kill(sh.proc.pid, signal.SIGWINCH)
    call.wait_for(lambda: call.methods().count("shell.resize") == 2, "the second resize")
    assert len(call.inputs()) == MAX_UNACKED  # stopped reading at the bound
    call.notify("shell.ack", {"in_seq": MAX_UNACKED, "sent": MAX_UNACKED})
    call.wait_for(lambda: len(call.inputs()) == len(typed), "the rest of the input")
    writer.join(10)
    assert call.inputs() == typed
    seqs = [(p["seq"], len(p["d"])) for m, p in call.received if m == "shell.input"]
    assert all(a + n == b for (a, n), (b, _) in zip(seqs, seqs[1:], strict=False))  # contiguous offsets
    call.respond("exit", 0)
    assert sh.wait_exit() == 0


def test_an_agent_that_dies_right_after_the_open_is_reopened(shell_agent, shell_on_pty) -> None:
    sh = shell_on_pty("--exec", "make")
    first = shell_agent.next_call()
    first.drop()
    second = shell_agent.next_call()
    assert second.params["reopen"] is True and second.params["stream"] == first.params["stream"]
    assert second.params["exec"] is None
    second.attached()
    second.write(b"back")
    sh.wait_screen(b"back")
    second.respond("exit", 0)
    assert sh.wait_exit() == 0
    assert sh.termios_now() == sh.before
