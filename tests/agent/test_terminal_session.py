"""One TerminalSession (agent/terminal/session.py) under trio's autojump clock, against a port that records
what the agent sends: the state machine, exact virtual times (queued keys dropped at 60 s, suspicion
after 1 s, the launch after 100 ms of quiet), in-doubt accounting, and that no byte is ever sent twice."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from terminal_fakes import STREAM, FakePort, Shell, attached, connect, inputs, ours, running, wait_for

from hermes_relay.agent.terminal import session as session_mod
from hermes_relay.agent.terminal.ledger import MAX_IN_FLIGHT
from hermes_relay.agent.terminal.outbox import Outbox
from hermes_relay.agent.terminal.session import State
from hermes_relay.core import api, rpc
from hermes_relay.core.errors import ForbiddenError, SessionRevokedError


async def test_reference_in_flight_input_is_in_doubt_never_resent_and_queued_keys_follow(autojump_clock: Any) -> None:
    shell = Shell()
    async with running(shell):
        first = FakePort("LAN")
        await connect(shell, first)
        shell.session.typed(0, b"ls\n")
        assert (await first.next())["payload"] == {"session_name": "main", "data": "ls\n"}
        ping = await first.next()
        assert (ping["channel"], ping["type"], ping["id"]) == ("system", "ping", "in-3")
        await trio.sleep(0.2)
        shell.session.pong("in-3")
        await wait_for(lambda: shell.session.ledger.acked == 3)
        await trio.sleep(5)  # long after the ack: "ls\n" is not in doubt
        shell.session.typed(3, b"abc")
        assert (await first.next())["payload"]["data"] == "abc"
        assert (await first.next())["id"] == "in-6"
        shell.session.lost(first)  # the pong of in-6 never comes
        assert shell.session.state is State.SUSPENDED
        shell.session.typed(6, b"xyz")  # typed during the gap: queued
        second = FakePort("public")
        await connect(shell, second)
        assert (await second.next())["payload"]["data"] == "xyz"
        assert (await second.next())["id"] == "in-9"
        shell.session.pong("in-9")
        await wait_for(lambda: shell.session.ledger.acked == 9)
        shell.session.on_message(second, "terminal.detached", {"session_name": "main", "reason": "eof"})
    assert shell.result == {"reason": "exit", "code": None}
    sent = b"".join(p["data"].encode() for p in inputs(first) + inputs(second))
    assert sent == b"ls\nabcxyz"  # every byte once: "abc" was in doubt and is not sent again
    assert any("3 bytes" in n["text"] and "in doubt" in n["text"] for n in shell.of(api.SHELL_NOTICE))
    assert shell.of(api.SHELL_ACK)[-1] == {"in_seq": 9, "sent": 9}
    links = shell.of(api.SHELL_LINK)
    assert {"state": "reconnecting", "route": "LAN", "reason": "connection lost", "queued": 0} in links
    assert {"state": "reconnecting", "route": "LAN", "reason": "waiting for the relay", "queued": 3} in links
    assert links[-1]["state"] == "live" and links[-1]["route"] == "public"


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage().split(" session=main ")[1] for r in caplog.records if r.getMessage().startswith(event)]


async def test_input_acked_within_a_round_trip_before_the_drop_is_reported_in_doubt(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=session_mod.__name__)
    shell = Shell()
    async with running(shell):
        port = FakePort()
        await connect(shell, port)
        shell.session.typed(0, b"rm x\r")
        await port.next()
        await port.next()
        await trio.sleep(0.4)
        shell.session.pong("in-5")  # a round trip of 0.4 s
        await trio.sleep(0.1)
        shell.session.lost(port)  # 0.1 s after the pong: it may have overtaken the input
        shell.session.want("detach")
    assert shell.result == {"reason": "detached", "code": None}
    assert shell.session.ledger.in_doubt == 5
    assert "5 bytes typed just before the drop are in doubt and were not resent" in shell.session.notices
    assert logged(caplog, "terminal_input_in_doubt") == ["start=0 end=5"]  # the CLI's offsets, for a soak to check


async def test_keys_queued_in_a_gap_are_dropped_at_exactly_60_seconds(autojump_clock: Any) -> None:
    shell = Shell()
    async with running(shell):
        port = FakePort()
        await connect(shell, port)
        lost_at = trio.current_time()
        shell.session.lost(port)
        await trio.sleep(30)
        shell.session.typed(0, b"late keys")
        await shell.ended.wait()
    assert shell.result == {"reason": "lost", "code": None}
    notice_at, _, notice = next(n for n in shell.notifies if n[1] == api.SHELL_NOTICE)
    assert notice_at - lost_at == pytest.approx(session_mod.GAP_LIMIT, abs=1e-9)
    assert notice["text"].startswith("9 bytes typed during the gap were dropped")
    assert shell.of(api.SHELL_LINK)[-1]["state"] == "lost"
    assert inputs(port) == []


async def test_our_relay_resumes_exactly_and_every_byte_arrives_once(autojump_clock: Any) -> None:
    shell = Shell()
    data = bytes(range(32, 127)) * 400  # 38 000 bytes: several chunks and a full window
    async with running(shell):
        first = FakePort()
        attach = await connect(shell, first, resume=ours())
        assert attach["payload"]["resume"] == {"v": 1, "stream": STREAM, "out_seq": 0, "in_seq": 0,
                                                "in_shift": 0}
        shell.session.typed(0, data)
        await wait_for(lambda: shell.session.ledger.in_flight >= MAX_IN_FLIGHT - 4)
        chunks = inputs(first)
        assert all(len(c["data"]) <= 4096 for c in chunks)
        assert sum(len(c["data"]) for c in chunks) == MAX_IN_FLIGHT
        shell.session.on_message(first, "terminal.ack", {"session_name": "main", "in_seq": 5000})
        await wait_for(lambda: shell.session.ledger.sent == 5000 + MAX_IN_FLIGHT)
        shell.session.lost(first)
        second = FakePort()
        await connect(shell, second, resume=ours(in_seq=9000, resumed=True))
        await wait_for(lambda: shell.session.ledger.sent == 9000 + MAX_IN_FLIGHT)
        while shell.session.ledger.acked < len(data):
            sent = shell.session.ledger.sent
            shell.session.on_message(second, "terminal.ack", {"session_name": "main", "in_seq": sent})
            await wait_for(lambda sent=sent: shell.session.ledger.acked == sent  # type: ignore[misc]
                           and (shell.session.ledger.sent > sent or sent == len(data)))
        shell.session.want("detach")
    received = bytearray(data[:9000])  # what the relay wrote from the first connection (its resume.in_seq)
    for c in inputs(second):  # a relay that drops what it has (below its in_seq) and refuses gaps
        seq, chunk = c["seq"], c["data"].encode()
        assert seq <= len(received)
        received += chunk[len(received) - seq:]
    assert inputs(second)[0]["seq"] == 9000  # the resend starts exactly at resume.in_seq
    assert [c["seq"] for c in inputs(second)] == sorted(c["seq"] for c in inputs(second))
    assert bytes(received) == data
    assert not any("in doubt" in n for n in shell.session.notices)


async def test_unacknowledged_input_checks_the_link_after_one_second_and_holds_new_keys(autojump_clock: Any) -> None:
    shell = Shell()
    async with running(shell):
        port = FakePort()
        await connect(shell, port, resume=ours())
        sent_at = trio.current_time()
        shell.session.typed(0, b"a")
        await port.next()
        await port.checked.wait()
        assert trio.current_time() - sent_at == pytest.approx(session_mod.SUSPECT_MIN, abs=1e-9)
        shell.session.typed(1, b"b")
        await trio.sleep(0.5)
        assert [c["data"] for c in inputs(port)] == ["a"]  # suspicious: "b" stays unsent, so it is safe
        shell.session.on_message(port, "terminal.ack", {"session_name": "main", "in_seq": 1})
        assert (await port.next())["payload"]["data"] == "b"
        shell.session.want("detach")
        assert (await port.next())["type"] == "terminal.detach"
        shell.session.on_message(port, "terminal.detached", {"session_name": "main", "reason": "client detach"})
    assert shell.result == {"reason": "detached", "code": None}


async def test_the_program_is_typed_after_first_output_and_quiet_and_never_on_a_reattach(autojump_clock: Any) -> None:
    shell = Shell(raw=False)
    async with running(shell):
        port = FakePort()
        await connect(shell, port)
        await trio.sleep(0.3)
        shell.session.on_message(port, "terminal.output", {"session_name": "main", "data": "$ "})
        await trio.sleep(0.05)
        last = trio.current_time()
        shell.session.on_message(port, "terminal.output", {"session_name": "main", "data": "\r\n$ "})
        launch = await port.next()
        assert launch["payload"]["data"] == "clear; exec hermes\n"
        assert trio.current_time() - last == pytest.approx(session_mod.LAUNCH_QUIET, abs=1e-9)
        shell.session.lost(port)
        again = FakePort()
        await connect(shell, again)
        shell.session.on_message(again, "terminal.output", {"session_name": "main", "data": "redraw"})
        await trio.sleep(5)
        shell.session.want("detach")
    assert inputs(again) == []
    assert [d["d"] for d in shell.of(api.SHELL_OUTPUT)] == [b"$ ", b"\r\n$ ", b"redraw"]
    assert [d["seq_end"] for d in shell.of(api.SHELL_OUTPUT)] == [2, 6, 12]


async def test_a_cli_that_reads_nothing_loses_output_and_a_redraw_is_asked(autojump_clock: Any) -> None:
    shell = Shell()
    shell.gate = trio.Event()
    async with running(shell):
        reference = FakePort()
        await connect(shell, reference)
        for _ in range(70):  # 280 KiB > 256 KiB queued toward a CLI that does not read
            shell.session.on_message(reference, "terminal.output", {"session_name": "main", "data": "x" * 4096})
        nudge = [await reference.next(), await reference.next()]
        assert [(e["type"], e["payload"]["rows"]) for e in nudge] == [("terminal.resize", 23), ("terminal.resize", 24)]
        shell.gate.set()
        shell.session.want("detach")
    assert shell.session.outbox.dropped > 0


async def test_a_cli_gone_without_detaching_detaches_at_once(autojump_clock: Any) -> None:
    shell = Shell()
    async with running(shell):
        port = FakePort()
        await connect(shell, port)
        await shell.inbox_send.send(rpc.Notify(api.SHELL_INPUT, {"seq": 0, "d": b"q"}))
        assert (await port.next())["payload"]["data"] == "q"
        await shell.inbox_send.aclose()
        assert (await port.next())["channel"] == "system"  # the ping of "q"
        assert (await port.next())["type"] == "terminal.detach"
        await shell.ended.wait()
    assert shell.result == {"reason": "detached", "code": None}


async def test_a_new_shell_after_a_lost_attachment_drops_queued_keys_on_our_relay(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=session_mod.__name__)
    shell = Shell()
    async with running(shell):
        first = FakePort()
        await connect(shell, first, resume=ours())
        shell.session.typed(0, b"echo 1\r")
        await first.next()
        shell.session.lost(first)
        shell.session.typed(7, b"echo 2\r")
        second = FakePort()
        await connect(shell, second, resume=ours(gap=True), reattach=False)
        shell.session.typed(14, b"x")
        assert (await second.next())["payload"] == {"session_name": "main", "seq": 0, "data": "x"}
        shell.session.want("detach")
    assert inputs(second) == [{"session_name": "main", "seq": 0, "data": "x"}]
    assert "7 bytes typed just before the drop are in doubt and were not resent" in shell.session.notices
    assert any(n.startswith("7 bytes typed during the gap were dropped") for n in shell.session.notices)
    assert logged(caplog, "terminal_input_in_doubt") == ["start=0 end=7"]
    assert logged(caplog, "terminal_input_dropped") == ["start=7 end=14"]


async def test_a_reopen_after_an_agent_restart_resumes_exactly_on_our_relay(autojump_clock: Any) -> None:
    shell = Shell(reopen=True, in_base=10, in_sent=15, unacked=b"0123456789")
    async with running(shell):
        port = FakePort()
        attach = await connect(shell, port, resume=ours(in_seq=13, out_seq=500, resumed=True), replay="old lines")
        assert attach["payload"]["resume"]["stream"] == STREAM
        assert (await port.next())["payload"] == {"session_name": "main", "seq": 13, "data": "3456789"}
        shell.session.want("detach")
    assert shell.session.notices == []
    (note,) = shell.of(api.SHELL_ATTACHED)
    assert note["resumed"] is True and "replay" not in note  # the CLI's screen is intact: no replay
    assert shell.of(api.SHELL_ACK)[0]["in_seq"] == 13 and shell.of(api.SHELL_ACK)[-1] == {"in_seq": 13, "sent": 20}


async def test_a_reopen_on_the_reference_reports_what_the_dead_agent_sent_as_in_doubt(
        autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=session_mod.__name__)
    shell = Shell(reopen=True, raw=False, in_base=10, in_sent=15, unacked=b"0123456789")
    async with running(shell):
        port = FakePort()
        await connect(shell, port, replay="old lines")
        assert (await port.next())["payload"] == {"session_name": "main", "data": "56789"}
        shell.session.on_message(port, "terminal.output", {"session_name": "main", "data": "$ "})
        await trio.sleep(5)
        shell.session.want("detach")
    assert shell.session.notices == ["5 bytes the previous agent sent are in doubt and were not resent"]
    assert logged(caplog, "terminal_input_in_doubt") == ["start=10 end=15"]
    assert [p["data"] for p in inputs(port)] == ["56789"]  # never "01234", and the program is not typed again
    assert "replay" not in shell.of(api.SHELL_ATTACHED)[0]


async def test_input_and_resizes_are_held_until_attached_and_our_overflow_asks_a_redraw(autojump_clock: Any) -> None:
    shell = Shell()
    shell.gate = trio.Event()
    async with running(shell):
        port = FakePort()
        shell.session.connected(port)
        assert (await port.next())["type"] == "terminal.attach"
        shell.session.typed(0, b"early")
        shell.session.resize(100, 30)
        await trio.sleep(1)
        assert [e["type"] for e in port.log] == ["terminal.attach"]  # the reference would drop them
        attached(port, shell, resume=ours())
        resize = await port.next()
        assert (resize["type"], resize["payload"]["cols"], resize["payload"]["rows"]) == ("terminal.resize", 100, 30)
        assert (await port.next())["payload"] == {"session_name": "main", "seq": 0, "data": "early"}
        for n in range(70):
            shell.session.on_message(port, "terminal.output", {"session_name": "main", "data": "y" * 4096,
                                                               "seq_end": 4096 * (n + 1)})
        assert (await port.next())["type"] == "terminal.redraw"
        shell.gate.set()
        shell.session.want("detach")
    outputs = shell.of(api.SHELL_OUTPUT)
    assert outputs[-1]["seq_end"] == 4096 * 70 and sum(len(o["d"]) for o in outputs) < 4096 * 70


def test_the_outbox_coalesces_marks_and_queued_counts_but_keeps_every_state() -> None:
    box = Outbox()
    box.put(api.SHELL_ACK, {"in_seq": 1, "sent": 2})
    box.put(api.SHELL_ACK, {"in_seq": 2, "sent": 3})
    lost = {"state": "reconnecting", "route": "LAN", "reason": "connection lost", "queued": 0}
    box.put(api.SHELL_LINK, lost)
    for queued in (1, 2, 3):
        box.put(api.SHELL_LINK, {**lost, "reason": "waiting for the relay", "queued": queued})
    assert box._marks == {"in_seq": 2, "sent": 3}  # the newest marks only, sent ahead of the rest
    assert [(m, p) for m, p in box._items] == [
        (api.SHELL_LINK, lost), (api.SHELL_LINK, {**lost, "reason": "waiting for the relay", "queued": 3})]


@pytest.mark.parametrize("our_relay", [False, True])
async def test_input_reaches_the_reference_only_once_the_cli_holds_its_sent_mark(autojump_clock: Any,
                                                                                 our_relay: bool) -> None:
    """An agent started after a kill -9 resends what is above the last ``sent`` mark the CLI heard
    (shell.open's ``in_sent``), and the reference cannot drop a duplicate: the agent may die between
    writing input to the relay and writing the mark to the CLI, so the mark goes first (found by the
    reference soak's reasoning, bench/ref_soak.py). Our relay drops duplicates by offset: no wait there."""
    shell = Shell()
    resume = {"resume": ours()}
    async with running(shell):
        port = FakePort()
        await connect(shell, port, **(resume if our_relay else {}))
        await trio.sleep(1)
        shell.gate = trio.Event()  # the CLI's connection takes nothing for now
        shell.session.typed(0, b"rm x\r")
        await trio.sleep(1)
        assert len(inputs(port)) == (1 if our_relay else 0)
        shell.gate.set()
        await wait_for(lambda: inputs(port) != [])
        assert [p["data"] for p in inputs(port)] == ["rm x\r"]
        shell.session.want("detach")
    assert shell.of(api.SHELL_ACK)[-1]["sent"] == 5


async def test_an_input_gap_from_our_relay_resends_from_its_offset(autojump_clock: Any) -> None:
    shell = Shell()
    async with running(shell):
        port = FakePort()
        await connect(shell, port, resume=ours())
        shell.session.typed(0, b"abc")
        await port.next()
        shell.session.typed(3, b"def")
        await port.next()
        shell.session.on_message(port, "terminal.error", {"message": "gap", "reason": "input_gap", "in_seq": 3,
                                                          "session_name": "main"})
        assert (await port.next())["payload"] == {"session_name": "main", "seq": 3, "data": "def"}
        shell.session.want("detach")
    assert shell.session.ledger.acked == 3


@pytest.mark.parametrize(("reason", "error", "words"), [
    ("revoked", SessionRevokedError, "revoked"),
    ("grant expired", ForbiddenError, "terminal grant expired"),
])
async def test_the_relay_ending_the_attachment_for_access_is_an_error_that_says_why(
        autojump_clock: Any, reason: str, error: type, words: str) -> None:
    """Not a shell that exited (code 0) nor a link that did not come back: the relay refused to go on."""
    shell = Shell()
    raised: list[Exception] = []

    async def run() -> None:
        try:
            await shell.session.run(shell.notify, shell.inbox)
        except Exception as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        port = FakePort()
        await connect(shell, port, resume=ours())
        shell.session.on_message(port, "terminal.detached", {"session_name": "main", "reason": reason})
    [exc] = raised
    assert isinstance(exc, error) and words in exc.message and exc.hint


async def test_a_new_attachment_after_a_relay_restart_continues_the_clis_output_offsets(autojump_clock: Any) -> None:
    """Our relay counts a new attachment's output from 0; the CLI has written more than that already and skips
    what it takes for an overlap, so the agent maps the new offsets onto the CLI's (else the new shell's
    screen stays blank until it has printed as much as the old one had)."""
    shell = Shell()
    async with running(shell):
        first = FakePort()
        await connect(shell, first, resume=ours())
        shell.session.on_message(first, "terminal.output", {"session_name": "main", "data": "old screen",
                                                            "seq_end": 10, "in_seq": 0})
        shell.session.on_message(first, "terminal.detached", {"session_name": "main", "reason": "server shutdown"})
        second = FakePort()
        attach = await connect(shell, second, resume=ours(), reattach=True)
        assert attach["payload"]["resume"]["out_seq"] == 10  # asked to resume; the relay lost it
        shell.session.on_message(second, "terminal.output", {"session_name": "main", "data": "$ ", "seq_end": 2,
                                                             "in_seq": 0})
        await wait_for(lambda: len(shell.of(api.SHELL_OUTPUT)) == 2)
        shell.session.lost(second)
        third = FakePort()
        again = await connect(shell, third, resume=ours(out_seq=2, resumed=True))
        assert again["payload"]["resume"]["out_seq"] == 2  # the relay's own offset, to resume the new attachment
        shell.session.on_message(third, "terminal.output", {"session_name": "main", "data": "x", "seq_end": 3,
                                                            "in_seq": 0})
        await wait_for(lambda: len(shell.of(api.SHELL_OUTPUT)) == 3)
        shell.session.want("detach")
    assert [(o["d"], o["seq_end"]) for o in shell.of(api.SHELL_OUTPUT)] == [(b"old screen", 10), (b"$ ", 12),
                                                                             (b"x", 13)]
