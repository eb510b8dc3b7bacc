"""The terminal channel against a real relay and real shells on PTYs (bare, no tmux): attach, type, see
output with offsets, resume from another socket exactly once, gaps, duplicates, a large paste."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from terminal_clients import Term, connect, exited, pair_device, settings


@pytest.fixture
def relay_test_guard() -> float:
    return 60.0


async def test_attach_to_a_bare_shell_and_see_typed_output_with_offsets(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    attached = await term.attach()
    assert attached["type"] == "terminal.attached", attached
    p = attached["payload"]
    assert p["tmux_available"] is False and p["shell"] == "/bin/sh" and p["reattach"] is False
    assert p["resume"] == {"v": 1, "stream": term.stream, "in_seq": 0, "out_seq": 0, "in_shift": 0, "resumed": False,
                           "gap": False}
    await term.type(b"echo hi$((40+2))\n")
    await term.until_output(b"hi42")
    await term.until_acked(len(term.typed))
    assert term.acked == len(term.typed)


async def test_resume_from_a_new_socket_continues_output_and_input_exactly_once(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, auth = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    target = tmp_path / "typed.txt"
    await term.type(b"stty -echo; cat > " + str(target).encode() + b"\n")
    await term.until_acked(len(term.typed))
    sent_lines = []
    for drop in range(4):
        for i in range(20):
            line = f"line {drop}-{i}\n".encode()
            sent_lines.append(line)
            await term.type(line)
        # Drop the socket with input possibly in flight; resume on a new one from what was acknowledged.
        heard = term.acked
        await term.ws.aclose()
        term.ws = await connect(relay, auth["session_token"])
        reply = await term.attach()
        r = reply["payload"]["resume"]
        assert r["resumed"] is True and r["gap"] is False and r["out_seq"] == term.out_seq
        assert r["in_seq"] <= len(term.typed)
        # Resend from the last ack heard before the drop, which may lie below what the relay has: the overlap
        # must be dropped as duplicate, never written twice.
        resend_from = min(heard, r["in_seq"])
        term.acked = r["in_seq"]
        rest = bytes(term.typed[resend_from:])
        if rest:
            await term.type(rest, seq=resend_from)
        await term.until_acked(len(term.typed))
    await term.type(b"\x04")  # end cat
    await term.type(b"stty echo; echo done$((1+1))\n")
    await term.until_output(b"done2")
    assert target.read_bytes() == b"".join(sent_lines)


async def test_duplicate_input_is_dropped_and_a_gap_is_refused(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    target = tmp_path / "dup.txt"
    await term.type(b"stty -echo; cat > " + str(target).encode() + b"\n")
    start = len(term.typed)
    await term.type(b"abc\n")
    await term.type(b"abc\ndef\n", seq=start)  # overlaps: only def\n is new
    term.typed += b"def\n"
    await term.until_acked(len(term.typed))
    await term.type(b"zzz\n", seq=len(term.typed) + 5)
    err = await term.expect("terminal.error")
    assert err["payload"]["reason"] == "input_gap" and err["payload"]["in_seq"] == len(term.typed)
    await term.type(b"\x04stty echo; echo ok$((2+3))\n")
    await term.until_output(b"ok5")
    assert target.read_bytes() == b"abc\ndef\n"


async def test_a_resume_past_the_ring_is_a_gap_from_the_ring_end(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path, ring_bare=4096))
    ws, auth = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    await term.ws.aclose()
    ws2 = await connect(relay, auth["session_token"])
    other = Term(ws2, stream=term.stream)
    # The orphaned PTY is still read: its output fills (and overflows) the ring while nobody listens.
    r = (await other.attach())["payload"]["resume"]
    await other.type(b"i=0; while [ $i -lt 400 ]; do echo xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo end$((3*3))\n",
                     seq=r["in_seq"])
    await other.until_output(b"end9")
    await other.ws.aclose()
    ws3 = await connect(relay, auth["session_token"])
    late = Term(ws3, stream=term.stream)
    reply = await late.attach()  # out_seq 0: long gone from a 4 KiB ring
    r = reply["payload"]["resume"]
    assert r["resumed"] is True and r["gap"] is True and r["out_seq"] > 4096
    await late.type(b"echo after$((1+1))\n", seq=r["in_seq"])
    await late.until_output(b"after2")  # output continues exactly at the ring's end (recv checks each seq_end)


async def test_a_one_megabyte_paste_into_a_bare_shell_arrives_whole(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    target = tmp_path / "paste.txt"
    await term.type(b"stty -echo; cat > " + str(target).encode() + b"\n")
    line = b"0123456789" * 9 + b"abcdefgh\n"
    paste = line * (1024 * 1024 // len(line) + 1)
    for i in range(0, len(paste), 60_000):
        await term.type(paste[i:i + 60_000])
    with trio.fail_after(60):
        await term.until_acked(len(term.typed))
    await term.type(b"\x04stty echo; echo pasted$((5+5))\n")
    await term.until_output(b"pasted10")
    assert target.read_bytes() == paste


async def test_output_is_exact_bytes_in_frames_text_or_base64_and_resize_reaches_the_shell(relay_factory,
                                                                                         tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    await term.attach()
    # The PTY is the shell's controlling terminal (posix_spawn's setsid + open): a resize signals it.
    await term.type(b"trap 'echo winch$((1+1))' WINCH; echo trapped$((1+2))\n")
    await term.until_output(b"trapped3")
    await term.send("terminal.resize", {"cols": 101, "rows": 33})
    await term.type(b"stty size\n")  # dash runs the trap once it has read a line
    await term.until_output(b"33 101")
    await term.until_output(b"winch2")
    start = term.out_seq
    # 60 000 two-byte characters (frames must cut between them), then a byte that is not UTF-8.
    await term.type(b"i=0; while [ $i -lt 600 ]; do printf '%s' "
                    + ("\u00e9" * 100).encode() + b"; i=$((i+1)); done; printf '\\377\\n'; echo fin$((7+7))\n")
    await term.until_output(b"fin14", start)
    body = bytes(term.out[start:])
    assert "é".encode() * 60000 + b"\xff" in body
    assert term.b64_frames >= 1
    text_frames = [m for m in term.seen if m["type"] == "terminal.output" and "data" in m["payload"]]
    assert all("\ufffd" not in m["payload"]["data"] for m in text_frames)


async def test_an_orphan_lives_through_its_grace_period_and_not_past_it(relay_factory, tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path, grace_bare=0.3))
    ws, auth = await pair_device(relay)
    term = Term(ws)
    pid = (await term.attach())["payload"]["pid"]
    await term.ws.aclose()
    await exited(pid)  # no socket came back within 0.3 s
    term.ws = await connect(relay, auth["session_token"])
    reply = await term.attach()
    r = reply["payload"]["resume"]
    assert (r["resumed"], r["in_seq"], r["out_seq"]) == (False, 0, 0) and reply["payload"]["pid"] != pid


async def test_a_socket_that_reads_nothing_stops_the_pty_being_read_at_64_kib(tmp_path: Path):
    """Backpressure: with nothing sent onwards, the reader stops once MAX_UNSENT bytes wait in the ring."""
    from trio.testing import wait_all_tasks_blocked

    from hermes_relay.relay.term_attach import Attachment
    from hermes_relay.relay.term_config import MAX_UNSENT
    from hermes_relay.relay.term_pty import PtyProcess

    stalled = trio.Event()

    async def send(ws, env) -> None:  # a socket whose peer never reads: the first send never returns
        stalled.set()
        await trio.sleep_forever()

    proc = PtyProcess(["/usr/bin/yes"], {"PATH": "/usr/bin:/bin"}, 80, 24)
    att = Attachment(scope_key=1, owner=None, name="main", stream="s" * 22, proc=proc, tmux=False, shell="yes",
                     cols=80, rows=24, ring_size=1024 * 1024, send=send)
    att.attach_socket(object(), 0)
    att.ready = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(att.run, lambda a, r: None)
        nursery.start_soon(proc.reap)
        with trio.fail_after(10):
            await stalled.wait()
            await att._until(lambda: att.ring.end - att.sent >= MAX_UNSENT)
        await wait_all_tasks_blocked(0.05)
        assert att.ring.end - att.sent == MAX_UNSENT  # and no further: the reader waits for the socket
        att.close()
        with trio.fail_after(10):
            await proc.exited.wait()
        nursery.cancel_scope.cancel()


async def test_when_the_shell_exits_its_last_output_then_detached_eof_with_the_status_arrive(relay_factory,
                                                                                              tmp_path: Path):
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, _ = await pair_device(relay)
    term = Term(ws)
    pid = (await term.attach())["payload"]["pid"]
    await term.type(b"echo last$((2*21)); exit 3\n")
    detached = await term.expect("terminal.detached")
    assert b"last42" in term.out
    assert detached["payload"] == {"session_name": "main", "reason": "eof", "exit_code": 3}
    await exited(pid)


async def test_a_new_attachment_of_a_stream_continues_the_offsets_its_attach_gives(relay_factory, tmp_path: Path):
    """After a relay restart the relay no longer knows the stream: the new attachment's offsets continue the
    asker's (``resume.in_seq``, ``resume.out_seq``) instead of starting at 0, so an agent that restarts later
    resumes in the same numbers as the CLI's without knowing what the relay restart did."""
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, auth = await pair_device(relay)
    term = Term(ws, base=5000, typed=bytearray(b"#" * 40))  # 5000 bytes seen, 40 typed before the restart
    msg_id = await term.send("terminal.attach", {"cols": 80, "rows": 24, "resume": {
        "v": 1, "stream": term.stream, "out_seq": term.out_seq, "in_seq": len(term.typed)}})
    reply = await term.expect("terminal.attached")
    assert reply["id"] == msg_id
    assert reply["payload"]["resume"] == {"v": 1, "stream": term.stream, "in_seq": 40, "out_seq": 5000,
                                          "in_shift": 0, "resumed": False, "gap": False}
    await term.type(b"echo new$((6*7))\n")  # at seq 40
    await term.until_output(b"new42")  # each seq_end checked: the output continues from 5000
    await term.until_acked(len(term.typed))
    await term.ws.aclose()
    term.ws = await connect(relay, auth["session_token"])
    r = (await term.attach())["payload"]["resume"]  # a resume, in those numbers
    assert (r["resumed"], r["gap"], r["in_seq"], r["out_seq"]) == (True, False, len(term.typed), term.out_seq)
    await term.type(b"echo again$((1+1))\n")
    await term.until_output(b"again2")


async def test_the_relay_keeps_the_input_shift_of_the_agents_own_bytes(relay_factory, tmp_path: Path):
    """Input marked ``own`` (the program launch the agent types) moves the relay's input offsets away from the
    CLI's: the relay counts it in the stream's ``in_shift`` and reports it on every attach, so a restarted
    agent does not have to guess whether the launch was typed. A new attachment starts from the attach's."""
    relay = await relay_factory(terminal=settings(tmp_path))
    ws, auth = await pair_device(relay)
    term = Term(ws)
    await term.send("terminal.attach", {"cols": 80, "rows": 24, "resume": {
        "v": 1, "stream": term.stream, "out_seq": 0, "in_seq": 0, "in_shift": -3}})
    assert (await term.expect("terminal.attached"))["payload"]["resume"]["in_shift"] == -3
    launch = b"echo launched$((2+3))\n"
    await term.send("terminal.input", {"data": launch.decode(), "seq": 0, "own": True})
    term.typed += launch
    await term.until_output(b"launched5")
    await term.type(b"echo typed$((3+4))\n")
    await term.until_output(b"typed7")
    await term.ws.aclose()
    term.ws = await connect(relay, auth["session_token"])
    r = (await term.attach())["payload"]["resume"]
    assert (r["resumed"], r["in_shift"], r["in_seq"]) == (True, -3 + len(launch), len(term.typed))
