"""A relay restart and an agent restart in one shell's life (agent/terminal/session.py): the CLI's record
(its output offset, its input marks) is all a restarted agent knows, so after a relay restart the relay's
offsets must still be the CLI's, or the new agent resumes in the wrong place.

The relay is scripted here, in memory, as docs/shell-protocol.md describes ours: one attachment per stream
(gone with a restart; the tmux session lives on), input written once by offset (below the attachment's
offset a duplicate, above it refused), output in a ring addressed by absolute offset, and a new
attachment's offsets continuing the ones its attach gives. The CLI is the rule cli/shellsession.py applies
to ``shell.output`` (skip what it has written, write the rest) and ``shell.ack`` (keep the marks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from terminal_fakes import STREAM, FakePort, Shell, answer

from hermes_relay.core import api


@dataclass
class _Attachment:
    in_seq: int  # input written to the PTY, in the stream's offsets
    out_start: int  # output offset of out[0]
    in_shift: int = 0  # input bytes the agent typed itself (``own: true``: the program launch)
    out: bytearray = field(default_factory=bytearray)
    sent: int = 0  # output offset sent to the socket

    @property
    def out_end(self) -> int:
        return self.out_start + len(self.out)


class ScriptedRelay:
    """Our relay's terminal channel for one shell, in memory."""

    def __init__(self) -> None:
        self.streams: dict[str, _Attachment] = {}
        self.pty = bytearray()  # what reached the shell, in order
        self.hold_acks = False  # write input but acknowledge nothing (acks lost with the socket)
        self.att: _Attachment | None = None
        self.shell: Shell | None = None
        self.port: FakePort | None = None

    async def attach(self, shell: Shell, port: FakePort, nursery: trio.Nursery, *, reattach: bool = True) -> None:
        shell.session.connected(port)
        request = await port.next()
        assert request["type"] == "terminal.attach"
        r = request["payload"]["resume"]
        att = self.streams.get(r["stream"])
        resumed = att is not None
        if att is None:  # a stream this relay does not know: its offsets continue the attach's
            att = self.streams[r["stream"]] = _Attachment(in_seq=r.get("in_seq", 0), out_start=r["out_seq"],
                                                          in_shift=r.get("in_shift", 0))
        gap = not att.out_start <= r["out_seq"] <= att.out_end
        att.sent = att.out_end if gap else r["out_seq"]
        self.att, self.shell, self.port = att, shell, port
        await answer(shell, port, resume={"v": 1, "stream": STREAM, "in_seq": att.in_seq, "out_seq": att.sent,
                                              "in_shift": att.in_shift, "resumed": resumed, "gap": gap}, reattach=reattach)
        nursery.start_soon(self._serve, shell, port)
        self._flush()

    def orphan(self) -> None:
        self.shell = self.port = None

    def output(self, data: bytes) -> None:
        assert self.att is not None
        self.att.out += data
        self._flush()

    def restart(self) -> None:
        """A clean restart: the exact final ack, then goodbye; the attachments are gone (tmux lives on)."""
        assert self.shell is not None and self.port is not None and self.att is not None
        self.shell.session.on_message(self.port, "terminal.ack", {"session_name": "main", "in_seq": self.att.in_seq})
        self.shell.session.on_message(self.port, "terminal.detached", {"session_name": "main",
                                                                       "reason": "server shutdown"})
        self.streams.clear()
        self.att = None
        self.orphan()

    def _flush(self) -> None:
        att, shell, port = self.att, self.shell, self.port
        if att is None or shell is None or port is None or att.sent == att.out_end:
            return
        data = bytes(att.out[att.sent - att.out_start:])
        att.sent = att.out_end
        shell.session.on_message(port, "terminal.output", {"session_name": "main", "data": data.decode(),
                                                           "seq_end": att.sent, "in_seq": att.in_seq})

    async def _serve(self, shell: Shell, port: FakePort) -> None:
        async for env in port.out:
            att = self.att
            if port is not self.port or att is None or env["type"] != "terminal.input":
                continue
            seq, data = env["payload"]["seq"], env["payload"]["data"].encode()
            assert seq <= att.in_seq, f"input gap: {seq} > {att.in_seq}"
            fresh = data[att.in_seq - seq:]
            self.pty += fresh
            att.in_seq += len(fresh)
            att.in_shift += len(fresh) if env["payload"].get("own") is True else 0
            if not self.hold_acks:
                shell.session.on_message(port, "terminal.ack", {"session_name": "main", "in_seq": att.in_seq})


class Cli:
    """The CLI's record: what it wrote to the terminal (and at which offsets), and its input marks."""

    def __init__(self) -> None:
        self.screen = bytearray()
        self.out_seq = 0
        self.jumps: list[tuple[int, int]] = []  # output that did not start where the last ended
        self.typed = bytearray()
        self.acked = self.sent = 0
        self._seen = 0

    def take(self, shell: Shell) -> None:
        for _, method, p in shell.notifies[self._seen:]:
            if method == api.SHELL_OUTPUT:
                data, seq_end = p["d"], p["seq_end"]
                start = seq_end - len(data)
                if seq_end <= self.out_seq:
                    continue
                if start < self.out_seq:
                    data = data[self.out_seq - start:]
                elif start > self.out_seq:
                    self.jumps.append((self.out_seq, start))
                self.screen += data
                self.out_seq = seq_end
            elif method == api.SHELL_ACK:
                self.acked, self.sent = max(self.acked, p["in_seq"]), max(self.sent, p["sent"])
        self._seen = len(shell.notifies)

    def type(self, shell: Shell, data: bytes) -> None:
        shell.session.typed(len(self.typed), data)
        self.typed += data

    def reopen(self, **options: Any) -> Shell:
        """The shell.open of a CLI whose agent died: its stream, out_seq and unacknowledged input."""
        return Shell(reopen=True, out_seq=self.out_seq, in_base=self.acked, in_sent=self.sent,
                     unacked=bytes(self.typed[self.acked:]), **options)


async def _run_until_killed(shell: Shell, agent: trio.CancelScope) -> None:
    with agent:  # cancelled: the agent died, its shell.open call ends without a response
        await shell.run()


async def _until(condition: Any, *shells: Shell, cli: Cli) -> None:
    with trio.fail_after(30):  # virtual seconds: a test that waits for what never comes fails, and says where
        while True:
            for shell in shells:
                cli.take(shell)
            if condition():
                return
            await trio.sleep(0.001)  # virtual time (autojump)


async def test_an_agent_restarted_after_a_relay_restart_resumes_in_the_clis_offsets(autojump_clock: Any) -> None:
    """The relay restarted (a new attachment of the same tmux session), the agent reattached, and later the
    agent restarts with input in flight and output waiting in the ring. The new agent knows only the CLI's
    offsets: the relay's must be the same, or it resends input the PTY has (a double) or resumes output
    in the wrong place. (Before the new attachment continued the attach's input offset, the relay counted
    it from 0: the new agent took the relay's 9 for the CLI's 9 and wrote "hij" twice.)"""
    relay, cli = ScriptedRelay(), Cli()
    first = Shell()
    agent = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_until_killed, first, agent)
        await relay.attach(first, FakePort(), nursery, reattach=False)
        cli.type(first, b"ab\r")
        relay.output(b"one\r\n")
        await _until(lambda: cli.acked == 3 and cli.screen == b"one\r\n", first, cli=cli)
        relay.restart()
        await relay.attach(first, FakePort(), nursery)
        cli.type(first, b"cd\r")
        relay.output(b"two\r\n")
        await _until(lambda: cli.acked == 6 and cli.out_seq == 10, first, cli=cli)
        relay.hold_acks = True
        cli.type(first, b"efghij")
        await _until(lambda: relay.pty.endswith(b"efghij") and cli.sent == 12, first, cli=cli)
        agent.cancel()  # the agent dies
        relay.orphan()
        relay.output(b"x" * 50 + b"\r\n")  # printed while no agent was there: waits in the ring
        relay.hold_acks = False
        second = cli.reopen()
        nursery.start_soon(second.run)
        await relay.attach(second, FakePort(), nursery)
        cli.type(second, b"k\r")
        await _until(lambda: relay.pty.endswith(b"k\r") and cli.acked == 14 and cli.out_seq >= 62, second, cli=cli)
        second.session.want("detach")
        await second.ended.wait()
        nursery.cancel_scope.cancel()  # the scripted relay's readers
    assert bytes(relay.pty) == b"ab\rcd\refghijk\r"  # every key once
    assert bytes(cli.screen) == b"one\r\ntwo\r\n" + b"x" * 50 + b"\r\n" and cli.jumps == []  # every byte once, in place
    assert second.session.notices == []  # nothing in doubt: the relay said exactly what the PTY has


async def test_an_agent_restarted_in_the_gap_of_a_relay_restart_continues_the_clis_offsets(
        autojump_clock: Any) -> None:
    """The relay restarts and the agent restarts before it reattached: the new agent attaches a stream the
    new relay does not know, and both directions go on in the CLI's offsets."""
    relay, cli = ScriptedRelay(), Cli()
    first = Shell()
    agent = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_until_killed, first, agent)
        await relay.attach(first, FakePort(), nursery, reattach=False)
        cli.type(first, b"ab\r")
        relay.output(b"one\r\n")
        await _until(lambda: cli.acked == 3 and cli.screen == b"one\r\n", first, cli=cli)
        relay.restart()
        cli.type(first, b"cd\r")  # typed in the gap: queued
        await _until(lambda: cli.typed == b"ab\rcd\r", first, cli=cli)
        agent.cancel()
        second = cli.reopen()
        nursery.start_soon(second.run)
        await relay.attach(second, FakePort(), nursery)
        relay.output(b"$ ")
        await _until(lambda: relay.pty == b"ab\rcd\r" and cli.acked == 6 and cli.out_seq == 7, second, cli=cli)
        second.session.want("detach")
        await second.ended.wait()
        nursery.cancel_scope.cancel()  # the scripted relay's readers
    assert bytes(cli.screen) == b"one\r\n$ " and cli.jumps == []
    assert second.session.notices == []


async def test_an_agent_restarted_with_input_in_flight_knows_whether_the_program_launch_was_typed(
        autojump_clock: Any) -> None:
    """The agent types the program launch itself (``clear; exec hermes``) into a fresh shell, not into a tmux
    session that already existed, and the launch moves the relay's input offsets. A restarted agent cannot
    tell which happened from the CLI's record: our relay counts the launch (``in_shift``) and says so. (Before,
    the agent guessed that the launch was typed: with the launch's length or more written and not
    acknowledged, the guess fitted, and 19 bytes the PTY had were written again.)"""
    relay, cli = ScriptedRelay(), Cli()
    first = Shell(raw=False)
    agent = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_until_killed, first, agent)
        await relay.attach(first, FakePort(), nursery, reattach=True)  # tmux had the session: no launch
        relay.hold_acks = True
        cli.type(first, b"echo 0123456789abcdefghij\r")  # 26 bytes, more than the launch's 19
        await _until(lambda: relay.pty.endswith(b"j\r") and cli.sent == 26, first, cli=cli)
        second = await _restart_then_type(relay, cli, agent, nursery, acked=28)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"echo 0123456789abcdefghij\rk\r"
    assert second.session.notices == []


async def _restart_then_type(relay: ScriptedRelay, cli: Cli, agent: trio.CancelScope, nursery: trio.Nursery, *,
                             acked: int) -> Shell:
    """The agent dies with input in flight; a new one reattaches and the user types ``k\\r``: every input
    byte is acknowledged (``acked``) and the shell detaches."""
    agent.cancel()
    relay.orphan()
    relay.hold_acks = False
    second = cli.reopen(raw=False)
    nursery.start_soon(second.run)
    await relay.attach(second, FakePort(), nursery)
    cli.type(second, b"k\r")
    await _until(lambda: relay.pty.endswith(b"k\r") and cli.acked == acked, second, cli=cli)
    second.session.want("detach")
    await second.ended.wait()
    return second


async def test_a_launch_typed_before_the_agent_restarted_is_counted_by_the_relay(autojump_clock: Any) -> None:
    """A fresh shell: the agent types the launch, then the user types; the agent restarts with input in flight
    and the new one resumes exactly past the launch."""
    relay, cli = ScriptedRelay(), Cli()
    first = Shell(raw=False)
    agent = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_until_killed, first, agent)
        await relay.attach(first, FakePort(), nursery, reattach=False)
        relay.output(b"$ ")
        await _until(lambda: relay.pty == b"clear; exec hermes\n", first, cli=cli)
        relay.hold_acks = True
        cli.type(first, b"hello there\r")
        await _until(lambda: relay.pty.endswith(b"there\r") and cli.sent == 12, first, cli=cli)
        second = await _restart_then_type(relay, cli, agent, nursery, acked=14)
        nursery.cancel_scope.cancel()
    assert bytes(relay.pty) == b"clear; exec hermes\nhello there\rk\r"
    assert second.session.notices == []
