"""A resume that races a PTY read (relay/term_attach.py, relay/term_ring.py): while an attachment is orphaned
its reader reads up to READ_SIZE (8 KiB) at a time, more than a small ring holds. A read that began while
orphaned and returns after a socket resumed must not push the ring's start past what that socket was not
sent yet: the relay answered ``gap: false``, so the output must continue exactly from the resume point.

This is what made ``test_terminal_bare.py::test_a_resume_past_the_ring_is_a_gap_from_the_ring_end`` flaky
(on a loaded machine the shell's loop filled the PTY before the pending 8 KiB read returned). The PTY here
is a stand-in whose reads the test releases, so the race happens every time: which bytes a real PTY read
returns, and when, is the kernel's timing, which a test cannot cause.
"""

from __future__ import annotations

import base64
from typing import Any

import trio
from trio.testing import wait_all_tasks_blocked

from hermes_relay.relay import term_config as tc
from hermes_relay.relay.term_attach import Attachment

RING = 4096


class HeldPty:
    """A PtyProcess stand-in: a read returns up to ``n`` of the bytes the test has ``emit``-ted, waiting for some."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.reads: list[int] = []  # the size of each read begun
        self._more = trio.Event()
        self.exited = trio.Event()
        self.status = 0
        self.pid = 1
        self.stream = self

    def emit(self, data: bytes) -> None:
        self.pending += data
        self._more.set()

    async def read(self, n: int) -> bytes:
        self.reads.append(n)
        while not self.pending:
            self._more = trio.Event()
            await self._more.wait()
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data

    async def write_some(self, data: bytes, stop: Any) -> int:
        await trio.sleep_forever()
        return 0  # pragma: no cover

    def hangup(self) -> None:
        self.exited.set()

    def close(self) -> None:
        pass


class Socket:
    """Where the attachment's frames go: each ``terminal.output`` with its bytes and ``seq_end``."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.changed = trio.Event()

    def got(self, env: Any) -> None:
        p = env.payload
        data = base64.b64decode(p["data_b64"]) if "data_b64" in p else p["data"].encode()
        self.frames.append((p["seq_end"], data))
        self.changed.set()
        self.changed = trio.Event()

    @property
    def end(self) -> int:
        return self.frames[-1][0] if self.frames else 0

    def stream_from(self, start: int) -> bytes:
        """The bytes of the frames, checking that each continues exactly where the last one ended."""
        at, out = start, bytearray()
        for seq_end, data in self.frames:
            assert seq_end - len(data) == at, f"output jumped from {at} to {seq_end - len(data)}"
            out += data
            at = seq_end
        return bytes(out)


async def test_a_read_begun_while_orphaned_never_drops_output_the_resumed_socket_was_not_sent(
        autojump_clock: Any) -> None:
    proc = HeldPty()
    first, second = Socket(), Socket()

    async def send(ws: Socket, env: Any) -> None:
        if env.type == "terminal.output":
            ws.got(env)

    att = Attachment(scope_key=1, owner=None, name="main", stream="s" * 22, proc=proc,  # type: ignore[arg-type]
                     tmux=False, shell="sh", cols=80, rows=24, ring_size=RING, send=send)
    att.attach_socket(first, 0)
    att.ready = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(att.run, lambda a, r: None)
        proc.emit(b"$ ")
        while first.end < 2:
            await first.changed.wait()
        att.orphan()  # the socket dropped
        proc.emit(b"x")  # output while orphaned: the reader's next read begins with nobody to send to
        await wait_all_tasks_blocked()
        assert att.ring.end == 3 and proc.reads[-1] == tc.READ_SIZE > RING  # that read may return 8 KiB
        gap = att.attach_socket(second, 0)  # a socket resumes from 0, which the ring holds
        att.ready = True
        att.poke()
        assert gap is False
        flood = bytes(range(32, 127)) * 80  # 7600 bytes, all there when the pending read returns
        proc.emit(flood)
        while second.end < 3 + len(flood):
            await second.changed.wait()
        nursery.cancel_scope.cancel()
    assert second.stream_from(0) == b"$ x" + flood  # exactly from the resume point: nothing lost, no jump
    assert len(att.ring._buf) <= RING + tc.READ_SIZE  # the ring outgrew its capacity by one read at most
